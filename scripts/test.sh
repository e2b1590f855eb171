#!/usr/bin/env bash
# Run the test suite: TensorFlow tests in their own pytest session first (once TensorFlow is
# loaded, importing torchvision in the same process segfaults), then everything else.
# FAST=1 skips the slow real-model tests. Extra arguments go to both pytest runs.
# On a fresh clone it sets up .venv first, as scripts/demo.sh does (SKIP_SETUP=1 skips that and
# uses whatever python3 is on PATH when there is no .venv).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if ! "$PY" -c "import onnxsqueeze, pytest" 2>/dev/null; then
  if [ "${SKIP_SETUP:-0}" = "1" ]; then
    PY=python3
  else
    bash scripts/setup.sh || exit $?
  fi
fi
tf_marks="tf"
marks="not tf"
if [ "${FAST:-0}" = "1" ]; then
  tf_marks="tf and not slow"
  marks="not tf and not slow"
fi
# Both sessions run on TEST_WORKERS pytest-xdist workers (default: one per CPU; 0 runs in-process).
# --dist loadgroup keeps the tests sharing a module-scoped fixture on one worker (tests/conftest.py).
par=()
if [ "${TEST_WORKERS:-auto}" != "0" ] && "$PY" -c "import xdist" 2>/dev/null; then
  par=(-n "${TEST_WORKERS:-auto}" --dist loadgroup)
fi
"$PY" -m pytest "${par[@]}" -m "$tf_marks" "$@"
rc=$?
# exit 5 = no TensorFlow test selected (e.g. a -k filter): not a failure by itself; the main
# session below must still run and pass, and its exit 5 is a failure.
if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then
  exit $rc
fi
"$PY" -m pytest "${par[@]}" -m "$marks" "$@"
