"""The technique layer: the one front door every command, recipe and the search go through.

Each technique is one function returning ``(model, report)``; the report has ``to_dict()``:

- :func:`fp16` (``optimize.fp16``): guarded float16/bfloat16 conversion;
- :func:`prune` (``optimize.prune``): zero-weight or channel pruning;
- :func:`resize` (``optimize.resize``): input-resolution rewrite;
- :func:`quantize` (``optimize.quantize``): int8.

The shared steps (load, normalize, resolve shapes, judge, write) are in ``optimize.base``.
"""

from __future__ import annotations

from onnxsqueeze.optimize.base import (
    Acceptance,
    Judgement,
    NormalizeReport,
    Report,
    judge,
    normalize,
    resolve_shapes,
)
from onnxsqueeze.optimize.fp16 import Fp16Report, fp16
from onnxsqueeze.optimize.prune import PruneReport, prune
from onnxsqueeze.optimize.quantize import QuantizeReport, quantize
from onnxsqueeze.optimize.resize import ResizeReport, resize

__all__ = [
    "Acceptance",
    "Fp16Report",
    "Judgement",
    "NormalizeReport",
    "PruneReport",
    "QuantizeReport",
    "Report",
    "ResizeReport",
    "fp16",
    "judge",
    "normalize",
    "prune",
    "quantize",
    "resize",
    "resolve_shapes",
]
