"""Input-resolution rewrites: :mod:`.analysis` (the verdict), on :mod:`.trace` (its state) and
:mod:`.ops` (the operators' rules), and :mod:`.rewrite`."""

from __future__ import annotations

from onnxsqueeze.passes.resolution.analysis import MODES, ResolutionVerdict, analyze_resolution
from onnxsqueeze.passes.resolution.rewrite import (
    RewriteInfo,
    RewriteInputResolutionPass,
    parse_resolution,
    rewrite_resolution,
)
from onnxsqueeze.passes.resolution.trace import group_axes

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
