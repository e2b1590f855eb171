"""Graph passes, one technique per module, and the explicit registry the CLI and recipes use."""

from __future__ import annotations

from onnxsqueeze.passes.base import SqueezePass, describe
from onnxsqueeze.passes.channels import PruneChannelsPass
from onnxsqueeze.passes.cleanup import (
    CleanupPass,
    FoldBatchNormPass,
    FoldConstantsPass,
    SimplifyWithOnnxslimPass,
)
from onnxsqueeze.passes.fp16 import ConvertToFloat16Pass
from onnxsqueeze.passes.quantize import CalibrationData, QuantizeInt8Pass
from onnxsqueeze.passes.resolution import RewriteInputResolutionPass
from onnxsqueeze.passes.sparsity import PruneWeightsPass
from onnxsqueeze.passes.weight_only import QuantizeMatMulInt4Pass, QuantizeWeightsInt8Pass

# The registry: recipe and CLI names to pass classes. No import side effects register anything.
PASSES: dict[str, type[SqueezePass]] = {
    CleanupPass.name: CleanupPass,
    SimplifyWithOnnxslimPass.name: SimplifyWithOnnxslimPass,
    FoldConstantsPass.name: FoldConstantsPass,
    FoldBatchNormPass.name: FoldBatchNormPass,
    ConvertToFloat16Pass.name: ConvertToFloat16Pass,
    RewriteInputResolutionPass.name: RewriteInputResolutionPass,
    QuantizeInt8Pass.name: QuantizeInt8Pass,
    QuantizeWeightsInt8Pass.name: QuantizeWeightsInt8Pass,
    QuantizeMatMulInt4Pass.name: QuantizeMatMulInt4Pass,
    PruneWeightsPass.name: PruneWeightsPass,
    PruneChannelsPass.name: PruneChannelsPass,
}

__all__ = [
    "PASSES",
    "CalibrationData",
    "CleanupPass",
    "ConvertToFloat16Pass",
    "FoldBatchNormPass",
    "FoldConstantsPass",
    "PruneChannelsPass",
    "PruneWeightsPass",
    "QuantizeInt8Pass",
    "QuantizeMatMulInt4Pass",
    "QuantizeWeightsInt8Pass",
    "RewriteInputResolutionPass",
    "SimplifyWithOnnxslimPass",
    "SqueezePass",
    "describe",
]
