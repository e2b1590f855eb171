"""Input-resolution rewrite: the model at another H x W, or with its interface kept.

The input gets the new H and W; shape constants derived from the old size are recomputed from the
new shapes, in graph order, re-running shape inference after each (Reshape targets
``prod(new dims)`` per merged group, Resize sizes ``new_in * (old_out / old_in)``, Expand targets,
Slice ends ``e * (h / H)``, ConstantOfShape shapes, uniform constants; these may be literals or the
literal parts of a Concat next to run-time Shape pieces, as static exports of
``interpolate(size=skip.shape[-2:])`` are); a pool whose kernel covers the whole feature map
(``AvgPool2d(7)``) becomes the global pool it is.

**Keep the interface** (``keep_interface=True``): callers keep sending ``H x W``; a Resize after the
input brings it to ``h x w`` and, for image-to-image outputs (axes that follow the input's H and W:
segmentation maps, heat maps, depth), a Resize before the output brings the map back to its
original size (output downsampling). With a dynamic input the interface Resize scales the caller's
size at run time: ``h = max(s, round(H * scale / s) * s)`` where ``s`` is the stride the model
needs (a multiple of 32 for a stride-32 FPN), and the maps follow the caller's size.

The rewrite runs no model: checking that the result runs is the technique layer's job
(:mod:`onnxsqueeze.resolution_sweep`).
"""

# NOTE: this module imports nothing from cli/, bench/, search or onnxruntime.

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from onnxsqueeze import shapes as sshapes
from onnxsqueeze.errors import InputError, UnsupportedModelError, one_line
from onnxsqueeze.passes.base import SqueezePass
from onnxsqueeze.passes.resolution.analysis import MODES, analyze_resolution, analyze_trace
from onnxsqueeze.passes.resolution.trace import (
    INT64_MAX,
    KIND_H,
    KIND_NONE,
    KIND_W,
    RUNTIME,
    Action,
    Kinds,
    copy_model,
    get_attr,
    group_axes,
    hw_axes,
    inferred_shapes,
    literals_of,
    name_nodes,
    opset_of,
    shape_vector,
    static_dims,
)


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
    stride: tuple[int, int] = (1, 1)
    sizes: str = "any H and W"
    rounded: str = ""
    varying_outputs: tuple[str, ...] = ()
    internal_size: tuple[int, int] | None = None
    rescaled_boxes: tuple[str, ...] = ()  # detector outputs whose decode strides were rescaled

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def round_to_stride(size: int, scale: float, stride: int) -> int:
    """``size * scale`` rounded to the nearest multiple of ``stride`` (at least ``stride``)."""
    return max(stride, math.floor(size * scale / stride + 0.5) * stride)


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
    return "[" + ", ".join("?" if int(d) == RUNTIME else str(int(d)) for d in v.reshape(-1)) + "]"


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
    action: Action,
    literals: dict[str, np.ndarray],
    ratio: tuple[float, float],
    old: dict[str, tuple[int | None, ...]],
    kinds: dict[str, Kinds],
) -> str:
    node = next(n for n in model.graph.node if n.name == action.node)
    if action.kind == "globalpool":
        op = "GlobalAveragePool" if node.op_type == "AveragePool" else "GlobalMaxPool"
        before = f"{node.op_type} kernel {get_attr(node, 'kernel_shape')}"
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
    new = inferred_shapes(model)
    if action.kind in ("reshape", "resize"):
        literals = literals_of(model)
        producer = {o: n for n in model.graph.node for o in n.output}
        vec = shape_vector(literals, None, {**old, **new}, producer, node.input[action.index])
        assert vec is not None
        value, pieces = vec
    elif action.kind != "fill-regrow":
        value = literals[node.input[action.index]]

    def fail(reason: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{node.op_type} '{node.name}': {reason}")

    if action.kind in ("regrow", "fill-regrow"):
        partner = next(i for i in node.input if i and any(kinds.get(i, ())))
        ps = static_dims(new.get(partner))
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
    xo, xn = static_dims(old.get(x)), static_dims(new.get(x))
    if xo is None or xn is None:
        raise fail("cannot infer the shapes of its input at the new resolution")
    if action.kind == "reshape":
        oo = static_dims(old.get(node.output[0]))
        assert oo is not None
        target = value.reshape(-1).astype(np.int64).copy()
        groups = group_axes(xo, oo) or []
        kx = kinds.get(x, ())
        for ia, jb in groups:
            kind = frozenset().union(*(kx[i] for i in ia)) if ia else KIND_NONE
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
            if sizes[pos] == RUNTIME:
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
        steps = literals[names[4]].reshape(-1) if names[4] else np.ones(len(starts), np.int64)
        kx = kinds.get(x, ())
        for pos, axis in enumerate(axes):
            a = int(axis) % len(xo)
            if a not in action.axes:
                continue
            d, dn = xo[a], xn[a]
            if 0 <= starts[pos] < max(int(steps[pos]), 1) and ends[pos] >= d:
                ends[pos] = INT64_MAX  # to the end, from a phase within one step (x[..., 1::2])
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
    opset = opset_of(model)
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


def _scaled_sizes(
    model: onnx.ModelProto, x: str, rank: int, axes: tuple[int, int], scale: float, stride: tuple[int, int]
) -> tuple[str, list[onnx.NodeProto]]:
    """Resize ``sizes`` from ``x``'s run-time shape: ``max(s, round(d * scale / s) * s)`` on H and W."""
    tag = f"{x}_scaled"
    factor = np.ones(rank, np.float32)
    mult = np.ones(rank, np.int64)
    for a, s in zip(axes, stride, strict=True):
        factor[a], mult[a] = scale / s, s
    consts = {}
    half, one = np.full(rank, 0.5, np.float32), np.ones(rank, np.float32)
    for key, value in (("factor", factor), ("half", half), ("one", one), ("mult", mult)):
        consts[key] = _unique(model, f"{tag}_{key}")
        model.graph.initializer.append(numpy_helper.from_array(value, consts[key]))
    keys = ("shape", "float", "mul", "add", "floor", "max", "int", "sizes")
    shape, flt, mul, add, rnd, mx, i64, sizes = (_unique(model, f"{tag}_{k}") for k in keys)
    f32, int64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    nodes = [
        helper.make_node("Shape", [x], [shape], name=shape),
        helper.make_node("Cast", [shape], [flt], name=flt, to=f32),
        helper.make_node("Mul", [flt, consts["factor"]], [mul], name=mul),
        helper.make_node("Add", [mul, consts["half"]], [add], name=add),  # halves round up, as
        helper.make_node("Floor", [add], [rnd], name=rnd),  # round_to_stride does (Round: to even)
        helper.make_node("Max", [rnd, consts["one"]], [mx], name=mx),
        helper.make_node("Cast", [mx], [i64], name=i64, to=int64),
        helper.make_node("Mul", [i64, consts["mult"]], [sizes], name=sizes),
    ]
    return sizes, nodes


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
    stride: tuple[int, int] = (1, 1),
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
        sizes_v, nodes = _scaled_sizes(work, vi.name, rank, (ha, wa), scale, stride)
        front += nodes
        front.append(_resize_node(work, vi.name, internal, mode=mode, sizes=sizes_v, antialias=scale < 1))
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
        oh, ow = ko.index(KIND_H), ko.index(KIND_W)
        low = _unique(work, f"{out.name}_lowres")
        for node in work.graph.node:
            for k, name in enumerate(node.output):
                if name == out.name:
                    node.output[k] = low
            for k, name in enumerate(node.input):
                if name == out.name:
                    node.input[k] = low
        orank = len(ko)
        so = static_dims(old_shapes.get(out.name))
        spec: list[int | tuple[str, int] | None]
        if so is not None and not dynamic:
            spec = [so[a] if a in (oh, ow) else None for a in range(orank)]
        else:
            # the map follows the caller's input size (checked at the traced size)
            po = old_shapes.get(out.name) or ()
            if po[oh] != probe_in[ha] or po[ow] != probe_in[wa]:
                raise UnsupportedModelError(
                    f"output '{out.name}' is {po[oh]}x{po[ow]} for a "
                    f"{probe_in[ha]}x{probe_in[wa]} input; with dynamic H/W only outputs at the input's "
                    "size can be resized back to the caller's size"
                )
            spec = [(vi.name, ha) if a == oh else (vi.name, wa) if a == ow else None for a in range(orank)]
        sizes_v, nodes = _sizes_from(work, low, spec, f"{out.name}_out")
        tail += nodes
        tail.append(_resize_node(work, low, out.name, mode=mode, sizes=sizes_v))
        out.CopyFrom(original_outputs[out.name])
        resized.append(out.name)
    for out in work.graph.output:
        if outputs.get(out.name) == "varies":  # declared dynamic (checked): the declaration stays
            out.CopyFrom(original_outputs[out.name])
    nodes_all = list(work.graph.node)
    del work.graph.node[:]
    work.graph.node.extend(front + nodes_all + tail)
    del work.graph.value_info[:]
    return resized


def _check_declared_dynamic(model: onnx.ModelProto, name: str, kinds: Kinds, trace: Any) -> None:
    """A non-map output may vary with the resolution under a kept interface only if declared dynamic.

    A detector's ``[N, 84, anchors]`` keeps its declaration ``[N, 84, ?]`` (callers already accept
    any anchor count); a fixed ``[1, 3549, 6]`` cannot be kept at another size.
    """
    vi = next(o for o in model.graph.output if o.name == name)
    dims = sshapes.declared_shape(vi)
    fixed = [a for a, k in enumerate(kinds) if k and a < len(dims) and isinstance(dims[a], int)]
    if fixed or not dims:
        src = trace.producer.get(name)
        via = f" (from {src.op_type} '{src.name}')" if src is not None else ""
        shown = [d if isinstance(d, int) else "?" for d in dims]
        raise UnsupportedModelError(
            f"output '{name}' {shown}{via} is declared with a fixed size along axis {fixed[0] if fixed else 0}, "
            "which follows the input's H and W and is not an image-shaped map: it cannot keep its "
            "interface at another resolution"
        )


def _validate(
    resolution: tuple[int, int] | str | None, scale: float | None, mode: str
) -> tuple[int, int] | None:
    """The options checked (``resolution`` normalized to a pair); InputError names the bad one."""
    if mode not in MODES:
        raise InputError(f"interpolation mode '{mode}': choose one of {', '.join(MODES)}")
    if isinstance(resolution, str):  # recipes may spell it "160x160"
        resolution = parse_resolution(resolution)
    elif resolution is not None:
        resolution = (int(resolution[0]), int(resolution[1]))
    if (resolution is None) == (scale is None):
        raise InputError("give exactly one of a resolution (H, W) and a scale factor")
    if scale is not None and not (0 < scale <= 16):
        raise InputError(f"scale {scale}: expected a factor in (0, 16]")
    return resolution


def rewrite_resolution(
    model: onnx.ModelProto | ir.Model,
    *,
    resolution: tuple[int, int] | str | None = None,
    scale: float | None = None,
    input_name: str | None = None,
    keep_interface: bool = False,
    mode: str = "linear",
    size: tuple[int, int] | None = None,
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
        size: for dynamic H/W, the ``(H, W)`` callers send (the data's size): the analysis traces
            there and ``scale`` applies to it (default 224x224).

    Returns:
        ``(model, info, modified)``; ``modified`` is False when the resolution does not change.

    Raises:
        UnsupportedModelError: the analysis refuses (the message names the node), or the result
            does not load or run at the new size.
        InputError: bad arguments.
    """
    resolution = _validate(resolution, scale, mode)
    work = copy_model(model)
    name_nodes(work)
    probe = resolution or size
    verdict, trace = analyze_trace(work, input_name, probe)
    if not verdict.ok:
        raise UnsupportedModelError(verdict.message)
    vi = next(v for v in work.graph.input if v.name == verdict.input)
    dims = sshapes.declared_shape(vi)
    ha, wa = hw_axes(verdict.layout, len(dims))
    dynamic = verdict.size[0] is None or verdict.size[1] is None
    if dynamic and resolution is None and not keep_interface:
        raise InputError(
            f"input '{vi.name}' has dynamic H/W, so the model already runs at any size: send smaller "
            "images, fix a resolution, or keep the interface and scale inside the model"
        )
    # the traced size: the declared one, or the probe for dynamic H/W
    traced = trace.old[vi.name]
    old_h, old_w = int(traced[ha] or 0), int(traced[wa] or 0)
    sh, sw = verdict.stride
    rounded = ""
    if resolution is not None:
        new_h, new_w = resolution
        if new_h % sh or new_w % sw:
            lo = (max(sh, new_h // sh * sh), max(sw, new_w // sw * sw))
            hi = (-(-new_h // sh) * sh, -(-new_w // sw) * sw)
            raise UnsupportedModelError(
                f"input '{vi.name}' cannot run at {new_h}x{new_w}: the model accepts {verdict.sizes}; "
                f"the nearest sizes are {lo[0]}x{lo[1]} and {hi[0]}x{hi[1]}"
            )
    else:
        assert scale is not None
        new_h, new_w = round_to_stride(old_h, scale, sh), round_to_stride(old_w, scale, sw)
        exact = (old_h * scale, old_w * scale)
        if dynamic and (sh, sw) != (1, 1):
            rounded = (
                f"x{scale:g} of the caller's size is rounded at run time to what the model accepts, "
                f"{verdict.sizes} (at {old_h}x{old_w}: {exact[0]:g}x{exact[1]:g}"
                + ("" if (exact[0], exact[1]) == (new_h, new_w) else f" -> {new_h}x{new_w}")
                + ")"
            )
        elif abs(exact[0] - new_h) > 1e-6 or abs(exact[1] - new_w) > 1e-6:
            rounded = (
                f"x{scale:g} of {old_h}x{old_w} is {exact[0]:g}x{exact[1]:g}, rounded to {new_h}x{new_w}: "
                f"the model accepts {verdict.sizes}"
            )
    scale_mode = dynamic and resolution is None
    if not dynamic and (new_h, new_w) == (old_h, old_w):
        info = RewriteInfo(
            input=vi.name,
            old_size=verdict.size,
            new_size=verdict.size,
            scale=scale,
            keep_interface=keep_interface,
            rewrites=(),
            resized_outputs=(),
            stride=verdict.stride,
            sizes=verdict.sizes,
            rounded=rounded,
            internal_size=(old_h, old_w),
        )
        return work, info, False
    outputs = verdict.outputs
    varying = [k for k, v in outputs.items() if v == "varies"]
    if keep_interface:
        for name in varying:
            _check_declared_dynamic(work, name, trace.kinds.get(name, ()), trace)
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
                    "are dynamic; fix a resolution instead of a scale"
                )
            done.append(_apply(work, action, trace.literals, ratio, old_shapes, kinds))
    del work.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(work, data_prop=True)
    except Exception as e:
        raise UnsupportedModelError(
            f"the model at {new_h}x{new_w} fails shape inference: {one_line(e)}"
        ) from e
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
            stride=verdict.stride,
        )
    rescaled: list[str] = []
    if keep_interface and varying:
        internal_name = next(
            (n.output[0] for n in work.graph.node if n.op_type == "Resize" and n.input[0] == vi.name), None
        )
        if internal_name is not None:
            rescaled = _rescale_box_strides(work, varying, vi.name, internal_name, wa)
    info = RewriteInfo(
        input=vi.name,
        old_size=verdict.size,
        new_size=(None, None) if scale_mode else (new_h, new_w),
        scale=scale,
        keep_interface=keep_interface,
        rewrites=tuple(done),
        resized_outputs=tuple(resized),
        stride=verdict.stride,
        sizes=verdict.sizes,
        rounded=rounded,
        varying_outputs=tuple(varying) if keep_interface else (),
        internal_size=(new_h, new_w),
        rescaled_boxes=tuple(rescaled),
    )
    return work, info, True


# The strides of detection heads (YOLOv5/v8/X: 8, 16, 32, and P6 variants' 64).
_STRIDES = {8.0, 16.0, 32.0, 64.0, 128.0}
# Ops a stride tensor is built with (ultralytics' make_anchors: ConstantOfShape + stride, Concat,
# Transpose), and the inputs that carry its values (shapes and axes are not followed).
_STRIDE_PATH = {
    "Add": None,
    "Mul": None,
    "Concat": None,
    "Transpose": (0,),
    "Unsqueeze": (0,),
    "Squeeze": (0,),
    "Reshape": (0,),
    "Expand": (0,),
    "Cast": (0,),
    "ConstantOfShape": (),
}


def _stride_tensor(model: onnx.ModelProto, name: str) -> bool:
    """Whether ``name`` is a detection head's stride tensor: built only from scalar stride
    constants (and ConstantOfShape zeros) by the ops of ``_STRIDE_PATH``."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    seen: set[str] = set()
    found = False
    stack = [name]
    while stack:
        v = stack.pop()
        if v in seen or not v:
            continue
        seen.add(v)
        node = producers.get(v)
        tensor = inits.get(v)
        if node is not None and node.op_type == "Constant":
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
            if tensor is None:
                return False
        if tensor is not None:
            arr = numpy_helper.to_array(tensor)
            if arr.size != 1 or not np.issubdtype(arr.dtype, np.floating) or float(arr) not in _STRIDES:
                return False
            found = True
            continue
        if node is None or node.op_type not in _STRIDE_PATH:
            return False
        idx = _STRIDE_PATH[node.op_type]
        stack += [
            node.input[i] for i in (range(len(node.input)) if idx is None else idx) if i < len(node.input)
        ]
    return found


def _rescale_box_strides(
    model: onnx.ModelProto, outputs: Sequence[str], caller: str, internal: str, w_axis: int
) -> list[str]:
    """Boxes in the caller's pixel coordinates: a detector decodes ``(anchor +- distance) * stride``
    in the pixels of the image it sees; inside a resized model that is the internal size. The
    stride tensor that multiplies the boxes of an output (``Concat(Mul(boxes, strides), scores)``)
    is multiplied by ``caller width / internal width``, measured at run time. Returns the
    outputs rescaled (none when no output has that pattern).
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    done: list[str] = []
    for out in outputs:
        node = producers.get(out)
        parts = list(node.input) if node is not None and node.op_type == "Concat" else [out]
        for part in parts:
            mul = producers.get(part)
            if mul is None or mul.op_type != "Mul":
                continue
            for k, operand in enumerate(mul.input):
                if not _stride_tensor(model, operand):
                    continue
                ratio = _unique(model, f"{out}_box_scale")
                a, b = _unique(model, f"{ratio}_caller"), _unique(model, f"{ratio}_internal")
                axis = _unique(model, f"{ratio}_axis")
                model.graph.initializer.append(numpy_helper.from_array(np.array(w_axis, np.int64), axis))
                new = [
                    helper.make_node("Shape", [caller], [a + "_shape"]),
                    helper.make_node("Gather", [a + "_shape", axis], [a + "_w"]),
                    helper.make_node("Cast", [a + "_w"], [a], to=onnx.TensorProto.FLOAT),
                    helper.make_node("Shape", [internal], [b + "_shape"]),
                    helper.make_node("Gather", [b + "_shape", axis], [b + "_w"]),
                    helper.make_node("Cast", [b + "_w"], [b], to=onnx.TensorProto.FLOAT),
                    helper.make_node("Div", [a, b], [ratio]),
                    helper.make_node("Mul", [operand, ratio], [ratio + "_strides"]),
                ]
                mul.input[k] = ratio + "_strides"
                at = list(model.graph.node).index(mul)
                for j, n in enumerate(new):
                    model.graph.node.insert(at + j, n)
                done.append(out)
                break
            if out in done:
                break
    return done


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewriteInputResolutionPass(SqueezePass):
    """Run the model at another input resolution (see :mod:`.analysis` for what is accepted).

    Rewrites: the image input's H and W (or, with ``keep_interface``, inserts a Resize after the
    input and before each image-to-image output), and the shape constants derived from the old
    size. Requires: valid options and a model the analysis accepts (fully convolutional, or
    globally pooled before any layer tied to the feature-map size); otherwise ``PreconditionError``
    names the node. Ensures: the result passes ``onnx.checker``. Runs no model: whether the result
    runs at its size is checked by the technique layer.

    Attributes:
        resolution: the new ``(H, W)``.
        scale: a factor on H and W instead of ``resolution`` (dynamic inputs need it, with
            ``keep_interface``); scaled sizes are rounded to the stride the model needs.
        input_name: the image input (default: the only input of rank >= 3).
        keep_interface: keep the original input and output shapes.
        mode: interpolation of the interface Resizes: linear, nearest or cubic.
        size: the ``(H, W)`` callers send when the input's H and W are dynamic (the size the
            analysis traces at and the scale applies to; default 224x224).
    """

    name: ClassVar[str] = "resolution"
    resolution: tuple[int, int] | None = None
    scale: float | None = None
    input_name: str | None = None
    keep_interface: bool = False
    mode: str = "linear"
    size: tuple[int, int] | None = None

    def requires(self, model: ir.Model) -> None:
        try:
            _validate(self.resolution, self.scale, self.mode)
            verdict = analyze_resolution(model, input_name=self.input_name, probe=self.size)
        except (InputError, UnsupportedModelError) as e:
            raise ir.passes.PreconditionError(str(e)) from e
        if not verdict.ok:
            raise ir.passes.PreconditionError(verdict.message)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        try:
            proto, _, modified = rewrite_resolution(
                model,
                resolution=self.resolution,
                scale=self.scale,
                input_name=self.input_name,
                keep_interface=self.keep_interface,
                mode=self.mode,
                size=self.size,
            )
        except (InputError, UnsupportedModelError) as e:
            raise ir.passes.PassError(str(e)) from e
        if not modified:
            return ir.passes.PassResult(model, False)
        new = ir.serde.deserialize_model(proto)
        model.graph = new.graph
        model.functions.clear()
        model.functions.update(new.functions)
        return ir.passes.PassResult(model, True)

    def ensures(self, model: ir.Model) -> None:
        try:
            onnx.checker.check_model(ir.serde.serialize_model(model), full_check=False)
        except onnx.checker.ValidationError as e:
            raise ir.passes.PostconditionError(f"the rewritten model is invalid: {one_line(e)}") from e
