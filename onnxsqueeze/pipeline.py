"""Running passes as a pipeline and recording provenance in the model's ``metadata_props``.

This is the record kept while a command runs; a written model carries only the stamp
(``onnxsqueeze``: first source and tool version) and the rest goes to its sidecar manifest
(:func:`onnxsqueeze.manifest.deployable`). Keys written (all strings, JSON where structured):

- ``onnxsqueeze.version``: the tool version that last transformed the model;
- ``onnxsqueeze.source_sha256``: sha256 of the first source model the tool ever read;
- ``onnxsqueeze.passes``: JSON list of ``{"pass", "options", "source_sha256"}``, appended to on
  every run so a model transformed in several commands keeps its whole history.

Nothing time- or machine-dependent is recorded, so the same input and options give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

from onnxsqueeze.passes.base import describe

VERSION_KEY = "onnxsqueeze.version"
SOURCE_KEY = "onnxsqueeze.source_sha256"
PASSES_KEY = "onnxsqueeze.passes"
# What a written model keeps of them (onnxsqueeze.manifest.deployable): JSON {origin_sha256, version}.
STAMP_KEY = "onnxsqueeze"


def tool_version() -> str:
    from onnxsqueeze import __version__

    return __version__


def history(model: ir.Model) -> list[dict[str, Any]]:
    """The passes recorded in a model's metadata (empty when none)."""
    raw = model.metadata_props.get(PASSES_KEY)
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def stamped_origin(model: ir.Model) -> str | None:
    """The first source's sha256 in the stamp of a model written by onnxsqueeze, or None."""
    raw = model.metadata_props.get(STAMP_KEY)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    origin = value.get("origin_sha256") if isinstance(value, dict) else None
    return origin if isinstance(origin, str) else None


def record_provenance(model: ir.Model, steps: Sequence[dict[str, Any]], source_sha256: str | None) -> None:
    """Append ``steps`` (from :func:`describe`) to the model's recorded history."""
    past = history(model)
    for step in steps:
        past.append({**step, "source_sha256": source_sha256})
    model.metadata_props[VERSION_KEY] = tool_version()
    origin = source_sha256 if SOURCE_KEY not in model.metadata_props else None
    if origin is not None:
        origin = stamped_origin(model) or origin  # a written model names its first source
    if origin:
        model.metadata_props[SOURCE_KEY] = origin
    model.metadata_props[PASSES_KEY] = json.dumps(past, sort_keys=True, separators=(",", ":"))


def type_values(model: ir.Model) -> int:
    """Give every value with a shape a type (from its constant) or drop the orphan shape.

    onnx-ir skips, with a warning per value, shapes whose type is unknown ("The value type for
    shape [8] is not known ... Skipping serialization"); folding leaves such values behind.
    Returns the number of values fixed.
    """
    fixed = 0

    def fix(v: ir.Value | None) -> None:
        nonlocal fixed
        if v is None or v.type is not None or v.shape is None:
            return
        if v.const_value is not None:
            v.type = ir.TensorType(v.const_value.dtype)
        else:
            v.shape = None
        fixed += 1

    for graph in (model.graph, *model.graph.subgraphs()):
        for v in (*graph.inputs, *graph.outputs, *graph.initializers.values()):
            fix(v)
        for node in graph:
            for v in node.outputs:
                fix(v)
    return fixed


def run_passes(
    model: ir.Model,
    passes: Sequence[ir.passes.PassBase],
    *,
    source_sha256: str | None = None,
    record: Sequence[ir.passes.PassBase] | None = None,
    trace: list[bool] | None = None,
) -> ir.passes.PassResult:
    """Run ``passes`` in order on ``model`` (in place) and record them in its metadata.

    The one way passes run: every technique (``optimize/``), recipe and the search call it, so
    the recorded history is what ran.

    Args:
        model: the model, changed in place.
        passes: the passes, in order.
        source_sha256: the source file's hash, recorded with each step.
        record: the steps to record when they differ from ``passes`` (e.g. a cleanup that ran
            earlier on the same model, recorded with the pass it prepared); default ``passes``.
        trace: when given, each pass's ``modified`` is appended to it.

    Raises:
        UnsupportedModelError: a pass's ``requires()``/``ensures()`` refused (naming the pass).

    Returns:
        The last pass's own result (richer results such as ``Fp16PassResult`` keep their
        fields), with ``modified`` true if any pass changed the model.
    """
    from onnxsqueeze.errors import UnsupportedModelError

    modified = False
    result = ir.passes.PassResult(model, False)
    for p in passes:
        try:
            result = p(result.model)
        except (ir.passes.PassError, ir.passes.InvariantError) as e:  # requires()/ensures() refused
            cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
            text = str(cause).strip()
            why = text.splitlines()[0] if text else type(cause).__name__
            raise UnsupportedModelError(f"pass '{describe(p)['pass']}': {why}") from e
        if trace is not None:
            trace.append(result.modified)
        modified = modified or result.modified
    type_values(result.model)  # else serializing prints a warning per untyped value
    record_provenance(
        result.model, [describe(p) for p in (passes if record is None else record)], source_sha256
    )
    result.modified = modified
    return result
