"""The front door for input data: arrays checked against the model before anything runs.

Every command that feeds a model goes through :func:`validate_inputs` (real data, via
``shapes.select_inputs``) or :func:`check_allocation` (random inputs, via ``shapes.make_inputs``),
so a bad ``--data`` file is one line naming the array and the problem, never a numpy or
onnxruntime traceback, and never a vacuous result:

- every tensor input of the model has an array; the model's inputs are tensors onnxruntime's
  Python API can feed (not sequences, maps or bfloat16);
- the dtype is numeric and fits the input (no strings or objects; no fractional values for an
  integer input);
- the rank and every static dimension match the model (the first axis indexes samples);
- there is at least one sample, and every input (and the labels) has the same number;
- floating values are finite (NaN or Inf make every comparison vacuous): refused, naming how many;
- the bytes an input would take are estimated from its shape before anything is allocated, and
  refused above :data:`MAX_INPUT_BYTES`.
"""

# NOTE: this module imports nothing from cli/, passes/ or optimize/.

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from onnxsqueeze.errors import InputError, UnsupportedModelError
from onnxsqueeze.units import human_bytes

# The most bytes one generated or loaded input may take (the CLI reads ONNXSQUEEZE_MAX_INPUT_BYTES).
MAX_INPUT_BYTES = 8 * 2**30
# The array of class indices a data file may hold beside the inputs.
LABELS_KEY = "labels"

UNFEEDABLE: dict[int, str] = {
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.UNDEFINED: "of undefined type",
}


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {init.name for init in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _rank_and_dims(vi: onnx.ValueInfoProto) -> tuple[int | None, list[int | None]]:
    tensor = vi.type.tensor_type
    if not tensor.HasField("shape"):
        return None, []
    dims = [
        int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim
    ]
    return len(dims), dims


def input_dtype(vi: onnx.ValueInfoProto) -> np.dtype:
    """The numpy dtype of a tensor input (see :func:`check_feedable` for the ones refused)."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))


def check_feedable(model: onnx.ModelProto) -> None:
    """Refuse a model whose inputs cannot be fed from numpy: none at all, non-tensors, bfloat16.

    Raises:
        UnsupportedModelError: naming the input.
    """
    inputs = _inputs(model)
    if not inputs:
        raise UnsupportedModelError(
            "the model has no inputs: there is nothing to feed it and nothing to verify"
        )
    for vi in inputs:
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            what = (kind or "untyped").replace("_type", "")
            raise UnsupportedModelError(
                f"input {_name(vi.name)} is a {what}, not a tensor: only tensor inputs can be fed"
            )
        elem = vi.type.tensor_type.elem_type
        if elem in UNFEEDABLE:
            raise UnsupportedModelError(
                f"input {_name(vi.name)} is {UNFEEDABLE[elem]}: onnxruntime's Python API cannot feed it"
            )


def _name(name: str) -> str:
    return repr(name) if not name.isprintable() else f"'{name}'"


def check_allocation(name: str, shape: Sequence[int], dtype: np.dtype, *, what: str = "input") -> None:
    """Refuse, before allocating, an array of ``shape`` over :data:`MAX_INPUT_BYTES`."""
    size = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
    if size > MAX_INPUT_BYTES:
        dims = "x".join(str(d) for d in shape)
        raise InputError(
            f"{what} {_name(name)} of shape {dims} ({dtype}) would take {human_bytes(size)}, over the "
            f"{human_bytes(MAX_INPUT_BYTES)} limit (set ONNXSQUEEZE_MAX_INPUT_BYTES to raise it); "
            f"give smaller shapes with --input-shape"
        )


def _check_dtype(name: str, array: np.ndarray, dtype: np.dtype, label: str) -> None:
    kind = array.dtype.kind
    if kind not in "biuf":
        raise InputError(
            f"{label}: array {_name(name)} has dtype {array.dtype}; the model's input is {dtype} (numbers only)"
        )
    if dtype.kind in "iub" and kind == "f":
        finite = array[np.isfinite(array)]
        if finite.size and not np.all(finite == np.round(finite)):
            raise InputError(
                f"{label}: array {_name(name)} holds fractional values; the model's input is {dtype}"
            )


def validate_inputs(
    model: onnx.ModelProto, data: Mapping[str, np.ndarray], *, label: str = "the data"
) -> dict[str, np.ndarray]:
    """The arrays of ``data`` that feed the model's inputs, checked and cast to their dtypes.

    Data files hold more than inputs (``labels``): other arrays are dropped. See the module
    docstring for what is checked.

    Raises:
        InputError: one line naming ``label``, the array and the problem.
        UnsupportedModelError: the model has inputs that cannot be fed (see :func:`check_feedable`).
    """
    check_feedable(model)
    inputs = _inputs(model)
    missing = [vi.name for vi in inputs if vi.name not in data]
    if missing:
        raise InputError(f"{label} has no array for model input(s) {missing}; it has {sorted(data)}")
    out: dict[str, np.ndarray] = {}
    samples: dict[str, int] = {}
    for vi in inputs:
        array = np.asarray(data[vi.name])
        dtype = input_dtype(vi)
        rank, dims = _rank_and_dims(vi)
        _check_dtype(vi.name, array, dtype, label)
        if rank == 0:  # a scalar input (a sample rate): fed whole, not split into samples
            if array.ndim != 0:
                raise InputError(
                    f"{label}: array {_name(vi.name)} has shape {array.shape}; the model's input is a scalar"
                )
            out[vi.name] = array.astype(dtype, copy=False)
            continue
        if array.ndim == 0:
            raise InputError(
                f"{label}: array {_name(vi.name)} is a scalar; its first axis must index samples"
            )
        if rank is not None and array.ndim != rank:
            raise InputError(
                f"{label}: array {_name(vi.name)} has rank {array.ndim} {list(array.shape)}; the model's "
                f"input has rank {rank} {_fmt(dims)}"
            )
        for axis, (have, want) in enumerate(zip(array.shape, dims, strict=False)):
            if axis and want is not None and have != want:
                raise InputError(
                    f"{label}: array {_name(vi.name)} has shape {list(array.shape)}; the model's input is "
                    f"{_fmt(dims)} (dimension {axis} differs)"
                )
        samples[vi.name] = int(array.shape[0])
        if array.dtype.kind == "f":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise InputError(
                    f"{label}: array {_name(vi.name)} holds {bad} NaN/Inf value(s) of {array.size}; "
                    f"remove those samples (a comparison on them means nothing)"
                )
        out[vi.name] = array.astype(dtype, copy=False)
    check_samples(samples, label)
    if LABELS_KEY in data and LABELS_KEY not in out:
        check_labels({k: out[k] for k in samples}, data[LABELS_KEY], label)
    return out


def check_samples(samples: Mapping[str, int], label: str) -> int:
    """The common sample count of arrays (name -> first-axis length); at least 1, all equal."""
    if not samples:
        return 1
    counts = set(samples.values())
    if len(counts) > 1:
        raise InputError(f"{label}: the arrays hold different sample counts {dict(samples)}")
    (n,) = counts
    if n < 1:
        raise InputError(f"{label}: holds 0 samples; at least 1 is needed")
    return n


def check_labels(inputs: Mapping[str, np.ndarray], labels: np.ndarray | None, label: str) -> None:
    """Labels, when given, are one per sample: a 1-d array as long as the inputs' first axis."""
    if labels is None:
        return
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(
            f"{label}: 'labels' has shape {list(labels.shape)}; expected one class index per sample"
        )
    counts = {int(v.shape[0]) for v in inputs.values() if np.ndim(v)}
    for n in counts:
        if n != len(labels):
            raise InputError(f"{label}: {len(labels)} labels for {n} samples; they must match")


def _fmt(dims: Sequence[int | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"
