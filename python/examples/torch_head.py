"""docs/python.md's "A PyTorch head, encrypted" recipe as written, against the torch module itself.

Needs torch (not a CI dependency: run it in a throwaway venv with `pip install torch` and
`pip install ./python`).
"""
import numpy as np, torch, torch.nn as nn
import hepeft

class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(384, 32), nn.Linear(32, 2)
    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(0.25 + 0.5 * h + 0.125 * h * h)

def export(head, interval=(-8.0, 8.0)):
    sd = {k: v.detach().cpu().numpy() for k, v in head.state_dict().items()}
    b = hepeft.Builder()
    x = b.input("x", 384)
    h = b.linear(x, sd["fc1.weight"], sd["fc1.bias"])
    h = b.poly(h, coeffs=[0.25, 0.5, 0.125], interval=interval)
    b.linear(h, sd["fc2.weight"], sd["fc2.bias"])
    return b.build()

torch.manual_seed(0)
head = Head()
features = np.random.default_rng(0).uniform(-1, 1, (4, 384))
model = export(head)
params = hepeft.params.select(model, precision=16).params
client = hepeft.Client.keygen(hepeft.publish(model), params)
server = hepeft.Server(model, params, flooding_bits=None)
logits = client.decrypt(server.evaluate(client.encrypt(features), client.eval_keys()))
want = head(torch.tensor(features, dtype=torch.float32)).detach().double().numpy()
err = np.abs(logits - want).max() / np.abs(want).max()
print("torch vs encrypted: max rel err %.2e (%.1f bits), argmax equal %s" % (err, -np.log2(err), (logits.argmax(1) == want.argmax(1)).all()))
