#!/usr/bin/env bash
# The main job on the bundled example, from a fresh clone: install, train the digits CNN on
# scikit-learn's real handwritten digits, inspect it, squeeze it within 2 accuracy points,
# benchmark original vs squeezed, and write a report and a Triton repository. Output: out/demo/
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SKIP_SETUP:-0}" = "1" ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT=out/demo
mkdir -p "$OUT"
python -m models.digits --out .cache/models
M=.cache/models/digits_cnn.onnx
onnxsqueeze inspect "$M"
onnxsqueeze verify "$M" "$M" --data .cache/models/digits_val.npz --tolerance 0
