"""The pass contract of onnxsqueeze, on onnx-ir's pass infrastructure.

A squeeze pass is an ``onnx_ir`` in-place pass declared as a frozen dataclass: its fields are its
keyword-only options, which makes it immutable and lets provenance record exactly what ran.

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class FoldBatchNormPass(SqueezePass):
        name: ClassVar[str] = "fold-bn"

Passes compose with ``ir.passes.Sequential`` / ``ir.passes.PassManager`` like any onnx-ir pass.
"""

# NOTE: this module imports nothing from cli/, bench/ or search.

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import onnx_ir as ir


class SqueezePass(ir.passes.InPlacePass):
    """Base class: a named, immutable in-place pass whose dataclass fields are its options."""

    name: ClassVar[str] = ""

    def options(self) -> dict[str, Any]:
        """The pass's options as plain JSON-able values (for provenance and recipes)."""
        if not dataclasses.is_dataclass(self):
            return {}
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, frozenset):  # sorted: provenance bytes must not depend on hashing
                value = sorted(value)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


def describe(p: ir.passes.PassBase) -> dict[str, Any]:
    """``{"pass": name, "options": {...}}`` for any pass, ours or onnx-ir's."""
    if isinstance(p, SqueezePass):
        return {"pass": p.name or type(p).__name__, "options": p.options()}
    if isinstance(p, ir.passes.Sequential):
        return {"pass": type(p).__name__, "steps": [describe(s) for s in p.passes]}
    return {"pass": type(p).__name__, "options": {}}
