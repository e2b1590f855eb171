"""Int8 quantization through ``onnxruntime.quantization``.

Linear quantization maps a float tensor to 8-bit integers with a scale and a zero point::

    q = clamp(round(x / scale) + zero_point, qmin, qmax)        x ~= (q - zero_point) * scale

- ``mode="dynamic"``: weights are quantized ahead of time (per output channel with
  ``per_channel``), activations at run time from their observed range (``DynamicQuantizeLinear``,
  then ``MatMulInteger`` / ``ConvInteger``). No calibration data.
- ``mode="static"``: weights and activations both get fixed scales; the activation ranges are
  calibrated by running the model on ``calibration`` inputs (MinMax, Entropy or Percentile), and the
  result is in QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized op) that
  onnxruntime fuses into integer kernels (``QLinearConv``...) when graph optimizations are on.

onnxruntime.quantization works on ModelProtos and files, not onnx_ir: the pass serializes the
model, quantizes it in a private temporary folder, and moves the quantized graph back into the
``ir.Model`` it was given (in place). Calibration ranges are reductions (min/max or histograms)
over the given arrays in order, so the same inputs give the same bytes. The pass never reads
files of its own: calibration data arrive as arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.errors import UnsupportedModelError, one_line
from onnxsqueeze.passes.base import SqueezePass

FLOAT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclasses.dataclass(frozen=True, eq=False)
class CalibrationData:
    """Calibration inputs: arrays keyed by input name, first axis = samples, read in batches.

    Its hash identifies the content so provenance and caches can name it without the arrays.
    """

    arrays: Mapping[str, np.ndarray]
    batch_size: int = 16

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def sha256(self) -> str:
        h = hashlib.sha256()
        for name, array in sorted(self.arrays.items()):
            a = np.ascontiguousarray(array)
            h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"samples": len(self), "sha256": self.sha256()}

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        n = len(self)
        for start in range(0, n, self.batch_size):
            yield {
                k: np.ascontiguousarray(v[start : start + self.batch_size]) for k, v in self.arrays.items()
            }


def _reader(data: CalibrationData, model: onnx.ModelProto, fixed_batch: int | None) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    from onnxsqueeze.shapes import graph_inputs, input_dtype

    dtypes = {vi.name: input_dtype(vi) for vi in graph_inputs(model)}

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = self._gen()

        def _gen(self) -> Iterator[dict[str, np.ndarray]]:
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
            self._it = self._gen()

    return _Reader()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the quantizer's root-logger advice ("consider pre-processing") and prints."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(None):
            yield
    finally:
        logging.disable(previous)


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _calibrate_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizeInt8Pass(SqueezePass):
    """Quantize Conv/ConvTranspose/Gemm/MatMul weights (and, static, activations) to 8 bits.

    Rewrites: float weights into int8 initializers with scales and zero points; static mode wraps
    quantized ops in QuantizeLinear/DequantizeLinear (QDQ); dynamic mode uses integer kernels
    with run-time activation quantization.

    Requires: float32 weights in initializers (run cleanup first), static shapes inferable by
    onnx; ``calibration`` for ``mode="static"``.

    Options:
        mode: ``dynamic`` or ``static``.
        per_channel: one scale per output channel of each weight (better accuracy, same size).
        weight_type / activation_type: ``int8`` or ``uint8`` (static: activations uint8 and weights
            int8 by default, onnxruntime's recommended U8S8 on x86; dynamic activations are
            always uint8).
        calibrate_method: ``minmax``, ``entropy`` or ``percentile`` (static only).
        op_types: the op types to quantize (default: Conv, ConvTranspose, Gemm, MatMul).
        reduce_range: 7-bit weights, for old x86 CPUs without VNNI that can saturate.
        fraction: quantize only this fraction of the candidate nodes, the least sensitive first
            (see :func:`sensitivity`); the others stay float. Needs ``calibration``.
        exclude: names of nodes to keep in float.
        calibration: calibration inputs by input name, first axis = samples (static and
            ``fraction``); provenance records their count and hash, not the arrays.
    """

    name: ClassVar[str] = "int8"
    mode: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool = True
    weight_type: Literal["int8", "uint8"] = "int8"
    activation_type: Literal["int8", "uint8"] = "uint8"
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    op_types: tuple[str, ...] = FLOAT_OPS
    reduce_range: bool = False
    fraction: float = 1.0
    exclude: tuple[str, ...] = ()
    calibration: Mapping[str, np.ndarray] | None = dataclasses.field(default=None, repr=False, compare=False)

    def options(self) -> dict[str, Any]:
        out = super().options()
        out.pop("calibration", None)  # the data itself is not provenance; its size and hash are
        data = self._data()
        out["calibration_samples"] = len(data) if data is not None else 0
        if data is not None:
            out["calibration_sha256"] = data.sha256()
        return out

    def _data(self) -> CalibrationData | None:
        if self.calibration is None:
            return None
        if isinstance(self.calibration, CalibrationData):
            return self.calibration
        return CalibrationData(self.calibration)

    def requires(self, model: ir.Model) -> None:
        if self.mode not in ("dynamic", "static"):
            raise ir.passes.PreconditionError(f"int8: unknown mode '{self.mode}' (dynamic or static)")
        data = self._data()
        if self.mode == "static" and (data is None or len(data) == 0):
            raise ir.passes.PreconditionError("int8 static quantization needs calibration inputs")
        if not 0.0 < self.fraction <= 1.0:
            raise ir.passes.PreconditionError(f"int8: fraction {self.fraction} must be in (0, 1]")
        if self.fraction < 1.0 and (data is None or len(data) == 0):
            raise ir.passes.PreconditionError("int8 with fraction < 1 ranks layers on calibration inputs")

    def _candidates(self, model: ir.Model) -> list[ir.Node]:
        found = []
        for node in model.graph:
            if node.op_type not in self.op_types or node.domain not in ("", "ai.onnx"):
                continue
            w = node.inputs[1] if len(node.inputs) > 1 else None
            if w is not None and w.const_value is not None and w.const_value.dtype == ir.DataType.FLOAT:
                found.append(node)
        return found

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not self._candidates(model):
            return ir.passes.PassResult(model, False)
        proto = ir.serde.serialize_model(model)
        quantized = self._quantize(proto)
        new = ir.serde.deserialize_model(quantized)
        # Move the quantized graph into the model we were given (the pass is in place); keep the
        # model-level fields (producer, metadata, provenance) that the quantizer does not own.
        model.graph = new.graph
        model.ir_version = new.ir_version
        model.functions.clear()
        model.functions.update(new.functions)
        for key in [k for k in model.metadata_props if k.startswith("onnx.quant")]:
            del model.metadata_props[key]
        return ir.passes.PassResult(model, True)

    def _quantize(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

        from onnxsqueeze import runtime

        # Clear stale metadata so the output does not depend on it; name every node so that
        # exclusions can name them (the quantizer addresses nodes by name).
        del proto.metadata_props[:]
        _name_nodes(proto)
        exclude = list(self.exclude)
        data = self._data()
        if self.fraction < 1.0:
            assert self.calibration is not None
            ranked = sensitivity(
                proto, self.calibration, op_types=self.op_types, per_channel=self.per_channel
            )
            keep_float = len(ranked) - round(self.fraction * len(ranked))
            exclude += [name for name, _ in ranked[:keep_float] if name not in exclude]
        with tempfile.TemporaryDirectory(prefix="onnxsqueeze-int8-") as tmp, _quiet():
            out = Path(tmp) / "quantized.onnx"
            try:
                if self.mode == "dynamic":
                    quantize_dynamic(
                        proto,
                        out,
                        op_types_to_quantize=list(self.op_types),
                        per_channel=self.per_channel,
                        reduce_range=self.reduce_range,
                        weight_type=_quant_type(self.weight_type),
                        nodes_to_exclude=exclude,
                    )
                else:
                    assert data is not None
                    sess = runtime.session(proto)
                    reader = _reader(data, proto, runtime.fixed_batch(sess))
                    quantize_static(
                        proto,
                        out,
                        reader,
                        quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(self.op_types),
                        per_channel=self.per_channel,
                        reduce_range=self.reduce_range,
                        activation_type=_quant_type(self.activation_type),
                        weight_type=_quant_type(self.weight_type),
                        calibrate_method=_calibrate_method(self.calibrate_method),
                        calibration_providers=["CPUExecutionProvider"],
                        nodes_to_exclude=exclude,
                    )
            except Exception as e:
                raise UnsupportedModelError(f"int8 {self.mode} quantization failed: {one_line(e)}") from e
            return onnx.load(str(out))


def _name_nodes(proto: onnx.ModelProto) -> None:
    taken = {n.name for n in proto.graph.node if n.name}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of a node's weight (per-channel quantization's axis)."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return -1
    if node.op_type == "ConvTranspose":
        return 1
    return 0


def sensitivity(
    model: onnx.ModelProto,
    calibration: CalibrationData | Mapping[str, np.ndarray],
    *,
    op_types: tuple[str, ...] = FLOAT_OPS,
    per_channel: bool = True,
) -> list[tuple[str, float]]:
    """Rank the quantizable nodes by their int8 noise-to-signal ratio, most sensitive first.

    Uniform quantization with step ``d`` adds noise of power ``d^2 / 12``. For a node computing
    ``W x``, the relative error power is about the sum of the two inputs' ratios::

        NSR = (d_x^2 / 12) / E[x^2] + mean_c(d_w,c^2 / 12) / E[W^2]

    with ``d_x = (max(x, 0) - min(x, 0)) / 255`` over the calibration data (asymmetric uint8,
    the range includes zero as onnxruntime's does) and ``d_w,c = max|W_c| / 127`` per output
    channel (or over the whole tensor without ``per_channel``). Activations with outliers (a wide
    range for little energy) and weights with a few large values rank as sensitive. One run over
    the calibration data, statistics accumulated per batch. Ties keep graph order.

    Returns:
        ``[(node name, NSR), ...]`` (nodes named as in ``model``; unnamed nodes are skipped).
    """
    from onnxsqueeze import runtime
    from onnxsqueeze.shapes import graph_inputs, input_dtype

    if not isinstance(calibration, CalibrationData):
        calibration = CalibrationData(calibration)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = [
        n
        for n in model.graph.node
        if n.name
        and n.op_type in op_types
        and n.domain in ("", "ai.onnx")
        and len(n.input) > 1
        and n.input[1] in inits
        and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT
    ]
    if not nodes:
        return []
    inputs = {vi.name: input_dtype(vi) for vi in graph_inputs(model)}
    watched = list(dict.fromkeys(n.input[0] for n in nodes if n.input[0] not in inputs))
    sess = runtime.session(runtime.with_outputs(model, watched))
    out_names = [o.name for o in sess.get_outputs()]
    stats: dict[str, list[float]] = {}  # name -> [min, max, sum of squares, count]

    def update(name: str, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        s = stats.setdefault(name, [np.inf, -np.inf, 0.0, 0.0])
        s[0], s[1] = min(s[0], float(x.min())), max(s[1], float(x.max()))
        s[2] += float(np.sum(x * x))
        s[3] += x.size

    fixed = runtime.fixed_batch(sess)
    for batch in _reader(calibration, model, fixed)._gen():
        feeds = {k: v for k, v in batch.items() if k in inputs}
        for name in inputs:
            if name in feeds:
                update(name, feeds[name])
        for name, value in zip(out_names, sess.run(None, feeds), strict=True):
            if name in watched:
                update(name, value)
    ranked = []
    for node in nodes:
        s = stats.get(node.input[0])
        w = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        if s is None or s[3] == 0:
            continue
        lo, hi = min(s[0], 0.0), max(s[1], 0.0)
        power_x = s[2] / s[3]
        nsr_x = ((hi - lo) / 255.0) ** 2 / 12.0 / power_x if power_x > 0 else 0.0
        if per_channel and w.ndim > 1:
            wc = np.moveaxis(w, _weight_axis(node), 0).reshape(w.shape[_weight_axis(node)], -1)
            step2 = (np.max(np.abs(wc), axis=1) / 127.0) ** 2
        else:
            step2 = np.array([(np.max(np.abs(w)) / 127.0) ** 2])
        power_w = float(np.mean(w * w))
        nsr_w = float(np.mean(step2)) / 12.0 / power_w if power_w > 0 else 0.0
        ranked.append((node.name, nsr_x + nsr_w))
    order = {n.name: i for i, n in enumerate(nodes)}
    return sorted(ranked, key=lambda kv: (-kv[1], order[kv[0]]))
