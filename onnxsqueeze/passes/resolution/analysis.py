"""Input-resolution analysis: which values follow the input's H and W, and what blocks a resize.

A network whose spatial path is fully convolutional, or that pools globally (GlobalAveragePool,
ReduceMean over H and W) before its classifier, computes the same kind of function at any input
size; running it at ``h x w`` instead of ``H x W`` costs about ``(h * w) / (H * W)`` of the MACs of
every convolution.

:func:`analyze_resolution` traces, for every value, which of its axes follow the input's H and W
(an axis may follow both, after a Flatten or a Reshape merges them). It refuses, naming the node,
when:

- a Gemm or MatMul contracts a constant weight over an axis that follows H or W (Flatten -> Gemm:
  the classifier is tied to one feature-map size);
- a constant with an extent along H or W meets the spatial path (a position embedding, a fixed
  mask); constants that are uniform along those axes (initializers, ConstantOfShape) are harmless:
  they are shrunk to extent 1 (broadcast) or, when concatenated, regrown to the new size;
- a Resize resizes to sizes that are not an integer multiple or fraction of its input (a fixed-size
  Resize pins the resolution), a Gather or Split picks fixed positions along H or W, a Slice takes
  a window that does not scale, a Reshape regroups spatial axes in a way that cannot be rescaled;
- an operator it does not know touches the spatial path (it never guesses).

It also plans the constant rewrites (:mod:`.rewrite` applies them) and finds the **stride** the
input's H and W must be a multiple of (see :func:`_merge_stride`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from onnxsqueeze import shapes as sshapes
from onnxsqueeze.errors import InputError

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
        stride: the ``(H, W)`` multiples the input's sizes must be (1: any size); a model that
            adds or concatenates an upsampled deep map to a skip connection (an FPN, a U-Net)
            needs the depth of its deepest such map.
        stride_node: the first node that needs ``stride`` (``op_type 'name'``).
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
    stride: tuple[int, int] = (1, 1)
    stride_node: str | None = None

    @property
    def sizes(self) -> str:
        """The sizes the model accepts, in words."""
        sh, sw = self.stride
        if (sh, sw) == (1, 1):
            return "any H and W"
        what = f"multiples of {sh}" if sh == sw else f"H a multiple of {sh}, W of {sw}"
        return f"{what} ({self.stride_node} merges an upsampled map with a skip connection)"

    @property
    def message(self) -> str:
        """One line for users."""
        if self.ok:
            return f"input '{self.input}' can change resolution: {self.reason}"
        return f"input '{self.input}' cannot change resolution: {self.op_type} '{self.node}' {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["size"] = list(self.size)
        out["stride"] = list(self.stride)
        out["sizes"] = self.sizes
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
    # per value with an H and a W axis: the downsampling so far, and the deepest it went
    stride: dict[str, tuple[Fraction, Fraction]] = dataclasses.field(default_factory=dict)
    peak: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    need: list[int] = dataclasses.field(default_factory=lambda: [1, 1])
    need_node: str | None = None

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
            raise InputError(
                f"'{name}' is not an input of the model; its inputs are {[v.name for v in inputs]}"
            )
    else:
        images = [vi for vi in inputs if len(sshapes.declared_shape(vi)) >= 3]
        if len(images) != 1:
            raise InputError(
                f"the model has {len(images)} inputs of rank >= 3 ({[v.name for v in images]}); "
                "name the image input"
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
    verdict, trace = _analyze_at(model, input_name, probe)
    sh, sw = verdict.stride
    if probe is None and verdict.ok and (verdict.size[0] is None or verdict.size[1] is None):
        # dynamic H/W traced at the default 224x224: trace again at a size the model accepts
        ph, pw = -(-224 // sh) * sh, -(-224 // sw) * sw
        if (ph, pw) != (224, 224):
            return _analyze_at(model, input_name, (ph, pw))
    return verdict, trace


def _analyze_at(
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
    trace.stride[vi.name] = (Fraction(1), Fraction(1))
    trace.peak[vi.name] = (1, 1)
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
        stride=(trace.need[0], trace.need[1]),
        stride_node=trace.need_node,
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
    elif op in ("LSTM", "GRU", "RNN"):
        _recurrent(t, node)
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
    _track_stride(t, node)


def _one_axis(kinds: Kinds, kind: frozenset[str]) -> int | None:
    found = [a for a, k in enumerate(kinds) if k == kind]
    return found[0] if len(found) == 1 else None


def _factor(old: int, new: int) -> Fraction:
    """``old / new`` (a stride factor), snapped to the power of two it rounds to (7 -> 14 is 1/2)."""
    r = Fraction(old, new)
    k = round(math.log2(old / new))
    return Fraction(2) ** k if abs(old / new / 2.0**k - 1) < 0.2 else r


def _merge_stride(t: _Trace, node: onnx.NodeProto, ins: list[str]) -> None:
    """The stride an Add/Concat of maps needs: that of the deepest map upsampled into it.

    A map downsampled to ``1/p`` has ``ceil``-rounded sizes unless ``H`` is a multiple of ``p``;
    upsampled back to ``1/s`` (``s < p``) it is ``(s/p) * ceil(H/p)`` while its partner is
    ``ceil(H/s)``: they agree at every size only when ``H`` is a multiple of ``p`` (7 by 8 at 240).
    """
    for d in (0, 1):
        deep = [t.peak[i][d] for i in ins if t.peak[i][d] > t.stride[i][d]]
        if not deep:
            continue
        need = math.lcm(t.need[d], *deep)
        if need != t.need[d]:
            t.need_node = f"{node.op_type} '{_label(node)}'"
        t.need[d] = need


def _track_stride(t: _Trace, node: onnx.NodeProto) -> None:
    """Carry the downsampling factor along H and W (see :func:`_merge_stride`)."""
    op, out = node.op_type, node.output[0]
    ko = t.k(out)
    oh, ow = _one_axis(ko, _H), _one_axis(ko, _W)
    ins = [i for i in node.input if i in t.stride]
    if oh is None or ow is None or not ins:
        return
    if op in _BROADCAST or op in ("Concat", "Sum", "Mean", "Max", "Min"):
        if len(ins) > 1:
            _merge_stride(t, node, ins)
        t.stride[out] = t.stride[ins[0]]
        t.peak[out] = (max(t.peak[i][0] for i in ins), max(t.peak[i][1] for i in ins))
        return
    x = node.input[0]
    if x not in t.stride:
        return
    kx = t.k(x)
    axes = (_one_axis(kx, _H), _one_axis(kx, _W))
    f = [Fraction(1), Fraction(1)]
    if op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"):
        strides = _attr(node, "strides") or []
        for d, a in enumerate(axes):
            if a is not None and 0 <= a - 2 < len(strides):
                f[d] = Fraction(int(strides[a - 2]))
                if op == "ConvTranspose":
                    f[d] = 1 / f[d]
    elif op in ("SpaceToDepth", "DepthToSpace"):
        b = Fraction(int(_attr(node, "blocksize", 1)))
        f = [b, b] if op == "SpaceToDepth" else [1 / b, 1 / b]
    elif op in ("Resize", "Upsample"):
        xo, yo = t.old.get(x) or (), t.old.get(out) or ()
        for d, a in enumerate(axes):
            if a is not None and a < len(xo) and a < len(yo) and xo[a] and yo[a]:
                f[d] = _factor(int(xo[a]), int(yo[a]))  # type: ignore[arg-type]
    elif (
        op == "Slice" and len(node.input) > 4 and node.input[4] in t.literals and node.input[3] in t.literals
    ):
        steps = t.literals[node.input[4]].reshape(-1)
        for a, st in zip(t.literals[node.input[3]].reshape(-1), steps, strict=False):
            for d, ax in enumerate(axes):
                if ax is not None and int(a) % len(kx) == ax and int(st) > 1:
                    f[d] = Fraction(int(st))  # x[..., ::2, ::2] (YOLOX's Focus) downsamples
    # every other op keeps the factor (Split, Transpose, Reshape keeping H and W apart...)
    sh, sw = t.stride[x][0] * f[0], t.stride[x][1] * f[1]
    ph, pw = t.peak[x]
    for o in node.output:
        if o and _one_axis(t.k(o), _H) is not None and _one_axis(t.k(o), _W) is not None:
            t.stride[o] = (sh, sw)
            t.peak[o] = (max(ph, math.ceil(sh)), max(pw, math.ceil(sw)))


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


def _recurrent(t: _Trace, node: onnx.NodeProto) -> None:
    """LSTM/GRU/RNN: the sequence axis may follow H or W; the feature axis meets the weights."""
    kx = t.k(node.input[0])
    if len(kx) != 3:
        raise _Refused(node, "has an input that is not [seq, batch, features]; not traced")
    seq, batch = (1, 0) if _attr(node, "layout", 0) else (0, 1)
    if kx[2]:
        shape = t.old.get(node.input[0])
        raise _Refused(
            node,
            f"contracts its weight '{node.input[1]}' over its feature axis, which follows the input's "
            f"{_fmt_kind(kx[2])} (input {list(shape) if shape else '[?]'}): the recurrent layer is tied "
            "to this feature-map size",
        )
    if kx[batch]:
        raise _Refused(node, f"runs over a batch axis that follows the input's {_fmt_kind(kx[batch])}")
    outs = list(node.output) + [""] * 3
    y = (kx[seq], _NONE, _NONE, _NONE) if not _attr(node, "layout", 0) else (_NONE, kx[seq], _NONE, _NONE)
    if outs[0]:
        t.kinds[outs[0]] = y
    for o in outs[1:3]:
        if o:
            t.kinds[o] = (_NONE, _NONE, _NONE)


def _shape_value(t: _Trace, name: str, depth: int = 0) -> np.ndarray | None:
    """The value of a small shape computation (Shape, Gather, Unsqueeze, Concat, arithmetic) at the
    traced size, where onnx's data propagation stops (scalar Gathers, Mul of dims)."""
    if name in t.literals:
        return t.literals[name]
    node = t.producer.get(name)
    if node is None or depth > 12:
        return None
    op = node.op_type
    if op == "Shape":
        s = _static(t.old.get(node.input[0]))
        if s is None:
            return None
        start, end = _attr(node, "start", 0), _attr(node, "end", None)
        return np.asarray(s, np.int64)[start:end]
    if any(i and _shape_value(t, i, depth + 1) is None for i in node.input):
        return None
    args: list[np.ndarray] = [_shape_value(t, i, depth + 1) for i in node.input if i]  # type: ignore[misc]
    with contextlib.suppress(Exception):  # anything unexpected: unknown
        if op == "Gather":
            return np.take(args[0], args[1].astype(np.int64), axis=_attr(node, "axis", 0))
        if op == "Unsqueeze":
            axes = _attr(node, "axes") or [int(a) for a in args[1].reshape(-1)]
            return np.expand_dims(args[0], tuple(axes))
        if op == "Squeeze":
            return np.squeeze(args[0])
        if op == "Concat":
            return np.concatenate([np.atleast_1d(a) for a in args], axis=_attr(node, "axis", 0))
        if op in ("Cast", "Identity"):
            return args[0]
        if op in ("Mul", "Add", "Sub", "Div"):
            fn = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.floor_divide}[op]
            return np.asarray(fn(args[0], args[1]))
    return None


def _reshape_shape(t: _Trace, node: onnx.NodeProto) -> tuple[int, ...] | None:
    """The Reshape's output shape at the traced size, from the target's value."""
    xo = _static(t.old.get(node.input[0]))
    target = _shape_value(t, node.input[1])
    if xo is None or target is None:
        return None
    dims = [int(d) for d in target.reshape(-1)]
    dims = [xo[i] if d == 0 and not _attr(node, "allowzero", 0) else d for i, d in enumerate(dims)]
    if dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = int(np.prod(xo)) // max(known, 1)
    return tuple(dims) if int(np.prod(dims)) == int(np.prod(xo)) else None


def _reshape(t: _Trace, node: onnx.NodeProto) -> None:
    x, target = node.input[0], node.input[1]
    kx = t.k(x)
    if t.old.get(node.output[0]) is None or _static(t.old.get(node.output[0])) is None:
        found = _reshape_shape(t, node)
        if found is not None:
            t.old[node.output[0]] = found
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
        if st > 0 and 0 <= s < st and e >= d:  # to the end, from a phase within one step
            if e < INT64_MAX // 2:
                touched.append(a)
            continue
        if st < 0 or s < 0 or e < 0:
            raise _Refused(node, f"slices axis {a} ({_fmt_kind(kx[a])}) with fixed bounds [{s}:{e}:{st}]")
        touched.append(a)
    if touched:
        t.plan.append(_Action("slice", _label(node), 2, tuple(touched)))
