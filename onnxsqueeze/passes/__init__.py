"""Graph passes, one technique per module, and the explicit registry the CLI and recipes use."""

from __future__ import annotations

from onnxsqueeze.passes.base import SqueezePass, describe
from onnxsqueeze.passes.cleanup import CleanupPass, FoldBatchNormPass, FoldConstantsPass
from onnxsqueeze.passes.quantize import CalibrationData, QuantizeInt8Pass

# The registry: recipe and CLI names to pass classes. No import side effects register anything.
PASSES: dict[str, type[SqueezePass]] = {
    CleanupPass.name: CleanupPass,
    FoldConstantsPass.name: FoldConstantsPass,
    FoldBatchNormPass.name: FoldBatchNormPass,
    QuantizeInt8Pass.name: QuantizeInt8Pass,
}

__all__ = [
    "PASSES",
    "CalibrationData",
    "CleanupPass",
    "FoldBatchNormPass",
    "FoldConstantsPass",
    "QuantizeInt8Pass",
    "SqueezePass",
    "describe",
]
