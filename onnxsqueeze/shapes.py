"""Input shapes: parsing ``--input-shape NAME:d0,d1,...``, binding dynamic dims, seeded inputs.

A dynamic first dimension is taken as the batch and bound to 1 (or the requested batch) unless
given; any other dynamic dimension must be given explicitly, and the error says how.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze.errors import InputError

Shapes = dict[str, tuple[int, ...]]


def parse_input_shapes(specs: Iterable[str] | None) -> Shapes:
    """Parse ``NAME:d0,d1,...`` strings (``NAME:1x3x224x224`` works too) into a dict."""
    shapes: Shapes = {}
    for spec in specs or ():
        name, sep, dims = spec.rpartition(":")
        if not sep or not name or not dims:
            raise InputError(f"--input-shape '{spec}': expected NAME:d0,d1,... (e.g. input:1,3,224,224)")
        try:
            values = tuple(int(d) for d in re.split(r"[,x]", dims.strip()) if d.strip())
        except ValueError as e:
            raise InputError(f"--input-shape '{spec}': dimensions must be integers") from e
        if not values or any(v <= 0 for v in values):
            raise InputError(f"--input-shape '{spec}': dimensions must be positive integers")
        shapes[name] = values
    return shapes


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs of a model (graph inputs that are not initializers)."""
    inits = {init.name for init in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def declared_shape(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    """A value's declared shape: ints for static dims, the symbol or None for dynamic ones."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for dim in vi.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            out.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            out.append(dim.dim_param)
        else:
            out.append(None)
    return out


def input_dtype(vi: onnx.ValueInfoProto) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))


def select_inputs(
    model: onnx.ModelProto, data: Mapping[str, np.ndarray], *, label: str = "the data"
) -> dict[str, np.ndarray]:
    """The arrays of ``data`` that feed the model's inputs, cast to their dtypes (others dropped).

    Data files hold more than inputs (``labels``), and arrays saved as float64 or int32 must
    become the model's float32 or int64.

    Raises:
        InputError: an input of the model has no array in ``data`` (``label`` names the data), or
            an array does not fit it (see :mod:`onnxsqueeze.data`).
    """
    from onnxsqueeze.data import validate_inputs

    return validate_inputs(model, data, label=label)


def resolve_input_shapes(
    model: onnx.ModelProto,
    overrides: Mapping[str, Sequence[int]] | None = None,
    *,
    batch: int | None = None,
) -> Shapes:
    """Concrete shapes for every model input.

    Args:
        model: the model.
        overrides: shapes given by the user, by input name.
        batch: the value for a dynamic first dimension (default 1); ignored for inputs in
            ``overrides``.

    Raises:
        InputError: an override names no input, disagrees with a static dim or the rank, or a
            non-batch dimension is dynamic and not given.
    """
    overrides = dict(overrides or {})
    inputs = graph_inputs(model)
    names = [vi.name for vi in inputs]
    for name in overrides:
        if name not in names:
            raise InputError(f"--input-shape names '{name}', but the model's inputs are {names}")
    shapes: Shapes = {}
    for vi in inputs:
        declared = declared_shape(vi)
        if vi.name in overrides:
            given = tuple(int(d) for d in overrides[vi.name])
            if declared and len(given) != len(declared):
                raise InputError(
                    f"--input-shape {vi.name}: rank {len(given)} given, the model declares "
                    f"rank {len(declared)} {_fmt(declared)}"
                )
            shapes[vi.name] = given
            continue
        dims: list[int] = []
        for axis, dim in enumerate(declared):
            if isinstance(dim, int):
                dims.append(dim)
            elif axis == 0:
                dims.append(batch or 1)
            else:
                example = ",".join(str(d) if isinstance(d, int) else "N" for d in declared)
                raise InputError(
                    f"input '{vi.name}' has a dynamic dimension {axis} ('{dim or '?'}'); "
                    f"give it with --input-shape {vi.name}:{example}"
                )
        shapes[vi.name] = tuple(dims)
    return shapes


def _fmt(declared: Sequence[int | str | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in declared) + "]"


def make_inputs(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], *, seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded random inputs of the right dtype and shape.

    Floats are standard normal (the range of normalized images and embeddings); integer inputs
    are in [0, 100) (valid token ids and indices for most models), except inputs named like a
    mask, which are ones; booleans are True.
    """
    from onnxsqueeze.data import check_allocation, check_feedable

    check_feedable(model)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for vi in graph_inputs(model):
        shape = tuple(shapes[vi.name])
        dtype = input_dtype(vi)
        check_allocation(vi.name, shape, dtype)
        if dtype == np.bool_:
            feeds[vi.name] = np.ones(shape, dtype=np.bool_)
        elif np.issubdtype(dtype, np.integer):
            if "mask" in vi.name.lower():
                feeds[vi.name] = np.ones(shape, dtype=dtype)
            else:
                feeds[vi.name] = rng.integers(0, 100, size=shape).astype(dtype)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def with_static_inputs(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs have the given static shapes, with shapes inferred.

    The copy is for shapes only: initializers over 1 MiB keep their name, type and dims but not
    their values (shape inference needs no weights, and a model over 2 GB would not go through it).
    """
    out = _weightless_copy(model)
    for vi in graph_inputs(out):
        if vi.name not in shapes:
            continue
        shape = vi.type.tensor_type.shape
        shape.ClearField("dim")
        for d in shapes[vi.name]:
            shape.dim.add().dim_value = int(d)
    del out.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(out, data_prop=True)
    except Exception:  # inference is best effort here; callers cope with missing shapes
        return out


def _weightless_copy(model: onnx.ModelProto, max_bytes: int = 2**20) -> onnx.ModelProto:
    out = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    src, g = model.graph, out.graph
    g.name = src.name
    for field in ("node", "input", "output", "value_info"):
        getattr(g, field).extend(getattr(src, field))
    # Sparse initializers as dense ones: strict inference mis-types values they feed (io.densified).
    dense = sio.densified(model).graph.initializer if src.sparse_initializer else src.initializer
    for t in dense:
        if t.ByteSize() <= max_bytes:
            g.initializer.append(t)
        else:
            g.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    return out


def value_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Known shapes of every value (inputs, outputs, value_info, initializers) in the main graph."""
    shapes: dict[str, tuple[int | None, ...]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        declared = declared_shape(vi)
        if vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = tuple(d if isinstance(d, int) else None for d in declared)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes
