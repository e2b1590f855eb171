"""Int8 quantization through ``onnxruntime.quantization``'s quantizers, in memory.

Linear quantization maps a float tensor to 8-bit integers with a scale and a zero point::

    q = clamp(round(x / scale) + zero_point, qmin, qmax)        x ~= (q - zero_point) * scale

- ``mode="dynamic"``: weights are quantized ahead of time (per output channel with
  ``per_channel``), activations at run time from their observed range (``DynamicQuantizeLinear``,
  then ``MatMulInteger`` / ``ConvInteger``). No calibration.
- ``mode="static"``: weights and activations both get fixed scales. The activation ranges come
  from calibration (:class:`ActivationRanges`, measured by the technique layer,
  :func:`onnxsqueeze.optimize.quantize.calibrate`); the pass only rewrites the graph, in QDQ format
  (QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into ``QLinearConv``...) or in
  QOperator format (``QLinearConv``, ``QLinearMatMul``... written out).

The pass is pure: no file, no session, no logging configuration, no stdout. onnxruntime's
quantizer classes work on a ``ModelProto``; the pass gives them one with shapes inferred in
memory and the ``onnx.infer`` marker that tells them not to re-infer through a temporary file.

Validity by opset: per-channel scales in QDQ need ``DequantizeLinear``'s ``axis`` (opset >= 13);
``requires()`` refuses per-channel QDQ below that rather than writing a graph that the checker
and onnxruntime reject (the technique layer upgrades the opset or falls back to per-tensor).
"""

# NOTE: this module imports nothing from optimize/, cli/ or search/, and runs no session.

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.passes.base import SqueezePass

FLOAT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_INFER_KEY, _INFER_VALUE = "onnx.infer", "onnxruntime.quant"


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


@dataclasses.dataclass(frozen=True, eq=False)
class ActivationRanges:
    """Calibrated activation ranges ``{tensor name: (min, max)}`` and what they were measured on.

    Provenance records the method, the sample count and the data's hash, not the ranges.
    """

    ranges: Mapping[str, tuple[float, float]]
    method: str = "minmax"
    samples: int = 0
    sha256: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "calibrate_method": self.method,
            "calibration_samples": self.samples,
            "calibration_sha256": self.sha256,
        }


def opset_of(model: ir.Model) -> int:
    return int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0)))


def weight_nodes(model: ir.Model, op_types: tuple[str, ...]) -> list[ir.Node]:
    """Nodes of ``op_types`` whose weight (input 1) is a float32 constant."""
    found = []
    for node in model.graph:
        if node.op_type not in op_types or node.domain not in ("", "ai.onnx"):
            continue
        w = node.inputs[1] if len(node.inputs) > 1 else None
        if w is not None and w.const_value is not None and w.const_value.dtype == ir.DataType.FLOAT:
            found.append(node)
    return found


def name_nodes(model: ir.Model) -> None:
    """Give every unnamed node a unique name (the quantizers and reports address nodes by name)."""
    taken = {n.name for n in model.graph if n.name}
    for i, node in enumerate(model.graph):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _tensors_data(ranges: ActivationRanges) -> Any:
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    data = {
        name: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
        for name, (lo, hi) in sorted(ranges.ranges.items())
    }
    return TensorsData(CalibrationMethod.MinMax, data)


def _default_op_types(mode: str) -> list[str]:
    """onnxruntime's own defaults (sorted: the output must not depend on set order)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

    if mode == "dynamic":
        return sorted(IntegerOpsRegistry)
    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _prepared(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes inferred in memory and the marker that keeps onnxruntime from re-inferring on disk."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    for p in list(inferred.metadata_props):
        if p.key == _INFER_KEY:
            inferred.metadata_props.remove(p)
    inferred.metadata_props.add(key=_INFER_KEY, value=_INFER_VALUE)
    return inferred


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizeInt8Pass(SqueezePass):
    """Quantize Conv/ConvTranspose/Gemm/MatMul weights (and, static, activations) to 8 bits.

    Rewrites: float weights into int8 initializers with scales and zero points; static mode wraps
    quantized ops in QuantizeLinear/DequantizeLinear (``quant_format="qdq"``) or writes integer
    ops (``"qoperator"``); dynamic mode uses integer kernels with run-time activation quantization.

    Requires: float32 weights in initializers (run cleanup first), opset >= 10, types inferable by
    onnx; ``ranges`` for ``mode="static"``; opset >= 13 for per-channel QDQ.

    Options:
        mode: ``dynamic`` or ``static``.
        quant_format: ``qdq`` or ``qoperator`` (static only).
        per_channel: one scale per output channel of each weight (better accuracy, same size).
        weight_type / activation_type: ``int8`` or ``uint8`` (static: activations uint8 and weights
            int8 by default, onnxruntime's recommended U8S8 on x86; dynamic activations are
            always uint8).
        op_types: the op types to quantize; empty (default): every op type onnxruntime quantizes
            in this mode, as its ``quantize_static`` / ``quantize_dynamic`` do (static: pooling,
            activations, Add... as well, so fewer Q/DQ transitions are left in float).
        reduce_range: 7-bit weights, for old x86 CPUs without VNNI that can saturate.
        exclude: names of nodes to keep in float.
        calibrate_method: how ``ranges`` were measured (``minmax``, ``entropy``, ``percentile``);
            recorded, and checked against ``ranges``.
        ranges: calibrated activation ranges (static); provenance records how they were measured.
    """

    name: ClassVar[str] = "int8"
    mode: Literal["dynamic", "static"] = "dynamic"
    quant_format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    weight_type: Literal["int8", "uint8"] = "int8"
    activation_type: Literal["int8", "uint8"] = "uint8"
    op_types: tuple[str, ...] = ()
    reduce_range: bool = False
    exclude: tuple[str, ...] = ()
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    ranges: ActivationRanges | None = dataclasses.field(default=None, repr=False, compare=False)

    def options(self) -> dict[str, Any]:
        out = super().options()
        out.pop("ranges", None)  # the ranges are data; how they were measured is provenance
        if self.ranges is not None:
            out.update(self.ranges.describe())
        return out

    def requires(self, model: ir.Model) -> None:
        if self.mode not in ("dynamic", "static"):
            raise ir.passes.PreconditionError(f"int8: unknown mode '{self.mode}' (dynamic or static)")
        if self.quant_format not in ("qdq", "qoperator"):
            raise ir.passes.PreconditionError(
                f"int8: unknown format '{self.quant_format}' (qdq or qoperator)"
            )
        if self.mode == "static" and self.ranges is None:
            raise ir.passes.PreconditionError("int8 static quantization needs calibrated activation ranges")
        if self.ranges is not None and self.ranges.method != self.calibrate_method:
            raise ir.passes.PreconditionError(
                f"int8: ranges measured with {self.ranges.method}, options say {self.calibrate_method}"
            )
        opset = opset_of(model)
        if opset < 10:
            raise ir.passes.PreconditionError(
                f"int8 needs opset >= 10 (QuantizeLinear); the model has {opset}"
            )
        if self.mode == "static" and self.quant_format == "qdq" and self.per_channel and opset < 13:
            raise ir.passes.PreconditionError(
                f"per-channel QDQ needs DequantizeLinear's axis (opset >= 13); the model has opset {opset}"
            )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not weight_nodes(model, self.op_types or FLOAT_OPS):
            return ir.passes.PassResult(model, False)
        name_nodes(model)
        proto = ir.serde.serialize_model(model)
        del proto.metadata_props[:]  # the output must not depend on stale metadata
        new = ir.serde.deserialize_model(self._quantize(_prepared(proto)))
        # Move the quantized graph into the model we were given (the pass is in place); keep the
        # model-level fields (producer, metadata, provenance) that the quantizer does not own.
        model.graph = new.graph
        model.ir_version = new.ir_version
        model.opset_imports.update(new.opset_imports)
        model.functions.clear()
        model.functions.update(new.functions)
        return ir.passes.PassResult(model, True)

    def _quantize(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
        from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
        from onnxruntime.quantization.quant_utils import QuantizationMode

        common: dict[str, Any] = {
            "nodes_to_quantize": [],
            "nodes_to_exclude": list(self.exclude),
            "op_types_to_quantize": list(self.op_types) or _default_op_types(self.mode),
        }
        if self.mode == "static":
            assert self.ranges is not None
            tensors = _tensors_data(self.ranges)
            wt, at = _quant_type(self.weight_type), _quant_type(self.activation_type)
            if self.quant_format == "qdq":
                # Biases stay float: onnxruntime quantizes them itself when it fuses the QDQ group
                # into QLinearConv/QGemm (checked: same fused graph), and an int32 bias with its
                # per-channel scale and int32 zero point is twice a float bias's bytes.
                quantizer: Any = QDQQuantizer(
                    proto, self.per_channel, self.reduce_range, wt, at, tensors,
                    extra_options={"QuantizeBias": False}, **common,
                )  # fmt: skip
            else:
                quantizer = ONNXQuantizer(
                    proto, self.per_channel, self.reduce_range, QuantizationMode.QLinearOps, True, wt, at,
                    tensors, extra_options={}, **common,
                )  # fmt: skip
            return _finished(quantizer)
        # Dynamic: onnxruntime rewrites Gemm as MatMul + Add and re-infers shapes through a
        # temporary file when built with static=False. Do both in memory, then build the quantizer
        # as static (no re-inference) and switch it to dynamic before it runs.
        from onnxruntime.quantization.onnx_model import ONNXModel

        onnx_model = ONNXModel(proto)
        onnx_model.replace_gemm_with_matmul()
        proto = _prepared(onnx_model.model)
        quantizer = ONNXQuantizer(
            proto, self.per_channel, self.reduce_range, QuantizationMode.IntegerOps, True,
            _quant_type(self.weight_type), QuantType.QUInt8, None,
            extra_options={"MatMulConstBOnly": True}, **common,
        )  # fmt: skip
        quantizer.static = False
        return _finished(quantizer)


def _finished(quantizer: Any) -> onnx.ModelProto:
    """Run the quantizer and sort its nodes (onnxruntime sorts only when it saves to a file)."""
    quantizer.quantize_model()
    quantizer.model.topological_sort()
    return quantizer.model.model
