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
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze import shapes as sshapes
from onnxsqueeze.errors import InputError, UnsupportedModelError, one_line
from onnxsqueeze.passes.resolution.analysis import analyze_resolution
from onnxsqueeze.passes.resolution.rewrite import parse_resolution, rewrite_resolution
from onnxsqueeze.passes.resolution.trace import copy_model as _copy
from onnxsqueeze.passes.resolution.trace import detect_layout as _detect_layout
from onnxsqueeze.passes.resolution.trace import hw_axes as _hw_axes
from onnxsqueeze.passes.resolution.trace import image_input as _image_input


def check_runs(
    model: onnx.ModelProto,
    input_name: str,
    size: tuple[int, int] | None,
    keep_interface: bool,
    old_size: tuple[int, int],
    feeds: Mapping[str, np.ndarray] | None = None,
) -> None:
    """``onnx.checker`` and one onnxruntime run of the rewritten model.

    The run uses the first sample of ``feeds`` (the caller's data, at the size callers send) when
    given, else seeded inputs at the new size (or at ``old_size`` for a kept dynamic interface).

    Raises:
        UnsupportedModelError: the model is invalid, fails to run, or produces NaN/Inf.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze import runtime

    try:
        sio.check_model(model)
    except Exception as e:
        raise UnsupportedModelError(f"the rewritten model is invalid: {one_line(e)}") from e
    vi = next(v for v in model.graph.input if v.name == input_name)
    dims = sshapes.declared_shape(vi)
    ha, wa = _hw_axes(_detect_layout(dims), len(dims))
    names = {v.name for v in sshapes.graph_inputs(model)}
    if feeds is not None and names <= set(feeds):
        run_feeds = {k: np.asarray(feeds[k])[:1] for k in names}
        shown = run_feeds[input_name].shape
        where = f"{shown[ha]}x{shown[wa]} (the data's size)"
    else:
        bound = [d if isinstance(d, int) else 1 for d in dims]
        if not keep_interface and size is not None:
            bound[ha], bound[wa] = size
        elif not isinstance(dims[ha], int) or not isinstance(dims[wa], int):
            bound[ha], bound[wa] = old_size
        shapes_in = sshapes.resolve_input_shapes(model, {input_name: bound})
        run_feeds = sshapes.make_inputs(model, shapes_in, seed=0)
        where = f"{size[0]}x{size[1]}" if size else f"x{old_size[0]}x{old_size[1]} scaled"
    sess = runtime.session(model)
    try:
        results = sess.run(None, run_feeds)
    except Exception as e:
        raise UnsupportedModelError(
            f"the model does not run at {where} (is the input smaller than a kernel?): {one_line(e)}"
        ) from e
    for o, r in zip(sess.get_outputs(), results, strict=True):
        arr = np.asarray(r)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise UnsupportedModelError(f"output '{o.name}' has NaN/Inf at the new resolution")


def data_size(
    model: onnx.ModelProto, data: Mapping[str, Any] | None, input_name: str | None
) -> tuple[int, int] | None:
    """The ``(H, W)`` of the image input in ``data`` (None without data for that input)."""
    if data is None:
        return None
    vi = _image_input(model, input_name)
    if vi.name not in data:
        return None
    dims = sshapes.declared_shape(vi)
    ha, wa = _hw_axes(_detect_layout(dims), len(dims))
    shape = np.asarray(data[vi.name]).shape
    if len(shape) != len(dims):
        raise InputError(
            f"the data's '{vi.name}' has shape {list(shape)}; the model expects rank {len(dims)}"
        )
    return int(shape[ha]), int(shape[wa])


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


def resize_model(
    source: onnx.ModelProto,
    source_path: Path,
    output: Path,
    *,
    resolution: tuple[int, int] | None,
    scale: float | None,
    input_name: str | None = None,
    keep_interface: bool = False,
    mode: str = "linear",
    data: Mapping[str, Any] | None = None,
    data_label: str | None = None,
    min_agreement: float | None = None,
    force: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The resize technique: rewrite, run at the data's size, measure, record provenance, write.

    Dynamic H/W are traced at the data's size (``data`` holds the image input) and ``scale``
    applies to it; scaled sizes are rounded to the stride the model needs, and the report says so.

    Returns:
        The report: the rewrite (sizes, stride, rewrites), MACs at batch 1, agreement with the
        original on the data (or 8 seeded random inputs), ``passed``, and ``notes`` (also sent to
        ``on_note`` as they happen).

    Raises:
        UnsupportedModelError: the model cannot change resolution (the message names the node) or
            the result does not run at the data's size.
        VerificationError: agreement is below ``min_agreement`` or NaN/Inf appear (unless ``force``).
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze import runtime
    from onnxsqueeze.errors import SqueezeError, VerificationError
    from onnxsqueeze.manifest import save_artifact
    from onnxsqueeze.passes.base import describe
    from onnxsqueeze.passes.resolution import RewriteInputResolutionPass
    from onnxsqueeze.pipeline import record_provenance
    from onnxsqueeze.verify import output_metrics

    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if on_note is not None:
            on_note(text)

    size = data_size(source, data, input_name)
    step = RewriteInputResolutionPass(
        resolution=resolution,
        scale=scale,
        input_name=input_name,
        keep_interface=keep_interface,
        mode=mode,
        size=size,
    )
    options = {k: v for k, v in step.options().items()}
    candidate, rinfo, modified = rewrite_resolution(source, **options)
    report: dict[str, Any] = {"model": str(source_path), "output": str(output), **rinfo.to_dict()}
    report["modified"] = modified
    if rinfo.rounded:
        note(rinfo.rounded)
    if rinfo.varying_outputs:
        plain = [o for o in rinfo.varying_outputs if o not in rinfo.rescaled_boxes]
        if rinfo.rescaled_boxes:
            note(
                f"output(s) {', '.join(rinfo.rescaled_boxes)}: fewer anchors (the internal size), boxes in "
                "the caller's pixel coordinates (the decode's strides are rescaled at run time)"
            )
        if plain:
            note(
                f"output(s) {', '.join(plain)} follow the internal size (declared dynamic: e.g. a "
                "detector's anchors and box coordinates are those of the scaled image)"
            )
    if not modified:
        note(f"the model is already {rinfo.old_size[0]}x{rinfo.old_size[1]}; writing it unchanged")
    feeds: dict[str, np.ndarray] | None = None
    if data is not None:
        feeds = {k: np.asarray(v) for k, v in data.items() if k != "labels"}
    traced = (rinfo.old_size[0] or (size or (224, 224))[0], rinfo.old_size[1] or (size or (224, 224))[1])
    internal = rinfo.internal_size
    if modified:
        check_runs(candidate, rinfo.input, internal, keep_interface, traced, feeds)
    # MACs at batch 1: the original at the data's (or its own) size, the candidate at the size it
    # computes at (the plain model at the internal size: the interface Resizes cost ~nothing)
    try:
        base_macs = _macs(source, rinfo.input, size or traced)
        plain = candidate
        if internal is not None and (keep_interface or internal != size):
            plain, _, _ = rewrite_resolution(source, resolution=internal, input_name=rinfo.input, mode=mode)
        cand_macs = _macs(plain, rinfo.input, internal)
        report["macs"] = {"original": base_macs, "candidate": cand_macs, "ratio": cand_macs / base_macs}
    except SqueezeError as e:
        report["macs"] = None
        note(f"MACs not computed: {_dynamic_hint(e, data)}")
    # agreement: the original at full resolution vs the candidate with its interface kept
    agreement: dict[str, Any] | None = None
    if modified:
        try:
            evaluated = candidate
            if not keep_interface:
                evaluated, _, _ = rewrite_resolution(source, **{**options, "keep_interface": True})
            if feeds is not None:
                label = data_label or "data"
            else:  # a dynamic H/W is fed at the traced size
                feeds = sshapes.make_inputs(source, _bound(source, rinfo.input, traced, 8), seed=0)
                label = f"8 random inputs (seed 0) at {traced[0]}x{traced[1]}"
            ref = runtime.run_batched(runtime.session(source), feeds)
            cand = runtime.run_batched(runtime.session(evaluated), feeds)
            labels = np.asarray(data["labels"]) if data is not None and "labels" in data else None
            first = next(iter(ref))
            agreement = dict(compare_outputs(ref[first], cand[first], labels=labels))
            metrics = output_metrics(first, ref[first], cand[first])  # the verifier's view, too
            agreement.update(cosine=metrics.cosine, max_abs=metrics.max_abs, nonfinite=metrics.nonfinite)
            if labels is not None:
                baseline = compare_outputs(ref[first], ref[first], labels=labels)
                agreement["original_accuracy"] = baseline["accuracy"]
            agreement["output"] = first
            agreement["samples"] = len(next(iter(feeds.values())))
            agreement["source"] = label
        except SqueezeError as e:  # a dynamic H/W without data cannot be fed; a detector's anchors differ
            note(f"agreement not measured: {_dynamic_hint(e, data)}")
    report["agreement"] = agreement
    failed = None
    if agreement is not None and agreement.get("nonfinite"):
        failed = f"the result has {agreement['nonfinite']} NaN/Inf values the original does not"
    if min_agreement is not None and agreement is not None and failed is None:
        score = agreement.get("top1_agreement")
        score = agreement.get("iou") if score is None else score
        if score is not None and score < min_agreement:
            failed = f"agreement {score:.4f} with the original is below the minimum {min_agreement:g}"
    report["passed"] = failed is None
    report["failed"] = failed
    report["notes"] = notes
    if failed and not force:
        raise VerificationError(f"{failed}; nothing written")
    model_ir = ir.serde.deserialize_model(candidate)
    record_provenance(model_ir, [describe(step)], sio.sha256_file(source_path))
    save_artifact(model_ir, output, source_path=source_path, verify_report=agreement)
    return report


def _dynamic_hint(e: Exception, data: Mapping[str, Any] | None) -> str:
    if data is None and "dynamic dimension" in str(e):
        return "the input has dynamic dimensions; give data to measure at the data's size"
    return str(e)


def _bound(
    model: onnx.ModelProto, input_name: str, size: tuple[int, int] | None, batch: int
) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes at ``batch``, the image input's dynamic H/W bound to ``size``."""
    bind: dict[str, tuple[int, ...]] = {}
    for vi in sshapes.graph_inputs(model):
        dims = sshapes.declared_shape(vi)
        if vi.name == input_name and size is not None and any(not isinstance(d, int) for d in dims[1:]):
            ha, wa = _hw_axes(_detect_layout(dims), len(dims))
            bound = [batch] + [d if isinstance(d, int) else 1 for d in dims[1:]]
            bound[ha], bound[wa] = size
            bind[vi.name] = tuple(bound)
    return sshapes.resolve_input_shapes(model, bind, batch=batch)


def _macs(model: onnx.ModelProto, input_name: str, size: tuple[int, int] | None) -> int:
    """MACs at batch 1; a dynamic H/W is bound to ``size``."""
    from onnxsqueeze.summary import count_macs

    return count_macs(model, _bound(model, input_name, size, 1))[0]


__all__ = [
    "SweepPoint",
    "check_runs",
    "compare_outputs",
    "data_size",
    "map_iou",
    "parse_sweep",
    "resize_model",
    "sweep_resolutions",
]
