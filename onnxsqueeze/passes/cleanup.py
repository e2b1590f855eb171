"""Cleanup passes users expect before any squeeze.

- ``FoldConstantsPass``: evaluates subgraphs whose inputs are all constant (onnxscript's folder).
- ``FoldBatchNormPass``: folds an inference BatchNormalization into the Conv, ConvTranspose or Gemm
  that feeds it. With ``s = gamma / sqrt(var + eps)`` per output channel::

      W_fused = W * s            (along the output-channel axis)
      b_fused = (b - mean) * s + beta

  For Gemm (``Y = alpha * A @ B + beta_g * C``) the bias becomes ``s * (beta_g * C - mean) + beta``.
- ``CleanupPass``: lift Constant-node weights to initializers, fold constants, fold BN, remove
  Identity chains and unused nodes, initializers and opsets.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from onnxsqueeze.passes.base import SqueezePass


@dataclasses.dataclass(frozen=True, kw_only=True)
class FoldConstantsPass(SqueezePass):
    """Fold nodes whose inputs are all constants into initializers (onnxscript's folder).

    Requires: nothing. Outputs larger than ``output_size_limit`` elements are left unfolded so
    that folding never blows up the file size; for the same reason a Cast of an 8-bit (or 4-bit)
    integer constant to a float type stays: it is a weight stored compressed (the ``cast`` form
    of :class:`QuantizeWeightsInt8Pass`, which runtimes fold when the session starts), and folding
    it would write the weights in float again (the digits CNN's int8 weights: 66 KB -> 247 KB).
    """

    name: ClassVar[str] = "fold-constants"
    input_size_limit: int = 8 * 1024 * 1024
    output_size_limit: int = 8 * 1024 * 1024

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxscript.optimizer import fold_constants

        result = fold_constants(
            model,
            onnx_shape_inference=False,
            input_size_limit=self.input_size_limit,
            output_size_limit=self.output_size_limit,
            should_fold=lambda node: False if _widens_narrow_constant(node) else None,
        )
        remove = ir_common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, result.modified or remove.modified)


_NARROW = (ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT4, ir.DataType.UINT4)
_WIDE = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def _widens_narrow_constant(node: ir.Node) -> bool:
    """A Cast of a constant 8- or 4-bit integer tensor to a float type (a compressed weight)."""
    if node.op_type != "Cast" or node.domain not in ("", "ai.onnx") or not node.inputs:
        return False
    x, to = node.inputs[0], node.attributes.get("to")
    if x is None or x.const_value is None or to is None:
        return False
    return x.const_value.dtype in _NARROW and ir.DataType(to.as_int()) in _WIDE


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _initializer_value(name: str, array: np.ndarray) -> ir.Value:
    """A typed, shaped initializer value (passes downstream rely on ``value.dtype``)."""
    tensor = ir.tensor(array, name=name)
    return ir.Value(
        name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(array.shape), const_value=tensor
    )


def _set_initializer(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, base: str) -> None:
    """Give ``node`` input ``index`` a new initializer holding ``array`` (never mutate a shared one)."""
    name = base
    taken = set(graph.initializers)
    k = 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    value = _initializer_value(name, array)
    graph.register_initializer(value)
    old = node.inputs[index]
    node.replace_input_with(index, value)
    if old is not None and old.name and old.is_initializer() and not old.uses() and not old.is_graph_output():
        graph.initializers.pop(old.name, None)


def _bn_scale_shift(bn: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    extra = [o for o in bn.outputs[1:] if o is not None and (o.uses() or o.is_graph_output())]
    if len(bn.inputs) < 5 or extra:
        return None
    gamma, beta, mean, var = (_const(v) for v in bn.inputs[1:5])
    if gamma is None or beta is None or mean is None or var is None:
        return None
    attr = bn.attributes.get("epsilon")
    eps = attr.as_float() if attr is not None else 1e-5
    training = bn.attributes.get("training_mode")
    if training is not None and training.as_int() != 0:
        return None
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    shift = beta.astype(np.float64) - mean.astype(np.float64) * s
    return s, shift


@dataclasses.dataclass(frozen=True, kw_only=True)
class FoldBatchNormPass(SqueezePass):
    """Fold BatchNormalization into a preceding Conv, ConvTranspose or Gemm (in float32/64).

    Requires: the producer's weight (and bias) and the BN parameters are initializers, the
    producer's output feeds only the BN, and the BN runs in inference mode. Other BNs stay.
    """

    name: ClassVar[str] = "fold-bn"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for bn in list(graph):
            if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
                continue
            x = bn.inputs[0]
            producer = x.producer() if x is not None else None
            if x is None or producer is None or producer.op_type not in ("Conv", "ConvTranspose", "Gemm"):
                continue
            if len(x.uses()) != 1 or x.is_graph_output():
                continue
            ss = _bn_scale_shift(bn)
            if ss is None:
                continue
            if self._fold(graph, producer, *ss):
                out = bn.outputs[0]
                new = producer.outputs[0]
                name, was_output = out.name, out.is_graph_output()
                out.replace_all_uses_with(new, replace_graph_outputs=True)
                graph.remove(bn, safe=True)
                if was_output:
                    new.name = name  # the model's interface keeps its output names and types
                    new.type = new.type or out.type
                    new.shape = new.shape or out.shape
                modified = True
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _fold(graph: ir.Graph, node: ir.Node, s: np.ndarray, shift: np.ndarray) -> bool:
        w = _const(node.inputs[1]) if len(node.inputs) > 1 else None
        if w is None or not np.issubdtype(w.dtype, np.floating):
            return False
        b_value = node.inputs[2] if len(node.inputs) > 2 else None
        b = _const(b_value)
        if b_value is not None and b is None:
            return False
        dtype = w.dtype
        w_value = node.inputs[1]
        base = (w_value.name if w_value is not None else None) or "weight"
        if node.op_type == "Conv":
            cout = w.shape[0]
            if s.shape[0] != cout:
                return False
            w_new = w.astype(np.float64) * s.reshape((cout,) + (1,) * (w.ndim - 1))
            b_old = b.astype(np.float64) if b is not None else np.zeros(cout)
            b_new = b_old * s + shift
        elif node.op_type == "ConvTranspose":
            group = node.attributes.get("group")
            g = group.as_int() if group is not None else 1
            cin, cout_g = w.shape[0], w.shape[1]
            cout = cout_g * g
            if s.shape[0] != cout:
                return False
            ws = w.astype(np.float64).reshape((g, cin // g, cout_g, *w.shape[2:]))
            ws = ws * s.reshape((g, 1, cout_g) + (1,) * (w.ndim - 2))
            w_new = ws.reshape(w.shape)
            b_old = b.astype(np.float64) if b is not None else np.zeros(cout)
            b_new = b_old * s + shift
        else:  # Gemm: BN over axis 1 of a rank-2 output
            attrs = node.attributes
            trans_b = attrs["transB"].as_int() if "transB" in attrs else 0
            alpha = attrs["alpha"].as_float() if "alpha" in attrs else 1.0
            beta_g = attrs["beta"].as_float() if "beta" in attrs else 1.0
            n = w.shape[0] if trans_b else w.shape[1]
            if s.shape[0] != n or (b is not None and b.size not in (1, n)):
                return False
            w64 = w.astype(np.float64)
            w_new = w64 * (s[:, None] if trans_b else s[None, :])
            c_old = np.broadcast_to(b.astype(np.float64).reshape(-1), (n,)) if b is not None else np.zeros(n)
            b_new = s * beta_g * c_old + shift
            if alpha != 1.0 or beta_g != 1.0:
                node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        _set_initializer(graph, node, 1, w_new.astype(dtype), f"{base}_bnfold")
        b_arr = b_new.astype(dtype)
        if b_value is None:
            bias = ir.Value(
                name=f"{base}_bnfold_bias", const_value=ir.tensor(b_arr, name=f"{base}_bnfold_bias")
            )
            graph.register_initializer(bias)
            node.resize_inputs(3)
            node.replace_input_with(2, bias)
        else:
            _set_initializer(graph, node, 2, b_arr, f"{b_value.name or base}_bnfold")
        return True


@dataclasses.dataclass(frozen=True, kw_only=True)
class CleanupPass(SqueezePass):
    """The standard tidy-up: lift Constant weights, fold constants, fold BN, drop dead code.

    Requires: nothing. Ensures: the model computes the same function (verified by callers).
    """

    name: ClassVar[str] = "cleanup"
    fold_constants: bool = True
    fold_batchnorm: bool = True

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        steps: list[ir.passes.PassBase] = [
            ir_common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=16),
        ]
        if self.fold_constants:
            steps.append(FoldConstantsPass())
        if self.fold_batchnorm:
            steps.append(FoldBatchNormPass())
        steps += [
            ir_common.IdentityEliminationPass(),
            ir_common.RemoveUnusedNodesPass(),
            ir_common.RemoveUnusedOpsetsPass(),
        ]
        modified = False
        for step in steps:
            modified = step(model).modified or modified
        return ir.passes.PassResult(model, modified)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimplifyWithOnnxslimPass(SqueezePass):
    """onnxslim's graph simplification, then :class:`CleanupPass` on what it left.

    onnxslim trusts declared output shapes, and exporters declare some wrongly (ddddocr's OCR
    declares ``[1, seqlen]`` and returns ``[T, 1, 8210]``; slimmed with it, the output changes),
    so it sees the outputs' types only; the declared interface is put back unless shape inference
    now contradicts it (then the computed output shapes are kept). A result with no fewer nodes,
    or onnxslim failing (it raises bare Exceptions on unusual graphs), leaves the model as it was
    (``modified`` False). onnxslim works on protos: the model's graph and functions are replaced
    by the simplified ones (its metadata, the provenance, stays).

    Requires: nothing (``onnxslim`` is a core dependency). Whether the result computes the same
    function is verified by callers (``optimize.base.normalize``, the search), on real inputs.
    """

    name: ClassVar[str] = "onnxslim"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        import contextlib

        import onnx

        source = ir.serde.serialize_model(model)
        bare = onnx.ModelProto()
        bare.CopyFrom(source)
        for vi in bare.graph.output:
            vi.type.tensor_type.ClearField("shape")
        try:
            import onnxslim

            slimmed = onnxslim.slim(bare)
        except Exception:  # an improvement, never a must
            slimmed = None
        if not isinstance(slimmed, onnx.ModelProto) or len(slimmed.graph.node) >= len(source.graph.node):
            return ir.passes.PassResult(model, False)
        form = ir.serde.deserialize_model(slimmed)
        with contextlib.suppress(Exception):  # lifts what onnxslim left as Constant nodes
            CleanupPass()(form)
        proto = ir.serde.serialize_model(form)
        restored = onnx.ModelProto()
        restored.CopyFrom(proto)
        declared = {vi.name: vi for vi in [*source.graph.input, *source.graph.output]}
        for vi in [*restored.graph.input, *restored.graph.output]:
            if vi.name in declared:
                vi.type.CopyFrom(declared[vi.name].type)
        try:
            onnx.checker.check_model(restored, full_check=True)
            proto = restored
        except Exception:  # a declaration inference contradicts: the computed shapes are kept
            pass
        new = ir.serde.deserialize_model(proto)
        model.graph = new.graph
        model.ir_version = new.ir_version
        model.functions.clear()
        model.functions.update(new.functions)
        return ir.passes.PassResult(model, True)
