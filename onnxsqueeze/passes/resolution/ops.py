"""The op handlers of the input-resolution trace: how each operator moves the H and W axes.

:func:`propagate` visits one node: it records which axes of its outputs follow the input's H and W
(:class:`.trace.Trace`), plans the rewrite of size-derived constants (Reshape targets, Resize
sizes, Expand shapes, Slice bounds, fixed-kernel global pools, uniform constants), tracks the
downsampling of each map to find the stride the input's sizes must be a multiple of
(:func:`_merge_stride`), and raises :class:`.trace.Refused`, naming the node, when it cannot be
traced at another size. It never guesses: an operator it does not know on the spatial path is
refused.
"""

from __future__ import annotations

import contextlib
import math
from fractions import Fraction

import numpy as np
import onnx

from onnxsqueeze.passes.resolution.trace import (
    INT64_MAX,
    KIND_H,
    KIND_NONE,
    KIND_W,
    RUNTIME,
    Action,
    Kinds,
    Refused,
    Trace,
    fmt_kind,
    get_attr,
    group_axes,
    node_label,
    opset_of,
    shape_vector,
    static_dims,
)

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


def propagate(t: Trace, node: onnx.NodeProto) -> None:
    op = node.op_type
    ins = list(node.input)
    if node.domain not in ("", "ai.onnx"):
        if any(t.spatial(i) for i in ins if i):
            raise Refused(node, f"(domain '{node.domain}') is not an operator onnxsqueeze can trace")
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
        raise Refused(node, "is control flow on the spatial path; onnxsqueeze does not trace into subgraphs")
    x = ins[0]
    kx = t.k(x)
    out = node.output[0]
    if op in _SHAPE_PRESERVING:
        t.kinds[out] = kx
        if op == "Softmax" and opset_of(t.model) < 13:
            axis = get_attr(node, "axis", 1) % max(len(kx), 1)
            if any(kx[axis:]):
                raise Refused(node, "(opset < 13) flattens the H and W axes into its softmax")
    elif op in _BROADCAST:
        t.kinds[out] = _broadcast(t, node, [i for i in ins if i])
    elif op in _SPATIAL:
        if op == "ConvTranspose" and get_attr(node, "output_shape"):
            raise Refused(node, "has a fixed output_shape attribute; it pins the spatial size")
        if op in ("AveragePool", "MaxPool") and _is_whole_map_pool(t, node):
            # a global pool written with a fixed kernel (AvgPool2d(7) before a classifier)
            t.plan.append(Action("globalpool", node_label(node), 0))
            t.kinds[out] = kx[:2] + (KIND_NONE,) * (len(kx) - 2)
            t.pools.append(node_label(node))
        else:
            t.kinds[out] = kx
    elif op in _GLOBAL_POOL:
        t.kinds[out] = kx[:2] + (KIND_NONE,) * (len(kx) - 2)
        t.pools.append(node_label(node))
    elif op in _REDUCE or op in ("ArgMax", "ArgMin"):
        _reduce(t, node, kx)
    elif op == "Flatten":
        axis = get_attr(node, "axis", 1) % (len(kx) or 1) if kx else 1
        t.kinds[out] = (frozenset().union(*kx[:axis]), frozenset().union(*kx[axis:]))
    elif op == "Transpose":
        perm = get_attr(node, "perm") or list(range(len(kx)))[::-1]
        t.kinds[out] = tuple(kx[p] for p in perm)
    elif op in ("Squeeze", "Unsqueeze"):
        _squeeze(t, node, kx)
    elif op == "Concat":
        _concat(t, node)
    elif op == "Split":
        axis = get_attr(node, "axis", 0) % len(kx)
        if kx[axis]:
            raise Refused(node, f"splits axis {axis} ({fmt_kind(kx[axis])}) into fixed parts")
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
        axis = get_attr(node, "axis", 0) % len(kx)
        if kx[axis]:
            raise Refused(node, f"picks fixed positions along axis {axis} ({fmt_kind(kx[axis])})")
        ki = t.k(ins[1])
        t.kinds[out] = kx[:axis] + ki + kx[axis + 1 :]
    elif op == "Tile":
        t.kinds[out] = kx
    elif op == "ConstantOfShape":
        t.dynamic.add(out)
    else:
        raise Refused(node, "is on the spatial path and is not an operator onnxsqueeze can trace")
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


def _merge_stride(t: Trace, node: onnx.NodeProto, ins: list[str]) -> None:
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
            t.need_node = f"{node.op_type} '{node_label(node)}'"
        t.need[d] = need


def _track_stride(t: Trace, node: onnx.NodeProto) -> None:
    """Carry the downsampling factor along H and W (see :func:`_merge_stride`)."""
    op, out = node.op_type, node.output[0]
    ko = t.k(out)
    oh, ow = _one_axis(ko, KIND_H), _one_axis(ko, KIND_W)
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
    axes = (_one_axis(kx, KIND_H), _one_axis(kx, KIND_W))
    f = [Fraction(1), Fraction(1)]
    if op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"):
        strides = get_attr(node, "strides") or []
        for d, a in enumerate(axes):
            if a is not None and 0 <= a - 2 < len(strides):
                f[d] = Fraction(int(strides[a - 2]))
                if op == "ConvTranspose":
                    f[d] = 1 / f[d]
    elif op in ("SpaceToDepth", "DepthToSpace"):
        b = Fraction(int(get_attr(node, "blocksize", 1)))
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
        if o and _one_axis(t.k(o), KIND_H) is not None and _one_axis(t.k(o), KIND_W) is not None:
            t.stride[o] = (sh, sw)
            t.peak[o] = (max(ph, math.ceil(sh)), max(pw, math.ceil(sw)))


def _is_whole_map_pool(t: Trace, node: onnx.NodeProto) -> bool:
    """A pool whose kernel covers the whole (unpadded) feature map: a global pool in disguise."""
    xo, yo = static_dims(t.old.get(node.input[0])), static_dims(t.old.get(node.output[0]))
    kernel = get_attr(node, "kernel_shape")
    if xo is None or yo is None or not kernel or len(node.output) > 1:
        return False
    pads = get_attr(node, "pads") or []
    auto = get_attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if any(pads) or auto not in ("NOTSET", "VALID") or get_attr(node, "dilations"):
        return False
    return list(xo[2:]) == list(kernel) and all(d == 1 for d in yo[2:])


def _fill(t: Trace, name: str) -> onnx.NodeProto | None:
    """The ConstantOfShape producing ``name`` from a literal shape (a uniform tensor), if any."""
    src = t.producer.get(name)
    if src is not None and src.op_type == "ConstantOfShape" and src.input and src.input[0] in t.literals:
        return src
    return None


def _broadcast(t: Trace, node: onnx.NodeProto, inputs: list[str]) -> Kinds:
    rank = max(len(t.old.get(i, ())) or len(t.k(i)) for i in inputs)
    kinds: list[frozenset[str]] = [KIND_NONE] * rank
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
            raise Refused(node, f"mixes the spatial path with '{i}', whose shape is unknown")
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
            t.plan.append(Action("fill-shrink", node_label(fill), 0, axes_local))
            continue
        if i in t.literals:
            value = t.literals[i]
            uniform = all(
                np.array_equal(value, np.broadcast_to(np.take(value, [0], axis=ax), value.shape))
                for ax in axes_local
            )
            if uniform:
                t.plan.append(Action("shrink", node_label(node), idx, axes_local))
                continue
            raise Refused(
                node,
                f"combines the spatial path with constant '{i}' {list(shape)}, which has a fixed extent "
                "along the input's H/W axes (a position embedding or size-specific mask): it pins the "
                "resolution",
            )
        src = t.producer.get(i)
        origin = f"{src.op_type} '{node_label(src)}'" if src is not None else f"'{i}'"
        raise Refused(
            node,
            f"mixes the spatial path with {origin}, whose output {list(shape)} has a fixed size "
            "along the input's H/W axes: it pins the resolution",
        )
    return tuple(kinds)


def _reduce(t: Trace, node: onnx.NodeProto, kx: Kinds) -> None:
    rank = len(kx)
    keep = get_attr(node, "keepdims", 1)
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [get_attr(node, "axis", 0)]
    else:
        axes = get_attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            if node.input[1] not in t.literals:
                raise Refused(node, "reduces over axes computed at run time")
            axes = [int(a) for a in t.literals[node.input[1]].reshape(-1)]
        if not axes:
            axes = [] if get_attr(node, "noop_with_empty_axes", 0) else list(range(rank))
    axes = sorted({int(a) % rank for a in axes})
    removed = [kx[a] for a in axes]
    if keep:
        t.kinds[node.output[0]] = tuple(KIND_NONE if a in axes else k for a, k in enumerate(kx))
    else:
        t.kinds[node.output[0]] = tuple(k for a, k in enumerate(kx) if a not in axes)
    if any(removed) and node.op_type not in ("ArgMax", "ArgMin"):
        t.pools.append(node_label(node))


def _squeeze(t: Trace, node: onnx.NodeProto, kx: Kinds) -> None:
    axes = get_attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        if node.input[1] not in t.literals:
            raise Refused(node, "squeezes axes computed at run time")
        axes = [int(a) for a in t.literals[node.input[1]].reshape(-1)]
    out = node.output[0]
    if node.op_type == "Squeeze":
        shape = t.old.get(node.input[0]) or ()
        if axes is None:
            axes = [a for a, d in enumerate(shape) if d == 1]
        axes = {int(a) % len(kx) for a in axes}
        if any(kx[a] for a in axes):
            raise Refused(node, "squeezes an axis that follows the input's H/W (size 1 only at this size)")
        t.kinds[out] = tuple(k for a, k in enumerate(kx) if a not in axes)
    else:
        rank = len(kx) + len(axes or [])
        axes = {int(a) % rank for a in axes or []}
        it = iter(kx)
        t.kinds[out] = tuple(KIND_NONE if a in axes else next(it) for a in range(rank))


def _concat(t: Trace, node: onnx.NodeProto) -> None:
    ins = [i for i in node.input if i]
    rank = max(len(t.k(i)) for i in ins)
    axis = get_attr(node, "axis", 0) % rank
    kinds: list[frozenset[str]] = [KIND_NONE] * rank
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
            t.plan.append(Action("fill-regrow", node_label(node), idx, pinned))
            continue
        if i in t.literals and shape is not None:
            value = t.literals[i]
            uniform = all(
                np.array_equal(value, np.broadcast_to(np.take(value, [0], axis=a), value.shape))
                for a in pinned
            )
            if uniform:
                t.plan.append(Action("regrow", node_label(node), idx, pinned))
                continue
        src = t.producer.get(i)
        what = (
            f"constant '{i}'" if i in t.const else f"{src.op_type} '{node_label(src)}'" if src else f"'{i}'"
        )
        raise Refused(
            node,
            f"concatenates {what} {list(shape or ())}, which has a fixed size along the input's "
            "H/W axes: it pins the resolution",
        )
    t.kinds[node.output[0]] = tuple(kinds)


def _matmul(t: Trace, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    ka, kb = t.k(a), t.k(b)
    if node.op_type == "Gemm":
        ta, tb = get_attr(node, "transA", 0), get_attr(node, "transB", 0)
        k_axis_a, m_axis = (0, 1) if ta else (1, 0)
        k_axis_b, n_axis = (1, 0) if tb else (0, 1)
        contract = [(a, ka[k_axis_a] if ka else KIND_NONE, b), (b, kb[k_axis_b] if kb else KIND_NONE, a)]
        out_kinds: Kinds = ((ka[m_axis] if ka else KIND_NONE), (kb[n_axis] if kb else KIND_NONE))
    else:
        if len(ka) < 2 or len(kb) < 2:
            raise Refused(node, "is a vector product on the spatial path")
        contract = [(a, ka[-1], b), (b, kb[-2], a)]
        batch_rank = max(len(ka), len(kb)) - 2
        batch: list[frozenset[str]] = [KIND_NONE] * batch_rank
        for kk in (ka, kb):
            for i, k in enumerate(kk[:-2]):
                batch[batch_rank - (len(kk) - 2) + i] |= k
        out_kinds = (*batch, ka[-2], kb[-1])
    for spatial_side, kind, other in contract:
        if kind and other in t.const:
            src = t.producer.get(spatial_side)
            via = f" from {src.op_type} '{node_label(src)}'" if src is not None else ""
            wshape = t.old.get(other)
            shape = t.old.get(spatial_side)
            raise Refused(
                node,
                f"contracts its weight '{other}' {list(wshape or ())} over an axis that follows the "
                f"input's {fmt_kind(kind)} (input {list(shape or ())}{via}): the layer is tied to this "
                "feature-map size; a global pooling before it would free it",
            )
    t.kinds[node.output[0]] = out_kinds


def _recurrent(t: Trace, node: onnx.NodeProto) -> None:
    """LSTM/GRU/RNN: the sequence axis may follow H or W; the feature axis meets the weights."""
    kx = t.k(node.input[0])
    if len(kx) != 3:
        raise Refused(node, "has an input that is not [seq, batch, features]; not traced")
    seq, batch = (1, 0) if get_attr(node, "layout", 0) else (0, 1)
    if kx[2]:
        shape = t.old.get(node.input[0])
        raise Refused(
            node,
            f"contracts its weight '{node.input[1]}' over its feature axis, which follows the input's "
            f"{fmt_kind(kx[2])} (input {list(shape) if shape else '[?]'}): the recurrent layer is tied "
            "to this feature-map size",
        )
    if kx[batch]:
        raise Refused(node, f"runs over a batch axis that follows the input's {fmt_kind(kx[batch])}")
    outs = list(node.output) + [""] * 3
    y = (
        (kx[seq], KIND_NONE, KIND_NONE, KIND_NONE)
        if not get_attr(node, "layout", 0)
        else (KIND_NONE, kx[seq], KIND_NONE, KIND_NONE)
    )
    if outs[0]:
        t.kinds[outs[0]] = y
    for o in outs[1:3]:
        if o:
            t.kinds[o] = (KIND_NONE, KIND_NONE, KIND_NONE)


def _shape_value(t: Trace, name: str, depth: int = 0) -> np.ndarray | None:
    """The value of a small shape computation (Shape, Gather, Unsqueeze, Concat, arithmetic) at the
    traced size, where onnx's data propagation stops (scalar Gathers, Mul of dims)."""
    if name in t.literals:
        return t.literals[name]
    node = t.producer.get(name)
    if node is None or depth > 12:
        return None
    op = node.op_type
    if op == "Shape":
        s = static_dims(t.old.get(node.input[0]))
        if s is None:
            return None
        start, end = get_attr(node, "start", 0), get_attr(node, "end", None)
        return np.asarray(s, np.int64)[start:end]
    if any(i and _shape_value(t, i, depth + 1) is None for i in node.input):
        return None
    args: list[np.ndarray] = [_shape_value(t, i, depth + 1) for i in node.input if i]  # type: ignore[misc]
    with contextlib.suppress(Exception):  # anything unexpected: unknown
        if op == "Gather":
            return np.take(args[0], args[1].astype(np.int64), axis=get_attr(node, "axis", 0))
        if op == "Unsqueeze":
            axes = get_attr(node, "axes") or [int(a) for a in args[1].reshape(-1)]
            return np.expand_dims(args[0], tuple(axes))
        if op == "Squeeze":
            return np.squeeze(args[0])
        if op == "Concat":
            return np.concatenate([np.atleast_1d(a) for a in args], axis=get_attr(node, "axis", 0))
        if op in ("Cast", "Identity"):
            return args[0]
        if op in ("Mul", "Add", "Sub", "Div"):
            fn = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.floor_divide}[op]
            return np.asarray(fn(args[0], args[1]))
    return None


def _reshape_shape(t: Trace, node: onnx.NodeProto) -> tuple[int, ...] | None:
    """The Reshape's output shape at the traced size, from the target's value."""
    xo = static_dims(t.old.get(node.input[0]))
    target = _shape_value(t, node.input[1])
    if xo is None or target is None:
        return None
    dims = [int(d) for d in target.reshape(-1)]
    dims = [xo[i] if d == 0 and not get_attr(node, "allowzero", 0) else d for i, d in enumerate(dims)]
    if dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = int(np.prod(xo)) // max(known, 1)
    return tuple(dims) if int(np.prod(dims)) == int(np.prod(xo)) else None


def _reshape(t: Trace, node: onnx.NodeProto) -> None:
    x, target = node.input[0], node.input[1]
    kx = t.k(x)
    if t.old.get(node.output[0]) is None or static_dims(t.old.get(node.output[0])) is None:
        found = _reshape_shape(t, node)
        if found is not None:
            t.old[node.output[0]] = found
    xo, oo = static_dims(t.old.get(x)), static_dims(t.old.get(node.output[0]))
    if xo is None or oo is None:
        raise Refused(node, "reshapes the spatial path but its shapes cannot be inferred")
    groups = group_axes(xo, oo)
    if groups is None:
        raise Refused(node, f"reshapes {list(xo)} to {list(oo)} in a way that cannot be traced")
    kinds: list[frozenset[str]] = [KIND_NONE] * len(oo)
    vec = shape_vector(t.literals, t.dynamic, t.old, t.producer, target)
    literal = vec[0] if vec is not None else None
    needs = False
    for ia, jb in groups:
        kind = frozenset().union(*(kx[i] for i in ia)) if ia else KIND_NONE
        if not kind:
            continue
        big = [j for j in jb if oo[j] != 1]
        if len(ia) > 1 and len(big) > 1:
            raise Refused(node, f"regroups spatial axes {ia} -> {jb} ({list(xo)} -> {list(oo)})")
        if len(big) <= 1:
            for j in big or jb[:1]:
                kinds[j] = kind
        else:  # a split of one axis: its H and W parts, in order
            parts = [k for k in ("H", "W") if k in kind]
            if len(parts) != len(big):
                raise Refused(
                    node, f"splits an axis that follows {fmt_kind(kind)} into {[oo[j] for j in big]}"
                )
            for j, part in zip(big, parts, strict=True):
                kinds[j] = frozenset({part})
        if literal is not None and any(int(literal[j]) > 0 for j in jb if j < literal.size):
            needs = True
        elif literal is None and target not in t.dynamic:
            raise Refused(node, "has a target shape computed from constants; fold constants first")
    if needs:
        t.plan.append(Action("reshape", node_label(node), 1))
    t.kinds[node.output[0]] = tuple(kinds)


def _resize(t: Trace, node: onnx.NodeProto) -> None:
    x = node.input[0]
    kx = t.k(x)
    t.kinds[node.output[0]] = kx
    sizes = node.input[3] if node.op_type == "Resize" and len(node.input) > 3 else ""
    if not sizes:
        return
    vec = shape_vector(t.literals, t.dynamic, t.old, t.producer, sizes)
    if vec is None:
        if sizes in t.dynamic:
            return  # computed at run time from shapes
        raise Refused(node, "resizes to sizes computed from constants; fold constants first")
    value = vec[0]
    if not np.any(value != RUNTIME):
        return
    xo = t.old.get(x)
    axes = get_attr(node, "axes")
    axes = [int(a) % len(kx) for a in axes] if axes else list(range(len(kx)))
    for s, a in zip(value, axes, strict=False):
        if not kx[a] or s == RUNTIME:
            continue
        d = xo[a] if xo else None
        if d is None:
            raise Refused(node, f"resizes to a fixed size {value.tolist()}: it pins the resolution")
        if not (s % d == 0 or d % s == 0):
            raise Refused(
                node,
                f"resizes axis {a} from {d} to a fixed {int(s)} (sizes {value.tolist()}): a fixed-size "
                "Resize pins the resolution",
            )
    t.plan.append(Action("resize", node_label(node), 3, tuple(axes)))


def _expand(t: Trace, node: onnx.NodeProto) -> None:
    x, shape = node.input[0], node.input[1]
    kx = t.k(x)
    oo = t.old.get(node.output[0]) or ()
    rank = len(oo)
    kinds = (KIND_NONE,) * (rank - len(kx)) + kx
    t.kinds[node.output[0]] = kinds
    if shape in t.dynamic:
        return
    if shape not in t.literals:
        raise Refused(node, "expands to a shape computed from constants; fold constants first")
    value = t.literals[shape].reshape(-1)
    pinned = [a for a in range(rank) if kinds[a] and a - (rank - len(value)) >= 0]
    if any(int(value[a - (rank - len(value))]) > 1 for a in pinned):
        t.plan.append(Action("expand", node_label(node), 1))


def _slice(t: Trace, node: onnx.NodeProto) -> None:
    x = node.input[0]
    kx = t.k(x)
    t.kinds[node.output[0]] = kx
    if len(node.input) < 3:
        raise Refused(node, "(opset < 10) slices with attributes; not traced")
    names = list(node.input) + [""] * (5 - len(node.input))
    starts_n, ends_n, axes_n, steps_n = names[1:5]
    for n in (starts_n, ends_n, axes_n, steps_n):
        if n and n not in t.literals and n not in t.dynamic:
            raise Refused(node, "slices with bounds computed from constants; fold constants first")
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
            raise Refused(node, f"slices axis {a} with fixed bounds at an unknown size")
        s, e = int(s), int(e)
        if st > 0 and 0 <= s < st and e >= d:  # to the end, from a phase within one step
            if e < INT64_MAX // 2:
                touched.append(a)
            continue
        if st < 0 or s < 0 or e < 0:
            raise Refused(node, f"slices axis {a} ({fmt_kind(kx[a])}) with fixed bounds [{s}:{e}:{st}]")
        touched.append(a)
    if touched:
        t.plan.append(Action("slice", node_label(node), 2, tuple(touched)))
