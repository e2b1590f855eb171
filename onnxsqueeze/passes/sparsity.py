"""Zero-weight (magnitude) pruning: set the smallest-magnitude weights of linear layers to zero.

The weights of Conv, ConvTranspose and Gemm (input B) and the constant operand of MatMul are
ranked by ``|w|``; the smallest ``sparsity`` fraction becomes exactly ``0``:

- ``layer`` scope: every tensor gets the same sparsity (``k_t = round(s * n_t)`` per tensor);
- ``global`` scope: one threshold over all tensors (``k = round(s * sum n_t)`` smallest overall),
  so layers with many redundant weights give more than small, sensitive ones.

Biases and normalization parameters are never touched. Dense kernels do not run faster on zeros
(onnxruntime densifies weights at load): the saving is in the compressed artifact, and the zeros
prepare the weights for sparse kernels and for :func:`to_sparse_initializers`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.errors import InputError
from onnxsqueeze.passes._ir import lift_constant_weights
from onnxsqueeze.passes.base import SqueezePass

TARGET_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def prunable_weights(
    model: ir.Model, op_types: tuple[str, ...] = TARGET_OPS
) -> list[tuple[ir.Node, ir.Value]]:
    """``(node, weight value)`` of every prunable weight, first use only, in topological order."""
    seen: set[ir.Value] = set()
    out = []
    for node in model.graph:
        if node.op_type not in op_types or node.domain not in ("", "ai.onnx"):
            continue
        candidates = [1] if node.op_type != "MatMul" else [1, 0]
        for i in candidates:
            v = node.inputs[i] if i < len(node.inputs) else None
            if v is None or v.const_value is None or v in seen:
                continue
            dtype = v.const_value.dtype
            if not dtype.is_floating_point() or len(v.const_value.shape) < 2:
                continue
            seen.add(v)
            out.append((node, v))
            break
    return out


@dataclasses.dataclass
class PruneWeightsResult(ir.passes.PassResult):
    """The pass result with the achieved sparsity per weight tensor and overall."""

    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sparsity: float = 0.0
    reconstruction: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneWeightsPass(SqueezePass):
    """Zero the smallest-magnitude weights of Conv/ConvTranspose/Gemm/MatMul initializers.

    Args:
        sparsity: target fraction of zeros in the pruned tensors (0 <= sparsity < 1).
        scope: ``layer`` (same sparsity in every tensor) or ``global`` (one magnitude threshold).
        skip_first_last: leave the first and the last prunable layer dense (they are the most
            sensitive and the smallest).
        op_types: the op types whose weights are pruned.
        calibration: model inputs (name -> array, first axis = samples); when given, the
            remaining weights of each pruned Conv/Gemm/MatMul are re-fitted by least squares
            with the sparsity pattern fixed (bias included), layer by layer, so that the layer's
            output matches the original model's (see :mod:`onnxsqueeze.passes.reconstruct`).
        reconstruction: ``lsq`` or ``none`` (ignored without calibration).
        ridge: relative Tikhonov regularization of the fit; None chooses it per layer on
            held-out calibration samples (and keeps a layer's weights when the re-fit does not
            help there).
        max_rows: rows (output positions) sampled per layer for the fit.

    Requires: weights are float initializers. Ensures: shapes and structure unchanged.
    """

    name: ClassVar[str] = "sparsity"
    sparsity: float = 0.5
    scope: Literal["layer", "global"] = "layer"
    skip_first_last: bool = False
    op_types: tuple[str, ...] = TARGET_OPS
    calibration: Mapping[str, np.ndarray] | None = dataclasses.field(default=None, repr=False, compare=False)
    reconstruction: Literal["lsq", "none"] = "lsq"
    ridge: float | None = None
    max_rows: int = 20000
    on_progress: Callable[[int, int], None] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def options(self) -> dict[str, Any]:
        out = super().options()
        out.pop("on_progress", None)
        data = out.pop("calibration", None)
        out["calibration_samples"] = len(next(iter(data.values()))) if data else 0
        return out

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise InputError(f"sparsity {self.sparsity} is out of range; use 0 <= sparsity < 1")
        if self.scope not in ("layer", "global"):
            raise InputError(f"unknown scope '{self.scope}'; use layer or global")

    def call(self, model: ir.Model) -> PruneWeightsResult:
        lift_constant_weights(model)  # weights stored as Constant nodes (paddle2onnx)
        targets = prunable_weights(model, self.op_types)
        skipped: set[int] = set()
        if self.skip_first_last and targets:
            skipped = {0, len(targets) - 1}
        chosen = [i for i in range(len(targets)) if i not in skipped]
        ks: dict[int, int] = {}
        global_masks: dict[int, np.ndarray] = {}
        if self.sparsity > 0 and chosen:
            if self.scope == "layer":
                ks = {i: round(self.sparsity * _array(targets[i][1]).size) for i in chosen}
            else:  # one threshold over every tensor: their magnitudes side by side
                sizes = [_array(targets[i][1]).size for i in chosen]
                flat = np.concatenate(
                    [np.abs(_array(targets[i][1])).reshape(-1).astype(np.float32) for i in chosen]
                )
                mask = _smallest(flat, round(self.sparsity * flat.size))
                del flat
                start = 0
                for i, size in zip(chosen, sizes, strict=True):
                    global_masks[i] = mask[start : start + size]
                    start += size
        modified = False
        original = None
        if self.calibration is not None and self.reconstruction == "lsq":
            original = ir.serde.serialize_model(model)
        changed = []
        zeros_before: list[int] = []
        # One tensor at a time: a weight still on disk (a memory-mapped external tensor) is read,
        # masked into a new array and released before the next, so a model over 2 GB holds its
        # pruned weights and one source tensor, not two copies of everything.
        for i, (node, value) in enumerate(targets):
            array = _array(value)
            zeros_before.append(int(np.count_nonzero(array == 0)))
            if i in ks or i in global_masks:
                if i in ks:
                    mask = _smallest(np.abs(array).reshape(-1), ks[i]).reshape(array.shape)
                else:
                    mask = global_masks.pop(i).reshape(array.shape)
                if np.any(array[mask] != 0):
                    value.const_value = ir.tensor(
                        np.where(mask, np.zeros((), array.dtype), array), name=value.name
                    )
                    modified = True
                    if _refittable(node, value):
                        changed.append(node)
                del mask
            del array
        recon: list[dict[str, Any]] = []
        if original is not None and changed:
            from onnxsqueeze.passes import reconstruct

            recon = reconstruct.refit(
                original,
                model,
                changed,
                {},
                self.calibration,  # type: ignore[arg-type]
                ridge=self.ridge,
                max_rows=self.max_rows,
                masked=True,
                on_progress=self.on_progress,
            )
        layers = []
        total = zeros_total = 0
        for i, (node, _) in enumerate(targets):
            index = 0 if node.op_type == "MatMul" and node.inputs[0] is targets[i][1] else 1
            new = node.inputs[index].const_value.numpy()  # type: ignore[union-attr]
            zeros = int(np.count_nonzero(new == 0))
            total += new.size
            zeros_total += zeros
            layers.append(
                {
                    "layer": node.name,
                    "op": node.op_type,
                    "weight": targets[i][1].name,
                    "params": int(new.size),
                    "sparsity_before": zeros_before[i] / new.size,
                    "sparsity": zeros / new.size,
                    "skipped": i in skipped,
                }
            )
        return PruneWeightsResult(
            model,
            modified,
            layers=layers,
            sparsity=zeros_total / total if total else 0.0,
            reconstruction=recon,
        )


def _array(value: ir.Value) -> np.ndarray:
    return value.const_value.numpy()  # type: ignore[union-attr]


def _refittable(node: ir.Node, weight: ir.Value) -> bool:
    """Layers :func:`reconstruct.refit` handles: weight in input 1, no ConvTranspose, no transA."""
    trans_a = node.attributes.get("transA")
    return (
        node.inputs[1] is weight
        and node.op_type != "ConvTranspose"
        and not (trans_a is not None and trans_a.as_int())
    )


def _smallest(magnitudes: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of exactly ``k`` smallest entries (ties broken by position)."""
    mask = np.zeros(magnitudes.shape, dtype=bool)
    if k <= 0:
        return mask
    if k >= magnitudes.size:
        mask[:] = True
        return mask
    # The k-th smallest value, then everything below it and the first ties at it: one copy of the
    # magnitudes (argpartition's int64 indices would be twice the size of a float32 weight).
    threshold = np.partition(magnitudes, k - 1)[k - 1]
    np.less(magnitudes, threshold, out=mask)
    ties = k - int(np.count_nonzero(mask))
    if ties > 0:
        mask[np.flatnonzero(magnitudes == threshold)[:ties]] = True
    return mask


# Value types stored sparse: float weights, and the int8/uint8 ``q`` of the weight-only int8
# form ``Mul(Cast(q), s)`` (its zeros are the float weight's zeros).
_SPARSE_VALUE_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
    }
)


def sparse_form(tensor: onnx.TensorProto) -> onnx.SparseTensorProto | None:
    """``tensor`` as an ONNX ``SparseTensorProto`` when that is fewer bytes, else None.

    The values keep their type (raw bytes: 1 per int8 value, 4 per float32); the indices are the
    linear positions of the nonzeros, ascending, in ``int64_data`` (protobuf packs them as
    varints: 1 byte below 128, 2 below 16,384), unnamed. So an int8 tensor gains below about
    50-66% nonzeros, a float32 one below about 66-80%. Only weights (rank >= 2, inline data) of
    the value types above are considered; biases, scales and shapes stay dense.
    """
    if (
        tensor.data_type not in _SPARSE_VALUE_TYPES
        or len(tensor.dims) < 2
        or tensor.data_location == onnx.TensorProto.EXTERNAL
    ):
        return None
    array = onnx.numpy_helper.to_array(tensor)
    flat = array.reshape(-1)
    # Each nonzero costs its value and an index of >= 1 byte, and the sparse form's framing is no
    # smaller than the dense one's: past this bound it cannot win, and building it would cost
    # seconds on large tensors (MiniLM's int8 weights, a few % zeros: 1.4 s per candidate).
    if np.count_nonzero(flat) * (flat.itemsize + 1) >= flat.nbytes:
        return None
    idx = np.flatnonzero(flat)
    values = onnx.numpy_helper.from_array(flat[idx], tensor.name)
    indices = onnx.TensorProto(data_type=onnx.TensorProto.INT64, dims=[int(idx.size)])
    indices.int64_data.extend(idx.tolist())
    sparse = onnx.helper.make_sparse_tensor(values, indices, list(array.shape))
    return sparse if sparse.ByteSize() < tensor.ByteSize() else None


def to_sparse_initializers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` whose initializers are ``sparse_initializer`` where that is smaller.

    Per tensor (:func:`sparse_form`). An initializer that is also a graph input stays dense (a
    caller may override it). onnxruntime densifies sparse initializers when a session starts, so
    this changes only the file: the optimized graph, its constant folding (``Mul(Cast(q), s)``
    becomes float weights) and the latency are those of the dense model. onnx's strict shape
    inference mis-types values fed by sparse initializers (``Cast``: "Inferred=8 Declared=1");
    check the :func:`densify`'d model instead.

    Returns:
        The new model and the number of tensors stored sparse.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph_inputs = {vi.name for vi in out.graph.input}
    keep = []
    converted: set[str] = set()
    for tensor in out.graph.initializer:
        sparse = None if tensor.name in graph_inputs else sparse_form(tensor)
        if sparse is None:
            keep.append(tensor)
            continue
        out.graph.sparse_initializer.append(sparse)
        converted.add(tensor.name)
    if converted:
        del out.graph.initializer[:]
        out.graph.initializer.extend(keep)
        # value_info declaring a converted tensor as a dense tensor contradicts its sparse type
        infos = [vi for vi in out.graph.value_info if vi.name not in converted]
        del out.graph.value_info[:]
        out.graph.value_info.extend(infos)
    return out, len(converted)
