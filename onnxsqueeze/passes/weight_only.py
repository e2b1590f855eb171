"""Weight-only quantization: int8 weights dequantized for float compute, and int4 MatMulNBits.

Int8 (``QuantizeWeightsInt8Pass``), symmetric, one scale per output channel ``c``::

    s_c = max|W_c| / 127        q = clamp(round(W / s_c), -127, 127)        W ~= q * s_c

Each float weight becomes an int8 initializer and a ``DequantizeLinear(q, s, axis)`` that feeds
the unchanged float op: weights take a quarter of the bytes, activations stay float, so accuracy
is that of the weights' rounding (relative error about ``1 / (2 * 127)`` of each channel's peak).
onnxruntime keeps a ``DequantizeLinear`` unfolded by default (it preserves QDQ groups), so each run
dequantizes the weights again (digits CNN, batch 1: 2.2x the float latency); a session created
with the config entry ``session.disable_quant_qdq = "1"`` folds them at load and runs at float
speed (1.00x in the same measurement). The form ``cast`` writes the same bytes as
``Mul(Cast(q, to=float), s)`` instead, which onnxruntime's constant folding (and any runtime's)
turns back into float weights when the session is created: float speed in a default session.
On a convolutional model the difference is large: a dequantized Conv weight is not a constant,
so onnxruntime's NCHWc kernels cannot pre-pack it (paddle orientation classifier, batch 1:
3.5-3.9x the float latency with ``DequantizeLinear``, 0.86-0.99x with ``cast``).

Int4 (``QuantizeMatMulInt4Pass``), for MatMul-heavy models: ``MatMul(A, B)`` with a constant 2-D
``B [K, N]`` becomes onnxruntime's ``com.microsoft.MatMulNBits`` with symmetric 4-bit blocks of
``block_size`` rows per column (one scale per block), quantized by onnxruntime's own kernel
(``quantize_matmul_4bits``), so weights take about an eighth of the bytes.
"""

# NOTE: this module imports nothing from optimize/, cli/ or search/, and runs no session.

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import numpy as np
import onnx_ir as ir

from onnxsqueeze.passes.base import SqueezePass
from onnxsqueeze.passes.quantize import FLOAT_OPS, opset_of, weight_nodes


def output_axis(node: ir.Node, rank: int) -> int:
    """The output-channel axis of a node's weight (the per-channel quantization axis)."""
    if node.op_type == "Gemm":
        trans_b = node.attributes.get_int("transB", 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return rank - 1
    if node.op_type == "ConvTranspose":
        return 1
    return 0


def _is_interface(model: ir.Model, value: ir.Value) -> bool:
    return value in model.graph.inputs or value in model.graph.outputs


def _symmetric_int8(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(q int8, scale float32)``: per ``axis`` (a 1-D scale) or per tensor (a scalar scale)."""
    if axis is None:
        peak = np.asarray(np.max(np.abs(w)), dtype=np.float32)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale
    moved = np.moveaxis(w, axis, 0)
    peak = np.max(np.abs(moved.reshape(moved.shape[0], -1)), axis=1).astype(np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizeWeightsInt8Pass(SqueezePass):
    """Store Conv/ConvTranspose/Gemm/MatMul weights as int8 behind ``DequantizeLinear``.

    Rewrites: each float32 constant weight (input 1) of ``op_types`` into an int8 initializer, a
    float32 scale and a ``DequantizeLinear`` whose output the op reads; biases and activations stay
    float. A weight shared by several nodes is quantized once.

    Requires: weights in initializers (run cleanup first); opset >= 10 (``DequantizeLinear``), and
    opset >= 13 for ``per_channel`` (its ``axis``).

    Options:
        per_channel: one scale per output channel (otherwise one per tensor); None (default):
            per channel where the opset allows it (>= 13), per tensor below.
        op_types: the op types whose weights are stored in int8.
        min_elements: weights smaller than this stay float (their bytes do not matter).
        exclude: names of nodes whose weights stay float.
        form: how the weight is rebuilt: ``dequantize`` (``DequantizeLinear(q, s, axis)``, the
            QDQ form quantization-aware runtimes read) or ``cast`` (``Mul(Cast(q), s)`` with the
            scale shaped to broadcast along the axis: constant-folded to float weights when a
            session is created, so the op keeps its fast float kernel). Same values either way.
    """

    name: ClassVar[str] = "int8-weights"
    per_channel: bool | None = None
    op_types: tuple[str, ...] = FLOAT_OPS
    min_elements: int = 16
    exclude: tuple[str, ...] = ()
    form: Literal["dequantize", "cast"] = "dequantize"

    def requires(self, model: ir.Model) -> None:
        if self.form not in ("dequantize", "cast"):
            raise ir.passes.PreconditionError(
                f"int8 weights: unknown form '{self.form}' (dequantize or cast)"
            )
        opset = opset_of(model)
        if opset < 10:
            raise ir.passes.PreconditionError(
                f"int8 weights need opset >= 10 (DequantizeLinear); the model has {opset}"
            )
        if self.per_channel is True and opset < 13:
            raise ir.passes.PreconditionError(
                f"per-channel int8 weights need DequantizeLinear's axis (opset >= 13); the model has opset {opset}"
            )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        done: dict[tuple[str, int | None], ir.Value] = {}
        modified = False
        per_channel = self.per_channel if self.per_channel is not None else opset_of(model) >= 13
        for node in weight_nodes(model, self.op_types):
            w = node.inputs[1]
            assert w is not None and w.const_value is not None
            if node.name in self.exclude or _is_interface(model, w) or w.const_value.size < self.min_elements:
                continue
            array = w.const_value.numpy()
            axis = output_axis(node, array.ndim) if per_channel and array.ndim > 1 else None
            key = (w.name or str(id(w)), axis)
            if key not in done:
                q, scale = _symmetric_int8(array, axis)
                base = w.name or f"{node.name}_weight"
                qv = ir.Value(name=f"{base}_int8", const_value=ir.tensor(q, name=f"{base}_int8"))
                sv = ir.Value(name=f"{base}_scale", const_value=ir.tensor(scale, name=f"{base}_scale"))
                model.graph.register_initializer(qv)
                model.graph.register_initializer(sv)
                out = self._rebuild(model, node, qv, sv, axis, array.ndim, base)
                out.name = f"{base}_dequantized"
                out.dtype = ir.DataType.FLOAT
                out.shape = ir.Shape(array.shape)
                done[key] = out
            node.replace_input_with(1, done[key])
            modified = True
            if not w.uses() and w.name and w.name in model.graph.initializers:
                del model.graph.initializers[w.name]
        if modified:
            # A DequantizeLinear inserted before the first user may precede a later user that
            # comes first in a subgraph-free order; sort so every reader follows its producer.
            ir.passes.common.TopologicalSortPass()(model)
        return ir.passes.PassResult(model, modified)

    def _rebuild(
        self,
        model: ir.Model,
        node: ir.Node,
        qv: ir.Value,
        sv: ir.Value,
        axis: int | None,
        rank: int,
        base: str,
    ) -> ir.Value:
        """The float weight from ``q`` and ``s`` as nodes inserted before ``node`` (its value)."""
        if self.form == "dequantize":
            attrs = {"axis": axis} if axis is not None else {}
            dq = ir.node("DequantizeLinear", [qv, sv], attributes=attrs, name=f"{base}_dequantize")
            model.graph.insert_before(node, dq)
            return dq.outputs[0]
        if axis is not None:  # a 1-D scale broadcast along the channel axis: [1, C, 1, ...]
            scale = sv.const_value.numpy()  # type: ignore[union-attr]
            shape = [1] * rank
            shape[axis] = -1
            sv.const_value = ir.tensor(scale.reshape(shape), name=sv.name)
        cast = ir.node("Cast", [qv], attributes={"to": ir.DataType.FLOAT}, name=f"{base}_cast")
        cast.outputs[0].name = f"{base}_cast"
        cast.outputs[0].dtype = ir.DataType.FLOAT
        mul = ir.node("Mul", [cast.outputs[0], sv], name=f"{base}_scale_mul")
        model.graph.insert_before(node, cast)
        model.graph.insert_before(node, mul)
        return mul.outputs[0]


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizeMatMulInt4Pass(SqueezePass):
    """Replace ``MatMul(A, B)`` with a constant 2-D ``B`` by 4-bit ``com.microsoft.MatMulNBits``.

    Rewrites: ``B [K, N]`` into uint8-packed symmetric 4-bit blocks (``block_size`` rows of one
    column share a float32 scale) and the MatMul into MatMulNBits reading them; A stays float.

    Requires: onnxruntime (the op is its contrib op; the model then runs in onnxruntime only);
    ``block_size`` a power of two >= 16.

    Options:
        block_size: rows of B per scale (smaller: more accurate, more scales).
        min_elements: matrices smaller than this stay float.
        exclude: names of MatMul nodes to keep in float.
    """

    name: ClassVar[str] = "int4"
    block_size: int = 32
    min_elements: int = 1024
    exclude: tuple[str, ...] = ()

    def requires(self, model: ir.Model) -> None:
        b = self.block_size
        if b < 16 or b & (b - 1):
            raise ir.passes.PreconditionError(f"int4: block_size {b} must be a power of two >= 16")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxruntime.capi._pybind_state import quantize_matmul_4bits

        modified = False
        for node in weight_nodes(model, ("MatMul",)):
            b = node.inputs[1]
            assert b is not None and b.const_value is not None
            if node.name in self.exclude or _is_interface(model, b) or b.const_value.size < self.min_elements:
                continue
            if len(b.const_value.shape) != 2:
                continue
            w = np.ascontiguousarray(b.const_value.numpy(), dtype=np.float32)
            k, n = w.shape
            k_blocks = (k + self.block_size - 1) // self.block_size
            blob = self.block_size // 2
            padded = np.pad(w, ((0, k_blocks * self.block_size - k), (0, 0)))
            packed = np.zeros((n, k_blocks, blob), dtype=np.uint8)
            scales = np.zeros((n, k_blocks), dtype=np.float32)
            zero_points = np.zeros((n, (k_blocks + 1) // 2), dtype=np.uint8)
            quantize_matmul_4bits(packed, padded, scales, zero_points, self.block_size, n, k, True)
            base = b.name or f"{node.name}_B"
            qv = ir.Value(name=f"{base}_q4", const_value=ir.tensor(packed, name=f"{base}_q4"))
            sv = ir.Value(
                name=f"{base}_scales", const_value=ir.tensor(scales.reshape(-1), name=f"{base}_scales")
            )
            model.graph.register_initializer(qv)
            model.graph.register_initializer(sv)
            a = node.inputs[0]
            new = ir.node(
                "MatMulNBits",
                [a, qv, sv],
                attributes={"K": k, "N": n, "bits": 4, "block_size": self.block_size},
                domain="com.microsoft",
                name=f"{node.name}_int4" if node.name else None,
            )
            ir.convenience.replace_nodes_and_values(
                model.graph, node, [node], [new], node.outputs, new.outputs
            )
            modified = True
            if not b.uses() and b.name and b.name in model.graph.initializers:
                del model.graph.initializers[b.name]
        if modified:
            model.opset_imports.setdefault("com.microsoft", 1)
        return ir.passes.PassResult(model, modified)
