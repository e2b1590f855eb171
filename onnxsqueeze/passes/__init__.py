"""Graph passes, one technique per module, and the explicit registry the CLI and recipes use."""

from __future__ import annotations

from onnxsqueeze.passes.base import SqueezePass, describe
from onnxsqueeze.passes.channels import PruneChannelsPass
from onnxsqueeze.passes.cleanup import CleanupPass, FoldBatchNormPass, FoldConstantsPass
from onnxsqueeze.passes.sparsity import PruneWeightsPass

# The registry: recipe and CLI names to pass classes. No import side effects register anything.
PASSES: dict[str, type[SqueezePass]] = {
    CleanupPass.name: CleanupPass,
    FoldConstantsPass.name: FoldConstantsPass,
    FoldBatchNormPass.name: FoldBatchNormPass,
    PruneWeightsPass.name: PruneWeightsPass,
    PruneChannelsPass.name: PruneChannelsPass,
}

__all__ = [
    "PASSES",
    "CleanupPass",
    "FoldBatchNormPass",
    "FoldConstantsPass",
    "PruneChannelsPass",
    "PruneWeightsPass",
    "SqueezePass",
    "describe",
]
