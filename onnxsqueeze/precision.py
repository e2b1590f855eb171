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

``convert_fp16`` is the whole guarded conversion: cleanup (BN folded in float32, Constant weights
lifted, constants folded), analysis, ``ConvertToFloat16Pass`` with the measured ``keep_fp32``, then
verification of the whole model against float32 by the **task metric** of each output
(:func:`check_outputs`): top-1 agreement >= 99% for class scores ``[N, C]``, box agreement
>= 98% for YOLO-style detections, mask IoU >= 98% for probability maps, per-position top-1
agreement >= 99% for sequences (CTC ``[T, N, C]``), cosine >= 0.999 otherwise, and a cosine floor
of 0.99 on every output (a task metric alone can be vacuous). An output that barely varies between
the samples (random inputs into a detector: a near-zero map, no box) cannot show an error: it is
accepted with a warning that asks for real data.

3. **Blame** (only when the check fails): the converted model is run with every intermediate
   tensor exposed, next to the float32 model, and each node gets the relative L2 error it
   *creates*: ``e(out) - max e(inputs)`` with ``e(v) = ||v_low - v_fp32|| / ||v_fp32||``. The
   nodes creating the most error are kept float32; a node already float32 that still creates
   error receives its inputs rounded, so its float32 region extends upstream through the data
   movement (Reshape, Transpose: no error created) to the node whose rounding is to blame. Each
   round keeps only what the measurement blames, so the float32 region stays small.

onnxruntime is imported inside functions; nothing here reads or writes files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from onnxsqueeze.errors import (
    InputError,
    ModelLoadError,
    SqueezeError,
    UnsupportedModelError,
    VerificationError,
    one_line,
)
from onnxsqueeze.passes.cleanup import CleanupPass
from onnxsqueeze.passes.fp16 import (
    DEFAULT_BLOCK_OPS,
    FP16_MAX,
    LOW_TYPES,
    ConvertToFloat16Pass,
    Fp16PassResult,
    formal_type,
    iter_nodes,
    plan_conversion,
    subgraphs,
)
from onnxsqueeze.pipeline import run_passes

Progress = Callable[[str], None]


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
    from onnxsqueeze.passes.fp16 import low_precision_error

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


# ---------------------------------------------------------------------------------------------
# Acceptance by task metric

# The task metric each output kind must reach (fractions), and the cosine floor of every output.
THRESHOLDS = {"agreement": 0.99, "boxes": 0.98, "iou": 0.98, "frames": 0.99, "cosine": 0.999, "exact": 1.0}
COSINE_FLOOR = 0.99
MAP_THRESHOLD = 0.5  # binarization threshold of probability maps for the mask IoU
BOX_CONF = 0.25  # detection score threshold of box agreement


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output judged by its task metric (values are fractions: 1.0 = identical)."""

    output: str
    metric: str  # agreement, boxes, iou, frames, cosine, exact, normalized
    value: float
    threshold: float
    cosine: float
    vacuous: str | None = None  # why this output cannot show an error on these inputs

    @property
    def passed(self) -> bool:
        if self.vacuous is not None:
            return True
        if self.metric == "normalized":
            return self.value <= self.threshold
        return self.value >= self.threshold and (self.metric == "exact" or self.cosine >= COSINE_FLOOR)

    def describe(self) -> str:
        op = "<=" if self.metric == "normalized" else ">="
        text = f"'{self.output}': {self.metric} {self.value:.4g} ({op} {self.threshold:g})"
        if self.metric not in ("cosine", "exact", "normalized"):
            text += f", cosine {self.cosine:.5f} (>= {COSINE_FLOOR:g})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"passed": self.passed}


def output_task(ref: np.ndarray) -> tuple[str, str]:
    """Guess what an output is from its shape and values: ``(metric, layout)``.

    - ``[N, C]`` scores: ``agreement`` (top-1 over axis 1), except L2-normalized rows
      (sentence or face embeddings): ``cosine``;
    - ``[N, 4 + C, A]`` with ``A >= 2 (4 + C)`` (YOLOv8) or ``[N, A, 5 + C]`` (YOLOv5/X) whose
      score rows lie in [0, 1]: ``boxes``;
    - other rank-3 outputs with probabilities on the last axis, a vocabulary-sized last axis
      (>= 1000) or a ``[T, 1, C]`` layout (CTC): ``frames`` (top-1 per position, last axis);
    - rank-4 maps with values in [0, 1]: ``iou`` (one channel: thresholded at 0.5; several:
      argmax class maps);
    - anything else (embeddings, regressions): ``cosine``; non-float outputs: ``exact``.
    """
    r = np.asarray(ref)
    if not np.issubdtype(r.dtype, np.floating):
        return "exact", ""
    finite = r[np.isfinite(r)]
    if not finite.size:
        return "cosine", ""
    unit = bool(finite.min() >= 0.0 and finite.max() <= 1.0)
    if r.ndim == 2 and r.shape[1] >= 2:
        norms = np.linalg.norm(np.nan_to_num(r.astype(np.float64)), axis=1)
        if np.allclose(norms, 1.0, atol=1e-3):  # L2-normalized embeddings, not class scores
            return "cosine", ""
        return "agreement", ""
    if r.ndim == 3:
        k, a = r.shape[1], r.shape[2]
        if 5 <= k <= 300 and a >= 2 * k and _unit(r[:, 4:, :]):
            return "boxes", "features_first"
        if 6 <= a <= 300 and k >= 2 * a and _unit(r[:, :, 4:]):
            return "boxes", "anchors_first"
        probs = unit and _sums_to_one(r)
        if a >= 2 and (probs or a >= 1000 or k == 1):
            return "frames", ""
    if r.ndim == 4 and unit:
        return "iou", ""
    return "cosine", ""


def _unit(x: np.ndarray) -> bool:
    f = x[np.isfinite(x)]
    return bool(f.size) and float(f.min()) >= 0.0 and float(f.max()) <= 1.0


def _sums_to_one(r: np.ndarray) -> bool:
    return bool(np.allclose(np.sum(r.astype(np.float64), axis=-1), 1.0, atol=1e-3))


def _vacuous(ref: np.ndarray, metric: str, layout: str) -> str | None:
    """Why an output cannot show a precision error on these samples (None: it can)."""
    r = np.asarray(ref, dtype=np.float64)
    if metric == "boxes":
        from onnxsqueeze.boxes import detections

        if not any(len(detections(x, layout=layout, conf=BOX_CONF)[0]) for x in r):
            return f"no box scores >= {BOX_CONF:g} on these inputs"
    if metric == "iou" and _channels_first(r, r).shape[1] == 1 and not np.any(r > MAP_THRESHOLD):
        return f"the map stays below {MAP_THRESHOLD:g} everywhere on these inputs"
    if r.ndim and len(r) > 1:
        finite = np.where(np.isfinite(r), r, 0.0)
        spread = float(np.mean(np.std(finite, axis=0)))
        if spread <= 1e-3 * max(float(np.mean(np.abs(finite))), 1e-30):
            return "it barely varies between the samples"
    return None


def check_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    metric: str = "auto",
    normalized_tolerance: float = 0.01,
    threshold: float | None = None,
) -> list[OutputCheck]:
    """Judge every output of ``candidate`` against ``reference`` by its task metric.

    Args:
        reference: the float32 model's outputs by name.
        candidate: the converted model's outputs (by name, or by position).
        metric: ``auto`` (per output, see :func:`output_task`), one of the metric names for every
            float output, or ``normalized`` (``max |y - y_ref| / max |y_ref| <= normalized_tolerance``).
        normalized_tolerance: the budget of ``normalized``.
        threshold: overrides the metric's threshold (a fraction).
    """
    from onnxsqueeze import boxes

    cand_items = list(candidate.values())
    checks: list[OutputCheck] = []
    for i, (name, ref) in enumerate(reference.items()):
        r = np.asarray(ref)
        c = np.asarray(candidate[name] if name in candidate else cand_items[i])
        kind, layout = output_task(r)
        if metric not in ("auto",) and kind != "exact":
            kind = metric
            layout = layout or "features_first"
        cos = _cosine(r, c)
        if kind == "exact":
            value = float(np.mean(r == c)) if r.shape == c.shape else 0.0
        elif kind == "normalized":
            value = _normalized_error({name: r}, {name: c})
        elif r.shape != c.shape or np.any(np.isfinite(r) & ~np.isfinite(c)):
            value = 0.0
        elif kind == "agreement":
            value = float(np.mean(np.argmax(r, axis=1) == np.argmax(c, axis=1)))
        elif kind == "frames":
            value = float(np.mean(np.argmax(r, axis=-1) == np.argmax(c, axis=-1)))
        elif kind == "boxes":
            value = boxes.box_agreement(c, r, layout=layout, conf=BOX_CONF) / 100.0
        elif kind == "iou":
            value = _mask_iou(_channels_first(c, r), _channels_first(r, r))
        else:
            value = cos
        limit = (
            threshold
            if threshold is not None
            else (normalized_tolerance if kind == "normalized" else THRESHOLDS.get(kind, 0.999))
        )
        vacuous = None if kind in ("exact", "normalized") else _vacuous(r, kind, layout)
        checks.append(OutputCheck(name, kind, value, limit, cos, vacuous))
    return checks


def _channels_first(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``x`` as NCHW when ``ref`` is a channels-last map of class probabilities (Keras/tf2onnx:
    MTCNN's PNet returns [N, H, W, 2] softmax maps): its last axis is short and sums to one."""
    if (
        ref.ndim == 4
        and 1 < ref.shape[-1] < ref.shape[1]
        and _sums_to_one(ref)
        and not _sums_to_one(np.moveaxis(ref, 1, -1))
    ):
        return np.moveaxis(x, -1, 1)
    return x


def _mask_iou(c: np.ndarray, r: np.ndarray) -> float:
    """Mean per-sample IoU of ``map > 0.5`` (one channel) or of the argmax class maps."""
    if r.ndim == 4 and r.shape[1] > 1:
        a, b = np.argmax(c, axis=1), np.argmax(r, axis=1)
        per = [
            np.mean(
                [
                    np.count_nonzero((a[i] == k) & (b[i] == k)) / np.count_nonzero((a[i] == k) | (b[i] == k))
                    for k in np.union1d(np.unique(a[i]), np.unique(b[i]))
                ]
            )
            for i in range(len(r))
        ]
        return float(np.mean(per))
    a = c.reshape(len(c), -1) > MAP_THRESHOLD
    b = r.reshape(len(r), -1) > MAP_THRESHOLD
    inter, union = np.count_nonzero(a & b, axis=1), np.count_nonzero(a | b, axis=1)
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def _cosine(r: np.ndarray, c: np.ndarray) -> float:
    """Mean per-sample cosine similarity (1.0 for non-float or identical outputs)."""
    if r.shape != c.shape:
        return 0.0
    if not np.issubdtype(r.dtype, np.floating):
        return 1.0 if np.array_equal(r, c) else 0.0
    a = np.nan_to_num(np.asarray(r, np.float64).reshape(max(len(r), 1), -1), posinf=0.0, neginf=0.0)
    b = np.asarray(c, np.float64).reshape(max(len(c), 1), -1)
    if not np.all(np.isfinite(b[np.isfinite(np.asarray(r, np.float64).reshape(a.shape))])):
        return 0.0
    b = np.nan_to_num(b, posinf=0.0, neginf=0.0)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-300))
    return float(np.mean(cos))


# ---------------------------------------------------------------------------------------------
# Blame: which nodes create the error of a failed conversion

# Ops that move values without computing: a rounding error passes through them unchanged.
DATA_MOVEMENT = frozenset(
    {
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Slice",
        "Gather",
        "Concat",
        "Split",
        "Expand",
        "Tile",
        "Pad",
        "DepthToSpace",
        "SpaceToDepth",
        "GatherElements",
        "GatherND",
    }
)


def _capture(
    proto: onnx.ModelProto, names: list[str], feeds: Mapping[str, np.ndarray], provider: str
) -> dict[str, np.ndarray]:
    from onnxsqueeze import runtime

    exposed = runtime.with_outputs(proto, names)
    sess = runtime.session(exposed, provider=provider)
    inputs = {i.name: np.asarray(feeds[i.name]) for i in sess.get_inputs()}
    return runtime.run_batched(sess, inputs, batch_size=2)


def blame(
    base: ir.Model,
    candidate: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    keep: Mapping[str, str],
    *,
    provider: str = "cpu",
) -> tuple[dict[str, float], dict[str, float]]:
    """The relative error each node of ``base`` creates in ``candidate`` (see the module docstring).

    Returns:
        ``(created, errors)``: per node name ``e(out) - max e(inputs)`` (nodes with a float
        output), and per tensor name its relative L2 error ``e``.
    """
    base_proto = ir.serde.serialize_model(base)
    names = [
        o.name
        for n in base.graph
        for o in n.outputs
        if o is not None and o.name and o.dtype in _FLOATISH and not o.is_graph_output()
    ]
    present = {o for n in candidate.graph.node for o in n.output}
    names = [n for n in names if n in present]
    ref = _capture(base_proto, names, feeds, provider)
    got = _capture(candidate, names, feeds, provider)
    errors: dict[str, float] = {}
    for name in names:
        r, c = np.asarray(ref[name]), np.asarray(got[name])
        if r.shape != c.shape or not np.issubdtype(r.dtype, np.floating):
            continue
        r64, c64 = r.astype(np.float64), c.astype(np.float64)
        finite = np.isfinite(r64)
        if np.any(finite & ~np.isfinite(c64)):
            errors[name] = float("inf")
            continue
        norm = float(np.linalg.norm(r64[finite]))
        diff = float(np.linalg.norm((r64 - c64)[finite]))
        errors[name] = diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))
    created: dict[str, float] = {}
    for node in base.graph:
        outs = [errors[o.name] for o in node.outputs if o is not None and o.name in errors]
        if not node.name or not outs:
            continue
        ins = [errors.get(v.name, 0.0) for v in node.inputs if v is not None and v.name]
        worst_in = max(ins, default=0.0)
        out = max(outs)
        created[node.name] = (out - worst_in) if np.isfinite(out) else float("inf")
    return created, errors


def _keep_blamed(
    base: ir.Model,
    keep: dict[str, str],
    created: Mapping[str, float],
    errors: Mapping[str, float],
    *,
    fraction: float = 0.25,
    per_round: int = 8,
) -> list[str]:
    """Keep float32 the nodes creating the most error; returns the names added.

    Nodes creating at least ``fraction`` of the largest created error are blamed, at most
    ``per_round`` of them. A blamed node that is already float32 gets its inputs rounded: the
    float32 region extends upstream from it, through nodes that create (almost) no error of their
    own (data movement: Reshape, Transpose, ...), up to and including the first node that computes.
    """
    ranked = sorted(((v, k) for k, v in created.items() if v > 0), reverse=True)
    if not ranked:
        return []
    top = ranked[0][0]
    producers = {o.name: n for n in base.graph for o in n.outputs if o is not None and o.name}
    added: list[str] = []

    def add(name: str, why: str) -> None:
        if name not in keep:
            keep[name] = why
            added.append(name)

    blamed = [k for v, k in ranked if v >= fraction * top or not np.isfinite(v)][: max(per_round, 1)]
    for name in blamed:
        how = created[name]
        if name not in keep:
            add(name, f"kept float32 to meet the error budget (creates relative error {how:.3g})")
            continue
        by_name = {n.name: n for n in base.graph if n.name}
        pending = [by_name[name]] if name in by_name else []
        seen: set[str] = set()
        while pending:
            node = pending.pop()
            for v in node.inputs:
                if v is None or not v.name or v.name in seen or errors.get(v.name, 0.0) <= 0:
                    continue
                seen.add(v.name)
                p = producers.get(v.name)
                if p is None or not p.name:
                    continue
                if p.name not in keep:
                    add(
                        p.name,
                        f"kept float32 to meet the error budget (its output '{v.name}' reaches "
                        f"'{name}' rounded; relative error {errors[v.name]:.3g})",
                    )
                if p.op_type in DATA_MOVEMENT:
                    pending.append(p)  # it only moves rounded values: the rounding is further up
    return added


# ---------------------------------------------------------------------------------------------
# The guarded conversion


@dataclasses.dataclass(frozen=True)
class Fp16Result:
    """The guarded conversion's outcome (the converted model is ``model``)."""

    model: onnx.ModelProto
    fp32_nodes: dict[str, str]
    converted_nodes: int
    total_nodes: int
    casts_inserted: int
    casts_removed: int
    rounds: int
    report: Any  # VerifyReport of the final model against the float32 original
    normalized_error: float  # max over outputs of max_abs / max |reference|
    analysis: Fp16Analysis | None
    seconds: float
    passed: bool
    budget: str
    checks: tuple[OutputCheck, ...] = ()
    warnings: tuple[str, ...] = ()
    blamed: tuple[str, ...] = ()  # nodes kept float32 by the blame rounds


_FLOATISH = (ir.DataType.FLOAT, None)  # None: not inferred on the prepared model


def _normalized_error(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray]) -> float:
    worst = 0.0
    for i, (name, r) in enumerate(ref.items()):
        c = cand[name] if name in cand else list(cand.values())[i]
        r64 = np.asarray(r, dtype=np.float64)
        if not np.issubdtype(np.asarray(r).dtype, np.floating):
            worst = max(worst, 0.0 if np.array_equal(r, c) else float("inf"))
            continue
        c64 = np.asarray(c).astype(np.float64)
        if np.any(np.isfinite(r64) & ~np.isfinite(c64)):
            return float("inf")
        scale = float(np.max(np.abs(r64[np.isfinite(r64)]))) if np.isfinite(r64).any() else 0.0
        diff = float(np.max(np.abs(r64 - c64)[np.isfinite(r64)])) if np.isfinite(r64).any() else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def convert_fp16(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    keep_io_types: bool = True,
    block_ops: frozenset[str] = DEFAULT_BLOCK_OPS,
    keep_fp32: frozenset[str] = frozenset(),
    dtype: str = "float16",
    tolerance: float | None = None,
    metric: str = "auto",
    threshold: float | None = None,
    normalized_tolerance: float = 0.01,
    measure: bool = True,
    measure_samples: int = 32,
    blame_samples: int = 4,
    max_rounds: int = 6,
    max_fp32_fraction: float = 0.5,
    provider: str = "cpu",
    source_sha256: str | None = None,
    data_label: str = "sample inputs",
    random_inputs: bool = False,
    on_step: Progress | None = None,
    accept: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], bool] | None = None,
    accept_budget: str = "",
) -> Fp16Result:
    """Cleanup, measure, convert and verify; keep float32 what the measurement blames until it passes.

    Args:
        model: the float32 model (not modified).
        feeds: sample inputs by name (first axis = samples): measurement and verification data.
        keep_io_types: inputs and outputs stay float32.
        block_ops: op types always kept float32.
        keep_fp32: node names always kept float32 (names after :func:`prepare`).
        dtype: ``float16`` or ``bfloat16``.
        tolerance: when given, the budget is ``max_abs <= tolerance`` on every output instead of
            the task metric.
        metric: ``auto`` (each output's task metric, see :func:`check_outputs`), a metric name
            for every output, or ``normalized`` (``max_abs / max |reference| <= normalized_tolerance``).
        threshold: overrides the metric's threshold (a fraction).
        normalized_tolerance: the budget of the ``normalized`` metric.
        measure: run :func:`analyze_fp16` (off: the block list and ``keep_fp32`` alone).
        measure_samples: the first samples of ``feeds`` used by the measurement (it keeps every
            intermediate tensor); verification uses all of ``feeds``.
        blame_samples: samples used by each blame round.
        max_rounds: conversions tried before giving up.
        max_fp32_fraction: give up when the blame rounds would keep more than this fraction of
            the nodes float32 (the conversion would no longer be a float16 model); graphs of
            fewer than 20 nodes give up only when every node would be float32.
        provider: onnxruntime execution provider for measurement and verification.
        source_sha256: the source file's hash, recorded in the provenance metadata.
        data_label: how the verification report names ``feeds``.
        random_inputs: ``feeds`` are random (a vacuous check then warns that real data is needed).
        on_step: progress callback receiving a short description of each step.
        accept: when given, the acceptance test of (reference, candidate) outputs in place of
            ``tolerance``/``normalized_tolerance`` (a task metric with its budget); NaN/Inf still fail.
        accept_budget: how the report names ``accept``'s budget.

    Returns:
        The result; ``passed`` is False when the budget is not met after ``max_rounds``
        (:func:`require_passed` turns that into a VerificationError).
    """
    from onnxsqueeze.verify import compare, run

    say = on_step or (lambda _msg: None)
    t0 = time.perf_counter()
    say("cleanup (lift constants, fold BN in float32, fold constants)")
    base = prepare(ir.serde.deserialize_model(model))
    base_proto = ir.serde.serialize_model(base)
    say("running the float32 model")
    try:
        reference = run(model, feeds, provider=provider)
    except SqueezeError:
        raise
    except Exception as e:  # onnxruntime rejects the inputs (shape or dtype)
        raise InputError(f"the model cannot run on the given inputs: {one_line(e)}") from e
    analysis = None
    keep = dict.fromkeys(keep_fp32, "kept float32 on request")
    if measure:
        say("measuring ranges and node-level error")
        sample = {k: v[:measure_samples] if np.ndim(v) else v for k, v in feeds.items()}
        analysis = analyze_fp16(base, sample, dtype=dtype, block_ops=block_ops, provider=provider)
        for k, v in analysis.keep.items():
            keep.setdefault(k, v)
    total_nodes = sum(1 for _ in iter_nodes(base.graph))
    blame_feeds = {k: v[:blame_samples] if np.ndim(v) else v for k, v in feeds.items()}
    blamed: list[str] = []
    rounds = 0
    while True:
        rounds += 1
        say(f"converting to {dtype} (round {rounds}, {len(keep)} node(s) kept float32)")
        candidate = ir.serde.deserialize_model(base_proto)
        pass_ = ConvertToFloat16Pass(
            keep_io_types=keep_io_types,
            block_ops=frozenset(block_ops),
            keep_fp32=frozenset(keep),
            dtype=dtype,
        )
        # the cleanup ran once in prepare(); it is recorded with the pass it prepared
        result = run_passes(candidate, [pass_], source_sha256=source_sha256, record=[CleanupPass(), pass_])
        assert isinstance(result, Fp16PassResult)
        proto = ir.serde.serialize_model(candidate)
        say("verifying against float32")
        try:
            outputs = run(proto, feeds, provider=provider)
        except ModelLoadError as e:
            if dtype == "float16":
                raise
            raise UnsupportedModelError(
                f"bfloat16: the '{provider}' provider cannot run the converted model, so it cannot be "
                f"verified ({str(e).split(': ', 1)[-1][:160]}); use a provider with bfloat16 kernels "
                "(--provider cuda) or float16"
            ) from e
        report = compare(reference, outputs, feeds=feeds, source=data_label)
        norm_err = _normalized_error(reference, outputs)
        checks = check_outputs(
            reference, outputs, metric=metric, normalized_tolerance=normalized_tolerance, threshold=threshold
        )
        if accept is not None:
            ok = accept(reference, outputs)
        else:
            ok = report.within(tolerance) if tolerance is not None else all(c.passed for c in checks)
        ok = ok and not any(o.nonfinite for o in report.outputs)
        if ok or rounds >= max_rounds:
            break
        say("locating the nodes that create the error")
        created, errors = blame(base, proto, blame_feeds, keep, provider=provider)
        added = _keep_blamed(base, keep, created, errors)
        # Give up when float16 would no longer cover most of the model (tiny graphs: any of it).
        limit = max_fp32_fraction * total_nodes if total_nodes >= 20 else total_nodes - 1
        if not added or len(keep) > limit:
            break
        blamed.extend(added)
    if accept_budget:
        budget = accept_budget
    elif tolerance is not None:
        budget = f"max abs error <= {tolerance:g}"
    else:
        budget = "; ".join(c.describe() for c in checks)
    warnings = [
        f"output '{c.output}': {c.vacuous}, so the {c.metric} check cannot show an error"
        + ("; pass real inputs with --data" if random_inputs else "; use more varied inputs")
        for c in checks
        if c.vacuous is not None and accept is None
    ]
    return Fp16Result(
        model=proto,
        fp32_nodes={name: keep.get(name, why) for name, why in result.fp32_nodes.items()},
        converted_nodes=result.converted_nodes,
        total_nodes=total_nodes,
        casts_inserted=result.casts_inserted,
        casts_removed=result.casts_removed,
        rounds=rounds,
        report=report,
        normalized_error=norm_err,
        analysis=analysis,
        seconds=time.perf_counter() - t0,
        passed=ok,
        budget=budget,
        checks=tuple(checks),
        warnings=tuple(warnings),
        blamed=tuple(blamed),
    )


def require_passed(result: Fp16Result) -> None:
    """Raise VerificationError when the guarded conversion missed its error budget."""
    if not result.passed:
        failed = [c.describe() for c in result.checks if not c.passed]
        what = "; ".join(failed) if failed else f"max abs error {result.report.max_abs:.3g}"
        raise VerificationError(
            f"fp16: after {result.rounds} round(s) {what}, beyond the budget ({result.budget}); "
            "keep more ops float32 with --block-op, or write it anyway with --force"
        )
