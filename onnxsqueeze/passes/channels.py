"""Structured channel pruning: remove whole output channels (filters, neurons) and propagate.

**Dependency analysis** (:mod:`.channel_graph`, whose docstring has the rules): a forward walk
gives each value that carries channels a layout over the *channel spaces* that Conv/Gemm/MatMul
weights open; elementwise ops couple spaces into groups, and any reader that cannot follow a
channel change blocks its group, so model inputs and outputs never change shape.

**Pruning.** Each free group keeps ``ceil_to(round_to, C * (1 - ratio))`` channels ranked by the
producers' weight norms (L1 or L2 per output channel, normalized per producer and summed over a
coupled group) or by ``|gamma|`` of a BatchNormalization right after the producer. Every weight
indexed by a pruned channel is sliced: producers' output rows and biases, per-channel parameters,
and the consumers' input columns (``W[:, kept]`` for Conv, ``B[kept]`` / ``B[:, kept]`` for Gemm).

**Reconstruction** (``calibration`` given): see :mod:`onnxsqueeze.passes.reconstruct`. Each consumer
whose input lost channels is re-fitted by least squares so that its output on the calibration data
matches the original model's (``min ||conv(X', W') + b' - Y||``), layer by layer in topological
order, each fitted on the already-pruned upstream (so errors do not accumulate).

Requires: static channel dimensions (shape inference must know them). Without calibration the
result depends on the weight criterion alone and accuracy usually drops without fine-tuning.
"""

# NOTE: this module imports nothing from cli/, bench/ or search; onnxruntime only inside reconstruct.

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from onnxsqueeze.errors import InputError, UnsupportedModelError, one_line
from onnxsqueeze.passes import reconstruct
from onnxsqueeze.passes._ir import const_array as _const
from onnxsqueeze.passes._ir import lift_constant_weights, new_initializer, set_const_input
from onnxsqueeze.passes.base import SqueezePass
from onnxsqueeze.passes.channel_graph import (
    ChannelGraph,
    GroupInfo,
    Layout,
    WeightSlice,
    attr_int,
    split_sizes,
)


# -- selection and surgery -----------------------------------------------------------------------
def importance(cg: ChannelGraph, root: int, criterion: str) -> tuple[np.ndarray, str]:
    """Per-channel importance of a group (higher = keep) and the criterion actually used."""
    spaces = [s for s in range(len(cg.spaces)) if cg.find(s) == root and not cg.spaces[s].children]
    used = criterion
    if criterion == "bn":
        bns = [cg.bn_after.get(s) for s in spaces]
        if any(bn is not None for bn in bns):
            score = np.zeros(cg.spaces[root].size)
            for s, bn in zip(spaces, bns, strict=True):
                if bn is not None:
                    gamma = np.abs(_const(bn.inputs[1]).astype(np.float64))  # type: ignore[union-attr]
                    sp = cg.spaces[s]
                    gamma = gamma[sp.offset : sp.offset + sp.size]
                    score += gamma / max(gamma.max(), 1e-12)
            return score, "bn"
        used = "l2"  # no BatchNormalization after the producers (folded): fall back to weights
    score = np.zeros(cg.spaces[root].size)
    for s in spaces:
        node = cg.spaces[s].producer
        if node is None:
            continue
        w = _const(node.inputs[1]).astype(np.float64)  # type: ignore[union-attr]
        if node.op_type == "Gemm":
            w = w if attr_int(node, "transB", 0) else w.T
        elif node.op_type == "MatMul":
            w = w.T
        sp = cg.spaces[s]
        flat = w.reshape(w.shape[0], -1)[sp.offset : sp.offset + sp.size]
        norm = np.abs(flat).sum(axis=1) if used == "l1" else np.sqrt((flat**2).sum(axis=1))
        score += norm / max(norm.max(), 1e-12)
    return score, used


def kept_indices(cg: ChannelGraph, layout: Layout, kept: Mapping[int, np.ndarray]) -> np.ndarray:
    """The kept element indices along a layout's axis."""
    parts = []
    offset = 0
    for seg in cg.segments(layout):
        k = kept.get(cg.find(seg.space))
        if k is None:
            local = np.arange(seg.stop - seg.start)
        else:
            local = k[(k >= seg.start) & (k < seg.stop)] - seg.start
        parts.append((offset + local[:, None] * seg.block + np.arange(seg.block)[None, :]).reshape(-1))
        offset += seg.elements
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def slice_weights(cg: ChannelGraph, kept: Mapping[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Slice every weight by the kept channels of each group; return kept indices per value name."""
    cache: dict[ir.Value, np.ndarray] = {}

    def idx(v: ir.Value) -> np.ndarray:
        if v not in cache:
            cache[v] = kept_indices(cg, cg.layouts[v], kept)
        return cache[v]

    by_input: dict[tuple[int, int], list[WeightSlice]] = {}
    for sl in cg.slices:
        by_input.setdefault((id(sl.node), sl.index), []).append(sl)
    for slices in by_input.values():
        node, index = slices[0].node, slices[0].index
        array = _const(node.inputs[index])
        assert array is not None
        new = array
        for sl in slices:
            i = idx(sl.value)
            if len(i) != new.shape[sl.axis]:
                new = np.take(new, i, axis=sl.axis)
        if new is not array:
            set_const_input(cg.graph, node, index, new)
    for kind, node, arg in cg.fixups:
        if kind == "group":
            node.attributes["group"] = ir.AttrInt64("group", len(idx(arg)))
        elif kind == "split":
            _fix_split(cg, node, arg, kept)
        elif kind == "slice":
            _fix_slice(cg, node, *arg, kept=kept)
        elif kind == "reshape":
            shape = _const(node.inputs[1])
            assert shape is not None
            if int(shape[1]) > 0:
                shape = shape.copy()
                shape[1] = len(idx(arg))
                set_const_input(cg.graph, node, 1, shape)
    return {v.name: idx(v) for v in cg.layouts if v.name}


def _fix_split(cg: ChannelGraph, node: ir.Node, x: Layout, kept: Mapping[int, np.ndarray]) -> None:
    sizes = split_sizes(node, x.elements)
    assert sizes is not None
    keep = kept_indices(cg, x, kept)
    new, start = [], 0
    for n in sizes:
        new.append(int(((keep >= start) & (keep < start + n)).sum()))
        start += n
    arr = np.asarray(new, dtype=np.int64)
    if "split" in node.attributes:
        node.attributes["split"] = ir.AttrInt64s("split", new)
    else:
        if "num_outputs" in node.attributes:
            del node.attributes["num_outputs"]
        if len(node.inputs) < 2:
            node.resize_inputs(2)
        if node.inputs[1] is None:
            value = new_initializer(cg.graph, arr, f"{node.name or 'split'}_sizes")
            node.replace_input_with(1, value)
        else:
            set_const_input(cg.graph, node, 1, arr)


def _fix_slice(cg: ChannelGraph, node: ir.Node, x: Layout, k: int, lo: int, hi: int, *, kept: Any) -> None:
    keep = kept_indices(cg, x, kept)
    new_lo = int((keep < lo).sum())
    new_hi = new_lo + int(((keep >= lo) & (keep < hi)).sum())
    for index, value in ((1, new_lo), (2, new_hi)):
        arr = _const(node.inputs[index]).copy()  # type: ignore[union-attr]
        arr[k] = value
        set_const_input(cg.graph, node, index, arr)


def keep_count(channels: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept when pruning ``ratio`` of ``channels``, rounded up to a multiple of ``round_to``."""
    keep = max(1, round(channels * (1.0 - ratio)))
    if round_to > 1:
        keep = min(channels, max(round_to, math.ceil(keep / round_to) * round_to))
    return keep


def _refresh_shapes(model: ir.Model) -> None:
    """Forget intermediate shapes (channel counts changed) and infer them again."""
    graph = model.graph
    io = {*graph.inputs, *graph.outputs}
    for node in graph:
        for out in node.outputs:
            if out not in io:
                out.shape = None
    ir_common.ShapeInferencePass()(model)


def _bypass_constant_identities(model: ir.Model) -> bool:
    """Read initializers directly where an exporter routed them through Identity (shared weights)."""
    graph = model.graph
    changed = False
    for node in list(graph):
        if node.op_type != "Identity" or node.domain not in ("", "ai.onnx"):
            continue
        src, out = node.inputs[0], node.outputs[0]
        if src is None or not src.is_initializer() or src.is_graph_input() or out.is_graph_output():
            continue
        out.replace_all_uses_with(src)
        graph.remove(node, safe=True)
        changed = True
    return changed


def _infer_shapes(model: ir.Model) -> None:
    try:
        ir_common.ShapeInferencePass()(model)
    except Exception as e:  # the model is invalid for onnx's checker: refuse clearly
        raise UnsupportedModelError(
            f"model '{model.graph.name}': shape inference failed: {one_line(e)}"
        ) from e


@dataclasses.dataclass
class PruneChannelsResult(ir.passes.PassResult):
    """The pass result with what was pruned: per group, and per re-fitted layer."""

    groups: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    reconstruction: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    criterion: str = ""


Criterion = Literal["l1", "l2", "bn"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneChannelsPass(SqueezePass):
    """Remove a fraction of the output channels of Conv/Gemm/MatMul layers and propagate it.

    Rewrites: the weights and biases of producers, per-channel parameters on the way (BN,
    depthwise convs, constants of elementwise ops), consumers' input columns, and the attributes
    or constants of depthwise ``group``, ``Split``, ``Slice`` and ``Reshape``. Coupled groups
    (residual Add/Mul) are pruned with shared indices when ``coupled`` is true.

    Args:
        ratio: fraction of channels removed in every prunable group (0 <= ratio < 1).
        ratios: per-group overrides, keyed by the group's name (its first producer node).
        criterion: ``l1`` / ``l2`` norms of the producers' filters, or ``bn`` (``|gamma|`` of a
            BatchNormalization after the producer; l2 where there is none).
        round_to: kept channel counts are multiples of this (hardware-friendly).
        coupled: prune coupled (residual) groups too; otherwise leave them whole.
        skip: group names never pruned.
        calibration: model inputs (name -> array, first axis = samples) for reconstruction.
        reconstruction: ``lsq`` (least-squares re-fit of consumers, bias included), ``bias``
            (bias correction only) or ``none``. Ignored without calibration.
        ridge: relative Tikhonov regularization of the least-squares fit; None chooses it per
            layer on held-out calibration samples (and keeps a layer's weights when the re-fit
            does not help there).
        max_rows: rows (output positions) sampled per layer for the fit.

    Requires: static channel dimensions; float weights (initializers, or Constant nodes, which
    are lifted to initializers first).
    """

    name: ClassVar[str] = "channels"
    ratio: float = 0.3
    ratios: Mapping[str, float] | None = None
    criterion: Criterion = "l2"
    round_to: int = 1
    coupled: bool = True
    skip: tuple[str, ...] = ()
    calibration: Mapping[str, np.ndarray] | None = dataclasses.field(default=None, repr=False, compare=False)
    reconstruction: Literal["lsq", "bias", "none"] = "lsq"
    ridge: float | None = None
    max_rows: int = 20000
    on_progress: Callable[[int, int], None] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for r in [self.ratio, *(self.ratios or {}).values()]:
            if not 0.0 <= r < 1.0:
                raise InputError(f"channel ratio {r} is out of range; use 0 <= ratio < 1")
        if self.criterion not in ("l1", "l2", "bn"):
            raise InputError(f"unknown criterion '{self.criterion}'; use l1, l2 or bn")
        if self.round_to < 1:
            raise InputError(f"--round-to must be >= 1, got {self.round_to}")
        if self.reconstruction not in ("lsq", "bias", "none"):
            raise InputError(f"unknown reconstruction '{self.reconstruction}'; use lsq, bias or none")

    def options(self) -> dict[str, Any]:
        out = super().options()
        out.pop("on_progress", None)
        data = out.pop("calibration", None)
        out["ratios"] = dict(self.ratios) if self.ratios else None
        out["calibration_samples"] = (
            len(next(iter(data.values()))) if data else 0  # the data itself is not provenance
        )
        return out

    def call(self, model: ir.Model) -> PruneChannelsResult:
        lifted = lift_constant_weights(model)
        bypassed = _bypass_constant_identities(model) or lifted
        _infer_shapes(model)
        cg = ChannelGraph.analyze(model)
        groups = cg.groups()
        kept: dict[int, np.ndarray] = {}
        report: list[dict[str, Any]] = []
        used: str = self.criterion
        for root, g in groups.items():
            ratio = (self.ratios or {}).get(g.name, self.ratio)
            status = g.blocked
            if status is None and g.name in self.skip:
                status = "skipped"
            if status is None and g.coupled and not self.coupled:
                status = "coupled (left whole)"
            keep = g.channels
            if status is None and ratio > 0:
                keep = keep_count(g.channels, ratio, self.round_to)
                if keep < g.channels:
                    score, used = importance(cg, root, self.criterion)
                    order = np.argsort(-score, kind="stable")
                    kept[root] = np.sort(order[:keep]).astype(np.int64)
            report.append(
                {
                    "group": g.name,
                    "producers": list(g.producers),
                    "channels": g.channels,
                    "kept": keep if root in kept else g.channels,
                    "status": status or ("pruned" if root in kept else "unchanged"),
                }
            )
        if not kept:
            return PruneChannelsResult(model, bypassed, groups=report, criterion=used)
        original = None
        if self.calibration is not None and self.reconstruction != "none":
            original = ir.serde.serialize_model(model)
        consumers = [c for c in cg.consumers if _consumer_changed(cg, c, kept)]
        kept_by_value = slice_weights(cg, kept)
        _refresh_shapes(model)
        recon: list[dict[str, Any]] = []
        if original is not None:
            recon = reconstruct.refit(
                original,
                model,
                consumers,
                kept_by_value,
                self.calibration,  # type: ignore[arg-type]
                mode=self.reconstruction,
                ridge=self.ridge,
                max_rows=self.max_rows,
                on_progress=self.on_progress,
            )
        ir_common.RemoveUnusedNodesPass()(model)
        return PruneChannelsResult(model, True, groups=report, reconstruction=recon, criterion=used)


def _consumer_changed(cg: ChannelGraph, node: ir.Node, kept: Mapping[int, np.ndarray]) -> bool:
    layout = cg.layouts.get(node.inputs[0]) if node.inputs[0] is not None else None
    return layout is not None and any(cg.find(s.space) in kept for s in cg.segments(layout))


def analyze(model: ir.Model) -> list[GroupInfo]:
    """The prunable (and blocked) channel groups of a model, in topological order (modifies shapes)."""
    lift_constant_weights(model)
    _bypass_constant_identities(model)
    _infer_shapes(model)
    return list(ChannelGraph.analyze(model).groups().values())


__all__ = [
    "ChannelGraph",
    "GroupInfo",
    "PruneChannelsPass",
    "PruneChannelsResult",
    "analyze",
    "keep_count",
    "lift_constant_weights",
]
