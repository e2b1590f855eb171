"""onnxsqueeze: make ONNX models smaller, faster and cheaper within an accuracy budget.

The public API, re-exported here; heavy frameworks are imported only where used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from onnxsqueeze import metrics, optimize
from onnxsqueeze.errors import (
    BudgetNotMetError,
    ConversionError,
    GateFailedError,
    InputError,
    ModelLoadError,
    SqueezeError,
    UnsupportedModelError,
    VerificationError,
)
from onnxsqueeze.io import load, load_ir, save
from onnxsqueeze.manifest import save_artifact
from onnxsqueeze.passes import PASSES, CleanupPass, FoldBatchNormPass, FoldConstantsPass, SqueezePass
from onnxsqueeze.passes.quantize import QuantizeInt8Pass
from onnxsqueeze.pipeline import run_passes
from onnxsqueeze.recipe import Recipe
from onnxsqueeze.search import squeeze
from onnxsqueeze.summary import count_macs, summarize
from onnxsqueeze.verify import VerifyReport, verify

__all__ = [
    "PASSES",
    "BudgetNotMetError",
    "CleanupPass",
    "ConversionError",
    "FoldBatchNormPass",
    "FoldConstantsPass",
    "GateFailedError",
    "InputError",
    "ModelLoadError",
    "QuantizeInt8Pass",
    "Recipe",
    "SqueezeError",
    "SqueezePass",
    "UnsupportedModelError",
    "VerificationError",
    "VerifyReport",
    "__version__",
    "count_macs",
    "load",
    "load_ir",
    "metrics",
    "optimize",
    "run_passes",
    "save",
    "save_artifact",
    "squeeze",
    "summarize",
    "verify",
]
