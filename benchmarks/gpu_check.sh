#!/usr/bin/env bash
# GPU benchmark of the sample models: fp32 vs fp16, on the CUDA and (when present) TensorRT providers.
#
# Needs: an NVIDIA GPU and driver, onnxruntime-gpu (pip install 'onnxsqueeze[gpu]'; TensorRT runs
# only if its libraries are installed too), onnxconverter-common (fp16 copies), and the sample
# models in .cache/models (python -m models.zoo; exported if missing and torch is installed).
#
# Usage:  benchmarks/gpu_check.sh [OUT_DIR]        (default: out/gpu_check-<UTC time>)
# Writes into OUT_DIR: <model>_cuda.{json,md,png}, <model>_trt.{json,md,png}, <model>_trt_fp16flag.*,
#   summary.md (every report, in order), environment.txt (nvidia-smi, onnxruntime), log.txt.
# Budget: about 1-2 minutes for CUDA (4 models x 3 batch sizes x 2 precisions) plus TensorRT engine
#   builds (one per model and precision, tens of seconds each). Every step's timeout is cut to what
#   is left of DEADLINE (285 s) and a step that would get under 30 s is skipped, so the whole script
#   stays under 5 minutes; skipped steps are listed in the log and the summary.
# Knobs (environment): GPU_CHECK_MODELS, GPU_CHECK_TRT_MODELS, GPU_CHECK_BATCHES, GPU_CHECK_INSTANCE
#   (price the cost, e.g. aws/g5.xlarge), DEADLINE (s), PER_RUN_TIMEOUT (s), PYTHON.
#   GPU_CHECK_SMOKE=1 runs the same steps on CPU with small settings: a test of this script on a
#   machine without a GPU (fp16 kernels may be missing on CPU; such a step is reported and skipped).
# Exit status: 0 when every attempted step worked, 1 when one failed, 2 when no GPU is usable.
#
# NOTE: written and smoke-tested (GPU_CHECK_SMOKE=1) on a machine without a GPU; the CUDA and
# TensorRT steps have not been run by the author.

set -uo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
OUT=${1:-out/gpu_check-$(date -u +%Y%m%dT%H%M%SZ)}
SMOKE=${GPU_CHECK_SMOKE:-0}
if [[ "$SMOKE" == 1 ]]; then
    PROVIDER=cpu
    MODELS=${GPU_CHECK_MODELS:-"mobilenet_v3_small"}
    TRT_MODELS=""
    BATCHES=${GPU_CHECK_BATCHES:-1,4}
    RUN_ARGS=(--warmup 2 --iterations 10 --duration 0.1 --rounds 2)
else
    PROVIDER=cuda
    MODELS=${GPU_CHECK_MODELS:-"resnet18 resnet50 mobilenet_v3_large mobilenet_v3_small"}
    TRT_MODELS=${GPU_CHECK_TRT_MODELS:-"resnet18 mobilenet_v3_large"}
    BATCHES=${GPU_CHECK_BATCHES:-1,8,32}
    RUN_ARGS=(--warmup 10 --iterations 100 --duration 0.5 --rounds 5)
fi
DEADLINE=${DEADLINE:-285}
PER_RUN_TIMEOUT=${PER_RUN_TIMEOUT:-150}
PRICE_ARGS=()
[[ -n "${GPU_CHECK_INSTANCE:-}" ]] && PRICE_ARGS=(--instance "$GPU_CHECK_INSTANCE")

mkdir -p "$OUT/models" || { echo "cannot create $OUT" >&2; exit 2; }
exec > >(tee -a "$OUT/log.txt") 2>&1
START=$(date +%s)
FAILED=0
SKIPPED=()
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[gpu_check +$(elapsed)s] $*"; }

# ---------------------------------------------------------------------------------- environment
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    command -v nvidia-smi >/dev/null && nvidia-smi || echo "nvidia-smi: not found"
    "$PY" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_device(), o.get_available_providers())'
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

PROVIDERS=$("$PY" -c 'import onnxruntime as o; print(" ".join(o.get_available_providers()))' 2>/dev/null)
if [[ "$SMOKE" != 1 && "$PROVIDERS" != *CUDAExecutionProvider* ]]; then
    say "onnxruntime has no CUDAExecutionProvider (providers: ${PROVIDERS:-none}); install onnxruntime-gpu"
    exit 2
fi
if [[ "$PROVIDERS" != *TensorrtExecutionProvider* ]]; then
    [[ -n "$TRT_MODELS" ]] && say "TensorrtExecutionProvider not available: TensorRT steps skipped"
    TRT_MODELS=""
fi

# ---------------------------------------------------------------------------------- models
prepare() {  # $1: name -> .cache/models/NAME.onnx and OUT/models/NAME_fp16.onnx
    local name=$1 fp32=.cache/models/$1.onnx fp16=$OUT/models/$1_fp16.onnx
    if [[ ! -f "$fp32" ]]; then
        say "exporting $name (models/zoo.py)"
        "$PY" -m models.zoo "$name" || { say "cannot export $name"; return 1; }
    fi
    [[ -f "$fp16" ]] && return 0
    "$PY" - "$fp32" "$fp16" <<'EOF' || { say "fp16 conversion of $name failed"; return 1; }
import sys
import warnings

from onnxconverter_common import float16

warnings.filterwarnings("ignore", message="the float32 number")  # tiny weights clamped to fp16's range

from onnxsqueeze import io as sio

# fp16 weights and activations, fp32 inputs and outputs: the same feeds work for both variants.
model = float16.convert_float_to_float16(sio.load(sys.argv[1]), keep_io_types=True)
sio.save(model, sys.argv[2], protect=[sys.argv[1]])
print("wrote", sys.argv[2])
EOF
}

bench() {  # $1: report stem, rest: arguments of `onnxsqueeze bench`
    local stem=$1 left limit
    shift
    left=$(( DEADLINE - $(elapsed) ))
    if (( left < 30 )); then
        say "skipping $stem: ${left}s left of the ${DEADLINE}s deadline"
        SKIPPED+=("$stem")
        return 0
    fi
    limit=$(( left < PER_RUN_TIMEOUT ? left : PER_RUN_TIMEOUT ))
    say "bench $stem (timeout ${limit}s)"
    timeout "$limit" "$PY" -m onnxsqueeze bench "$@" --batch "$BATCHES" "${RUN_ARGS[@]}" \
        "${PRICE_ARGS[@]}" --report "$OUT/$stem.json" --markdown "$OUT/$stem.md" --plot "$OUT/$stem.png"
    local rc=$?
    if [[ $rc -eq 124 ]]; then
        say "step $stem timed out after ${limit}s"
        FAILED=1
    elif [[ $rc -ne 0 ]]; then
        say "step $stem failed (exit $rc)"
        FAILED=1
    fi
}

for name in $MODELS; do
    prepare "$name" || { FAILED=1; continue; }
    bench "${name}_${PROVIDER}" ".cache/models/$name.onnx" "$OUT/models/${name}_fp16.onnx" --provider "$PROVIDER"
done

[[ -n "$TRT_MODELS" ]] && mkdir -p "$OUT/trt_cache"
for name in $TRT_MODELS; do
    prepare "$name" || { FAILED=1; continue; }
    # an fp32 engine vs one built from the fp16 graph; then TensorRT's own fp16 mode on the fp32 graph
    bench "${name}_trt" ".cache/models/$name.onnx" "$OUT/models/${name}_fp16.onnx" --provider tensorrt \
        --trt-cache "$OUT/trt_cache"
    bench "${name}_trt_fp16flag" ".cache/models/$name.onnx" --provider tensorrt --trt-fp16 \
        --trt-cache "$OUT/trt_cache"
done

# ---------------------------------------------------------------------------------- summary
{
    echo "# onnxsqueeze GPU check ($(date -u +%Y-%m-%d), $(elapsed) s)"
    echo
    (( ${#SKIPPED[@]} )) && echo "Skipped for time: ${SKIPPED[*]}" && echo
    for md in "$OUT"/*.md; do
        [[ "$md" == "$OUT/summary.md" ]] && continue
        echo "## $(basename "$md" .md)"
        echo
        cat "$md"
        echo
    done
} > "$OUT/summary.md.tmp" && mv "$OUT/summary.md.tmp" "$OUT/summary.md"
say "done in $(elapsed) s; reports in $OUT (summary.md)"
exit $FAILED
