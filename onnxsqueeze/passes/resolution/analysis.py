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
input's H and W must be a multiple of (see :mod:`.ops`).

The trace's state is :mod:`.trace`; the operators' rules are :mod:`.ops`.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import onnx
import onnx_ir as ir

from onnxsqueeze import shapes as sshapes
from onnxsqueeze.errors import InputError
from onnxsqueeze.passes.resolution.ops import propagate
from onnxsqueeze.passes.resolution.trace import (
    KIND_H,
    KIND_NONE,
    KIND_W,
    Refused,
    Trace,
    copy_model,
    detect_layout,
    hw_axes,
    image_input,
    literals_of,
    name_nodes,
    node_label,
)

MODES = ("linear", "nearest", "cubic")


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


def analyze_trace(
    model: onnx.ModelProto, input_name: str | None, probe: tuple[int, int] | None
) -> tuple[ResolutionVerdict, Trace]:
    """The verdict and the trace of a named model (see :func:`name_nodes`), traced again at a
    size the model accepts when its H and W are dynamic."""
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
) -> tuple[ResolutionVerdict, Trace]:
    vi = image_input(model, input_name)
    declared = sshapes.declared_shape(vi)
    layout = detect_layout(declared)
    ha, wa = hw_axes(layout, len(declared))
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
    trace = Trace(model=model, input=vi.name, layout=layout, old=old)
    trace.literals = literals_of(model)
    trace.const = set(trace.literals)
    trace.kinds[vi.name] = tuple(
        KIND_H if a == ha else KIND_W if a == wa else KIND_NONE for a in range(len(declared))
    )
    trace.stride[vi.name] = (Fraction(1), Fraction(1))
    trace.peak[vi.name] = (1, 1)
    for node in model.graph.node:
        for o in node.output:
            trace.producer[o] = node
    try:
        for node in model.graph.node:
            propagate(trace, node)
        outputs = {o.name: _classify_output(trace, o.name) for o in model.graph.output}
    except Refused as r:
        return (
            ResolutionVerdict(
                ok=False,
                input=vi.name,
                layout=layout,
                size=size,
                node=node_label(r.node),
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


def _classify_output(trace: Trace, name: str) -> str:
    kinds = list(trace.k(name))
    if not any(kinds):
        return "fixed"
    if (
        kinds.count(KIND_H) == 1
        and kinds.count(KIND_W) == 1
        and all(k in (KIND_NONE, KIND_H, KIND_W) for k in kinds)
    ):
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
    proto = copy_model(model)
    name_nodes(proto)
    verdict, _ = analyze_trace(proto, input_name, probe)
    return verdict
