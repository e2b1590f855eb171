"""Measured mixed precision: a float16 (or bfloat16) conversion that keeps float32 only what the
measurement blames, verified by the task metric of each output.

- :mod:`~onnxsqueeze.precision.analysis`: ranges and node-level error on sample inputs
  (:func:`analyze_fp16`), the nodes that must stay float32.
- :mod:`~onnxsqueeze.precision.checks`: acceptance by each output's task metric
  (:func:`check_outputs`, :func:`output_task`).
- :mod:`~onnxsqueeze.precision.blame`: which nodes create the error of a failed conversion.
- :mod:`~onnxsqueeze.precision.convert`: the guarded conversion (:func:`convert_fp16`).

onnxruntime is imported inside functions; nothing here reads or writes files.
"""

from __future__ import annotations

from onnxsqueeze.precision.analysis import Fp16Analysis, TensorStats, analyze_fp16, prepare
from onnxsqueeze.precision.blame import DATA_MOVEMENT, blame
from onnxsqueeze.precision.checks import (
    BOX_CONF,
    COSINE_FLOOR,
    MAP_THRESHOLD,
    THRESHOLDS,
    OutputCheck,
    check_outputs,
    output_task,
)
from onnxsqueeze.precision.convert import Fp16Result, convert_fp16, require_passed

__all__ = [
    "BOX_CONF",
    "COSINE_FLOOR",
    "DATA_MOVEMENT",
    "MAP_THRESHOLD",
    "THRESHOLDS",
    "Fp16Analysis",
    "Fp16Result",
    "OutputCheck",
    "TensorStats",
    "analyze_fp16",
    "blame",
    "check_outputs",
    "convert_fp16",
    "output_task",
    "prepare",
    "require_passed",
]
