"""Extracts MiniLM *token* states (not pooled) of the fine-food reviews for the token-level
(CryptPEFT OWC) adapters of issue 15.

Same data as extract_text.py (modeldata fine-food reviews, "great" vs "other", the first
N_TRAIN rows of `training_data` and N_TEST of `testing_data`), but every review is
tokenised to exactly T = 32 tokens: truncated at 32 ([CLS] + 30 word pieces + [SEP]) or
padded with [PAD] to 32. The backbone itself runs on those 32 tokens with its attention
mask (it never attends to padding).

Mask convention (what the client sends): the rows of padding tokens are set to ZERO in every
tapped layer (the client knows its own mask). The adapter sees all 32 rows; its learned
T x T mixing, its biases and mean pooling over all 32 rows are trained with that convention,
so no mask travels with the query.

Saved per split (cached under $HEPEFT_CACHE, default ${TMPDIR:-/tmp}/hepeft-train-cache,
never in the repository): `l4`, `l5`, `l6` [n, 32, 384] float16 (the hidden states after
backbone layers 4, 5, 6, i.e. the inputs of layers 5 and 6 and the last hidden state),
`mask` [n, 32], `y` [n].
"""
import os
import sys
import time

import numpy as np

from extract_text import N_TEST, N_TRAIN, cache_dir, load_split
from minilm import MiniLM

T = 32
LAYERS = (4, 5, 6)
CHUNK = 64


def extract(model, name, texts, y):
    out = os.path.join(cache_dir(), f"finefoods_tokens_{name}_{len(texts)}_{T}.npz")
    if os.path.exists(out):
        return out
    n = len(texts)
    states = {l: np.zeros((n, T, 384), np.float16) for l in LAYERS}
    masks = np.zeros((n, T), np.int64)
    t0 = time.time()
    for c in range(0, n, CHUNK):
        enc = model.tok.encode_batch(texts[c : c + CHUNK])
        ids = np.array([e.ids for e in enc])
        mask = np.array([e.attention_mask for e in enc])
        types = np.array([e.type_ids for e in enc])
        hs = model.hidden_states(ids, mask, types)
        for l in LAYERS:
            states[l][c : c + CHUNK] = (hs[l] * mask[..., None]).astype(np.float16)
        masks[c : c + CHUNK] = mask
        print(f"{name} {min(c + CHUNK, n)}/{n}: {time.time() - t0:.1f} s", flush=True)
    np.savez(out, **{f"l{l}": states[l] for l in LAYERS}, mask=masks, y=y)
    return out


def main():
    model = MiniLM(max_length=T)
    model.tok.enable_padding(pad_id=0, pad_token="[PAD]", length=T)
    for name, item, n in (("test", "testing_data", N_TEST), ("train", "training_data", N_TRAIN)):
        texts, y = load_split(item, n)
        print(extract(model, name, texts, y), flush=True)


if __name__ == "__main__":
    sys.exit(main())
