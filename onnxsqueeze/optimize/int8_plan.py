"""Accuracy-aware static int8: which layers to keep float, and which calibration to use.

Built on :mod:`onnxsqueeze.optimize.quantize` (calibrate, quantize, validate):

- :func:`quantize_with_accuracy_control`: quantize every layer, then revert layers to float in
  order of measured sensitivity (each layer's metric gain when it alone is reverted, as NNCF's
  ``quantize_with_accuracy_control``) until the drop is within budget, stopping as soon as it is;
- :func:`plan_int8`: the search's int8 plan: the calibration variant and the order in which its
  settings keep layers float;
- :func:`sensitivity`: a one-run estimate of each layer's int8 noise-to-signal ratio;
  :func:`rank_by_reversion`: the measured ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.errors import BudgetNotMetError
from onnxsqueeze.optimize.quantize import (
    CalibrateMethod,
    QuantReport,
    _as_data,
    _named,
    _reader,
    calibrate,
    preprocess,
    quantize_int8,
)
from onnxsqueeze.passes.quantize import FLOAT_OPS, ActivationRanges, CalibrationData, weight_nodes


def quantize_with_accuracy_control(
    model: onnx.ModelProto,
    score: Callable[[onnx.ModelProto], float],
    *,
    max_drop: float,
    calibration: CalibrationData | Mapping[str, np.ndarray],
    ranking_score: Callable[[onnx.ModelProto], float] | None = None,
    max_reverted: int | None = None,
    **options: Any,
) -> tuple[onnx.ModelProto, QuantReport]:
    """Static int8, then layers reverted to float by measured sensitivity until the drop fits.

    ``score(model)`` is the task metric (higher is better) on held-out data. The float model is
    scored once; if the fully quantized model is within ``max_drop`` it is returned. Otherwise
    each quantized layer is reverted alone and scored with ``ranking_score`` (default ``score``);
    layers are then reverted cumulatively, most helpful first, and the first model within budget
    is returned: the loop stops as soon as the budget holds. Calibration runs once.

    Raises:
        BudgetNotMetError: even with ``max_reverted`` layers (default all) in float it does not fit.
    """
    base = score(model)
    prepared = _named(model)
    notes = []
    if options.pop("pre_process", True):
        prepared, why = preprocess(prepared)
        notes += [why] if why else []
    ranges = calibrate(prepared, calibration, method=options.get("calibrate_method", "minmax"))
    fixed = dict(options, pre_process=False, ranges=ranges)
    q, report = quantize_int8(prepared, mode="static", **fixed)
    report.technique = "int8 static, accuracy-aware"
    report.notes[:0] = notes
    current = score(q)
    evaluations = 2
    report.metric = {"float": base, "int8": current}
    if base - current <= max_drop:
        report.evaluations = evaluations
        report.metric["final"] = current
        return q, report
    ranked = rank_by_reversion(
        prepared, ranking_score or score, report.quantized, excluded=tuple(report.excluded), **fixed
    )
    evaluations += len(ranked)
    order = [name for name, _ in ranked]
    reverted: list[str] = []
    limit = len(order) if max_reverted is None else min(max_reverted, len(order))
    for name in order[:limit]:
        reverted.append(name)
        cand, rep = quantize_int8(prepared, mode="static", exclude=(*reverted, *report.excluded), **fixed)
        current = score(cand)
        evaluations += 1
        report.reverted.append({"node": name, "metric": current})
        if base - current <= max_drop:
            rep.technique = report.technique
            rep.reverted, rep.evaluations = report.reverted, evaluations
            rep.metric = {**report.metric, "final": current}
            rep.notes = report.notes + rep.notes
            return cand, rep
    raise BudgetNotMetError(
        f"int8 with accuracy control: {len(reverted)} layers reverted to float and the drop is still "
        f"{base - current:.4g} > {max_drop:g}"
    )


def rank_by_reversion(
    model: onnx.ModelProto,
    score: Callable[[onnx.ModelProto], float],
    layers: list[str],
    *,
    excluded: tuple[str, ...] = (),
    **options: Any,
) -> list[tuple[str, float]]:
    """Each layer's metric with it alone reverted to float (the rest int8), best first.

    The measured sensitivity of NNCF's accuracy control: a layer whose reversion recovers most is
    the most sensitive. Ties keep graph order. ``options`` go to :func:`quantize_int8` (with the
    calibrated ``ranges`` so that calibration runs once).
    """
    scored = []
    for i, name in enumerate(layers):
        cand, _ = quantize_int8(model, mode="static", exclude=(name, *excluded), **options)
        scored.append((score(cand), i, name))
    return [(name, value) for value, _, name in sorted(scored, key=lambda t: (-t[0], t[1]))]


def plan_int8(
    model: onnx.ModelProto,
    score: Callable[[onnx.ModelProto], float],
    calibration: CalibrationData | Mapping[str, np.ndarray],
    *,
    variants: tuple[tuple[CalibrateMethod, str], ...] = (
        ("minmax", "uint8"),
        ("percentile", "uint8"),
        ("entropy", "uint8"),
        ("minmax", "int8"),
    ),
    max_ranked: int = 16,
    estimate_samples: int = 16,
) -> dict[str, Any]:
    """Choose the calibration of static int8 and rank its layers by sensitivity.

    The float model is scored once with ``score`` (higher is better). Each ``(calibrate_method,
    activation_type)`` variant quantizes every layer and is scored, in order, until one scores
    at least the float model's: a later variant can then at best tie (ties keep the first), so
    the rest are not calibrated. Otherwise the best is kept (ties: the first); ranges are
    measured once per method.

    The layer order the search reverts to float (its first ``k``):

    - when the kept all-int8 model scores at least the float model, no reversion can recover
      anything measurable on these samples (each would tie): the layers are ordered by
      :func:`sensitivity`'s noise estimate (one run over ``estimate_samples`` calibration
      samples), measured
      evaluations are spent by the search only if it needs float layers at all;
    - otherwise by measured reversion (:func:`rank_by_reversion`, NNCF's accuracy control) of
      the ``max_ranked`` layers the noise estimate ranks first, then the rest in its order.
    """
    prepared = _named(model)
    reference = score(prepared)
    best: tuple[float, CalibrateMethod, str, ActivationRanges, QuantReport] | None = None
    tried: dict[str, float] = {}
    measured: dict[str, ActivationRanges] = {}
    for method, activation in variants:
        if method not in measured:
            measured[method] = calibrate(prepared, calibration, method=method)
        q, report = quantize_int8(
            prepared,
            mode="static",
            pre_process=False,
            ranges=measured[method],
            activation_type=activation,  # type: ignore[arg-type]
        )
        value = score(q)
        tried[f"{method}/{activation}"] = value
        if best is None or value > best[0]:
            best = (value, method, activation, measured[method], report)
        if best[0] >= reference:
            break
    assert best is not None
    value, method, activation, ranges, report = best
    layers = report.quantized
    # The estimate's statistics (ranges and mean squares) settle on a few samples.
    few = {k: np.asarray(v)[:estimate_samples] for k, v in _as_data(calibration).arrays.items()}
    estimate = [name for name, _ in sensitivity(prepared, few) if name in layers]
    estimate += [name for name in layers if name not in estimate]  # unnamed inputs: graph order last
    if value >= reference:
        order, ranking = estimate, "estimate"
    else:
        ranked = rank_by_reversion(
            prepared,
            score,
            estimate[:max_ranked],
            pre_process=False,
            ranges=ranges,
            activation_type=activation,
        )
        order = [name for name, _ in ranked] + estimate[max_ranked:]
        ranking = "measured"
    return {
        "calibrate_method": method,
        "activation_type": activation,
        "order": order,
        "tried": tried,
        "float": reference,
        "ranking": ranking,
        "per_channel": report.settings.get("per_channel", True),
    }


def sensitivity(
    model: onnx.ModelProto,
    calibration: CalibrationData | Mapping[str, np.ndarray],
    *,
    op_types: tuple[str, ...] = FLOAT_OPS,
    per_channel: bool = True,
) -> list[tuple[str, float]]:
    """Rank the quantizable nodes by their estimated int8 noise-to-signal ratio, most sensitive first.

    Uniform quantization with step ``d`` adds noise of power ``d^2 / 12``. For a node computing
    ``W x``, the relative error power is about the sum of the two inputs' ratios::

        NSR = (d_x^2 / 12) / E[x^2] + mean_c(d_w,c^2 / 12) / E[W^2]

    with ``d_x = (max(x, 0) - min(x, 0)) / 255`` over the calibration data and
    ``d_w,c = max|W_c| / 127`` per output channel (or per tensor). One run over the calibration
    data; ties keep graph order. A cheap estimate; :func:`quantize_with_accuracy_control` measures.

    Returns:
        ``[(node name, NSR), ...]`` (nodes named as in ``model``; unnamed nodes are skipped).
    """
    from onnxsqueeze import runtime
    from onnxsqueeze.passes.weight_only import output_axis
    from onnxsqueeze.shapes import graph_inputs, input_dtype

    data = _as_data(calibration)
    work = ir.serde.deserialize_model(model)
    nodes = [n for n in weight_nodes(work, op_types) if n.name]
    if not nodes:
        return []
    inputs = {vi.name: input_dtype(vi) for vi in graph_inputs(model)}
    watched = list(
        dict.fromkeys(n.inputs[0].name for n in nodes if n.inputs[0] and n.inputs[0].name not in inputs)
    )
    sess = runtime.session(runtime.with_outputs(model, [w for w in watched if w]))
    out_names = [o.name for o in sess.get_outputs()]
    stats: dict[str, list[float]] = {}  # name -> [min, max, sum of squares, count]

    def update(name: str, x: np.ndarray) -> None:
        v = np.asarray(x).reshape(-1)  # no float64 copy of a large activation: a BLAS dot product
        s = stats.setdefault(name, [np.inf, -np.inf, 0.0, 0.0])
        s[0], s[1] = min(s[0], float(v.min())), max(s[1], float(v.max()))
        s[2] += float(np.dot(v, v))
        s[3] += v.size

    for batch in _reader(data, model, runtime.fixed_batch(sess)).batches():
        feeds = {k: v for k, v in batch.items() if k in inputs}
        for name, value in feeds.items():
            update(name, value)
        for name, value in zip(out_names, sess.run(None, feeds), strict=True):
            if name in watched:
                update(name, value)
    ranked = []
    for node in nodes:
        x, wv = node.inputs[0], node.inputs[1]
        assert wv is not None and wv.const_value is not None
        s = stats.get(x.name if x is not None and x.name else "")
        if s is None or s[3] == 0:
            continue
        w = wv.const_value.numpy().astype(np.float64)
        lo, hi = min(s[0], 0.0), max(s[1], 0.0)
        power_x = s[2] / s[3]
        nsr_x = ((hi - lo) / 255.0) ** 2 / 12.0 / power_x if power_x > 0 else 0.0
        if per_channel and w.ndim > 1:
            axis = output_axis(node, w.ndim)
            wc = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
            step2 = (np.max(np.abs(wc), axis=1) / 127.0) ** 2
        else:
            step2 = np.array([(np.max(np.abs(w)) / 127.0) ** 2])
        power_w = float(np.mean(w * w))
        nsr_w = float(np.mean(step2)) / 12.0 / power_w if power_w > 0 else 0.0
        ranked.append((node.name or "", nsr_x + nsr_w))
    order = {n.name: i for i, n in enumerate(nodes)}
    return sorted(ranked, key=lambda kv: (-kv[1], order[kv[0]]))
