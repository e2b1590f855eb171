"""What every converter returns, and the finishing steps they share: cleanup, check, verify.

A converter hands over the raw exported model, the inputs it verified on and the framework's
outputs on them; :func:`finish` tidies the model with :class:`~onnxsqueeze.passes.CleanupPass`,
checks it with ``onnx.checker``, runs it in onnxruntime (optimizations off) on the same inputs and
compares with :func:`onnxsqueeze.verify.compare`.

# NOTE: this module imports no framework; torch and tensorflow stay in their own modules.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze import io as sio
from onnxsqueeze.errors import VerificationError
from onnxsqueeze.verify import VerifyReport, compare, run

BATCH = "batch"


@dataclasses.dataclass(frozen=True)
class ConversionResult:
    """A converted model and the evidence that it computes what the framework model computes.

    Attributes:
        model: the cleaned ONNX model.
        report: the comparison of its onnxruntime outputs with the framework's, same inputs.
        exporter: ``"torch.onnx (dynamo)"``, ``"torch.onnx (torchscript)"`` or ``"tf2onnx"``.
        source: what was converted (a class name or a file).
        tolerance: the max absolute error allowed.
        warnings: what the user should know (a fallback taken, a batch axis left static...).
        exported_nodes: the node count the exporter produced, before cleanup.
    """

    model: onnx.ModelProto
    report: VerifyReport
    exporter: str
    source: str
    tolerance: float
    warnings: tuple[str, ...] = ()
    exported_nodes: int = 0

    @property
    def max_abs(self) -> float:
        return self.report.max_abs

    @property
    def passed(self) -> bool:
        return self.report.within(self.tolerance)

    @property
    def opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "exporter": self.exporter,
            "opset": self.opset,
            "inputs": _io_dict(self.model.graph.input, self.model),
            "outputs": _io_dict(self.model.graph.output, self.model),
            "nodes": len(self.model.graph.node),
            "exported_nodes": self.exported_nodes,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "max_abs": self.max_abs,
            "warnings": list(self.warnings),
            "verify": self.report.to_dict(),
        }


def _io_dict(values: Sequence[onnx.ValueInfoProto], model: onnx.ModelProto) -> list[dict[str, Any]]:
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in values:
        if vi.name in inits:
            continue
        dims = [
            d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in vi.type.tensor_type.shape.dim
        ]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
        out.append({"name": vi.name, "dtype": dtype, "shape": dims})
    return out


def rename_dim(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename a symbolic dimension everywhere in the main graph's value infos (in place)."""
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param == old:
                d.dim_param = new


def batch_symbols(model: onnx.ModelProto) -> set[str]:
    """The symbols on axis 0 of the model's inputs."""
    out = set()
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            out.add(dims[0].dim_param)
    return out


def name_batch_axis(model: onnx.ModelProto) -> None:
    """Call the exporter's symbol for the batch axis (``s0``, ``s31``...) ``batch``."""
    for sym in batch_symbols(model):
        if sym != BATCH:
            rename_dim(model, sym, BATCH)


def static_batch_inputs(model: onnx.ModelProto) -> list[str]:
    """Inputs whose axis 0 is static (the exporter specialized a requested dynamic batch)."""
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in inits and dims and not dims[0].HasField("dim_param"):
            out.append(vi.name)
    return out


def cleanup(model: onnx.ModelProto, *, source_sha256: str | None = None) -> onnx.ModelProto:
    """Run the foundation's CleanupPass (recorded in the model's provenance) and check the result.

    The shapes of intermediate values (``graph.value_info``) the exporter wrote are dropped: they
    are redundant (shape inference recomputes them) and onnxruntime ran models slower with them.
    Measured on the dynamo export (benchmarks/RESULTS.md, 'Distillation export'): the tiny
    transformer student 12.9 -> 10.8 ms, all-MiniLM-L6-v2 50.2 -> 46.1 ms (CPU, 1 thread); CNNs
    unchanged. Inputs and outputs keep their declared types and shapes.

    The exporter's per-node metadata (torch's stack traces, module hierarchy and scopes) is dropped
    too: it holds absolute source paths of the machine that converted the model, and on a small
    model it was larger than the weights (a 3.9k-parameter CNN student: 12.6 KB of node metadata
    next to 15.6 KB of weights); so are its graph- and value-level ``pkg.torch.*`` entries.
    """
    from onnxsqueeze.passes import CleanupPass
    from onnxsqueeze.pipeline import run_passes

    irm = ir.serde.deserialize_model(model)
    folder_log = logging.getLogger("onnxscript")
    level = folder_log.level
    folder_log.setLevel(logging.ERROR)  # the folder logs each node it cannot fold, and skips it
    try:
        run_passes(irm, [CleanupPass()], source_sha256=source_sha256)
    finally:
        folder_log.setLevel(level)
    out = ir.serde.serialize_model(irm)
    del out.graph.value_info[:]
    for node in out.graph.node:
        del node.metadata_props[:]
    # The same exporter's graph- and value-level records (torch.export's graph signature lists
    # every parameter: 1.6 KB of a 9.8 KB squeezed CNN student) go with them.
    for holder in (out.graph, *out.graph.input, *out.graph.output):
        kept = [p for p in holder.metadata_props if not p.key.startswith("pkg.torch.")]
        del holder.metadata_props[:]
        holder.metadata_props.extend(kept)
    sio.check_model(out)
    return out


def finish(
    model: onnx.ModelProto,
    *,
    feeds: Mapping[str, np.ndarray],
    reference: Sequence[np.ndarray],
    exporter: str,
    source: str,
    tolerance: float,
    warnings: Sequence[str] = (),
    data_label: str = "random (seed 0)",
    strict: bool = True,
    source_sha256: str | None = None,
) -> ConversionResult:
    """Clean, check and verify a converted model against the framework's outputs.

    Args:
        model: the exported model.
        feeds: the inputs the framework ran on, by ONNX input name.
        reference: the framework's outputs, in the order of the ONNX outputs.
        strict: raise VerificationError beyond ``tolerance`` (otherwise the caller decides).

    Raises:
        VerificationError: the outputs differ in count or shape, or (strict) beyond tolerance.
    """
    exported_nodes = len(model.graph.node)
    model = cleanup(model, source_sha256=source_sha256)
    candidate = run(model, feeds)
    names = [o.name for o in model.graph.output]
    if len(reference) != len(names):
        raise VerificationError(
            f"the ONNX model has {len(names)} outputs {names}, the framework model {len(reference)}"
        )
    ref = dict(zip(names, (np.asarray(r) for r in reference), strict=True))
    report = compare(ref, candidate, feeds=feeds, source=data_label)
    result = ConversionResult(model, report, exporter, source, tolerance, tuple(warnings), exported_nodes)
    if strict and not result.passed:
        raise VerificationError(failure_message(result))
    return result


def failure_message(result: ConversionResult) -> str:
    worst = max(result.report.outputs, key=lambda o: o.max_abs)
    extra = f", {worst.nonfinite} NaN/Inf" if worst.nonfinite else ""
    return (
        f"{result.source}: the ONNX model ({result.exporter}) differs from the framework model: "
        f"output '{worst.name}' max abs error {worst.max_abs:.3g} exceeds tolerance "
        f"{result.tolerance:g}{extra}"
    )
