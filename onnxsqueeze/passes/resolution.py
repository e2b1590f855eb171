"""Input-resolution rewrites and output downsampling.

A network whose spatial path is fully convolutional, or that pools globally (GlobalAveragePool,
ReduceMean over H and W) before its classifier, computes the same kind of function at any input
size; running it at ``h x w`` instead of ``H x W`` costs about ``(h * w) / (H * W)`` of the MACs of
every convolution. This module decides whether that is possible, rewrites the graph, and measures
what it costs in accuracy.

**Analysis** (:func:`analyze_resolution`) traces, for every value, which of its axes follow the
input's H and W (an axis may follow both, after a Flatten or a Reshape merges them). It refuses,
naming the node, when:

- a Gemm or MatMul contracts a constant weight over an axis that follows H or W (Flatten -> Gemm:
  the classifier is tied to one feature-map size);
- a constant with an extent along H or W meets the spatial path (a position embedding, a fixed
  mask); constants that are uniform along those axes (initializers, ConstantOfShape) are harmless:
  they are shrunk to extent 1 (broadcast) or, when concatenated, regrown to the new size;
- a Resize resizes to sizes that are not an integer multiple or fraction of its input (a fixed-size
  Resize pins the resolution), a Gather or Split picks fixed positions along H or W, a Slice takes
  a window that does not scale, a Reshape regroups spatial axes in a way that cannot be rescaled;
- an operator it does not know touches the spatial path (it never guesses).

**Rewrite** (:class:`RewriteInputResolutionPass`): the input gets the new H and W; shape constants
derived from the old size are recomputed from the new shapes, in graph order, re-running shape
inference after each (Reshape targets ``prod(new dims)`` per merged group, Resize sizes
``new_in * (old_out / old_in)``, Expand targets, Slice ends ``e * (h / H)``, ConstantOfShape
shapes, uniform constants; these may be literals or the literal parts of a Concat next to run-time
Shape pieces, as static exports of ``interpolate(size=skip.shape[-2:])`` are); a pool whose kernel
covers the whole feature map (``AvgPool2d(7)``) becomes the global pool it is;
the result is checked with ``onnx.checker`` and run once in onnxruntime.

**Keep the interface** (``keep_interface=True``): callers keep sending ``H x W``; a Resize after the
input brings it to ``h x w`` and, for image-to-image outputs (axes that follow the input's H and W:
segmentation maps, heat maps, depth), a Resize before the output brings the map back to its
original size (output downsampling). With a dynamic input the interface Resize scales by a factor
(``scale``) and the output follows the caller's size.

**Sweep** (:func:`sweep_resolutions`): per resolution, MACs, CPU latency and accuracy (labels) or
agreement with the full-resolution model (top-1 agreement for class scores, IoU of thresholded or
argmax maps and mean abs error for image-to-image outputs).
"""

# NOTE: this module imports nothing from cli/, bench/ or search; onnxruntime is imported lazily.

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from onnxsqueeze import shapes as sshapes
from onnxsqueeze.errors import InputError, UnsupportedModelError
from onnxsqueeze.passes.base import SqueezePass

MODES = ("linear", "nearest", "cubic")
INT64_MAX = 2**63 - 1

Kinds = tuple[frozenset[str], ...]
_NONE: frozenset[str] = frozenset()
_H: frozenset[str] = frozenset({"H"})
_W: frozenset[str] = frozenset({"W"})

# fmt: off
# Ops that keep their first input's shape (extra inputs are per-channel parameters or scalars).
_SHAPE_PRESERVING = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Clip", "Elu", "Selu", "Celu",
    "Gelu", "Erf", "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Round", "Sign",
    "Softplus", "Softsign", "Mish", "Cast", "Identity", "Dropout", "BatchNormalization",
    "InstanceNormalization", "GroupNormalization", "LRN", "Not", "IsNaN", "IsInf", "Sin", "Cos",
    "QuantizeLinear", "DequantizeLinear", "ThresholdedRelu", "Shrink", "Softmax", "LogSoftmax", "Hardmax",
    "MeanVarianceNormalization", "CumSum",
})
# Elementwise with multidirectional (numpy) broadcasting over all inputs.
_BROADCAST = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Where", "PRelu", "Mod", "BitwiseAnd",
    "BitwiseOr", "BitwiseXor",
})
# N, C, spatial...: output spatial axes follow the input's.
_SPATIAL = frozenset({
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "DepthToSpace", "SpaceToDepth", "Pad",
})
# Pool over all spatial axes: after them nothing depends on the resolution.
_GLOBAL_POOL = frozenset({
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
})
# Reductions (their axes decide whether they pool over H and W).
_REDUCE = frozenset({
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
})
# fmt: on
# Ops whose output is computed from the input's *shape* at run time (adapts to any size).
_SHAPE_OF = frozenset({"Shape", "Size"})


class _Refused(Exception):
    def __init__(self, node: onnx.NodeProto, reason: str) -> None:
        super().__init__(reason)
        self.node = node
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ResolutionVerdict:
    """Whether a model can run at another input resolution, and if not, which node stops it.

    Attributes:
        ok: the model can change resolution.
        input: the image input analysed.
        layout: ``NCHW`` or ``NHWC`` (the axes taken as H and W).
        size: the declared ``(H, W)``; ``None`` entries are dynamic.
        node: the blocking node's name (``op_type#index`` when unnamed), when refused.
        op_type: the blocking node's operator.
        reason: why it blocks (or a one-line summary when accepted).
        global_pools: nodes that pool over H and W (after them nothing depends on resolution).
        outputs: per output, ``fixed`` (independent of resolution), ``map`` (its H and W follow
            the input: image-to-image) or ``varies`` (its size changes with resolution otherwise).
        rewrites: nodes whose size-derived constants a rewrite recomputes.
    """

    ok: bool
    input: str
    layout: str
    size: tuple[int | None, int | None]
    node: str | None = None
    op_type: str | None = None
    reason: str = ""
    global_pools: tuple[str, ...] = ()
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    rewrites: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """One line for users."""
        if self.ok:
            return f"input '{self.input}' can change resolution: {self.reason}"
        return f"input '{self.input}' cannot change resolution: {self.op_type} '{self.node}' {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["size"] = list(self.size)
        out["message"] = self.message
        return out


@dataclasses.dataclass(frozen=True)
class _Action:
    """A planned constant rewrite: ``kind`` on input ``index`` of ``node`` (by name)."""

    kind: str  # reshape | resize | expand | slice | shrink | regrow | fill-shrink | fill-regrow | globalpool
    node: str
    index: int
    axes: tuple[int, ...] = ()


@dataclasses.dataclass
class _Trace:
    """The analysis state of one model (a named copy: every node has a unique name)."""

    model: onnx.ModelProto
    input: str
    layout: str
    old: dict[str, tuple[int | None, ...]]
    kinds: dict[str, Kinds] = dataclasses.field(default_factory=dict)
    literals: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    const: set[str] = dataclasses.field(default_factory=set)
    dynamic: set[str] = dataclasses.field(default_factory=set)  # shapes/values computed at run time
    producer: dict[str, onnx.NodeProto] = dataclasses.field(default_factory=dict)
    plan: list[_Action] = dataclasses.field(default_factory=list)
    pools: list[str] = dataclasses.field(default_factory=list)

    def k(self, name: str) -> Kinds:
        if not name:
            return ()
        if name in self.kinds:
            return self.kinds[name]
        rank = len(self.old.get(name, ()))
        return (_NONE,) * rank

    def spatial(self, name: str) -> bool:
        return any(self.k(name))

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        return self.old.get(name)


# --------------------------------------------------------------------------------------------
# helpers


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _label(node: onnx.NodeProto) -> str:
    return node.name


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node of the main graph a unique name (messages and plans refer to nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op_type}#{i}"
            name, k = base, 0
            while name in seen:
                k += 1
                name = f"{base}_{k}"
            node.name = name
        seen.add(node.name)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _detect_layout(dims: Sequence[int | str | None]) -> str:
    """NCHW unless the last axis looks like channels (1, 3 or 4) and axis 1 does not."""
    if len(dims) == 4 and dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4):
        return "NHWC"
    return "NCHW"


def _hw_axes(layout: str, rank: int) -> tuple[int, int]:
    return (1, 2) if layout == "NHWC" else (rank - 2, rank - 1)


def _image_input(model: onnx.ModelProto, name: str | None) -> onnx.ValueInfoProto:
    inputs = sshapes.graph_inputs(model)
    if name is not None:
        for vi in inputs:
            if vi.name == name:
                break
        else:
            raise InputError(f"--input '{name}': the model's inputs are {[v.name for v in inputs]}")
    else:
        images = [vi for vi in inputs if len(sshapes.declared_shape(vi)) >= 3]
        if len(images) != 1:
            raise InputError(
                f"the model has {len(images)} inputs of rank >= 3 ({[v.name for v in images]}); "
                "name the image input with --input"
            )
        vi = images[0]
    if len(sshapes.declared_shape(vi)) < 3:
        raise InputError(f"input '{vi.name}' has rank {len(sshapes.declared_shape(vi))}: not an image")
    return vi


def _literals(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_int", "value_ints"):
                    values[node.output[0]] = np.asarray(helper.get_attribute_value(a), dtype=np.int64)
                elif a.name in ("value_float", "value_floats"):
                    values[node.output[0]] = np.asarray(helper.get_attribute_value(a), dtype=np.float32)
    return values


def _infer(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    work = onnx.ModelProto()
    work.CopyFrom(model)
    del work.graph.value_info[:]
    with contextlib.suppress(Exception):  # best effort: missing shapes make dependent checks refuse
        work = onnx.shape_inference.infer_shapes(work, data_prop=True)
    return sshapes.value_shapes(work)


def group_axes(a: Sequence[int], b: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Match the axes of a reshape ``a -> b`` into groups of equal products (None if impossible)."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        ia: list[int] = []
        jb: list[int] = []
        pa = pb = 1
        if i < len(a):
            ia.append(i)
            pa *= a[i]
            i += 1
        if j < len(b):
            jb.append(j)
            pb *= b[j]
            j += 1
        while pa != pb:
            if pa < pb and i < len(a):
                ia.append(i)
                pa *= a[i]
                i += 1
            elif pb < pa and j < len(b):
                jb.append(j)
                pb *= b[j]
                j += 1
            else:
                return None
        groups.append((ia, jb))
    return groups


def _static(s: tuple[int | None, ...] | None) -> tuple[int, ...] | None:
    if s is None or any(d is None for d in s):
        return None
    return tuple(int(d) for d in s)  # type: ignore[arg-type]


def _fmt_kind(kind: frozenset[str]) -> str:
    return "*".join(sorted(kind)) or "-"


# A run-time entry of a shape vector (computed from Shape at run time, so it adapts by itself).
_RUNTIME = -(2**62)


def _vector(
    literals: Mapping[str, np.ndarray],
    dynamic: set[str] | None,
    old: Mapping[str, tuple[int | None, ...]],
    producer: Mapping[str, onnx.NodeProto],
    name: str,
) -> tuple[np.ndarray, list[tuple[int | None, int, int]]] | None:
    """A shape vector (Reshape target, Resize sizes) as values with ``_RUNTIME`` for run-time parts.

    Handles a literal, or a Concat of literals and run-time pieces (what exporters emit for
    ``x.view(n, c, h * w)`` or ``interpolate(size=...)`` at a static size). Returns the values and
    the pieces ``(concat input index or None for a whole literal, offset, length)``; None when the
    vector is neither.
    """
    if name in literals:
        value = literals[name].reshape(-1).astype(np.int64)
        return value, [(None, 0, value.size)]
    node = producer.get(name)
    if node is None or node.op_type != "Concat":
        return None
    values: list[np.ndarray] = []
    pieces: list[tuple[int | None, int, int]] = []
    offset = 0
    for k, i in enumerate(node.input):
        if i in literals:
            v = literals[i].reshape(-1).astype(np.int64)
            pieces.append((k, offset, v.size))
        elif dynamic is None or i in dynamic:
            shape = old.get(i)
            if shape is None or len(shape) != 1 or shape[0] is None:
                return None
            v = np.full(int(shape[0]), _RUNTIME, np.int64)
        else:
            return None
        values.append(v)
        offset += v.size
    return np.concatenate(values) if values else np.zeros(0, np.int64), pieces


# --------------------------------------------------------------------------------------------
# analysis


def _analyze(
    model: onnx.ModelProto, input_name: str | None, probe: tuple[int, int] | None
) -> tuple[ResolutionVerdict, _Trace]:
    vi = _image_input(model, input_name)
    declared = sshapes.declared_shape(vi)
    layout = _detect_layout(declared)
    ha, wa = _hw_axes(layout, len(declared))
    dh, dw = declared[ha], declared[wa]
    size = (dh if isinstance(dh, int) else None, dw if isinstance(dw, int) else None)
    bound = [d if isinstance(d, int) else 1 for d in declared]
    if size[0] is None or size[1] is None:
        ph, pw = probe or (224, 224)
        bound[ha] = size[0] or ph
        bound[wa] = size[1] or pw
    shapes_in = {vi.name: tuple(bound)}
    try:
        others = sshapes.resolve_input_shapes(model, {vi.name: bound})
    except InputError as e:
        raise InputError(f"{e} (needed to trace shapes at the current resolution)") from e
    shapes_in.update(others)
    old = sshapes.value_shapes(sshapes.with_static_inputs(model, shapes_in))
    trace = _Trace(model=model, input=vi.name, layout=layout, old=old)
    trace.literals = _literals(model)
    trace.const = set(trace.literals)
    trace.kinds[vi.name] = tuple(_H if a == ha else _W if a == wa else _NONE for a in range(len(declared)))
    for node in model.graph.node:
        for o in node.output:
            trace.producer[o] = node
    try:
        for node in model.graph.node:
            _propagate(trace, node)
        outputs = {o.name: _classify_output(trace, o.name) for o in model.graph.output}
    except _Refused as r:
        return (
            ResolutionVerdict(
                ok=False,
                input=vi.name,
                layout=layout,
                size=size,
                node=_label(r.node),
                op_type=r.node.op_type,
                reason=r.reason,
            ),
            trace,
        )
    maps = [k for k, v in outputs.items() if v == "map"]
    if trace.pools:
        # the last pool is the one before the head; earlier ones are squeeze-excitation and the like
        summary = f"spatial path pooled globally by {trace.pools[-1]}"
        if len(trace.pools) > 1:
            summary += f" (and {len(trace.pools) - 1} earlier global pool(s), e.g. squeeze-excitation)"
    elif maps:
        summary = "fully convolutional (image-to-image)"
    else:
        summary = "fully convolutional"
    if trace.plan:
        summary += f"; {len(trace.plan)} size-derived constant(s) to rewrite"
    verdict = ResolutionVerdict(
        ok=True,
        input=vi.name,
        layout=layout,
        size=size,
        reason=summary,
        global_pools=tuple(trace.pools),
        outputs=outputs,
        rewrites=tuple(dict.fromkeys(a.node for a in trace.plan)),
    )
    return verdict, trace


def _classify_output(trace: _Trace, name: str) -> str:
    kinds = list(trace.k(name))
    if not any(kinds):
        return "fixed"
    if kinds.count(_H) == 1 and kinds.count(_W) == 1 and all(k in (_NONE, _H, _W) for k in kinds):
        return "map"
    return "varies"


def analyze_resolution(
    model: onnx.ModelProto | ir.Model,
    *,
    input_name: str | None = None,
    probe: tuple[int, int] | None = None,
) -> ResolutionVerdict:
    """Decide whether ``model`` can run at another input resolution.

    Args:
        model: the model (protobuf or onnx_ir); not modified.
        input_name: the image input (default: the only input of rank >= 3).
        probe: the ``(H, W)`` at which to trace shapes when the input's H and W are dynamic
            (default 224x224).

    Returns:
        The verdict; when refused, ``node`` and ``reason`` say what blocks and why.

    Raises:
        InputError: no image input, or ``input_name`` is not an input.
    """
    proto = _copy(model)
    _name_nodes(proto)
    verdict, _ = _analyze(proto, input_name, probe)
    return verdict


def _copy(model: onnx.ModelProto | ir.Model) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model if isinstance(model, onnx.ModelProto) else ir.serde.serialize_model(model))
    return out


def _propagate(t: _Trace, node: onnx.NodeProto) -> None:
    op = node.op_type
    ins = list(node.input)
    if node.domain not in ("", "ai.onnx"):
        if any(t.spatial(i) for i in ins if i):
            raise _Refused(node, f"(domain '{node.domain}') is not an operator onnxsqueeze can trace")
        return
    present = [i for i in ins if i]
    if op == "Constant" or (
        present and all(i in t.const for i in present) and op not in ("RandomNormalLike",)
    ):
        for o in node.output:
            t.const.add(o)
        return
    if op in _SHAPE_OF:
        t.dynamic.update(node.output)
        return
    if not any(t.spatial(i) for i in present):
        # values computed from run-time shapes stay "dynamic"; fixed-size tensors are checked
        # where they meet the spatial path
        if any(i in t.dynamic for i in present):
            t.dynamic.update(node.output)
        return
    if op in ("If", "Loop", "Scan"):
        raise _Refused(node, "is control flow on the spatial path; onnxsqueeze does not trace into subgraphs")
    x = ins[0]
    kx = t.k(x)
    out = node.output[0]
    if op in _SHAPE_PRESERVING:
        t.kinds[out] = kx
        if op == "Softmax" and _opset(t.model) < 13:
            axis = _attr(node, "axis", 1) % max(len(kx), 1)
            if any(kx[axis:]):
                raise _Refused(node, "(opset < 13) flattens the H and W axes into its softmax")
    elif op in _BROADCAST:
        t.kinds[out] = _broadcast(t, node, [i for i in ins if i])
    elif op in _SPATIAL:
        if op == "ConvTranspose" and _attr(node, "output_shape"):
            raise _Refused(node, "has a fixed output_shape attribute; it pins the spatial size")
        if op in ("AveragePool", "MaxPool") and _is_whole_map_pool(t, node):
            # a global pool written with a fixed kernel (AvgPool2d(7) before a classifier)
            t.plan.append(_Action("globalpool", _label(node), 0))
            t.kinds[out] = kx[:2] + (_NONE,) * (len(kx) - 2)
            t.pools.append(_label(node))
        else:
            t.kinds[out] = kx
    elif op in _GLOBAL_POOL:
        t.kinds[out] = kx[:2] + (_NONE,) * (len(kx) - 2)
        t.pools.append(_label(node))
    elif op in _REDUCE or op in ("ArgMax", "ArgMin"):
        _reduce(t, node, kx)
    elif op == "Flatten":
        axis = _attr(node, "axis", 1) % (len(kx) or 1) if kx else 1
        t.kinds[out] = (frozenset().union(*kx[:axis]), frozenset().union(*kx[axis:]))
    elif op == "Transpose":
        perm = _attr(node, "perm") or list(range(len(kx)))[::-1]
        t.kinds[out] = tuple(kx[p] for p in perm)
    elif op in ("Squeeze", "Unsqueeze"):
        _squeeze(t, node, kx)
    elif op == "Concat":
        _concat(t, node)
    elif op == "Split":
        axis = _attr(node, "axis", 0) % len(kx)
        if kx[axis]:
            raise _Refused(node, f"splits axis {axis} ({_fmt_kind(kx[axis])}) into fixed parts")
        for o in node.output:
            t.kinds[o] = kx
    elif op in ("Gemm", "MatMul"):
        _matmul(t, node)
    elif op == "Reshape":
        _reshape(t, node)
    elif op in ("Resize", "Upsample"):
        _resize(t, node)
    elif op == "Expand":
        _expand(t, node)
    elif op == "Slice":
        _slice(t, node)
    elif op == "Gather":
        axis = _attr(node, "axis", 0) % len(kx)
        if kx[axis]:
            raise _Refused(node, f"picks fixed positions along axis {axis} ({_fmt_kind(kx[axis])})")
        ki = t.k(ins[1])
        t.kinds[out] = kx[:axis] + ki + kx[axis + 1 :]
    elif op == "Tile":
        t.kinds[out] = kx
    elif op == "ConstantOfShape":
        t.dynamic.add(out)
    else:
        raise _Refused(node, "is on the spatial path and is not an operator onnxsqueeze can trace")
    for o in node.output[1:]:
        if o and o not in t.kinds and op in _SHAPE_PRESERVING:
            t.kinds[o] = t.kinds[out]


def _is_whole_map_pool(t: _Trace, node: onnx.NodeProto) -> bool:
    """A pool whose kernel covers the whole (unpadded) feature map: a global pool in disguise."""
    xo, yo = _static(t.old.get(node.input[0])), _static(t.old.get(node.output[0]))
    kernel = _attr(node, "kernel_shape")
    if xo is None or yo is None or not kernel or len(node.output) > 1:
        return False
    pads = _attr(node, "pads") or []
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if any(pads) or auto not in ("NOTSET", "VALID") or _attr(node, "dilations"):
        return False
    return list(xo[2:]) == list(kernel) and all(d == 1 for d in yo[2:])


def _fill(t: _Trace, name: str) -> onnx.NodeProto | None:
    """The ConstantOfShape producing ``name`` from a literal shape (a uniform tensor), if any."""
    src = t.producer.get(name)
    if src is not None and src.op_type == "ConstantOfShape" and src.input and src.input[0] in t.literals:
        return src
    return None


def _broadcast(t: _Trace, node: onnx.NodeProto, inputs: list[str]) -> Kinds:
    rank = max(len(t.old.get(i, ())) or len(t.k(i)) for i in inputs)
    kinds: list[frozenset[str]] = [_NONE] * rank
    for i in inputs:
        for a, k in enumerate(t.k(i)):
            kinds[rank - len(t.k(i)) + a] = kinds[rank - len(t.k(i)) + a] | k
    spatial_axes = [a for a in range(rank) if kinds[a]]
    for idx, i in enumerate(node.input):
        if not i or t.spatial(i):
            continue
        shape = t.old.get(i)
        if shape is None:
            if i in t.dynamic:
                continue
            raise _Refused(node, f"mixes the spatial path with '{i}', whose shape is unknown")
        pinned = tuple(
            a
            for a in spatial_axes
            if a - (rank - len(shape)) >= 0 and shape[a - (rank - len(shape))] not in (1,)
        )
        if not pinned:
            continue
        if i in t.dynamic:
            continue  # its size is computed from run-time shapes
        axes_local = tuple(a - (rank - len(shape)) for a in pinned)
        fill = _fill(t, i)
        if fill is not None:  # uniform: broadcasting from extent 1 is exact at every size
            t.plan.append(_Action("fill-shrink", _label(fill), 0, axes_local))
            continue
        if i in t.literals:
            value = t.literals[i]
            uniform = all(
                np.array_equal(value, np.broadcast_to(np.take(value, [0], axis=ax), value.shape))
                for ax in axes_local
            )
            if uniform:
                t.plan.append(_Action("shrink", _label(node), idx, axes_local))
                continue
            raise _Refused(
                node,
                f"combines the spatial path with constant '{i}' {list(shape)}, which has a fixed extent "
                "along the input's H/W axes (a position embedding or size-specific mask): it pins the "
                "resolution",
            )
        src = t.producer.get(i)
        origin = f"{src.op_type} '{_label(src)}'" if src is not None else f"'{i}'"
        raise _Refused(
            node,
            f"mixes the spatial path with {origin}, whose output {list(shape)} has a fixed size "
            "along the input's H/W axes: it pins the resolution",
        )
    return tuple(kinds)


def _reduce(t: _Trace, node: onnx.NodeProto, kx: Kinds) -> None:
    rank = len(kx)
    keep = _attr(node, "keepdims", 1)
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [_attr(node, "axis", 0)]
    else:
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            if node.input[1] not in t.literals:
                raise _Refused(node, "reduces over axes computed at run time")
            axes = [int(a) for a in t.literals[node.input[1]].reshape(-1)]
        if not axes:
            axes = [] if _attr(node, "noop_with_empty_axes", 0) else list(range(rank))
    axes = sorted({int(a) % rank for a in axes})
    removed = [kx[a] for a in axes]
    if keep:
        t.kinds[node.output[0]] = tuple(_NONE if a in axes else k for a, k in enumerate(kx))
    else:
        t.kinds[node.output[0]] = tuple(k for a, k in enumerate(kx) if a not in axes)
    if any(removed) and node.op_type not in ("ArgMax", "ArgMin"):
        t.pools.append(_label(node))


def _squeeze(t: _Trace, node: onnx.NodeProto, kx: Kinds) -> None:
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        if node.input[1] not in t.literals:
            raise _Refused(node, "squeezes axes computed at run time")
        axes = [int(a) for a in t.literals[node.input[1]].reshape(-1)]
    out = node.output[0]
    if node.op_type == "Squeeze":
        shape = t.old.get(node.input[0]) or ()
        if axes is None:
            axes = [a for a, d in enumerate(shape) if d == 1]
        axes = {int(a) % len(kx) for a in axes}
        if any(kx[a] for a in axes):
            raise _Refused(node, "squeezes an axis that follows the input's H/W (size 1 only at this size)")
        t.kinds[out] = tuple(k for a, k in enumerate(kx) if a not in axes)
    else:
        rank = len(kx) + len(axes or [])
        axes = {int(a) % rank for a in axes or []}
        it = iter(kx)
        t.kinds[out] = tuple(_NONE if a in axes else next(it) for a in range(rank))


def _concat(t: _Trace, node: onnx.NodeProto) -> None:
    ins = [i for i in node.input if i]
    rank = max(len(t.k(i)) for i in ins)
    axis = _attr(node, "axis", 0) % rank
    kinds: list[frozenset[str]] = [_NONE] * rank
    for i in ins:
        for a, k in enumerate(t.k(i)):
            kinds[a] = kinds[a] | k
    for idx, i in enumerate(node.input):
        if not i or t.spatial(i) or i in t.dynamic:
            continue
        shape = t.old.get(i)
        pinned = tuple(a for a in range(rank) if a != axis and kinds[a])
        if not pinned:
            continue
        if _fill(t, i) is not None:  # uniform: regrown to the partner's new size
            t.plan.append(_Action("fill-regrow", _label(node), idx, pinned))
            continue
        if i in t.literals and shape is not None:
            value = t.literals[i]
            uniform = all(
                np.array_equal(value, np.broadcast_to(np.take(value, [0], axis=a), value.shape))
                for a in pinned
            )
            if uniform:
                t.plan.append(_Action("regrow", _label(node), idx, pinned))
                continue
        src = t.producer.get(i)
        what = f"constant '{i}'" if i in t.const else f"{src.op_type} '{_label(src)}'" if src else f"'{i}'"
        raise _Refused(
            node,
            f"concatenates {what} {list(shape or ())}, which has a fixed size along the input's "
            "H/W axes: it pins the resolution",
        )
    t.kinds[node.output[0]] = tuple(kinds)


def _matmul(t: _Trace, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    ka, kb = t.k(a), t.k(b)
    if node.op_type == "Gemm":
        ta, tb = _attr(node, "transA", 0), _attr(node, "transB", 0)
        k_axis_a, m_axis = (0, 1) if ta else (1, 0)
        k_axis_b, n_axis = (1, 0) if tb else (0, 1)
        contract = [(a, ka[k_axis_a] if ka else _NONE, b), (b, kb[k_axis_b] if kb else _NONE, a)]
        out_kinds: Kinds = ((ka[m_axis] if ka else _NONE), (kb[n_axis] if kb else _NONE))
    else:
        if len(ka) < 2 or len(kb) < 2:
            raise _Refused(node, "is a vector product on the spatial path")
        contract = [(a, ka[-1], b), (b, kb[-2], a)]
        batch_rank = max(len(ka), len(kb)) - 2
        batch: list[frozenset[str]] = [_NONE] * batch_rank
        for kk in (ka, kb):
            for i, k in enumerate(kk[:-2]):
                batch[batch_rank - (len(kk) - 2) + i] |= k
        out_kinds = (*batch, ka[-2], kb[-1])
    for spatial_side, kind, other in contract:
        if kind and other in t.const:
            src = t.producer.get(spatial_side)
            via = f" from {src.op_type} '{_label(src)}'" if src is not None else ""
            wshape = t.old.get(other)
            shape = t.old.get(spatial_side)
            raise _Refused(
                node,
                f"contracts its weight '{other}' {list(wshape or ())} over an axis that follows the "
                f"input's {_fmt_kind(kind)} (input {list(shape or ())}{via}): the layer is tied to this "
                "feature-map size; a global pooling before it would free it",
            )
    t.kinds[node.output[0]] = out_kinds


def _reshape(t: _Trace, node: onnx.NodeProto) -> None:
    x, target = node.input[0], node.input[1]
    kx = t.k(x)
    xo, oo = _static(t.old.get(x)), _static(t.old.get(node.output[0]))
    if xo is None or oo is None:
        raise _Refused(node, "reshapes the spatial path but its shapes cannot be inferred")
    groups = group_axes(xo, oo)
    if groups is None:
        raise _Refused(node, f"reshapes {list(xo)} to {list(oo)} in a way that cannot be traced")
    kinds: list[frozenset[str]] = [_NONE] * len(oo)
    vec = _vector(t.literals, t.dynamic, t.old, t.producer, target)
    literal = vec[0] if vec is not None else None
    needs = False
    for ia, jb in groups:
        kind = frozenset().union(*(kx[i] for i in ia)) if ia else _NONE
        if not kind:
            continue
        big = [j for j in jb if oo[j] != 1]
        if len(ia) > 1 and len(big) > 1:
            raise _Refused(node, f"regroups spatial axes {ia} -> {jb} ({list(xo)} -> {list(oo)})")
        if len(big) <= 1:
            for j in big or jb[:1]:
                kinds[j] = kind
        else:  # a split of one axis: its H and W parts, in order
            parts = [k for k in ("H", "W") if k in kind]
            if len(parts) != len(big):
                raise _Refused(
                    node, f"splits an axis that follows {_fmt_kind(kind)} into {[oo[j] for j in big]}"
                )
            for j, part in zip(big, parts, strict=True):
                kinds[j] = frozenset({part})
        if literal is not None and any(int(literal[j]) > 0 for j in jb if j < literal.size):
            needs = True
        elif literal is None and target not in t.dynamic:
            raise _Refused(node, "has a target shape computed from constants; fold constants first")
    if needs:
        t.plan.append(_Action("reshape", _label(node), 1))
    t.kinds[node.output[0]] = tuple(kinds)


def _resize(t: _Trace, node: onnx.NodeProto) -> None:
    x = node.input[0]
    kx = t.k(x)
    t.kinds[node.output[0]] = kx
    sizes = node.input[3] if node.op_type == "Resize" and len(node.input) > 3 else ""
    if not sizes:
        return
    vec = _vector(t.literals, t.dynamic, t.old, t.producer, sizes)
    if vec is None:
        if sizes in t.dynamic:
            return  # computed at run time from shapes
        raise _Refused(node, "resizes to sizes computed from constants; fold constants first")
    value = vec[0]
    if not np.any(value != _RUNTIME):
        return
    xo = t.old.get(x)
    axes = _attr(node, "axes")
    axes = [int(a) % len(kx) for a in axes] if axes else list(range(len(kx)))
    for s, a in zip(value, axes, strict=False):
        if not kx[a] or s == _RUNTIME:
            continue
        d = xo[a] if xo else None
        if d is None:
            raise _Refused(node, f"resizes to a fixed size {value.tolist()}: it pins the resolution")
        if not (s % d == 0 or d % s == 0):
            raise _Refused(
                node,
                f"resizes axis {a} from {d} to a fixed {int(s)} (sizes {value.tolist()}): a fixed-size "
                "Resize pins the resolution",
            )
    t.plan.append(_Action("resize", _label(node), 3, tuple(axes)))


def _expand(t: _Trace, node: onnx.NodeProto) -> None:
    x, shape = node.input[0], node.input[1]
    kx = t.k(x)
    oo = t.old.get(node.output[0]) or ()
    rank = len(oo)
    kinds = (_NONE,) * (rank - len(kx)) + kx
    t.kinds[node.output[0]] = kinds
    if shape in t.dynamic:
        return
    if shape not in t.literals:
        raise _Refused(node, "expands to a shape computed from constants; fold constants first")
    value = t.literals[shape].reshape(-1)
    pinned = [a for a in range(rank) if kinds[a] and a - (rank - len(value)) >= 0]
    if any(int(value[a - (rank - len(value))]) > 1 for a in pinned):
        t.plan.append(_Action("expand", _label(node), 1))


def _slice(t: _Trace, node: onnx.NodeProto) -> None:
    x = node.input[0]
    kx = t.k(x)
    t.kinds[node.output[0]] = kx
    if len(node.input) < 3:
        raise _Refused(node, "(opset < 10) slices with attributes; not traced")
    names = list(node.input) + [""] * (5 - len(node.input))
    starts_n, ends_n, axes_n, steps_n = names[1:5]
    for n in (starts_n, ends_n, axes_n, steps_n):
        if n and n not in t.literals and n not in t.dynamic:
            raise _Refused(node, "slices with bounds computed from constants; fold constants first")
    if any(n in t.dynamic for n in (starts_n, ends_n, axes_n, steps_n) if n):
        return
    starts = t.literals[starts_n].reshape(-1)
    ends = t.literals[ends_n].reshape(-1)
    axes = t.literals[axes_n].reshape(-1) if axes_n else np.arange(len(starts))
    steps = t.literals[steps_n].reshape(-1) if steps_n else np.ones(len(starts), np.int64)
    xo = t.old.get(x) or ()
    touched = []
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = int(a) % len(kx)
        if not kx[a]:
            continue
        d = xo[a] if a < len(xo) else None
        if d is None:
            raise _Refused(node, f"slices axis {a} with fixed bounds at an unknown size")
        s, e = int(s), int(e)
        if st > 0 and s == 0 and e >= d:
            if e < INT64_MAX // 2:
                touched.append(a)
            continue
        if st < 0 or s < 0 or e < 0:
            raise _Refused(node, f"slices axis {a} ({_fmt_kind(kx[a])}) with fixed bounds [{s}:{e}:{st}]")
        touched.append(a)
    if touched:
        t.plan.append(_Action("slice", _label(node), 2, tuple(touched)))


# --------------------------------------------------------------------------------------------
# rewrite


@dataclasses.dataclass(frozen=True)
class RewriteInfo:
    """What a resolution rewrite did."""

    input: str
    old_size: tuple[int | None, int | None]
    new_size: tuple[int | None, int | None]
    scale: float | None
    keep_interface: bool
    rewrites: tuple[str, ...]
    resized_outputs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_resolution(text: str) -> tuple[int, int]:
    """``"HxW"`` or ``"S"`` (square) to ``(H, W)``."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as e:
        raise InputError(f"resolution '{text}': expected HxW (e.g. 160x160) or one size (160)") from e
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or any(v <= 0 for v in values):
        raise InputError(f"resolution '{text}': expected HxW with positive integers (e.g. 160x160)")
    return values[0], values[1]


def _unique(model: onnx.ModelProto, base: str) -> str:
    taken = {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input}
    for node in model.graph.node:
        taken.update(node.output)
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _set_input(
    model: onnx.ModelProto, node: onnx.NodeProto, index: int, array: np.ndarray, base: str
) -> None:
    old = node.input[index]
    name = _unique(model, base)
    model.graph.initializer.append(numpy_helper.from_array(array, name))
    node.input[index] = name
    if any(old in n.input for n in model.graph.node) or any(o.name == old for o in model.graph.output):
        return
    for k, init in enumerate(model.graph.initializer):
        if init.name == old:
            del model.graph.initializer[k]
            return
    for k, n in enumerate(model.graph.node):
        if n.op_type == "Constant" and old in n.output:
            del model.graph.node[k]  # the old value, now unused
            return


def _show(v: np.ndarray) -> str:
    return "[" + ", ".join("?" if int(d) == _RUNTIME else str(int(d)) for d in v.reshape(-1)) + "]"


def _write_vector(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    index: int,
    pieces: list[tuple[int | None, int, int]],
    value: np.ndarray,
    base: str,
) -> None:
    """Write a rewritten shape vector back: the whole literal, or the literal pieces of its Concat."""
    if len(pieces) == 1 and pieces[0][0] is None:
        _set_input(model, node, index, value.astype(np.int64), base)
        return
    concat = next(n for n in model.graph.node if node.input[index] in n.output)
    for k, offset, length in pieces:
        assert k is not None
        _set_input(
            model, concat, k, value[offset : offset + length].astype(np.int64), f"{concat.input[k]}_resized"
        )


def _apply(
    model: onnx.ModelProto,
    action: _Action,
    literals: dict[str, np.ndarray],
    ratio: tuple[float, float],
    old: dict[str, tuple[int | None, ...]],
    kinds: dict[str, Kinds],
) -> str:
    node = next(n for n in model.graph.node if n.name == action.node)
    if action.kind == "globalpool":
        op = "GlobalAveragePool" if node.op_type == "AveragePool" else "GlobalMaxPool"
        before = f"{node.op_type} kernel {_attr(node, 'kernel_shape')}"
        node.op_type = op
        del node.attribute[:]
        return f"{node.name}: {before} -> {op}"
    x = node.input[0]
    base = f"{node.input[action.index] or node.name}_resized"
    if action.kind == "fill-shrink":  # exact at every size: extent 1 broadcasts
        dims = literals[node.input[0]].reshape(-1).astype(np.int64).copy()
        was = dims.tolist()
        dims[list(action.axes)] = 1
        _set_input(model, node, 0, dims, f"{node.input[0]}_resized")
        return f"{node.name}: shape {was} -> {dims.tolist()} (uniform, broadcast)"
    if action.kind == "shrink":  # exact at every size: keep one slice along the uniform axes
        arr = literals[node.input[action.index]]
        shape_before = list(arr.shape)
        for a in action.axes:
            arr = np.take(arr, [0], axis=a)
        _set_input(model, node, action.index, arr, base)
        return f"{node.name}: constant {shape_before} -> {list(arr.shape)} (uniform along H/W)"
    new = _infer(model)
    if action.kind in ("reshape", "resize"):
        literals = _literals(model)
        producer = {o: n for n in model.graph.node for o in n.output}
        vec = _vector(literals, None, {**old, **new}, producer, node.input[action.index])
        assert vec is not None
        value, pieces = vec
    elif action.kind != "fill-regrow":
        value = literals[node.input[action.index]]

    def fail(reason: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{node.op_type} '{node.name}': {reason}")

    if action.kind in ("regrow", "fill-regrow"):
        partner = next(i for i in node.input if i and any(kinds.get(i, ())))
        ps = _static(new.get(partner))
        if ps is None:
            raise fail("cannot infer the new size of its spatial input")
        if action.kind == "fill-regrow":
            fill = next(n for n in model.graph.node if node.input[action.index] in n.output)
            dims = literals[fill.input[0]].reshape(-1).astype(np.int64).copy()
            was = dims.tolist()
            for a in action.axes:
                dims[a] = ps[a]
            _set_input(model, fill, 0, dims, f"{fill.input[0]}_resized")
            return f"{fill.name}: shape {was} -> {dims.tolist()}"
        shape = list(value.shape)
        for a in action.axes:
            shape[a] = ps[a]
        first = value[tuple(slice(0, 1) if a in action.axes else slice(None) for a in range(value.ndim))]
        arr = np.broadcast_to(first, shape).copy()
        _set_input(model, node, action.index, arr, base)
        return f"{node.name}: constant {list(value.shape)} -> {shape}"
    xo, xn = _static(old.get(x)), _static(new.get(x))
    if xo is None or xn is None:
        raise fail("cannot infer the shapes of its input at the new resolution")
    if action.kind == "reshape":
        oo = _static(old.get(node.output[0]))
        assert oo is not None
        target = value.reshape(-1).astype(np.int64).copy()
        groups = group_axes(xo, oo) or []
        kx = kinds.get(x, ())
        for ia, jb in groups:
            kind = frozenset().union(*(kx[i] for i in ia)) if ia else _NONE
            if not kind:
                continue
            big = [j for j in jb if oo[j] != 1]
            pn = int(np.prod([xn[i] for i in ia]))
            if len(big) <= 1:
                for j in big:
                    if target[j] > 0:
                        target[j] = pn
            else:
                parts = [r for r, k in zip(ratio, ("H", "W"), strict=True) if k in kind]
                scaled = [oo[j] * r for j, r in zip(big, parts, strict=True)]
                if any(abs(d - round(d)) > 1e-6 for d in scaled) or int(np.prod(np.round(scaled))) != pn:
                    raise fail(f"cannot split {pn} into parts scaling {[oo[j] for j in big]}")
                for j, d in zip(big, scaled, strict=True):
                    if target[j] > 0:
                        target[j] = round(d)
        _write_vector(model, node, action.index, pieces, target, base)
        return f"{node.name}: target {_show(value)} -> {_show(target)}"
    if action.kind == "resize":
        sizes = value.reshape(-1).astype(np.int64).copy()
        for pos, a in enumerate(action.axes):
            if sizes[pos] == _RUNTIME:
                continue
            if sizes[pos] != xo[a]:
                factor = sizes[pos] / xo[a]
                nd = xn[a] * factor
                if abs(nd - round(nd)) > 1e-6:
                    raise fail(f"axis {a}: {xn[a]} x {factor:g} is not an integer size")
                sizes[pos] = round(nd)
            else:
                sizes[pos] = xn[a]
        _write_vector(model, node, 3, pieces, sizes, base)
        return f"{node.name}: sizes {_show(value)} -> {_show(sizes)}"
    if action.kind == "expand":
        target = value.reshape(-1).astype(np.int64).copy()
        offset = len(target) - len(xn)
        for a in range(len(xn)):
            if a + offset >= 0 and any(kinds.get(x, ())[a : a + 1]) and target[a + offset] > 1:
                target[a + offset] = 1  # broadcast keeps the input's own (new) size
        _set_input(model, node, 1, target, base)
        return f"{node.name}: shape {value.reshape(-1).tolist()} -> {target.tolist()}"
    if action.kind == "slice":
        names = list(node.input) + [""] * (5 - len(node.input))
        starts = literals[names[1]].reshape(-1).astype(np.int64).copy()
        ends = value.reshape(-1).astype(np.int64).copy()
        axes = literals[names[3]].reshape(-1) if names[3] else np.arange(len(starts))
        kx = kinds.get(x, ())
        for pos, axis in enumerate(axes):
            a = int(axis) % len(xo)
            if a not in action.axes:
                continue
            d, dn = xo[a], xn[a]
            if starts[pos] == 0 and ends[pos] >= d:
                ends[pos] = INT64_MAX
                continue
            r = ratio[0] if "H" in kx[a] else ratio[1]
            s_new, e_new = starts[pos] * r, ends[pos] * r
            if abs(s_new - round(s_new)) > 1e-6 or abs(e_new - round(e_new)) > 1e-6 or round(e_new) > dn:
                raise fail(f"axis {a}: the window [{starts[pos]}:{ends[pos]}] of {d} does not scale to {dn}")
            starts[pos], ends[pos] = round(s_new), round(e_new)
        _set_input(model, node, 1, starts, f"{names[1]}_resized")
        _set_input(model, node, 2, ends, base)
        return f"{node.name}: slice ends {value.reshape(-1).tolist()} -> {ends.tolist()}"
    raise AssertionError(action.kind)


def _resize_node(
    model: onnx.ModelProto,
    x: str,
    y: str,
    *,
    mode: str,
    sizes: str | None = None,
    scales: str | None = None,
    antialias: bool = False,
) -> onnx.NodeProto:
    opset = _opset(model)
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": "half_pixel"}
    if mode == "nearest":
        attrs["nearest_mode"] = "round_prefer_ceil"
    if mode == "cubic":
        attrs["cubic_coeff_a"] = -0.75
    if antialias and opset >= 18 and mode != "nearest":
        attrs["antialias"] = 1
    roi = ""
    empty = ""
    if opset < 13:
        roi = _unique(model, f"{y}_roi")
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), roi))
        if sizes:
            empty = _unique(model, f"{y}_noscales")
            model.graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), empty))
    inputs = [x, roi, scales or empty] + ([sizes] if sizes else [])
    return helper.make_node("Resize", inputs, [y], name=_unique(model, f"resize_{y}"), **attrs)


def _sizes_from(
    model: onnx.ModelProto, value: str, spec: Sequence[int | tuple[str, int] | None], tag: str
) -> tuple[str, list[onnx.NodeProto]]:
    """Nodes computing a Resize's ``sizes`` from Shape, Slice and Concat (which shape inference follows).

    ``spec`` gives, per axis, a constant, ``(name, axis)`` (that axis of another value's shape), or
    None (``value``'s own size on that axis).
    """
    nodes: list[onnx.NodeProto] = []
    shape_names: dict[str, str] = {}
    runs: list[tuple[str | None, list[int]]] = []  # (None: constants | shape source, items)
    for axis, item in enumerate(spec):
        src = (value, axis) if item is None else item
        if isinstance(src, int):
            if runs and runs[-1][0] is None:
                runs[-1][1].append(src)
            else:
                runs.append((None, [src]))
        else:
            name, ax = src
            if runs and runs[-1][0] == name and runs[-1][1][-1] + 1 == ax:
                runs[-1][1].append(ax)
            else:
                runs.append((name, [ax]))
    pieces: list[str] = []
    for k, (source, items) in enumerate(runs):
        piece = _unique(model, f"{tag}_part{k}")
        if source is None:
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(items, np.int64), piece))
        else:
            if source not in shape_names:
                shape_names[source] = _unique(model, f"{tag}_shape{len(shape_names)}")
                nodes.append(
                    helper.make_node("Shape", [source], [shape_names[source]], name=shape_names[source])
                )
            starts, ends = _unique(model, f"{piece}_start"), None
            model.graph.initializer.append(numpy_helper.from_array(np.asarray([items[0]], np.int64), starts))
            ends = _unique(model, f"{piece}_end")
            model.graph.initializer.append(
                numpy_helper.from_array(np.asarray([items[-1] + 1], np.int64), ends)
            )
            nodes.append(helper.make_node("Slice", [shape_names[source], starts, ends], [piece], name=piece))
        pieces.append(piece)
    sizes_v = _unique(model, f"{tag}_sizes")
    nodes.append(helper.make_node("Concat", pieces, [sizes_v], name=sizes_v, axis=0))
    return sizes_v, nodes


def _copy_vi(vi: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    return out


def _add_interface(
    work: onnx.ModelProto,
    *,
    vi: onnx.ValueInfoProto,
    original_input: onnx.ValueInfoProto,
    original_outputs: dict[str, onnx.ValueInfoProto],
    outputs: dict[str, str],
    kinds: dict[str, Kinds],
    old_shapes: dict[str, tuple[int | None, ...]],
    probe_in: tuple[int | None, ...],
    axes: tuple[int, int],
    new_size: tuple[int, int] | None,
    old_size: tuple[int, int],
    scale: float | None,
    dynamic: bool,
    mode: str,
) -> list[str]:
    """Restore the original I/O shapes with a Resize after the input and before each map output."""
    ha, wa = axes
    rank = len(original_input.type.tensor_type.shape.dim)
    internal = _unique(work, f"{vi.name}_resized")
    for node in work.graph.node:
        for k, name in enumerate(node.input):
            if name == vi.name:
                node.input[k] = internal
    if any(o.name == vi.name for o in work.graph.output):
        raise UnsupportedModelError(f"input '{vi.name}' is also an output; the interface cannot be kept")
    vi.CopyFrom(original_input)
    front: list[onnx.NodeProto] = []
    if new_size is None:
        assert scale is not None
        scales_v = _unique(work, f"{vi.name}_scales")
        work.graph.initializer.append(
            numpy_helper.from_array(
                np.asarray([scale if a in (ha, wa) else 1.0 for a in range(rank)], np.float32), scales_v
            )
        )
        front.append(_resize_node(work, vi.name, internal, mode=mode, scales=scales_v, antialias=scale < 1))
    else:
        in_spec = [new_size[0] if a == ha else new_size[1] if a == wa else None for a in range(rank)]
        sizes_v, nodes = _sizes_from(work, vi.name, in_spec, f"{vi.name}_in")
        front += nodes
        small = new_size[0] * new_size[1] < old_size[0] * old_size[1]
        front.append(_resize_node(work, vi.name, internal, mode=mode, sizes=sizes_v, antialias=small))
    tail: list[onnx.NodeProto] = []
    resized: list[str] = []
    for out in work.graph.output:
        if outputs.get(out.name) != "map":
            continue
        ko = kinds[out.name]
        oh, ow = ko.index(_H), ko.index(_W)
        low = _unique(work, f"{out.name}_lowres")
        for node in work.graph.node:
            for k, name in enumerate(node.output):
                if name == out.name:
                    node.output[k] = low
            for k, name in enumerate(node.input):
                if name == out.name:
                    node.input[k] = low
        orank = len(ko)
        so = _static(old_shapes.get(out.name))
        spec: list[int | tuple[str, int] | None]
        if so is not None and not dynamic:
            spec = [so[a] if a in (oh, ow) else None for a in range(orank)]
        else:
            # the map follows the caller's input size (checked at the traced size)
            po = old_shapes.get(out.name) or ()
            if po[oh] != probe_in[ha] or po[ow] != probe_in[wa]:
                raise UnsupportedModelError(
                    f"--keep-interface: output '{out.name}' is {po[oh]}x{po[ow]} for a "
                    f"{probe_in[ha]}x{probe_in[wa]} input; with dynamic H/W only outputs at the input's "
                    "size can be resized back"
                )
            spec = [(vi.name, ha) if a == oh else (vi.name, wa) if a == ow else None for a in range(orank)]
        sizes_v, nodes = _sizes_from(work, low, spec, f"{out.name}_out")
        tail += nodes
        tail.append(_resize_node(work, low, out.name, mode=mode, sizes=sizes_v))
        out.CopyFrom(original_outputs[out.name])
        resized.append(out.name)
    nodes_all = list(work.graph.node)
    del work.graph.node[:]
    work.graph.node.extend(front + nodes_all + tail)
    del work.graph.value_info[:]
    return resized


def rewrite_resolution(
    model: onnx.ModelProto | ir.Model,
    *,
    resolution: tuple[int, int] | str | None = None,
    scale: float | None = None,
    input_name: str | None = None,
    keep_interface: bool = False,
    mode: str = "linear",
    check: bool = True,
) -> tuple[onnx.ModelProto, RewriteInfo, bool]:
    """The model at another input resolution (a new protobuf; ``model`` is not modified).

    Args:
        model: the model.
        resolution: the new ``(H, W)``.
        scale: instead of ``resolution``, a factor on the current H and W (required, with
            ``keep_interface``, for inputs whose H and W are dynamic).
        input_name: the image input (default: the only input of rank >= 3).
        keep_interface: keep the original I/O shapes (Resize after the input, and before each
            image-to-image output).
        mode: interpolation of the interface Resizes: linear, nearest or cubic.
        check: run ``onnx.checker`` and one onnxruntime inference on the result.

    Returns:
        ``(model, info, modified)``; ``modified`` is False when the resolution does not change.

    Raises:
        UnsupportedModelError: the analysis refuses (the message names the node), or the result
            does not load or run at the new size.
        InputError: bad arguments.
    """
    if mode not in MODES:
        raise InputError(f"--mode '{mode}': choose one of {', '.join(MODES)}")
    if isinstance(resolution, str):  # recipes may spell it "160x160"
        resolution = parse_resolution(resolution)
    elif resolution is not None:
        resolution = (int(resolution[0]), int(resolution[1]))
    if (resolution is None) == (scale is None):
        raise InputError("give exactly one of --resolution HxW and --scale FACTOR")
    if scale is not None and not (0 < scale <= 16):
        raise InputError(f"--scale {scale}: expected a factor in (0, 16]")
    work = _copy(model)
    _name_nodes(work)
    probe = resolution
    verdict, trace = _analyze(work, input_name, probe)
    if not verdict.ok:
        raise UnsupportedModelError(verdict.message)
    vi = next(v for v in work.graph.input if v.name == verdict.input)
    dims = sshapes.declared_shape(vi)
    ha, wa = _hw_axes(verdict.layout, len(dims))
    dynamic = verdict.size[0] is None or verdict.size[1] is None
    if dynamic and resolution is None and not keep_interface:
        raise InputError(
            f"input '{vi.name}' has dynamic H/W: send smaller images, pass --resolution HxW to fix "
            "a size, or use --keep-interface --scale to resize inside the model"
        )
    # the traced size: the declared one, or the probe for dynamic H/W
    traced = trace.old[vi.name]
    old_h, old_w = int(traced[ha] or 0), int(traced[wa] or 0)
    if resolution is not None:
        new_h, new_w = resolution
    else:
        assert scale is not None
        new_h, new_w = max(1, round(old_h * scale)), max(1, round(old_w * scale))
    scale_mode = dynamic and resolution is None
    if not dynamic and (new_h, new_w) == (old_h, old_w):
        info = RewriteInfo(vi.name, verdict.size, verdict.size, scale, keep_interface, (), ())
        return work, info, False
    outputs = verdict.outputs
    varying = [k for k, v in outputs.items() if v == "varies"]
    if keep_interface and varying:
        raise UnsupportedModelError(
            f"--keep-interface: output '{varying[0]}' changes size with the resolution in a way that "
            "cannot be resized back (not an image-shaped map)"
        )
    ratio = (new_h / old_h, new_w / old_w)
    kinds = dict(trace.kinds)
    old_shapes = dict(trace.old)
    original_outputs = {o.name: _copy_vi(o) for o in work.graph.output}
    original_input = _copy_vi(vi)
    done: list[str] = []
    # 1. the plain model at the new static size: constants are recomputed against inferred shapes
    if not scale_mode:
        target_dims = vi.type.tensor_type.shape.dim
        for axis, value in ((ha, new_h), (wa, new_w)):
            target_dims[axis].Clear()
            target_dims[axis].dim_value = value
        for out in work.graph.output:
            if outputs.get(out.name) in ("map", "varies"):
                out.type.tensor_type.ClearField("shape")
        for action in trace.plan:
            done.append(_apply(work, action, trace.literals, ratio, old_shapes, kinds))
    else:
        for action in trace.plan:
            if action.kind not in ("shrink", "fill-shrink", "globalpool"):
                raise UnsupportedModelError(
                    f"{action.node}: carries constants derived from the input size, but the input's H/W "
                    "are dynamic; give --resolution HxW instead of --scale"
                )
            done.append(_apply(work, action, trace.literals, ratio, old_shapes, kinds))
    del work.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(work, data_prop=True)
    except Exception as e:
        raise UnsupportedModelError(f"the model at {new_h}x{new_w} fails shape inference: {_first(e)}") from e
    inferred_out = {o.name: o for o in inferred.graph.output}
    for out in work.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in inferred_out:
            out.type.CopyFrom(inferred_out[out.name].type)
    # 2. the interface: Resize after the input and before each image-to-image output
    resized: list[str] = []
    if keep_interface:
        resized = _add_interface(
            work,
            vi=vi,
            original_input=original_input,
            original_outputs=original_outputs,
            outputs=outputs,
            kinds=kinds,
            old_shapes=old_shapes,
            probe_in=trace.old[vi.name],
            axes=(ha, wa),
            new_size=None if scale_mode else (new_h, new_w),
            old_size=(old_h, old_w),
            scale=scale,
            dynamic=dynamic,
            mode=mode,
        )
    info = RewriteInfo(
        input=vi.name,
        old_size=verdict.size,
        new_size=(None, None) if scale_mode else (new_h, new_w),
        scale=scale,
        keep_interface=keep_interface,
        rewrites=tuple(done),
        resized_outputs=tuple(resized),
    )
    if check:
        check_runs(work, vi.name, None if scale_mode else (new_h, new_w), keep_interface, (old_h, old_w))
    return work, info, True


def _first(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def check_runs(
    model: onnx.ModelProto,
    input_name: str,
    size: tuple[int, int] | None,
    keep_interface: bool,
    old_size: tuple[int, int],
) -> None:
    """``onnx.checker`` and one onnxruntime run of the rewritten model on seeded inputs.

    Raises:
        UnsupportedModelError: the model is invalid, fails to run, or produces NaN/Inf.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze import runtime

    try:
        sio.check_model(model)
    except Exception as e:
        raise UnsupportedModelError(f"the rewritten model is invalid: {e}") from e
    vi = next(v for v in model.graph.input if v.name == input_name)
    dims = sshapes.declared_shape(vi)
    ha, wa = _hw_axes(_detect_layout(dims), len(dims))
    bound = [d if isinstance(d, int) else 1 for d in dims]
    if not keep_interface and size is not None:
        bound[ha], bound[wa] = size
    elif not isinstance(dims[ha], int) or not isinstance(dims[wa], int):
        bound[ha], bound[wa] = old_size
    shapes_in = sshapes.resolve_input_shapes(model, {input_name: bound})
    feeds = sshapes.make_inputs(model, shapes_in, seed=0)
    sess = runtime.session(model)
    try:
        results = sess.run(None, feeds)
    except Exception as e:
        where = f"{size[0]}x{size[1]}" if size else "the scaled size"
        raise UnsupportedModelError(
            f"the model does not run at {where} (is the input smaller than a kernel?): {_first(e)}"
        ) from e
    for o, r in zip(sess.get_outputs(), results, strict=True):
        arr = np.asarray(r)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise UnsupportedModelError(f"output '{o.name}' has NaN/Inf at the new resolution")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewriteInputResolutionPass(SqueezePass):
    """Run the model at another input resolution (see the module docstring for the analysis).

    Rewrites: the image input's H and W (or, with ``keep_interface``, inserts a Resize after the
    input and before each image-to-image output), and the shape constants derived from the old
    size. Requires: the analysis accepts the model (fully convolutional, or globally pooled
    before any layer tied to the feature-map size); otherwise ``UnsupportedModelError`` names the
    node. Ensures: the result passes ``onnx.checker`` and runs in onnxruntime.

    Attributes:
        resolution: the new ``(H, W)``.
        scale: a factor on H and W instead of ``resolution`` (dynamic inputs need it, with
            ``keep_interface``).
        input_name: the image input (default: the only input of rank >= 3).
        keep_interface: keep the original input and output shapes.
        mode: interpolation of the interface Resizes: linear, nearest or cubic.
    """

    name: ClassVar[str] = "resolution"
    resolution: tuple[int, int] | None = None
    scale: float | None = None
    input_name: str | None = None
    keep_interface: bool = False
    mode: str = "linear"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        proto, info, modified = rewrite_resolution(
            model,
            resolution=self.resolution,
            scale=self.scale,
            input_name=self.input_name,
            keep_interface=self.keep_interface,
            mode=self.mode,
        )
        if not modified:
            return ResolutionPassResult(model, False, info=info)
        new = ir.serde.deserialize_model(proto)
        model.graph = new.graph
        model.functions.clear()
        model.functions.update(new.functions)
        return ResolutionPassResult(model, True, info=info)


class ResolutionPassResult(ir.passes.PassResult):
    """The pass result plus what the rewrite did (:class:`RewriteInfo`)."""

    def __init__(self, model: ir.Model, modified: bool, *, info: RewriteInfo) -> None:
        super().__init__(model, modified)
        self.info = info


# --------------------------------------------------------------------------------------------
# sweep


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One resolution of a sweep. Ratios are against the original model in the same run.

    ``accuracy`` is against labels (class ids: top-1; masks: IoU of the thresholded/argmax map);
    ``top1_agreement`` (class scores), ``iou`` and ``mean_abs_error`` (image-to-image outputs) are
    against the original model at full resolution. ``error`` says why a point could not be made.
    """

    resolution: tuple[int, int]
    macs: int | None = None
    macs_ratio: float | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None
    accuracy: float | None = None
    top1_agreement: float | None = None
    iou: float | None = None
    mean_abs_error: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["resolution"] = list(self.resolution)
        return out


def _threshold(ref: np.ndarray) -> float:
    return 0.5 if float(ref.min()) >= 0.0 and float(ref.max()) <= 1.0 else 0.0


def _masks(out: np.ndarray, channel_axis: int, threshold: float) -> np.ndarray:
    if out.shape[channel_axis] == 1:
        return np.squeeze(out, axis=channel_axis) > threshold
    return np.argmax(out, axis=channel_axis)


def map_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks, or mean IoU over the classes present for label maps."""
    if a.dtype == bool:
        union = np.count_nonzero(a | b)
        return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)
    ious = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        union = np.count_nonzero((a == c) | (b == c))
        if union:
            ious.append(np.count_nonzero((a == c) & (b == c)) / union)
    return float(np.mean(ious)) if ious else 1.0


def compare_outputs(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    channel_axis: int = 1,
    threshold: float | None = None,
) -> dict[str, float | None]:
    """Agreement of a candidate's first output with the reference's (and accuracy vs labels).

    Class scores ``[N, C]``: top-1 agreement (and accuracy with ``[N]`` labels). Maps (rank >= 3):
    IoU of the thresholded (one channel; threshold 0.5 for outputs in [0, 1], else 0) or argmax
    (several channels) maps, mean abs error, and IoU against mask labels when given.
    """
    out: dict[str, float | None] = {
        "accuracy": None,
        "top1_agreement": None,
        "iou": None,
        "mean_abs_error": None,
    }
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise UnsupportedModelError(f"output shape {cand.shape} differs from the reference's {ref.shape}")
    if ref.ndim == 2 and ref.shape[1] >= 2:
        out["top1_agreement"] = float(np.mean(ref.argmax(1) == cand.argmax(1)))
        if labels is not None and labels.ndim == 1:
            out["accuracy"] = float(np.mean(cand.argmax(1) == labels))
    elif ref.ndim >= 3:
        thr = _threshold(ref) if threshold is None else threshold
        mr, mc = _masks(ref, channel_axis, thr), _masks(cand, channel_axis, thr)
        out["iou"] = map_iou(mr, mc)
        out["mean_abs_error"] = float(np.mean(np.abs(ref - cand)))
        if labels is not None and labels.ndim >= 3:
            lab = labels.reshape(mc.shape) if labels.size == mc.size else None
            if lab is not None:
                out["accuracy"] = map_iou(mc, lab.astype(mc.dtype) if mc.dtype != bool else lab > 0)
    else:
        out["mean_abs_error"] = float(np.mean(np.abs(ref - cand)))
    return out


def sweep_resolutions(
    model: onnx.ModelProto | ir.Model,
    resolutions: Sequence[tuple[int, int]],
    *,
    input_name: str | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    mode: str = "linear",
    latency: bool = True,
    evaluate: bool = True,
    threads: int | None = None,
    rounds: int = 5,
    runs: int = 10,
    batch_size: int = 32,
    on_step: Callable[[int, int], None] | None = None,
) -> list[SweepPoint]:
    """MACs, CPU latency and accuracy/agreement of the model at each resolution.

    Each resolution is evaluated with the interface kept (the original-resolution data are
    resized inside the model, the maps resized back), so the metrics compare like with like;
    MACs and latency are those of the plain model at that resolution, batch 1.

    Args:
        model: the original model.
        resolutions: ``(H, W)`` pairs; a failing one gets ``error`` set instead of stopping.
        input_name: the image input.
        data: arrays keyed by input name (first axis = samples), plus optional ``labels`` (class
            ids ``[N]`` or masks); 8 seeded random samples at the model's size when None.
        mode: interpolation of the interface Resizes.
        latency: measure latency (onnxruntime, all graph optimizations, batch 1).
        evaluate: measure accuracy/agreement (False: MACs and latency only).
        threads: intra-op threads of the timed sessions.
        rounds, runs: timing loop: ``rounds`` interleaved rounds of ``runs`` runs each.
        batch_size: evaluation batch size.
        on_step: progress callback ``(done, total)``.

    Returns:
        The original model's point first (its own resolution), then one point per other
        resolution; ratios are against the original, measured in the same run.
    """
    from onnxsqueeze import runtime
    from onnxsqueeze.summary import count_macs

    base = _copy(model)
    verdict = analyze_resolution(base, input_name=input_name)
    if not verdict.ok:
        raise UnsupportedModelError(verdict.message)
    vi = _image_input(base, verdict.input)
    dims = sshapes.declared_shape(vi)
    ha, wa = _hw_axes(verdict.layout, len(dims))
    labels = None
    if data is not None:
        arrays = {k: np.asarray(v) for k, v in data.items()}
        labels = arrays.get("labels")
        if verdict.input not in arrays:
            raise InputError(f"the data has no array '{verdict.input}'; it has {sorted(arrays)}")
        full = arrays[verdict.input]
        feeds = {vi2.name: arrays[vi2.name] for vi2 in sshapes.graph_inputs(base) if vi2.name in arrays}
    else:
        if verdict.size[0] is None or verdict.size[1] is None:
            raise InputError(f"input '{verdict.input}' has dynamic H/W: give --data to fix the resolution")
        shapes_in = sshapes.resolve_input_shapes(base, batch=8)
        feeds = sshapes.make_inputs(base, shapes_in, seed=0)
        full = feeds[verdict.input]
    old_h, old_w = int(full.shape[ha]), int(full.shape[wa])
    one = {k: v[:1] for k, v in feeds.items()}
    total = len(resolutions) + 1
    ref_first = None
    if evaluate:
        ref_out = runtime.run_batched(runtime.session(base), feeds, batch_size=batch_size)
        ref_first = next(iter(ref_out.values()))
    channel_axis = 3 if verdict.layout == "NHWC" else 1
    base_macs, _ = count_macs(base, {k: v.shape for k, v in one.items()})
    if on_step:
        on_step(1, total)
    points: list[SweepPoint] = []
    timed: list[tuple[int, Any, dict[str, np.ndarray]]] = []
    # the original resolution is the reference point, measured once
    resolutions = list(dict.fromkeys(r for r in resolutions if r != (old_h, old_w)))
    total = len(resolutions) + 1
    for i, res in enumerate(resolutions):
        try:
            plain, _, _ = rewrite_resolution(base, resolution=res, input_name=verdict.input, mode=mode)
            small = dict(one)
            shape = list(one[verdict.input].shape)
            shape[ha], shape[wa] = res
            rng = np.random.default_rng(0)
            small[verdict.input] = rng.standard_normal(shape).astype(one[verdict.input].dtype)
            macs, _ = count_macs(plain, {k: v.shape for k, v in small.items()})
            metrics: dict[str, float | None] = {}
            if evaluate:
                wrapped, _, _ = rewrite_resolution(
                    base, resolution=res, input_name=verdict.input, keep_interface=True, mode=mode
                )
                cand = runtime.run_batched(runtime.session(wrapped), feeds, batch_size=batch_size)
                assert ref_first is not None
                metrics = compare_outputs(
                    ref_first, next(iter(cand.values())), labels=labels, channel_axis=channel_axis
                )
            points.append(
                SweepPoint(
                    resolution=res,
                    macs=macs,
                    macs_ratio=macs / base_macs if base_macs else None,
                    accuracy=metrics.get("accuracy"),
                    top1_agreement=metrics.get("top1_agreement"),
                    iou=metrics.get("iou"),
                    mean_abs_error=metrics.get("mean_abs_error"),
                )
            )
            if latency:
                timed.append((i, runtime.session(plain, optimize=True, threads=threads), small))
        except UnsupportedModelError as e:
            points.append(SweepPoint(resolution=res, error=str(e)))
        if on_step:
            on_step(i + 2, total)
    if latency and timed:
        sessions = [runtime.session(base, optimize=True, threads=threads)] + [s for _, s, _ in timed]
        feeds_t = [one] + [f for _, _, f in timed]
        ms = runtime.time_sessions(sessions, feeds_t, rounds=rounds, runs=runs)
        for (i, _, _), t in zip(timed, ms[1:], strict=True):
            points[i] = dataclasses.replace(points[i], latency_ms=t, latency_ratio=t / ms[0])
        baseline_ms = ms[0]
    else:
        baseline_ms = None
    # the reference point (the original model, as is) first
    ref_metrics: dict[str, float | None] = {}
    if ref_first is not None:
        ref_metrics = compare_outputs(ref_first, ref_first, labels=labels, channel_axis=channel_axis)
    reference = SweepPoint(
        resolution=(old_h, old_w),
        macs=base_macs,
        macs_ratio=1.0,
        latency_ms=baseline_ms,
        latency_ratio=1.0 if baseline_ms is not None else None,
        accuracy=ref_metrics.get("accuracy"),
        top1_agreement=ref_metrics.get("top1_agreement"),
        iou=ref_metrics.get("iou"),
        mean_abs_error=ref_metrics.get("mean_abs_error"),
    )
    return [reference, *points]


def parse_sweep(text: str) -> list[tuple[int, int]]:
    """``"224,192,160x120"`` to ``[(224, 224), (192, 192), (160, 120)]``."""
    items = [p for p in text.replace(" ", "").split(",") if p]
    if not items:
        raise InputError(f"--sweep '{text}': expected resolutions like 224,192,160 or 224x224,160x120")
    return [parse_resolution(p) for p in items]


__all__ = [
    "ResolutionVerdict",
    "RewriteInfo",
    "RewriteInputResolutionPass",
    "SweepPoint",
    "analyze_resolution",
    "compare_outputs",
    "map_iou",
    "parse_resolution",
    "parse_sweep",
    "rewrite_resolution",
    "sweep_resolutions",
]
