"""onnxsqueeze: make ONNX models smaller, faster and cheaper within an accuracy budget.

The public API, re-exported here. Names are imported on first use (PEP 562), so that
``import onnxsqueeze`` (and the CLI's start, where the signal handlers go in first) stays instant.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "BudgetNotMetError": "onnxsqueeze.errors",
    "ConversionError": "onnxsqueeze.errors",
    "GateFailedError": "onnxsqueeze.errors",
    "InputError": "onnxsqueeze.errors",
    "ModelLoadError": "onnxsqueeze.errors",
    "SqueezeError": "onnxsqueeze.errors",
    "UnsupportedModelError": "onnxsqueeze.errors",
    "VerificationError": "onnxsqueeze.errors",
    "load": "onnxsqueeze.io",
    "load_ir": "onnxsqueeze.io",
    "save": "onnxsqueeze.io",
    "save_artifact": "onnxsqueeze.manifest",
    "PASSES": "onnxsqueeze.passes",
    "CleanupPass": "onnxsqueeze.passes",
    "FoldBatchNormPass": "onnxsqueeze.passes",
    "FoldConstantsPass": "onnxsqueeze.passes",
    "SqueezePass": "onnxsqueeze.passes",
    "QuantizeInt8Pass": "onnxsqueeze.passes.quantize",
    "run_passes": "onnxsqueeze.pipeline",
    "Recipe": "onnxsqueeze.recipe",
    "squeeze": "onnxsqueeze.search",
    "count_macs": "onnxsqueeze.summary",
    "summarize": "onnxsqueeze.summary",
    "VerifyReport": "onnxsqueeze.verify",
    "verify": "onnxsqueeze.verify",
}

# public submodules, imported on first use too
_SUBMODULES = ("metrics", "optimize")

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"onnxsqueeze.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxsqueeze' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


class _Module(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing the submodule onnxsqueeze.verify binds it over the public function verify; an
        # eager import kept the function, and so does this.
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Module


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


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
