"""Measured mixed precision: which nodes must stay float32, found by running the model.

``analyze_fp16`` runs the float32 model on sample inputs in onnxruntime with every intermediate
tensor of the main graph exposed as an output (on a copy), then:

1. **Ranges**: per float tensor, ``max |x|`` and the relative L2 error of storing it in the low
   type, ``||x - fp16(x)|| / ||x||``. A tensor whose ``max |x| * overflow_margin`` exceeds 65504
   overflows (its producer and every consumer stay float32); one whose rounding error exceeds
   ``underflow_error`` has mostly underflowed to zero or subnormals (producer and consumers stay).
2. **Node-level error**: every node the plan would convert is copied into one "decoupled" model
   whose inputs are the float32 reference tensors rounded to the low type; each node's low output
   is compared with its float32 reference: ``err = max |y_low - y_fp32| / max |y_fp32|`` (inf for a
   new NaN/Inf). A node with ``err > node_tolerance`` stays float32. This finds every place where
   the low type hurts, in one run, without a bisection over the whole graph. Since the error of
   a node comes from rounding its inputs, the producers of its badly rounded inputs stay too.

onnxruntime is imported inside functions; nothing here reads or writes files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from onnxsqueeze.errors import (
    ModelLoadError,
)
from onnxsqueeze.passes.cleanup import CleanupPass
from onnxsqueeze.passes.fp16 import (
    DEFAULT_BLOCK_OPS,
    FP16_MAX,
    LOW_TYPES,
    formal_type,
    low_precision_error,
    plan_conversion,
    subgraphs,
)


@dataclasses.dataclass(frozen=True)
class TensorStats:
    """Range of one float32 tensor over the sample inputs."""

    max_abs: float
    rounding_error: float  # relative L2 error of the tensor stored in the low type (inf: overflow)


@dataclasses.dataclass(frozen=True)
class Fp16Analysis:
    """What the measurement found: nodes to keep in float32 and why, and the raw numbers."""

    keep: dict[str, str]
    tensors: dict[str, TensorStats]
    node_errors: dict[str, float]
    samples: int


def prepare(model: ir.Model) -> ir.Model:
    """Cleanup (lift Constant weights, fold constants, fold BN in float32) and name every node."""
    CleanupPass()(model)
    ir_common.NameFixPass()(model)
    return model


def _rounding_error(x: np.ndarray, low: str) -> float:
    return low_precision_error(x, LOW_TYPES[low])


def _main_graph_tensors(proto: onnx.ModelProto) -> list[str]:
    """Names of every node output of the main graph (any dtype), in order."""
    names: list[str] = []
    outputs = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        for o in node.output:
            if o and o not in outputs:
                names.append(o)
    return names


def analyze_fp16(
    model: ir.Model,
    feeds: Mapping[str, np.ndarray],
    *,
    dtype: str = "float16",
    block_ops: frozenset[str] = DEFAULT_BLOCK_OPS,
    overflow_margin: float = 2.0,
    underflow_error: float = 0.05,
    node_tolerance: float = 0.01,
    input_rounding_error: float = 2.0**-10,
    batch_size: int = 2,
    provider: str = "cpu",
) -> Fp16Analysis:
    """Measure where the low type is unsafe on ``feeds`` (see the module docstring).

    Args:
        model: the prepared model (see :func:`prepare`); it is not modified.
        feeds: sample inputs by input name, first axis = samples.
        dtype: the low type, ``float16`` or ``bfloat16``.
        block_ops: the block list the conversion will use (those nodes are not measured).
        overflow_margin: headroom factor on ``max |x|`` for inputs not in the sample.
        underflow_error: rounding error of a tensor that counts as underflowed.
        node_tolerance: the largest acceptable normalized node-level error.
        input_rounding_error: rounding error of an input of a flagged node beyond which its
            producer stays float32 as well (plain rounding stays below 2**-11).
        batch_size: samples per run; small because every intermediate tensor is returned at
            once (resnet50: ~0.25 GB per sample).
        provider: onnxruntime execution provider.
    """
    from onnxsqueeze import runtime

    proto = ir.serde.serialize_model(model)
    names = _main_graph_tensors(proto)
    exposed = runtime.with_outputs(proto, names, infer_types=True)
    sess = runtime.session(exposed, provider=provider)
    out_names = [o.name for o in sess.get_outputs()]
    input_names = [i.name for i in sess.get_inputs()]

    # The decoupled model: the plan computed on a private copy.
    work = ir.serde.deserialize_model(proto)
    plan = plan_conversion(work, block_ops=block_ops, dtype=dtype)
    decoupled, node_map = _decoupled_model(work, plan, dtype)
    dsess = None
    if decoupled.graph.node:
        try:
            dsess = runtime.session(decoupled, provider=provider)
        except ModelLoadError:
            if dtype == "float16":
                raise
            # No bfloat16 kernels on this provider (onnxruntime's CPU): ranges only.

    maxima: dict[str, float] = {}
    sq_err: dict[str, float] = {}
    sq_norm: dict[str, float] = {}
    overflow: set[str] = set()
    node_err: dict[str, float] = {}
    first_shape = np.shape(next(iter(feeds.values()))) if feeds else ()
    n = int(first_shape[0]) if first_shape else 1
    # A static batch dimension dictates the chunk (the whole feed when it does not divide it).
    static = runtime.fixed_batch(sess)
    step = (static if n % static == 0 else max(n, 1)) if static else batch_size
    for start in range(0, max(n, 1), step):
        batch = {
            k: np.ascontiguousarray(v[start : start + step] if v.ndim else v)
            for k, v in ((k, np.asarray(feeds[k])) for k in input_names)
        }
        values = dict(zip(out_names, sess.run(None, batch), strict=True)) | batch
        for name, x in values.items():
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.size:
                continue
            finite = x[np.isfinite(x)]
            peak = float(np.max(np.abs(finite))) if finite.size else 0.0
            maxima[name] = max(maxima.get(name, 0.0), peak)
            if peak > FP16_MAX and dtype == "float16":
                overflow.add(name)
                continue
            a = finite.astype(np.float64)
            r = _round(finite, dtype).astype(np.float64)
            sq_err[name] = sq_err.get(name, 0.0) + float(np.sum((a - r) ** 2))
            sq_norm[name] = sq_norm.get(name, 0.0) + float(np.sum(a**2))
        if dsess is not None:
            dfeeds = {}
            for inp in dsess.get_inputs():
                src, low = node_map["inputs"][inp.name]
                arr = values[src]
                dfeeds[inp.name] = _round(arr, dtype) if low else arr
            douts = dict(zip([o.name for o in dsess.get_outputs()], dsess.run(None, dfeeds), strict=True))
            for oname, (node_name, ref_name) in node_map["outputs"].items():
                err = _node_error(values[ref_name], douts[oname])
                node_err[node_name] = max(node_err.get(node_name, 0.0), err)

    tensors: dict[str, TensorStats] = {}
    for name, peak in maxima.items():
        if name in overflow:
            err = float("inf")
        else:
            norm = sq_norm.get(name, 0.0)
            err = float(np.sqrt(sq_err.get(name, 0.0) / norm)) if norm > 0 else 0.0
        tensors[name] = TensorStats(peak, err)

    keep: dict[str, str] = {}
    producers: dict[str, ir.Node] = {}
    consumers: dict[str, list[ir.Node]] = {}
    for node in model.graph:
        for o in node.outputs:
            if o is not None and o.name:
                producers[o.name] = node
        for v in node.inputs:
            if v is not None and v.name:
                consumers.setdefault(v.name, []).append(node)

    def flag(node: ir.Node | None, reason: str) -> None:
        if node is not None and node.name and node.name not in keep and node.op_type not in block_ops:
            keep[node.name] = reason

    for name, st in tensors.items():
        what = None
        if dtype == "float16" and st.max_abs * overflow_margin > FP16_MAX:
            what = f"tensor '{name}' reaches |x| = {st.max_abs:.3g}, overflows float16 (65504)"
            if overflow_margin != 1.0 and st.max_abs <= FP16_MAX:
                what += f" within a x{overflow_margin:g} margin"
        elif st.rounding_error > underflow_error:
            what = (
                f"tensor '{name}' (max |x| = {st.max_abs:.3g}) underflows: "
                f"{st.rounding_error:.0%} relative rounding error in {dtype}"
            )
        if what is None:
            continue
        flag(producers.get(name), what)
        for c in consumers.get(name, []):
            flag(c, what)
    for node_name, err in sorted(node_err.items(), key=lambda kv: -kv[1]):
        if err <= node_tolerance:
            continue
        flagged = _by_name(model, node_name)
        flag(
            flagged,
            f"node-level error {err:.3g} in {dtype} exceeds {node_tolerance:g}"
            if np.isfinite(err)
            else f"produces NaN/Inf in {dtype}",
        )
        # The node's error comes from its inputs' rounding (onnxruntime computes most low-type
        # ops in float32): an input that rounds badly must arrive in float32, so its producer
        # stays float32 too, and so on upstream (through Reshape, Transpose, ...) while the
        # tensors keep rounding badly.
        pending = [flagged] if flagged is not None else []
        seen: set[str] = set()
        while pending:
            current = pending.pop()
            for v in current.inputs:
                if v is None or not v.name or v.name in seen or v.name not in tensors:
                    continue
                seen.add(v.name)
                rounding = tensors[v.name].rounding_error
                producer = producers.get(v.name)
                if rounding <= input_rounding_error or producer is None:
                    continue
                flag(
                    producer,
                    f"its output '{v.name}' feeds '{node_name}' (error {err:.3g}) and rounds with "
                    f"{rounding:.2%} relative error in {dtype}",
                )
                pending.append(producer)
    return Fp16Analysis(keep, tensors, node_err, n)


def _by_name(model: ir.Model, name: str) -> ir.Node | None:
    for node in model.graph:
        if node.name == name:
            return node
    return None


def _round(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16":
        with np.errstate(over="ignore"):  # overflow to inf is what the measurement looks for
            return x.astype(np.float16)
    import ml_dtypes

    return x.astype(ml_dtypes.bfloat16)


def _node_error(ref: np.ndarray, cand: np.ndarray) -> float:
    r = np.asarray(ref, dtype=np.float64)
    c = np.asarray(cand).astype(np.float64)
    if r.shape != c.shape:
        return float("inf")
    if np.any(np.isfinite(r) & ~np.isfinite(c)):
        return float("inf")
    finite = np.isfinite(r)
    if not finite.any():
        return 0.0
    scale = float(np.max(np.abs(r[finite])))
    diff = float(np.max(np.abs(r[finite] - c[finite])))
    return diff / scale if scale > 0 else diff


def _decoupled_model(model: ir.Model, plan: Any, dtype: str) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """One model holding a copy of every converted main-graph node, each fed by its own inputs.

    Returns the model and a map: ``inputs[name] = (reference tensor, rounded to low?)`` and
    ``outputs[name] = (node name, reference tensor)``.
    """
    from onnx import helper

    low = LOW_TYPES[dtype]
    low_int = int(low)
    nodes: list[onnx.NodeProto] = []
    inputs: list[onnx.ValueInfoProto] = []
    outputs: list[onnx.ValueInfoProto] = []
    inits: list[onnx.TensorProto] = []
    mapping: dict[str, Any] = {"inputs": {}, "outputs": {}}
    for node in model.graph:
        if node not in plan.convert or node.op_type in ("Cast", "Constant", "ConstantOfShape"):
            continue
        if subgraphs(node) or not node.name:
            continue
        low_vars = plan.low_vars.get(node, set())
        schema = plan.schemas.get(node)
        if schema is None:
            continue
        new_inputs: list[str] = []
        ok = True
        for i, v in enumerate(node.inputs):
            if v is None:
                new_inputs.append("")
                continue
            is_low = formal_type(schema.inputs, i) in low_vars and v.dtype == ir.DataType.FLOAT
            local = f"{node.name}__in{i}"
            if v.const_value is not None and (v.is_initializer() or v.producer() is None):
                array = v.const_value.numpy()
                if is_low:
                    array = _round(array, dtype)
                t = (
                    onnx.numpy_helper.from_array(np.asarray(array), local)
                    if dtype == "float16" or not is_low
                    else None
                )
                if t is None:
                    t = helper.make_tensor(
                        local, low_int, array.shape, array.astype(np.float32).ravel().tolist()
                    )
                inits.append(t)
            elif v.dtype is not None and v.name:
                elem = low_int if is_low else int(v.dtype)
                inputs.append(helper.make_tensor_value_info(local, elem, None))
                mapping["inputs"][local] = (v.name, is_low)
            else:
                ok = False
                break
            new_inputs.append(local)
        if not ok:
            continue
        new_outputs: list[str] = []
        pending = []
        for j, o in enumerate(node.outputs):
            if o is None:
                new_outputs.append("")
                continue
            local = f"{node.name}__out{j}"
            new_outputs.append(local)
            if o.dtype == ir.DataType.FLOAT and formal_type(schema.outputs, j) in low_vars and o.name:
                pending.append((local, o.name))
        proto_node = ir.serde.serialize_node(node)
        del proto_node.input[:]
        proto_node.input.extend(new_inputs)
        del proto_node.output[:]
        proto_node.output.extend(new_outputs)
        nodes.append(proto_node)
        for local, ref in pending:
            outputs.append(helper.make_tensor_value_info(local, low_int, None))
            mapping["outputs"][local] = (node.name, ref)
    opsets = [helper.make_opsetid(d, v) for d, v in model.opset_imports.items()]
    graph = helper.make_graph(nodes, "fp16_decoupled", inputs, outputs, inits)
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)
    return proto, mapping
