"""Input-resolution rewrites: :mod:`.analysis` (the trace and its verdicts) and :mod:`.rewrite`."""

from __future__ import annotations

from onnxsqueeze.passes.resolution.analysis import MODES, ResolutionVerdict, analyze_resolution, group_axes
from onnxsqueeze.passes.resolution.rewrite import (
    RewriteInfo,
    RewriteInputResolutionPass,
    parse_resolution,
    rewrite_resolution,
)

__all__ = [
    "MODES",
    "ResolutionVerdict",
    "RewriteInfo",
    "RewriteInputResolutionPass",
    "analyze_resolution",
    "group_axes",
    "parse_resolution",
    "rewrite_resolution",
]
