"""The state of an input-resolution trace and the ONNX helpers the analysis and the rewrite share.

A :class:`Trace` records, for every value of a (named) model, which of its axes follow the
input's H and W (:data:`Kinds`: per axis, a subset of ``{"H", "W"}``), which values are constants
or computed from run-time shapes, and the constant rewrites planned (:class:`Action`). The op
handlers (:mod:`.ops`) fill it in; :mod:`.analysis` turns it into a verdict and :mod:`.rewrite`
applies its plan.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from onnxsqueeze import shapes as sshapes
from onnxsqueeze.errors import InputError

INT64_MAX = 2**63 - 1

Kinds = tuple[frozenset[str], ...]
KIND_NONE: frozenset[str] = frozenset()
KIND_H: frozenset[str] = frozenset({"H"})
KIND_W: frozenset[str] = frozenset({"W"})


class Refused(Exception):
    """A node that stops the trace, and why (the verdict names it)."""

    def __init__(self, node: onnx.NodeProto, reason: str) -> None:
        super().__init__(reason)
        self.node = node
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Action:
    """A planned constant rewrite: ``kind`` on input ``index`` of ``node`` (by name)."""

    kind: str  # reshape | resize | expand | slice | shrink | regrow | fill-shrink | fill-regrow | globalpool
    node: str
    index: int
    axes: tuple[int, ...] = ()


@dataclasses.dataclass
class Trace:
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
    plan: list[Action] = dataclasses.field(default_factory=list)
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
        return (KIND_NONE,) * rank

    def spatial(self, name: str) -> bool:
        return any(self.k(name))

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        return self.old.get(name)


def get_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def node_label(node: onnx.NodeProto) -> str:
    return node.name


def name_nodes(model: onnx.ModelProto) -> None:
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


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def detect_layout(dims: Sequence[int | str | None]) -> str:
    """NCHW unless the last axis looks like channels (1, 3 or 4) and axis 1 does not."""
    if len(dims) == 4 and dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4):
        return "NHWC"
    return "NCHW"


def hw_axes(layout: str, rank: int) -> tuple[int, int]:
    return (1, 2) if layout == "NHWC" else (rank - 2, rank - 1)


def image_input(model: onnx.ModelProto, name: str | None) -> onnx.ValueInfoProto:
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


def literals_of(model: onnx.ModelProto) -> dict[str, np.ndarray]:
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


def inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
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


def static_dims(s: tuple[int | None, ...] | None) -> tuple[int, ...] | None:
    if s is None or any(d is None for d in s):
        return None
    return tuple(int(d) for d in s)  # type: ignore[arg-type]


def fmt_kind(kind: frozenset[str]) -> str:
    return "*".join(sorted(kind)) or "-"


# A run-time entry of a shape vector (computed from Shape at run time, so it adapts by itself).
RUNTIME = -(2**62)


def shape_vector(
    literals: Mapping[str, np.ndarray],
    dynamic: set[str] | None,
    old: Mapping[str, tuple[int | None, ...]],
    producer: Mapping[str, onnx.NodeProto],
    name: str,
) -> tuple[np.ndarray, list[tuple[int | None, int, int]]] | None:
    """A shape vector (Reshape target, Resize sizes) as values with ``RUNTIME`` for run-time parts.

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
            v = np.full(int(shape[0]), RUNTIME, np.int64)
        else:
            return None
        values.append(v)
        offset += v.size
    return np.concatenate(values) if values else np.zeros(0, np.int64), pieces


def copy_model(model: onnx.ModelProto | ir.Model) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model if isinstance(model, onnx.ModelProto) else ir.serde.serialize_model(model))
    return out
