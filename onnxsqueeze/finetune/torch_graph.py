"""ONNX -> trainable PyTorch module (onnx2torch) and back (:func:`onnxsqueeze.convert.from_torch`).

Converter choice, by measured op coverage (benchmarks/RESULTS.md, "Fine-tuning"): onnx2torch 1.5.15
and onnx2pytorch 0.6.0 both convert the digits CNN, the paddle orientation classifier and YOLOv8n
with the same outputs; only onnx2pytorch has LSTM (the OCR model). onnx2torch is kept: it builds a
``torch.fx.GraphModule`` with one module per node, has an open converter registry (so missing ops are
filled here, :mod:`.ops`, not in a fork), and ships in the corpus.

What is trained: the parameters onnx2torch creates (Conv, ConvTranspose, Gemm weights and biases,
BatchNormalization affine terms) and float initializers that feed MatMul, Add, Sub, Mul, Div or
PRelu with more than one element (weights of MatMul heads, per-channel scales and shifts); onnx2torch
keeps those as buffers, they are made parameters here. Shape constants, Resize scales and scalars
stay fixed.

Constraints kept during training:
- masks: every weight (ndim > 1) that is exactly zero in the candidate stays exactly zero (the mask
  is applied to the gradient and again after each optimizer step);
- the graph is the candidate's: removed channels stay removed, the interface is the candidate's;
- BatchNormalization modules stay in inference mode (statistics frozen): a folded BN stays folded
  (the cleanup folded it into the conv), an unfolded one keeps its statistics.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze import shapes
from onnxsqueeze.errors import ConversionError, UnsupportedModelError

# Float initializers feeding these ops (onnx2torch module classes) are trained.
TRAINABLE_CONSUMERS = {"OnnxMatMul", "OnnxBinaryMathOperation", "OnnxPReLU"}


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """The project's cleanup (Constant weights lifted to initializers, constants and BN folded)."""
    from onnxsqueeze.passes.cleanup import CleanupPass

    return ir.to_proto(CleanupPass()(ir.from_proto(model)).model)


def missing_ops(model: onnx.ModelProto) -> list[str]:
    """The ops of ``model`` that no registered converter handles at the model's opset ("LSTM-7")."""
    from onnx2torch.node_converters.registry import get_converter

    from onnxsqueeze.finetune import ops

    ops.register()
    opsets = {o.domain or "": o.version for o in model.opset_import}
    missing: list[str] = []
    for node in model.graph.node:
        domain = node.domain or ""
        if domain == "ai.onnx":
            domain = ""
        try:
            get_converter(node.op_type, opsets.get(domain, 1), domain)
        except NotImplementedError:
            if ops.alias_newer(
                domain, node.op_type, _schema_version(node.op_type, domain, opsets.get(domain, 1))
            ):
                continue
            name = f"{domain + '.' if domain else ''}{node.op_type} (opset {opsets.get(domain, 1)})"
            if name not in missing:
                missing.append(name)
    return missing


def _schema_version(op_type: str, domain: str, opset: int) -> int:
    """The version of ``op_type``'s schema in force at ``opset`` (what onnx2torch looks up)."""
    from onnx import defs

    try:
        return int(defs.get_schema(op_type, max_inclusive_version=opset, domain=domain).since_version)
    except defs.SchemaError:  # an unknown op: onnx2torch looks it up at the opset itself
        return opset


@dataclasses.dataclass
class TorchGraph:
    """A candidate as a trainable module, with its masks and interface."""

    module: Any
    input_names: list[str]
    output_names: list[str]
    masks: dict[str, Any]  # parameter name -> bool tensor (True = trainable entry)
    trainable: list[str]  # parameter names
    ops: dict[str, int]

    def parameters(self) -> list[Any]:
        named = dict(self.module.named_parameters())
        return [named[n] for n in self.trainable]

    def apply_masks(self) -> None:
        import torch

        named = dict(self.module.named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                named[name].mul_(mask)

    def mask_gradients(self) -> None:
        named = dict(self.module.named_parameters())
        for name, mask in self.masks.items():
            grad = named[name].grad
            if grad is not None:
                grad.mul_(mask)

    def zeros(self) -> int:
        return int(sum(int((~m).sum()) for m in self.masks.values()))

    def set_mode(self) -> None:
        """Train mode for autograd, BatchNorm in inference mode (frozen statistics)."""
        from torch import nn

        self.module.train()
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def to_torch(model: onnx.ModelProto) -> TorchGraph:
    """Convert a normalized model to a trainable :class:`TorchGraph`.

    Raises:
        UnsupportedModelError: an op has no converter (the message names it), or the converter
            fails on the model.
    """
    import onnx2torch

    missing = missing_ops(model)
    if missing:
        raise UnsupportedModelError(
            f"cannot fine-tune: no PyTorch converter for op {missing[0]}"
            + (f" (and {', '.join(missing[1:])})" if missing[1:] else "")
        )
    from onnxsqueeze.finetune.ops import clear_allowzero

    try:
        module = onnx2torch.convert(clear_allowzero(model))
    except Exception as e:  # the converter's own errors carry the node; keep the first line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnsupportedModelError(f"cannot fine-tune: onnx2torch failed: {first}") from e
    _promote_initializers(module)
    trainable = [n for n, p in module.named_parameters()]
    for _, p in module.named_parameters():
        p.requires_grad_(True)
    masks = {
        n: (p.detach() != 0)
        for n, p in module.named_parameters()
        if p.ndim > 1 and bool((p.detach() == 0).any())
    }
    inputs = [vi.name for vi in shapes.graph_inputs(model)]
    outputs = [o.name for o in model.graph.output]
    ops = Counter(n.op_type for n in model.graph.node)
    return TorchGraph(module, inputs, outputs, masks, trainable, dict(ops))


def _promote_initializers(module: Any) -> None:
    """Float buffers that feed weight-like ops become parameters (module docstring)."""
    import torch
    from torch import nn

    container = getattr(module, "initializers", None)
    if container is None:
        return
    modules = dict(module.named_modules())
    for node in module.graph.nodes:
        if node.op != "get_attr" or not str(node.target).startswith("initializers."):
            continue
        name = str(node.target).split(".", 1)[1]
        buf = container._buffers.get(name)
        if buf is None or not torch.is_floating_point(buf) or buf.numel() < 2:
            continue
        users = list(node.users)
        if not users or not all(
            u.op == "call_module" and type(modules[str(u.target)]).__name__ in TRAINABLE_CONSUMERS
            for u in users
        ):
            continue
        del container._buffers[name]
        container.register_parameter(name, nn.Parameter(buf.clone()))


def to_onnx(
    graph: TorchGraph,
    candidate: onnx.ModelProto,
    data: dict[str, np.ndarray],
    *,
    tolerance: float,
) -> tuple[onnx.ModelProto, Any]:
    """Export the trained module with the candidate's interface and verify it against PyTorch.

    The exported inputs and outputs keep the candidate's names and declared types (dimension names
    included); dynamic axes are the candidate's.

    Raises:
        ConversionError: the export failed.
        VerificationError: onnxruntime's outputs differ from PyTorch's beyond ``tolerance``.
    """
    import torch

    from onnxsqueeze.convert import from_torch

    ins = {vi.name: vi for vi in shapes.graph_inputs(candidate)}
    axes: dict[str, dict[int, str]] = {}
    for name, vi in ins.items():
        for i, d in enumerate(shapes.declared_shape(vi)):
            if i > 0 and not isinstance(d, int):
                axes.setdefault(name, {})[i] = str(d) if d else f"{name}_{i}"
    example = tuple(torch.from_numpy(np.ascontiguousarray(data[n][:2])) for n in graph.input_names)
    graph.module.eval()
    result = from_torch(
        graph.module,
        example,
        input_names=graph.input_names,
        output_names=graph.output_names,
        dynamic_batch=True,
        dynamic_axes=axes or None,
        tolerance=tolerance,
        data={n: data[n] for n in graph.input_names},
        data_label="PyTorch vs onnxruntime",
        source="fine-tuned candidate",
    )
    model = result.model
    _restore_interface(model, candidate)
    restore_names(model, candidate)
    return model, result.report


def restore_names(model: onnx.ModelProto, candidate: onnx.ModelProto) -> int:
    """Give the exported nodes, their outputs and their weights the candidate's names, in place.

    onnx2torch makes one module per node, named after the node, and the exporter names what a
    module becomes ``/<module>/<Op>`` (outputs ``/<module>/<Op>_output_0``, weights
    ``<module>.weight``, buffers ``initializers.onnx_initializer_<k>``): after fine-tuning, every
    name a user (or a recipe's ``exclude`` list) knew from the candidate would be gone, and the
    longer names cost bytes (on a squeezed 18-node CNN about 0.9 KB of 5 KB). A node is renamed
    only where the match is certain: it is the one exported node of its op type in a module named
    after a candidate node of that op type, with as many outputs; an initializer only when it feeds
    that node alone, at a position where the candidate's node has an initializer. Names already
    taken, and the interface, are left as they are.

    Returns:
        The number of names restored.
    """
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in model.graph.node
        for a in n.attribute
    ):
        return 0  # a subgraph may name outer values: not renamed
    by_module: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        parts = node.name.split("/")
        if len(parts) == 3 and parts[0] == "":
            by_module.setdefault(parts[1], []).append(node)
    from onnx2torch.onnx_graph import OnnxGraph

    cand_nodes = {name: n.proto for name, n in OnnxGraph(candidate.graph).nodes.items()}  # module names
    cand_inits = {t.name for t in candidate.graph.initializer}
    inits = {t.name: t for t in model.graph.initializer}
    interface = {vi.name for vi in [*model.graph.input, *model.graph.output]}
    uses = Counter(i for n in model.graph.node for i in n.input)
    taken = {v for n in model.graph.node for v in (*n.input, *n.output)} | set(inits) | interface
    node_names = {n.name for n in model.graph.node}
    rename: dict[str, str] = {}
    restored = 0
    for module, nodes in by_module.items():
        ref = cand_nodes.get(module)
        same = [n for n in nodes if ref is not None and n.op_type == ref.op_type]
        if ref is None or len(same) != 1 or len(same[0].output) != len(ref.output):
            continue
        (node,) = same
        if ref.name and ref.name not in node_names:
            node_names.discard(node.name)
            node.name = ref.name
            node_names.add(ref.name)
            restored += 1
        pairs = list(zip(node.output, ref.output, strict=True))
        pairs += [
            (old, new)
            for old, new in zip(node.input, ref.input, strict=False)
            if old in inits and uses[old] == 1 and new in cand_inits
        ]
        for old, new in pairs:
            if old != new and old not in interface and new not in taken and old not in rename:
                rename[old] = new
                taken.add(new)
    if not rename:
        return restored
    for node in model.graph.node:
        node.input[:] = [rename.get(v, v) for v in node.input]
        node.output[:] = [rename.get(v, v) for v in node.output]
    for t in model.graph.initializer:
        t.name = rename.get(t.name, t.name)
    for vi in model.graph.value_info:
        vi.name = rename.get(vi.name, vi.name)
    return restored + len(rename)


def _restore_interface(model: onnx.ModelProto, candidate: onnx.ModelProto) -> None:
    """Give the exported inputs and outputs the candidate's declared types (names of dimensions)."""
    ref = {vi.name: vi for vi in [*candidate.graph.input, *candidate.graph.output]}
    for vi in [*model.graph.input, *model.graph.output]:
        if vi.name in ref:
            vi.type.CopyFrom(ref[vi.name].type)
    declared = [(vi.name, shapes.declared_shape(vi)) for vi in shapes.graph_inputs(model)] + [
        (vi.name, shapes.declared_shape(vi)) for vi in model.graph.output
    ]
    expected = [(vi.name, shapes.declared_shape(vi)) for vi in shapes.graph_inputs(candidate)] + [
        (vi.name, shapes.declared_shape(vi)) for vi in candidate.graph.output
    ]
    if declared != expected:
        raise ConversionError(
            f"the exported model's interface {declared} differs from the candidate's {expected}"
        )
