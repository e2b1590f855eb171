"""The channel dependency analysis of structured channel pruning (:mod:`.channels`).

Every Conv/Gemm/MatMul with a constant weight opens a *channel space* (its output channels). A
forward walk gives each value that carries channels a *layout*: the axis and a list of segments
``(space, start, stop, block)``, so that

- elementwise activations, pools, BatchNormalization, depthwise convs (``group == C``), Transpose
  and Reshapes that keep the channel axis pass the layout through (their per-channel parameters
  are sliced, the depthwise ``group`` attribute rewritten);
- ``Concat`` on the channel axis concatenates segments (offsets follow from the kept counts);
- ``Split`` / ``Slice`` on the channel axis take sub-ranges (sizes and starts/ends rewritten);
- ``Flatten`` / ``Reshape`` to ``[N, C*H*W]`` multiplies the block, so a following Gemm drops
  ``H*W``-wide blocks of its input columns;
- ``Add``/``Mul``/... of two channel tensors *couples* their spaces (union-find): the producers of
  a residual stream form one group and are pruned with the same indices, or left alone;
- anything else that reads a channel tensor (an unknown op, ``Shape``, a grouped conv, a graph
  output) *blocks* the group: model inputs and outputs never change shape.

The analysis records what to slice (:class:`WeightSlice`) and which attributes or constants to
rewrite (``fixups``) but changes nothing: :func:`onnxsqueeze.passes.channels.slice_weights` does.
"""

# NOTE: this module reads the model and modifies nothing; it imports nothing from cli/, bench/ or
# search.

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxsqueeze.passes._ir import const_array as _const

UNARY = frozenset(
    [
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Clip",
        "Elu",
        "Selu",
        "Celu",
        "Softplus",
        "Softsign",
        "Gelu",
        "Erf",
        "Exp",
        "Log",
        "Neg",
        "Abs",
        "Sqrt",
        "Identity",
        "Dropout",
        "Cast",
        "Mish",
        "Floor",
        "Ceil",
        "Round",
        "Reciprocal",
        "ThresholdedRelu",
        "Sign",
        "Sin",
        "Cos",
        "Not",
        "IsNaN",
        "IsInf",
        "QuickGelu",
    ]
)
SPATIAL = frozenset(
    [
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "LpPool",
        "GlobalLpPool",
    ]
)
BINARY = frozenset(
    [
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Pow",
        "PRelu",
        "Where",
        "Equal",
        "Greater",
        "Less",
        "And",
        "Or",
    ]
)
REDUCE = frozenset(
    [
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
    ]
)


@dataclasses.dataclass(frozen=True)
class Segment:
    """``stop - start`` channels of a space, each spanning ``block`` consecutive elements."""

    space: int
    start: int
    stop: int
    block: int = 1

    @property
    def elements(self) -> int:
        return (self.stop - self.start) * self.block


@dataclasses.dataclass(frozen=True)
class Layout:
    axis: int
    segments: tuple[Segment, ...]

    @property
    def elements(self) -> int:
        return sum(s.elements for s in self.segments)


@dataclasses.dataclass
class Space:
    size: int
    producer: ir.Node | None
    fixed: str | None = None  # why this space cannot be pruned
    offset: int = 0  # the producer's first output channel in this space (sub-spaces of a cut)
    children: tuple[int, ...] = ()  # the sub-spaces replacing this one after a cut


@dataclasses.dataclass(frozen=True)
class GroupInfo:
    """One prunable unit: the channel spaces pruned with shared indices."""

    name: str  # the first producer's node name: the key for per-group ratios
    producers: tuple[str, ...]
    channels: int
    blocked: str | None  # why the group is left alone (None: prunable)

    @property
    def coupled(self) -> bool:
        return len(self.producers) > 1


@dataclasses.dataclass(frozen=True)
class WeightSlice:
    """Slice initializer input ``index`` of ``node`` along ``axis`` by the kept indices of ``value``."""

    node: ir.Node
    index: int
    axis: int
    value: ir.Value


class ChannelGraph:
    """The dependency analysis of a model: channel spaces, their coupling, and what to slice.

    Build it with :meth:`analyze`; it does not modify the model
    (:func:`onnxsqueeze.passes.channels.slice_weights` does).
    """

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph
        self.spaces: list[Space] = []
        self.parent: list[int] = []
        self.layouts: dict[ir.Value, Layout] = {}
        self.slices: list[WeightSlice] = []
        self.fixups: list[tuple[str, ir.Node, Any]] = []
        self.consumers: list[ir.Node] = []  # nodes whose weight input columns follow a layout
        self.handled: set[tuple[int, int]] = set()  # (id(node), input index) read legitimately
        self.bn_after: dict[int, ir.Node] = {}  # space -> BatchNormalization right after its producer

    # -- union-find over spaces ---------------------------------------------------------------
    def _new_space(self, size: int, producer: ir.Node | None, fixed: str | None = None) -> int:
        self.spaces.append(Space(size, producer, fixed))
        self.parent.append(len(self.parent))
        return len(self.spaces) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    # -- sub-spaces: a space cut where a residual Add couples part of it ---------------------------
    def resolve(self, seg: Segment) -> list[Segment]:
        """A segment in terms of the current (uncut) spaces."""
        space = self.spaces[seg.space]
        if not space.children:
            return [seg]
        out: list[Segment] = []
        base = space.offset
        for c in space.children:
            child = self.spaces[c]
            lo, hi = child.offset - base, child.offset - base + child.size
            a, b = max(seg.start, lo), min(seg.stop, hi)
            if a < b:
                out.extend(self.resolve(Segment(c, a - lo, b - lo, seg.block)))
        return out

    def segments(self, layout: Layout) -> list[Segment]:
        return [r for seg in layout.segments for r in self.resolve(seg)]

    def _cut(self, seg: Segment) -> bool:
        """Cut the space of ``seg`` so that ``seg`` covers a whole sub-space (False: cannot)."""
        space = self.spaces[seg.space]
        if seg.start == 0 and seg.stop == space.size:
            return True
        members = [s for s in range(len(self.spaces)) if self.find(s) == self.find(seg.space)]
        if members != [seg.space] or space.producer is None:
            return False  # already coupled with other spaces: they would need the same cut
        bounds = sorted({0, seg.start, seg.stop, space.size})
        children = []
        for lo, hi in itertools.pairwise(bounds):
            c = self._new_space(hi - lo, space.producer, space.fixed)
            self.spaces[c].offset = space.offset + lo
            if seg.space in self.bn_after:
                self.bn_after[c] = self.bn_after[seg.space]
            children.append(c)
        space.children = tuple(children)
        return True

    def _block(self, layout: Layout | None, why: str) -> None:
        if layout is None:
            return
        for seg in self.segments(layout):
            space = self.spaces[seg.space]
            if space.fixed is None:
                space.fixed = why

    # -- analysis -------------------------------------------------------------------------------
    @classmethod
    def analyze(cls, model: ir.Model) -> ChannelGraph:
        self = cls(model)
        for node in self.graph:
            self._visit(node)
        # Anything that reads a channel tensor without a rule blocks it (graph outputs included).
        for value, layout in self.layouts.items():
            if value.is_graph_output():
                self._block(layout, f"'{value.name}' is a model output")
            for use in value.uses():
                if (id(use.node), use.idx) not in self.handled:
                    self._block(layout, f"read by {use.node.op_type} '{use.node.name}'")
        return self

    def _mark(self, node: ir.Node, index: int) -> None:
        self.handled.add((id(node), index))

    def _layout(self, value: ir.Value | None) -> Layout | None:
        return self.layouts.get(value) if value is not None else None

    def _visit(self, node: ir.Node) -> None:
        if node.domain not in ("", "ai.onnx"):
            return
        op = node.op_type
        inputs = list(node.inputs)
        lay = [self._layout(v) for v in inputs]
        if not any(lay) and op not in ("Conv", "Gemm", "MatMul"):
            return
        handler = getattr(self, f"_op_{op}", None)
        if handler is not None:
            handler(node, lay)
        elif op in UNARY:
            self._passthrough(node, lay[0], 0)
        elif op in SPATIAL:
            if lay[0] is not None and lay[0].axis == 1:
                self._passthrough(node, lay[0], 0)
        elif op in BINARY:
            self._binary(node, lay)
        elif op in REDUCE:
            self._reduce(node, lay)

    def _passthrough(self, node: ir.Node, layout: Layout | None, index: int) -> None:
        if layout is None:
            return
        self._mark(node, index)
        out = node.outputs[0]
        self.layouts[out] = layout
        if node.op_type == "Dropout":
            for extra in node.outputs[1:]:
                if extra is not None and (extra.uses() or extra.is_graph_output()):
                    self._block(layout, f"Dropout '{node.name}' mask is used")

    # producers ----------------------------------------------------------------------------------
    def _op_Conv(self, node: ir.Node, lay: list[Layout | None]) -> None:
        w = _const(node.inputs[1])
        b_value = node.inputs[2] if len(node.inputs) > 2 else None
        x_layout = lay[0]
        if w is None or (b_value is not None and _const(b_value) is None) or w.ndim < 3:
            self._block(x_layout, f"Conv '{node.name}' has non-constant weights")
            return
        group = attr_int(node, "group", 1)
        cout, cin_g = w.shape[0], w.shape[1]
        if group == 1:
            if x_layout is not None:
                if x_layout.axis != 1 or x_layout.elements != cin_g:
                    self._block(x_layout, f"Conv '{node.name}' input layout mismatch")
                else:
                    self._mark(node, 0)
                    self.slices.append(WeightSlice(node, 1, 1, node.inputs[0]))  # type: ignore[arg-type]
                    self.consumers.append(node)
            space = self._new_space(cout, node)
            y = node.outputs[0]
            self.layouts[y] = Layout(1, (Segment(space, 0, cout),))
            self.slices.append(WeightSlice(node, 1, 0, y))
            if b_value is not None:
                self.slices.append(WeightSlice(node, 2, 0, y))
            return
        if x_layout is not None and cin_g == 1 and group == cout == x_layout.elements and x_layout.axis == 1:
            # depthwise: channel c in -> channel c out; slice W, b, rewrite group
            self._mark(node, 0)
            y = node.outputs[0]
            self.layouts[y] = x_layout
            self.slices.append(WeightSlice(node, 1, 0, y))
            if b_value is not None:
                self.slices.append(WeightSlice(node, 2, 0, y))
            self.fixups.append(("group", node, y))
            return
        self._block(x_layout, f"grouped Conv '{node.name}' (group={group}) is not channel-prunable")

    def _op_Gemm(self, node: ir.Node, lay: list[Layout | None]) -> None:
        w = _const(node.inputs[1])
        c_value = node.inputs[2] if len(node.inputs) > 2 else None
        c = _const(c_value)
        a_layout = lay[0]
        trans_a, trans_b = attr_int(node, "transA", 0), attr_int(node, "transB", 0)
        if w is None or w.ndim != 2 or trans_a or (c_value is not None and c is None):
            self._block(a_layout, f"Gemm '{node.name}' is not prunable (transA or non-constant B/C)")
            self._block(lay[1], f"Gemm '{node.name}' reads it as B")
            return
        k_axis, n_axis = (1, 0) if trans_b else (0, 1)
        if a_layout is not None:
            if a_layout.axis != 1 or a_layout.elements != w.shape[k_axis]:
                self._block(a_layout, f"Gemm '{node.name}' input layout mismatch")
            else:
                self._mark(node, 0)
                self.slices.append(WeightSlice(node, 1, k_axis, node.inputs[0]))  # type: ignore[arg-type]
                self.consumers.append(node)
        n = w.shape[n_axis]
        space = self._new_space(n, node)
        y = node.outputs[0]
        self.layouts[y] = Layout(1, (Segment(space, 0, n),))
        self.slices.append(WeightSlice(node, 1, n_axis, y))
        if c is not None and c.ndim >= 1 and c.shape[-1] == n and n > 1:
            self.slices.append(WeightSlice(node, 2, c.ndim - 1, y))

    def _op_MatMul(self, node: ir.Node, lay: list[Layout | None]) -> None:
        w = _const(node.inputs[1])
        a_layout = lay[0]
        a_rank = _rank(node.inputs[0])
        if w is None or w.ndim != 2 or a_rank is None:
            self._block(a_layout, f"MatMul '{node.name}' has no constant 2-D weight")
            self._block(lay[1], f"MatMul '{node.name}' reads it as B")
            return
        if a_layout is not None:
            if a_layout.axis != a_rank - 1 or a_layout.elements != w.shape[0]:
                self._block(a_layout, f"MatMul '{node.name}' input layout mismatch")
            else:
                self._mark(node, 0)
                self.slices.append(WeightSlice(node, 1, 0, node.inputs[0]))  # type: ignore[arg-type]
                self.consumers.append(node)
        y = node.outputs[0]
        y_rank = _rank(y) or max(a_rank, 2)
        space = self._new_space(w.shape[1], node)
        self.layouts[y] = Layout(y_rank - 1, (Segment(space, 0, w.shape[1]),))
        self.slices.append(WeightSlice(node, 1, 1, y))

    # pass-through with parameters -------------------------------------------------------------
    def _op_BatchNormalization(self, node: ir.Node, lay: list[Layout | None]) -> None:
        x = lay[0]
        if x is None:
            return
        params = [_const(v) for v in node.inputs[1:5]]
        extra = [o for o in node.outputs[1:] if o is not None and (o.uses() or o.is_graph_output())]
        if x.axis != 1 or any(p is None for p in params) or extra:
            self._block(x, f"BatchNormalization '{node.name}' is not in inference form")
            return
        self._passthrough(node, x, 0)
        for i in range(1, 5):
            self.slices.append(WeightSlice(node, i, 0, node.outputs[0]))
        if len(x.segments) == 1:
            producer = self.spaces[x.segments[0].space].producer
            if producer is not None and producer.outputs[0] is node.inputs[0]:
                self.bn_after[x.segments[0].space] = node

    def _binary(self, node: ir.Node, lay: list[Layout | None]) -> None:
        out = node.outputs[0]
        out_rank = _rank(out)
        present = [(i, lay[i]) for i in range(len(lay)) if lay[i] is not None]
        if out_rank is None:
            for _, la in present:
                self._block(la, f"{node.op_type} '{node.name}' has an unknown output rank")
            return
        axes = {out_rank - (_rank(node.inputs[i]) or 0) + la.axis for i, la in present}  # type: ignore[union-attr]
        first = present[0][1]
        assert first is not None
        reason = None
        if len(axes) != 1:
            reason = "channel axes do not align"
        else:
            for _, la in present[1:]:
                assert la is not None
                if not self._couple(first, la):
                    reason = "operands' channel layouts differ"
        out_axis = next(iter(axes))
        if reason is None:
            for i, v in enumerate(node.inputs):
                if lay[i] is not None or v is None:
                    continue
                const = _const(v)
                rank = _rank(v)
                if rank is None:
                    reason = f"operand '{v.name}' has an unknown rank"
                    break
                dim = out_axis - (out_rank - rank)
                if dim < 0:
                    continue
                size = _dims(v)[dim] if _dims(v) is not None else None  # type: ignore[index]
                if size == 1:
                    continue
                if const is None or size != first.elements:
                    reason = f"operand '{v.name}' varies along the channel axis"
                    break
                self.slices.append(WeightSlice(node, i, dim, out))
        if reason is not None:
            for _, la in present:
                self._block(la, f"{node.op_type} '{node.name}': {reason}")
            return
        for i, _ in present:
            self._mark(node, i)
        self.layouts[out] = Layout(out_axis, first.segments)

    def _couple(self, a: Layout, b: Layout) -> bool:
        sa_list, sb_list = self.segments(a), self.segments(b)
        if sa_list == sb_list:
            return True
        if len(sa_list) != len(sb_list):
            return False
        # C2f: Add(split half of one conv's output, another conv's output): cut the first space
        # so the half becomes a sub-space of its own, coupled with the other conv.
        for sa, sb in zip(sa_list, sb_list, strict=True):
            same_size = sa.block == sb.block and sa.stop - sa.start == sb.stop - sb.start
            if sa != sb and same_size and not (self._cut(sa) and self._cut(sb)):
                return False
        sa_list, sb_list = self.segments(a), self.segments(b)
        if len(sa_list) != len(sb_list):
            return False
        pairs = list(zip(sa_list, sb_list, strict=True))
        for sa, sb in pairs:
            full_a = sa.start == 0 and sa.stop == self.spaces[sa.space].size
            full_b = sb.start == 0 and sb.stop == self.spaces[sb.space].size
            if sa == sb:
                continue
            if not (full_a and full_b and sa.block == sb.block and sa.stop == sb.stop):
                return False
        for sa, sb in pairs:
            self._union(sa.space, sb.space)
        return True

    def _reduce(self, node: ir.Node, lay: list[Layout | None]) -> None:
        x = lay[0]
        rank = _rank(node.inputs[0])
        if x is None or rank is None:
            return
        axes_attr = node.attributes.get("axes")
        if axes_attr is not None:
            axes = list(axes_attr.as_ints())
        elif len(node.inputs) > 1 and node.inputs[1] is not None:
            c = _const(node.inputs[1])
            if c is None:
                self._block(x, f"{node.op_type} '{node.name}' has dynamic axes")
                return
            axes = [int(a) for a in c.reshape(-1)]
        else:
            axes = list(range(rank))
        axes = [a % rank for a in axes]
        if x.axis in axes:
            self._block(x, f"{node.op_type} '{node.name}' reduces over channels")
            return
        keep = attr_int(node, "keepdims", 1)
        axis = x.axis if keep else x.axis - sum(1 for a in axes if a < x.axis)
        self._mark(node, 0)
        self.layouts[node.outputs[0]] = Layout(axis, x.segments)

    # structure ------------------------------------------------------------------------------
    def _op_Concat(self, node: ir.Node, lay: list[Layout | None]) -> None:
        out = node.outputs[0]
        rank = _rank(out)
        present = [la for la in lay if la is not None]
        axis = attr_int(node, "axis", 0) % rank if rank else None
        if axis is None or len({la.axis for la in present}) != 1:
            for other in present:
                self._block(other, f"Concat '{node.name}' layouts do not align")
            return
        ch_axis = present[0].axis
        if axis != ch_axis:
            self._binary(node, lay)  # concatenating along another axis: operands coupled like an Add
            return
        segments: list[Segment] = []
        for i, v in enumerate(node.inputs):
            got = lay[i]
            if got is not None:
                segments.extend(got.segments)
                self._mark(node, i)
                continue
            dims = _dims(v) if v is not None else None
            if dims is None or dims[axis] is None:
                for other in present:
                    self._block(
                        other, f"Concat '{node.name}' input '{getattr(v, 'name', '')}' has unknown size"
                    )
                return
            size = int(dims[axis] or 0)
            fixed = self._new_space(size, None, fixed=f"Concat '{node.name}' input without a producer")
            segments.append(Segment(fixed, 0, size))
        self.layouts[out] = Layout(axis, tuple(segments))

    def _op_Split(self, node: ir.Node, lay: list[Layout | None]) -> None:
        x = lay[0]
        rank = _rank(node.inputs[0])
        if x is None or rank is None:
            return
        axis = attr_int(node, "axis", 0) % rank
        outs = [o for o in node.outputs if o is not None]
        if axis != x.axis:
            self._mark(node, 0)
            for o in outs:
                self.layouts[o] = x
            return
        sizes = split_sizes(node, x.elements)
        if sizes is None:
            self._block(x, f"Split '{node.name}' has dynamic split sizes")
            return
        subs = []
        start = 0
        for n in sizes:
            sub = _sub_layout(x, start, start + n)
            if sub is None:
                self._block(x, f"Split '{node.name}' cuts through a flattened channel")
                return
            subs.append(sub)
            start += n
        self._mark(node, 0)
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            self._mark(node, 1)
        for o, sub in zip(outs, subs, strict=True):
            self.layouts[o] = sub
        self.fixups.append(("split", node, x))

    def _op_Slice(self, node: ir.Node, lay: list[Layout | None]) -> None:
        x = lay[0]
        dims = _dims(node.inputs[0])
        if x is None or dims is None:
            self._block(x, f"Slice '{node.name}' has unknown shapes")
            return
        consts = [_const(v) if v is not None else None for v in node.inputs[1:5]]
        starts, ends = consts[0], consts[1]
        axes = consts[2] if len(consts) > 2 and node.inputs[3] is not None else None
        steps = consts[3] if len(consts) > 3 and node.inputs[4] is not None else None
        if (
            starts is None
            or ends is None
            or (len(node.inputs) > 3 and node.inputs[3] is not None and axes is None)
        ):
            self._block(x, f"Slice '{node.name}' has dynamic bounds")
            return
        rank = len(dims)
        ax = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
        if x.axis not in ax:
            self._mark(node, 0)
            self.layouts[node.outputs[0]] = x
            return
        k = ax.index(x.axis)
        if steps is not None and int(steps[k]) != 1:
            self._block(x, f"Slice '{node.name}' steps over channels")
            return
        n = x.elements
        lo, hi = int(starts[k]), int(ends[k])
        lo = min(max(lo + n if lo < 0 else lo, 0), n)
        hi = min(max(hi + n if hi < 0 else hi, 0), n)
        sub = _sub_layout(x, lo, max(lo, hi))
        if sub is None:
            self._block(x, f"Slice '{node.name}' cuts through a flattened channel")
            return
        self._mark(node, 0)
        for i in range(1, len(node.inputs)):
            self._mark(node, i)
        self.layouts[node.outputs[0]] = sub
        self.fixups.append(("slice", node, (x, k, lo, max(lo, hi))))

    def _op_Flatten(self, node: ir.Node, lay: list[Layout | None]) -> None:
        x = lay[0]
        dims = _dims(node.inputs[0])
        axis = attr_int(node, "axis", 1)
        if x is None:
            return
        if dims is None or axis % len(dims) != 1 or x.axis != 1 or any(d is None for d in dims[2:]):
            self._block(x, f"Flatten '{node.name}' mixes channels with other axes")
            return
        inner = int(np.prod([int(d) for d in dims[2:]], dtype=np.int64))  # type: ignore[arg-type]
        self._mark(node, 0)
        self.layouts[node.outputs[0]] = _scaled(x, inner)

    def _op_Reshape(self, node: ir.Node, lay: list[Layout | None]) -> None:
        x = lay[0]
        if x is None:
            return
        dims_in, dims_out = _dims(node.inputs[0]), _dims(node.outputs[0])
        shape = _const(node.inputs[1]) if len(node.inputs) > 1 else None
        ok = dims_in is not None and dims_out is not None and shape is not None and x.axis == 1
        if ok and dims_out is not None and len(dims_out) >= 2 and dims_out[1] is not None:
            assert dims_in is not None and dims_out is not None
            keep_axis = len(dims_out) >= 2 and dims_out[:2] == dims_in[:2]
            tail = dims_in[2:]
            flat = len(dims_out) == 2 and all(d is not None for d in tail)
            if keep_axis and all(d is not None for d in dims_in[1:]):
                self._mark(node, 0)
                self._mark(node, 1)
                self.layouts[node.outputs[0]] = x
                self.fixups.append(("reshape", node, node.outputs[0]))
                return
            if flat:
                inner = int(np.prod([int(d) for d in tail], dtype=np.int64))  # type: ignore[arg-type]
                if dims_out[1] == x.elements * inner:
                    self._mark(node, 0)
                    self._mark(node, 1)
                    self.layouts[node.outputs[0]] = _scaled(x, inner)
                    self.fixups.append(("reshape", node, node.outputs[0]))
                    return
        self._block(x, f"Reshape '{node.name}' mixes channels with other axes")

    def _op_Resize(self, node: ir.Node, lay: list[Layout | None]) -> None:
        """Upsampling (FPN necks): channels pass through when constant scales keep axes 0 and 1."""
        x = lay[0]
        if x is None:
            return
        scales = _const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        sizes = node.inputs[3] if len(node.inputs) > 3 else None
        if x.axis != 1 or sizes is not None or scales is None or scales.size < 2 or np.any(scales[:2] != 1):
            self._block(x, f"Resize '{node.name}' does not keep the channel axis by constant scales")
            return
        self._passthrough(node, x, 0)

    def _op_Transpose(self, node: ir.Node, lay: list[Layout | None]) -> None:
        x = lay[0]
        rank = _rank(node.inputs[0])
        if x is None or rank is None:
            return
        perm_attr = node.attributes.get("perm")
        perm = list(perm_attr.as_ints()) if perm_attr is not None else list(range(rank))[::-1]
        self._mark(node, 0)
        self.layouts[node.outputs[0]] = Layout(perm.index(x.axis), x.segments)

    # -- selection ------------------------------------------------------------------------------
    def groups(self) -> dict[int, GroupInfo]:
        """Every group with a producer, keyed by its root space, in topological order."""
        members: dict[int, list[int]] = {}
        for s in range(len(self.spaces)):
            if not self.spaces[s].children:  # a cut space lives on in its sub-spaces
                members.setdefault(self.find(s), []).append(s)
        out: dict[int, GroupInfo] = {}
        for root, spaces in sorted(members.items(), key=lambda kv: min(kv[1])):
            producers = [self.spaces[s].producer for s in spaces if self.spaces[s].producer is not None]
            if not producers:
                continue
            blocked = next((self.spaces[s].fixed for s in spaces if self.spaces[s].fixed), None)
            if any(self.spaces[s].producer is None for s in spaces) and blocked is None:
                blocked = "coupled with channels that have no producer"
            names = tuple(self._space_label(s) for s in spaces if self.spaces[s].producer is not None)
            out[root] = GroupInfo(names[0], names, self.spaces[root].size, blocked)
        return out

    def _space_label(self, s: int) -> str:
        space = self.spaces[s]
        assert space.producer is not None
        label = _label(space.producer)
        if space.offset == 0 and space.size == self._producer_channels(space.producer):
            return label
        return f"{label}[{space.offset}:{space.offset + space.size}]"

    def _producer_channels(self, node: ir.Node) -> int:
        w = _const(node.inputs[1])
        assert w is not None
        if node.op_type == "Gemm":
            return int(w.shape[0] if attr_int(node, "transB", 0) else w.shape[1])
        return int(w.shape[1] if node.op_type == "MatMul" else w.shape[0])


# -- helpers ----------------------------------------------------------------------------------------
def _dims(value: ir.Value | None) -> tuple[int | None, ...] | None:
    if value is None or value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in value.shape)


def _rank(value: ir.Value | None) -> int | None:
    dims = _dims(value)
    return len(dims) if dims is not None else None


def attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return attr.as_int() if attr is not None else default


def _label(node: ir.Node) -> str:
    """A node's name, or its first output's name for unnamed nodes (unique either way in practice)."""
    return node.name or f"{node.op_type}:{node.outputs[0].name}"


def _scaled(x: Layout, inner: int) -> Layout:
    return Layout(1, tuple(dataclasses.replace(s, block=s.block * inner) for s in x.segments))


def _sub_layout(x: Layout, lo: int, hi: int) -> Layout | None:
    """The segments covering elements ``[lo, hi)`` of a layout, or None if a block is cut."""
    out = []
    offset = 0
    for seg in x.segments:
        a, b = max(lo, offset), min(hi, offset + seg.elements)
        if a < b:
            if (a - offset) % seg.block or (b - offset) % seg.block:
                return None
            out.append(
                Segment(
                    seg.space,
                    seg.start + (a - offset) // seg.block,
                    seg.start + (b - offset) // seg.block,
                    seg.block,
                )
            )
        offset += seg.elements
    return Layout(x.axis, tuple(out))


def split_sizes(node: ir.Node, total: int) -> list[int] | None:
    attr = node.attributes.get("split")
    if attr is not None:
        return list(attr.as_ints())
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        c = _const(node.inputs[1])
        return [int(s) for s in c.reshape(-1)] if c is not None else None
    n = len(node.outputs)
    if "num_outputs" in node.attributes:
        n = node.attributes["num_outputs"].as_int()
    chunk = -(-total // n)
    return [min(chunk, total - i * chunk) for i in range(n)]
