"""Quantization techniques: calibrate, quantize, check that the result is valid, revert by accuracy.

:func:`quantize` is the front door of the ``int8`` technique (load -> shapes -> normalize ->
:func:`quantize_int8` -> judged against the source -> written when accepted); the functions below
it are what it and the search use.

The passes (:mod:`onnxsqueeze.passes.quantize`, :mod:`onnxsqueeze.passes.weight_only`) only
rewrite graphs. This module does what needs onnxruntime sessions or files:

- :func:`preprocess`: onnxruntime's ``quant_pre_process`` (symbolic shape inference and
  basic graph optimization) through a private temporary folder, when it succeeds;
- :func:`calibrate`: activation ranges measured by onnxruntime's calibrators (MinMax,
  Percentile, Entropy) over the calibration arrays, in order, so the same data give the same ranges;
- :func:`quantize_int8` / :func:`quantize_weights`: run the pass, then prove the result passes
  ``onnx.checker`` and loads in onnxruntime; when it does not, fall back (opset upgrade to 13,
  then per-tensor scales) and finally exclude the node the error names, so the result is a valid
  file or an error, never an invalid file. The report names every fallback and exclusion;

Accuracy-aware int8 (reverting layers to float by sensitivity, the search's int8 plan) is in
:mod:`onnxsqueeze.optimize.int8_plan`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.errors import UnsupportedModelError, VerificationError, one_line
from onnxsqueeze.optimize import base
from onnxsqueeze.passes.quantize import (
    FLOAT_OPS,
    ActivationRanges,
    CalibrationData,
    QuantizeInt8Pass,
    name_nodes,
    opset_of,
    weight_nodes,
)
from onnxsqueeze.passes.weight_only import QuantizeMatMulInt4Pass, QuantizeWeightsInt8Pass

CalibrateMethod = Literal["minmax", "percentile", "entropy"]


@dataclasses.dataclass
class QuantReport:
    """What a quantization did: the settings in force, fallbacks, exclusions and counts."""

    technique: str
    settings: dict[str, Any]
    quantized: list[str] = dataclasses.field(default_factory=list)
    excluded: dict[str, str] = dataclasses.field(default_factory=dict)  # node -> why
    notes: list[str] = dataclasses.field(default_factory=list)
    opset: tuple[int, int] = (0, 0)  # before, after
    reverted: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    metric: dict[str, float] = dataclasses.field(default_factory=dict)
    evaluations: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["opset"] = list(self.opset)
        return out


def _as_data(calibration: CalibrationData | Mapping[str, np.ndarray]) -> CalibrationData:
    return calibration if isinstance(calibration, CalibrationData) else CalibrationData(calibration)


def _reader(data: CalibrationData, model: onnx.ModelProto, fixed_batch: int | None) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    from onnxsqueeze.shapes import graph_inputs, input_dtype

    dtypes = {vi.name: input_dtype(vi) for vi in graph_inputs(model)}

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = self.batches()

        def batches(self) -> Iterator[dict[str, np.ndarray]]:
            step = fixed_batch or data.batch_size
            n = len(data)
            for start in range(0, n - (n % step if fixed_batch else 0), step):
                yield {
                    k: np.ascontiguousarray(v[start : start + step]).astype(dtypes[k], copy=False)
                    for k, v in data.arrays.items()
                    if k in dtypes
                }

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = self.batches()

    return _Reader()


@contextlib.contextmanager
def _prints_to_stderr() -> Iterator[None]:
    """onnxruntime's histogram calibrators print progress; results belong on stdout alone."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def preprocess(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """onnxruntime's ``quant_pre_process``; returns ``(model, None)`` or ``(model unchanged, why)``.

    It infers shapes symbolically (types for every value, so the quantizer sees every float
    tensor) and folds what onnxruntime's basic optimizations fold. It runs only when onnx's own
    shape inference leaves a value untyped (LSTM, custom ops, dynamic reshapes). Node names are kept where the
    nodes survive. A model it cannot process is returned unchanged with the reason.
    """
    if _fully_typed(model):
        return model, None
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="onnxsqueeze-quant-") as tmp:
        out = Path(tmp) / "pre.onnx"
        try:
            with _prints_to_stderr():
                quant_pre_process(model, out, skip_symbolic_shape=False)
            result = onnx.load(str(out))
        except Exception as e:  # any failure leaves the model as it was
            return model, f"quant_pre_process skipped: {one_line(e)}"
    del result.metadata_props[:]
    result.metadata_props.extend(model.metadata_props)
    return result, None


def _fully_typed(model: onnx.ModelProto) -> bool:
    """Whether onnx's own shape inference types every value (then pre-processing adds nothing the
    quantizer needs, and its import of onnxruntime.tools, which loads torch, is skipped)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # untyped: let quant_pre_process try
        return False
    typed = {vi.name for vi in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    typed |= {t.name for t in inferred.graph.initializer}
    return all(o in typed for n in inferred.graph.node for o in n.output if o)


# Ranges measured in this process, by (model bytes, data, method): a search builds several int8
# candidates on one base model (layers kept float, combinations) and the int8 plan calibrates
# that same model; each measurement runs every calibration sample through the model with all
# of its tensors as outputs (histograms for percentile and entropy).
_MEASURED: collections.OrderedDict[tuple[str, str, str, float], ActivationRanges] = collections.OrderedDict()
_MEASURED_LOCK = threading.Lock()
_MEASURED_SIZE = 8


def calibrate(
    model: onnx.ModelProto,
    calibration: CalibrationData | Mapping[str, np.ndarray],
    *,
    method: CalibrateMethod = "minmax",
    percentile: float = 99.999,
) -> ActivationRanges:
    """Activation ranges of every float tensor, measured by onnxruntime's calibrator.

    The same model (bytes), data and method give the same ranges: a measurement is reused within
    the process (the last few are kept).

    Raises:
        UnsupportedModelError: the calibrator cannot run the model.
    """
    data = _as_data(calibration)
    key = (
        hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest(),
        data.sha256(),
        method,
        percentile if method == "percentile" else 0.0,
    )
    with _MEASURED_LOCK:
        if key in _MEASURED:
            _MEASURED.move_to_end(key)
            return _MEASURED[key]
    ranges = _measure_ranges(model, data, method=method, percentile=percentile)
    with _MEASURED_LOCK:
        _MEASURED[key] = ranges
        while len(_MEASURED) > _MEASURED_SIZE:
            _MEASURED.popitem(last=False)
    return ranges


def _measure_ranges(
    model: onnx.ModelProto, data: CalibrationData, *, method: CalibrateMethod, percentile: float
) -> ActivationRanges:
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    from onnxsqueeze import runtime

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise UnsupportedModelError(f"unknown calibration method '{method}' ({', '.join(methods)})")
    extra = {"percentile": percentile} if method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="onnxsqueeze-calib-") as tmp, _prints_to_stderr():
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        try:
            calibrator = create_calibrator(
                path,
                [],  # every float tensor: QDQ needs the ranges around the quantized ops' neighbours too
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=methods[method],
                providers=["CPUExecutionProvider"],
                extra_options=extra,
            )
            fixed = runtime.fixed_batch(runtime.session(model))
            calibrator.collect_data(_reader(data, model, fixed))
            tensors = calibrator.compute_data()
        except Exception as e:
            raise UnsupportedModelError(f"int8 calibration failed: {one_line(e)}") from e
    ranges = {}
    for name in tensors:
        lo, hi = tensors[name].range_value
        ranges[name] = (float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0]))
    return ActivationRanges(ranges, method=method, samples=len(data), sha256=data.sha256())


def invalid_reason(model: onnx.ModelProto) -> str | None:
    """Why ``model`` fails ``onnx.checker`` or onnxruntime's loader, or None when it passes both."""
    import onnxruntime as ort

    try:
        onnx.checker.check_model(model)
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # the message is the result
        return one_line(e)
    return None


def upgrade_opset(model: onnx.ModelProto, target: int = 13) -> tuple[onnx.ModelProto | None, str | None]:
    """``model`` converted to opset ``target`` by onnx's version converter, and checked."""
    from onnx import version_converter

    try:
        up = version_converter.convert_version(model, target)
        onnx.checker.check_model(up)
    except Exception as e:  # the caller falls back to per-tensor scales
        return None, one_line(e)
    return up, None


_NAMED = re.compile(r"""(?:Node|node)[\s:(]*["']?([^"',\s)]+)""")


def _blamed_node(reason: str, candidates: list[str], model: onnx.ModelProto) -> str | None:
    """The quantized node an error message points at: named, or owning a named tensor."""
    for name in candidates:
        if name and name in reason:
            return name
    tensors = {t for n in model.graph.node for t in (*n.input, *n.output) if t and t in reason}
    for name in candidates:
        if any(name and t.startswith(name.split("/")[0]) for t in tensors):
            return name
    # A tensor named in the message: map it back to the float node whose weight/output it wraps.
    for n in model.graph.node:
        if n.name in candidates and any(t and t in reason for t in (*n.input, *n.output)):
            return n.name
    match = _NAMED.search(reason)
    if match:
        stem = match.group(1)
        for name in candidates:
            if stem.startswith(name):
                return name
    return None


def _run(p: ir.passes.PassBase, model: onnx.ModelProto, source_sha256: str | None = None) -> onnx.ModelProto:
    """``p`` on a copy of ``model`` through ``run_passes`` (provenance recorded; refusals raise
    :class:`UnsupportedModelError`)."""
    from onnxsqueeze.pipeline import run_passes

    work = ir.serde.deserialize_model(model)
    run_passes(work, [p], source_sha256=source_sha256)
    return ir.serde.serialize_model(work)


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    work = ir.serde.deserialize_model(model)
    name_nodes(work)
    return ir.serde.serialize_model(work)


def _valid(
    make: Callable[[onnx.ModelProto, bool, tuple[str, ...]], onnx.ModelProto],
    model: onnx.ModelProto,
    report: QuantReport,
    *,
    per_channel: bool,
    needs_opset13: bool,
    candidates: list[str],
    max_exclusions: int = 16,
) -> onnx.ModelProto:
    """Run ``make(model, per_channel, exclude)`` until its result is valid, falling back in order.

    Fallbacks: an opset upgrade to 13 (per-channel scales need ``axis``), then per-tensor scales,
    then excluding the node each error names. Raises when nothing valid remains.
    """
    before = opset_of(ir.serde.deserialize_model(model))
    report.opset = (before, before)
    if per_channel and needs_opset13 and before < 13:
        up, why = upgrade_opset(model, 13)
        if up is not None:
            model = up
            report.opset = (before, 13)
            report.notes.append(f"opset {before} upgraded to 13 for per-channel scales")
        else:
            per_channel = False
            report.notes.append(f"opset {before} cannot be upgraded ({why}): per-tensor scales")
    exclude: tuple[str, ...] = tuple(report.excluded)
    for _ in range(max_exclusions + 2):
        try:
            out = make(model, per_channel, exclude)
            reason = invalid_reason(out)
        except UnsupportedModelError as e:
            reason = str(e)
        if reason is None:
            report.settings["per_channel"] = per_channel
            return out
        if per_channel:
            per_channel = False
            report.notes.append(f"per-channel result invalid ({reason}): per-tensor scales")
            continue
        blamed = _blamed_node(reason, [c for c in candidates if c not in exclude], model)
        if blamed is None or len(exclude) >= max_exclusions:
            raise UnsupportedModelError(f"{report.technique}: no valid result: {reason}")
        report.excluded[blamed] = reason
        exclude += (blamed,)
    raise UnsupportedModelError(f"{report.technique}: no valid result after {max_exclusions} exclusions")


def _candidates(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[str]:
    return [n.name or "" for n in weight_nodes(ir.serde.deserialize_model(model), op_types)]


def quantize_int8(
    model: onnx.ModelProto,
    *,
    mode: Literal["dynamic", "static"] = "static",
    calibration: CalibrationData | Mapping[str, np.ndarray] | None = None,
    quant_format: Literal["qdq", "qoperator"] = "qdq",
    per_channel: bool = True,
    activation_type: Literal["int8", "uint8"] = "uint8",
    weight_type: Literal["int8", "uint8"] = "int8",
    calibrate_method: CalibrateMethod = "minmax",
    op_types: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    reduce_range: bool = False,
    pre_process: bool = True,
    ranges: ActivationRanges | None = None,
    bias_correction: bool = False,
    source_sha256: str | None = None,
) -> tuple[onnx.ModelProto, QuantReport]:
    """Int8 quantization whose result passes ``onnx.checker`` and loads in onnxruntime.

    ``bias_correction`` (static QDQ): the mean error that each layer's int8 weights add to its
    output over the calibration data is subtracted from its float bias before quantizing
    (:func:`correct_biases`).

    Raises:
        UnsupportedModelError: static without calibration, calibration failed, or no valid result.
    """
    settings: dict[str, Any] = {
        "mode": mode,
        "quant_format": quant_format,
        "per_channel": per_channel,
        "activation_type": activation_type,
        "weight_type": weight_type,
        "reduce_range": reduce_range,
    }
    if mode == "static":
        settings["calibrate_method"] = ranges.method if ranges is not None else calibrate_method
    report = QuantReport(f"int8 {mode}", settings)
    model = _named(model)
    if pre_process:
        model, why = preprocess(model)
        if why:
            report.notes.append(why)
    if mode == "static" and ranges is None:
        if calibration is None or len(_as_data(calibration)) == 0:
            raise UnsupportedModelError("int8 static quantization needs calibration data")
        ranges = calibrate(model, calibration, method=calibrate_method)
    candidates = _candidates(model, op_types or FLOAT_OPS)
    report.excluded.update({name: "asked" for name in exclude if name in candidates})

    def make(m: onnx.ModelProto, pc: bool, ex: tuple[str, ...]) -> onnx.ModelProto:
        p = QuantizeInt8Pass(
            mode=mode,
            quant_format=quant_format,
            per_channel=pc,
            activation_type=activation_type,
            weight_type=weight_type,
            op_types=op_types,
            reduce_range=reduce_range,
            exclude=ex,
            calibrate_method=ranges.method if ranges is not None else calibrate_method,  # type: ignore[arg-type]
            ranges=ranges,
        )
        return _run(p, m, source_sha256)

    out = _valid(
        make,
        model,
        report,
        per_channel=per_channel,
        needs_opset13=mode == "static" and quant_format == "qdq",
        candidates=candidates,
    )
    if bias_correction and mode == "static" and quant_format == "qdq" and calibration is not None:
        corrected, shifted = correct_biases(model, calibration, per_channel=report.settings["per_channel"])
        if shifted:
            again = dataclasses.replace(report, notes=[], excluded=dict(report.excluded))
            out = _valid(
                make, corrected, again, per_channel=report.settings["per_channel"],
                needs_opset13=True, candidates=candidates,
            )  # fmt: skip
            report.notes.append(f"bias correction: {shifted} biases shifted")
        report.settings["bias_correction"] = True
    report.quantized = [c for c in candidates if c not in report.excluded]
    return out, report


def correct_biases(
    model: onnx.ModelProto,
    calibration: CalibrationData | Mapping[str, np.ndarray],
    *,
    per_channel: bool = True,
    samples: int = 64,
) -> tuple[onnx.ModelProto, int]:
    """``model`` with each biased Conv/Gemm bias reduced by the mean error its int8 weights add.

    With ``dW = dequantize(quantize(W)) - W`` (symmetric int8, per channel or per tensor, as the
    quantizer rounds) and ``mu`` the mean of the layer's input per channel over up to ``samples``
    calibration samples (float model), the expected output error of channel ``c`` is::

        shift_c = sum_{i, k} dW[c, i, k] * mu[i]        b_c <- b_c - shift_c

    Each layer's own error, measured on float inputs (zero padding at borders ignored), so layers
    do not compensate for each other's errors (Nagel et al., empirical weight bias correction).
    Returns the corrected float model and how many biases changed.
    """
    from onnxsqueeze import runtime
    from onnxsqueeze.passes.weight_only import _symmetric_int8

    data = _as_data(calibration)
    inits = {t.name: t for t in model.graph.initializer}
    layers = [
        n for n in model.graph.node
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[1] in inits and n.input[2] in inits
        and inits[n.input[2]].data_type == onnx.TensorProto.FLOAT
    ]  # fmt: skip
    if not layers:
        return model, 0
    names = list(dict.fromkeys(n.input[0] for n in layers))
    sess = runtime.session(runtime.with_outputs(model, names))
    graph_inputs = {i.name for i in sess.get_inputs()}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    subset = CalibrationData({k: v[:samples] for k, v in data.arrays.items()})
    for batch in _reader(subset, model, runtime.fixed_batch(sess)).batches():
        feeds = {k: v for k, v in batch.items() if k in graph_inputs}
        values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
        for name in names:
            x = np.asarray(feeds[name] if name in feeds else values[name], np.float64)
            axes = tuple(i for i in range(x.ndim) if i != 1)
            sums[name] = sums.get(name, 0) + x.sum(axis=axes)
            counts[name] = counts.get(name, 0) + int(x.size // x.shape[1])
    out = onnx.ModelProto()
    out.CopyFrom(model)
    new_inits = {t.name: t for t in out.graph.initializer}
    shifted = 0
    for node in layers:
        attrs = {a.name: a for a in node.attribute}
        w = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        bias = onnx.numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        mu = sums[node.input[0]] / max(counts[node.input[0]], 1)
        axis = output_axis_of(node, w.ndim) if per_channel else None
        q, scale = _symmetric_int8(w, axis)
        if axis is not None:
            shape = [1] * w.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
        dw = q.astype(np.float64) * scale - w
        if node.op_type == "Gemm":
            trans_b = attrs["transB"].i if "transB" in attrs else 0
            alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
            if "transA" in attrs and attrs["transA"].i:
                continue
            shift = alpha * ((dw @ mu) if trans_b else (mu @ dw))
        else:
            group = attrs["group"].i if "group" in attrs else 1
            per_group = w.shape[1]
            mu_g = mu.reshape(group, per_group)  # input channels of each group
            out_per_group = w.shape[0] // group
            d = dw.reshape(group, out_per_group, per_group, -1).sum(axis=-1)  # [g, out, in]
            shift = np.einsum("goi,gi->go", d, mu_g).reshape(-1)
        if shift.shape != bias.shape:
            continue
        new_inits[node.input[2]].CopyFrom(
            onnx.numpy_helper.from_array((bias - shift).astype(np.float32), node.input[2])
        )
        shifted += 1
    return out, shifted


def output_axis_of(node: onnx.NodeProto, rank: int) -> int:
    """:func:`onnxsqueeze.passes.weight_only.output_axis` for a NodeProto."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1 if node.op_type == "ConvTranspose" else 0


def quantize_weights(
    model: onnx.ModelProto,
    *,
    bits: Literal[8, 4] = 8,
    per_channel: bool = True,
    block_size: int = 32,
    op_types: tuple[str, ...] = FLOAT_OPS,
    exclude: tuple[str, ...] = (),
    form: Literal["dequantize", "cast"] = "dequantize",
) -> tuple[onnx.ModelProto, QuantReport]:
    """Weight-only quantization (int8 behind DequantizeLinear, or int4 MatMulNBits), checked valid.

    ``form`` (int8): ``cast`` rebuilds each weight as ``Mul(Cast(q), s)``, which onnxruntime
    folds to a float constant when a session is created (float speed); ``dequantize`` keeps a
    ``DequantizeLinear`` that runs on every call (:class:`QuantizeWeightsInt8Pass`).

    Raises:
        UnsupportedModelError: nothing valid could be written.
    """
    model = _named(model)
    if bits == 4:
        report = QuantReport("int4 weights", {"bits": 4, "block_size": block_size})
        candidates = _candidates(model, ("MatMul",))

        def make4(m: onnx.ModelProto, _pc: bool, ex: tuple[str, ...]) -> onnx.ModelProto:
            return _run(QuantizeMatMulInt4Pass(block_size=block_size, exclude=ex), m)

        out = _valid(make4, model, report, per_channel=False, needs_opset13=False, candidates=candidates)
        report.settings.pop("per_channel", None)
    else:
        report = QuantReport("int8 weights", {"bits": 8, "per_channel": per_channel, "form": form})
        candidates = _candidates(model, op_types)

        def make8(m: onnx.ModelProto, pc: bool, ex: tuple[str, ...]) -> onnx.ModelProto:
            return _run(QuantizeWeightsInt8Pass(per_channel=pc, op_types=op_types, exclude=ex, form=form), m)

        report.excluded.update({name: "asked" for name in exclude if name in candidates})
        out = _valid(make8, model, report, per_channel=per_channel, needs_opset13=True, candidates=candidates)
    after = {n.name for n in out.graph.node}
    report.quantized = [c for c in candidates if c not in report.excluded and (bits == 8 or c not in after)]
    return out, report


def calibrated_int8_options(
    options: Mapping[str, Any], calibration: Mapping[str, np.ndarray], model: ir.Model | None
) -> dict[str, Any]:
    """Options of a :class:`QuantizeInt8Pass` for a recipe step that calibrates.

    The activation ranges are measured (with ``calibrate_method``) on ``model`` as it stands
    before the step. Per-channel QDQ on opset < 13 falls back to per-tensor scales (the
    recorded options say so), so a replayed recipe never writes an invalid graph. Without
    ``model`` the options are only shaped for checking.
    """
    opts = dict(options)
    method = opts.get("calibrate_method", "minmax")
    if model is None:
        return opts
    if opts.get("mode", "dynamic") == "static":
        opts["ranges"] = calibrate(ir.serde.serialize_model(model), calibration, method=method)
        if (
            opts.get("quant_format", "qdq") == "qdq"
            and opts.get("per_channel", True)
            and opset_of(model) < 13
        ):
            opts["per_channel"] = False
    return opts


# ------------------------------------------------------------------ the front door (CLI)


@dataclasses.dataclass
class QuantizeReport(base.Report):
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0


def quantize(
    model: onnx.ModelProto | str | Path,
    output: str | Path | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    calibration_samples: int = 64,
    protect: Sequence[str | Path] = (),
    acceptance: base.Acceptance = base.DEFAULT,
    slim: bool = True,
    force: bool = False,
    say: base.Say = base._quiet,
    **options: Any,
) -> tuple[onnx.ModelProto, QuantizeReport]:
    """Quantize to int8 (``options``: :func:`quantize_int8`'s), judge, write when accepted.

    ``data`` gives the calibration inputs (its first ``calibration_samples``) and the inputs
    judged on; random inputs at the resolved shapes otherwise. The result is valid (checker and
    onnxruntime) or an error: see :func:`quantize_int8` for the fallbacks it records.
    """
    from onnxsqueeze import io as sio

    src = base.load(model)
    if output is not None:
        sio.refuse_overwrite(output, [p for p in (src.path, *protect) if p is not None])
    shapes_ = base.resolve_shapes(src.model, input_shapes, data)
    feeds = base.sample_feeds(src.model, shapes_, data=data, samples=calibration_samples)
    normalized, norm = base.normalize(src.model, feeds=feeds, slim=slim, source_sha256=src.sha256, say=say)
    say("quantizing to int8")
    result, quant = quantize_int8(
        base._copy(normalized), calibration=feeds, source_sha256=src.sha256, **{"mode": "dynamic", **options}
    )
    base.check(src.model, result, what="int8")
    judgement = base.judge_models(
        src.model,
        result,
        feeds,
        acceptance,
        labels=base.labels_of(data, calibration_samples),
        label=data_label if data is not None else "random inputs",
        random_inputs=data is None,
    )
    report = QuantizeReport(
        model=str(src.path or "<model>"),
        output=None if output is None else str(output),
        normalization=norm,
        input_shapes={k: list(v) for k, v in shapes_.items()},
        judgement=judgement,
        passed=judgement.passed,
        notes=[*norm.notes, *quant.notes, *judgement.warnings],
        options={**quant.settings, "excluded": quant.excluded, "opset": list(quant.opset)},
        bytes_before=src.model.ByteSize(),
        bytes_after=result.ByteSize(),
    )
    if not judgement.passed and not force:
        raise VerificationError(f"{judgement.reason}; not written (use --force to write it anyway)")
    if output is not None:
        path, manifest = base.write(result, output, source=src, protect=protect)
        report.written, report.output, report.manifest = True, str(path), str(manifest)
    return result, report
