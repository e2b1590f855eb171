"""The resolution technique: check that a rewrite runs, measure it, and sweep resolutions.

The graph work is the pure :mod:`onnxsqueeze.passes.resolution`; this module runs models.

**Sweep** (:func:`sweep_resolutions`): per resolution, MACs, CPU latency and accuracy (labels) or
agreement with the full-resolution model (top-1 agreement for class scores, IoU of thresholded or
argmax maps and mean abs error for image-to-image outputs).
"""

# NOTE: lives outside passes/ because it runs onnxruntime; imports nothing from cli/.

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze import shapes as sshapes
from onnxsqueeze.errors import InputError, UnsupportedModelError, one_line
from onnxsqueeze.passes.resolution.analysis import (
    _copy,
    _detect_layout,
    _hw_axes,
    _image_input,
    analyze_resolution,
)
from onnxsqueeze.passes.resolution.rewrite import parse_resolution, rewrite_resolution


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
            f"the model does not run at {where} (is the input smaller than a kernel?): {one_line(e)}"
        ) from e
    for o, r in zip(sess.get_outputs(), results, strict=True):
        arr = np.asarray(r)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise UnsupportedModelError(f"output '{o.name}' has NaN/Inf at the new resolution")


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
            check_runs(plain, verdict.input, res, False, (old_h, old_w))
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
    "SweepPoint",
    "check_runs",
    "compare_outputs",
    "map_iou",
    "parse_sweep",
    "sweep_resolutions",
]
