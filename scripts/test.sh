#!/usr/bin/env bash
# Run the test suite: everything but TensorFlow in one session, TensorFlow tests in their own
# (once TensorFlow is loaded, importing torchvision in the same process segfaults).
# FAST=1 skips the slow real-model tests. Extra arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
marks="not tf"
[ "${FAST:-0}" = "1" ] && marks="not tf and not slow"
"$PY" -m pytest -m "$marks" "$@"
rc=$?
[ $rc -eq 0 ] || exit $rc
tf_marks="tf"
[ "${FAST:-0}" = "1" ] && tf_marks="tf and not slow"
"$PY" -m pytest -m "$tf_marks" "$@"
rc=$?
# exit 5 = no TensorFlow tests selected (e.g. with FAST=1 or a -k filter): not a failure here,
# the first session above already proved tests ran.
[ $rc -eq 5 ] && rc=0
exit $rc
