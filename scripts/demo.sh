#!/usr/bin/env bash
# The main job on the bundled example, from a fresh clone: install, train the digits CNN on
# scikit-learn's real handwritten digits, squeeze it within 2 accuracy points, benchmark the
# original against the squeezed model, and write a report and a Triton model repository.
# Everything lands in out/demo/ (REPORT.md is the summary). SKIP_SETUP=1 skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SKIP_SETUP:-0}" = "1" ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT=out/demo
DATA=.cache/models
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1. train the digits CNN (cached after the first run)"
python -m models.digits --out "$DATA"
M=$DATA/digits_cnn.onnx
onnxsqueeze inspect "$M"

echo "== 2. squeeze it: the fastest model within 2 accuracy points (graph passes + distillation)"
onnxsqueeze squeeze "$M" --data "$DATA/digits_val.npz" --train-data "$DATA/digits_train.npz" \
  --max-drop 2 -o "$OUT/squeeze"
S=$OUT/squeeze/digits_cnn.squeezed.onnx
onnxsqueeze inspect "$S"

echo "== 3. benchmark original vs squeezed (interleaved, ratios, cost per million inferences)"
onnxsqueeze bench "$M" "$S" --batch 1,32 --instance aws/c7i.xlarge \
  --markdown "$OUT/bench.md" --report "$OUT/bench.json" --plot "$OUT/bench.png"

echo "== 4. deploy: a Triton model repository for the squeezed model"
onnxsqueeze export triton "$S" --repo "$OUT/model_repository" --name digits --kind cpu \
  --dynamic-batching --preferred-batch-sizes 8,32

{
  echo "# onnxsqueeze demo: digits CNN"
  echo
  cat "$OUT/squeeze/report.md"
  echo
  cat "$OUT/bench.md"
  echo
  echo "Triton repository: \`$OUT/model_repository/digits\` (config.pbtxt, 1/model.onnx + manifest)."
} > "$OUT/REPORT.md"
echo "== done: $OUT/REPORT.md"
