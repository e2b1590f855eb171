"""Keras/TensorFlow to ONNX with tf2onnx, verified against the Keras model.

Sources: a Keras model object (API), ``.keras`` files, legacy ``.h5``/``.hdf5`` files (Keras 3's
legacy loader also reads the files Keras 2 wrote), and TensorFlow SavedModel folders (their
``serving_default`` signature).

Known trap: ``tf2onnx.convert.from_keras`` fails on Keras 3 models (``KeyError:
'keras_tensor_N'``: it looks tensors up by their Keras 2 names). We convert a ``tf.function`` of
the model with an explicit input signature instead (``tf2onnx.convert.from_function``), which
traces the model the way TensorFlow serves it.

``nchw=True`` exposes 4-D inputs and outputs in NCHW (what ONNX users and ONNX image pipelines
expect) via tf2onnx's ``inputs_as_nchw``/``outputs_as_nchw``; tf2onnx's transpose optimizer then
cancels the transposes it inserts against the ones around each NHWC convolution, so a plain CNN
ends with none.

# NOTE: tensorflow, keras and tf2onnx are imported inside functions (importing TF takes seconds).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze.convert.result import BATCH, ConversionResult, finish, name_batch_axis
from onnxsqueeze.errors import ConversionError, InputError

EXPORTER = "tf2onnx"
TF_HINT = "TensorFlow/Keras is not installed: pip install 'onnxsqueeze[tf]'"
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
MAX_VERIFY_SAMPLES = 256


def _tf() -> tuple[Any, Any, Any]:
    """(tensorflow, keras, tf2onnx), imported quietly; a one-line hint when missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's C++ start-up chatter
    try:
        with _quiet():
            import keras
            import tensorflow as tf
            import tf2onnx
    except ImportError as e:
        raise ConversionError(f"{TF_HINT} ({e.name or e} missing)") from e
    return tf, keras, tf2onnx


def _first_line(e: BaseException) -> str:
    for line in str(e).splitlines():
        if line.strip():
            return f"{type(e).__name__}: {line.strip()[:300]}"
    return type(e).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep TF's and tf2onnx's chatter out of the user's terminal: tf2onnx logs each optimizer
    step and prints; TF's C++ runtime writes start-up notes straight to file descriptor 2, before
    ``TF_CPP_MIN_LOG_LEVEL`` applies. Exceptions still propagate (and print after the restore)."""
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow", "absl")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    saved = _mute_fd(2)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        _restore_fd(2, saved)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _mute_fd(fd: int) -> int | None:
    if os.environ.get("ONNXSQUEEZE_DEBUG", "") not in ("", "0"):
        return None
    try:
        import sys

        sys.stderr.flush()
        saved = os.dup(fd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
        return saved
    except OSError:
        return None


def _restore_fd(fd: int, saved: int | None) -> None:
    if saved is not None:
        os.dup2(saved, fd)
        os.close(saved)


# ---------------------------------------------------------------------------------------------
# Loading


def load_source(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """Load a ``.keras``, ``.h5``/``.hdf5`` file or a SavedModel folder: (model, kind).

    Returns a Keras model, or for a SavedModel its ``serving_default`` concrete function.

    Raises:
        InputError: a missing or unreadable file, or a SavedModel without a serving signature.
    """
    tf, keras, _ = _tf()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise InputError(f"{path}: a folder but not a TensorFlow SavedModel (no saved_model.pb)")
        try:
            with _quiet():
                loaded = tf.saved_model.load(str(path))
        except Exception as e:
            raise InputError(f"{path}: cannot load the SavedModel: {_first_line(e)}") from e
        signature = loaded.signatures.get("serving_default")
        if signature is None:
            raise InputError(f"{path}: the SavedModel has no 'serving_default' signature")
        # keep the loaded object alive as long as the function
        signature._onnxsqueeze_owner = loaded
        return signature, "savedmodel"
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise InputError(f"{path}: not a Keras file (.keras, .h5, .hdf5) or SavedModel folder")
    try:
        with _quiet():
            # compile=False: inference only; safe_mode (the default) refuses lambda layers' code
            model = keras.models.load_model(str(path), compile=False)
    except Exception as e:
        raise InputError(f"{path}: cannot load the Keras model: {_first_line(e)}") from e
    return model, "h5" if suffix != ".keras" else "keras"


# ---------------------------------------------------------------------------------------------
# Signatures


def _model_signature(model: Any, keras: Any, tf: Any) -> list[tuple[str, tuple[int | None, ...], Any]]:
    """(name, shape with None for unknown dims, tf dtype) of each input of a Keras model."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a Sequential model that was never built
        inputs = None
    if not inputs:
        raise InputError(
            f"{getattr(model, 'name', 'model')}: the Keras model has no defined inputs "
            "(build it with keras.Input or call it once)"
        )
    out = []
    for i, t in enumerate(inputs):
        name = getattr(t, "name", None) or f"input_{i}"
        name = name.split(":")[0]
        out.append((name, tuple(t.shape), tf.as_dtype(t.dtype)))
    return out


def _function_signature(fn: Any) -> tuple[list[tuple[str, tuple[int | None, ...], Any]], list[str]]:
    _, kwargs_spec = fn.structured_input_signature
    sig = [(name, tuple(spec.shape), spec.dtype) for name, spec in sorted(kwargs_spec.items())]
    outs = list(fn.structured_outputs) if isinstance(fn.structured_outputs, Mapping) else []
    return sig, outs


def _concrete_shapes(
    sig: Sequence[tuple[str, tuple[int | None, ...], Any]],
    overrides: Mapping[str, Sequence[int]],
    batch: int,
    label: str,
) -> dict[str, tuple[int, ...]]:
    names = [n for n, _, _ in sig]
    for name in overrides:
        if name not in names:
            raise InputError(f"--input-shape names '{name}', but {label}'s inputs are {names}")
    shapes = {}
    for name, shape, _ in sig:
        if name in overrides:
            given = tuple(int(d) for d in overrides[name])
            if len(given) != len(shape) or any(
                s is not None and s != g for s, g in zip(shape, given, strict=True)
            ):
                raise InputError(
                    f"--input-shape {name}: {list(given)} does not fit the model's {list(shape)}"
                )
            shapes[name] = given
            continue
        dims = []
        for axis, d in enumerate(shape):
            if d is not None:
                dims.append(int(d))
            elif axis == 0:
                dims.append(batch)
            else:
                example = ",".join("N" if x is None else str(x) for x in shape)
                raise InputError(
                    f"input '{name}' has an unknown dimension {axis}; "
                    f"give it with --input-shape {name}:{example}"
                )
        shapes[name] = tuple(dims)
    return shapes


def _data_feeds(
    sig: Sequence[tuple[str, tuple[int | None, ...], Any]],
    data: Mapping[str, np.ndarray],
    rank4: Sequence[str],
    nchw: bool,
) -> dict[str, np.ndarray]:
    """Verification inputs from ``data`` (ONNX layout), in the Keras model's NHWC layout."""
    missing = [n for n, _, _ in sig if n not in data]
    if missing:
        raise InputError(f"the data has no array for input(s) {missing}; it has {sorted(data)}")
    feeds = {}
    for name, _, dtype in sig:
        a = np.asarray(data[name])[:MAX_VERIFY_SAMPLES].astype(dtype.as_numpy_dtype)
        feeds[name] = _to_nhwc(a) if nchw and name in rank4 else a
    return feeds


def _random_feeds(
    sig: Sequence[tuple[str, tuple[int | None, ...], Any]], shapes: Mapping[str, tuple[int, ...]], seed: int
) -> dict[str, np.ndarray]:
    """Seeded inputs: standard normal floats, integers in [0, 100), booleans True."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, _, dtype in sig:
        np_dtype = np.dtype(dtype.as_numpy_dtype)
        shape = shapes[name]
        if np.issubdtype(np_dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(np_dtype)
        elif np_dtype == np.bool_:
            feeds[name] = np.ones(shape, dtype=np.bool_)
        else:
            feeds[name] = rng.integers(0, 100, size=shape).astype(np_dtype)
    return feeds


def _to_nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a


def _to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if a.ndim == 4 else a


# ---------------------------------------------------------------------------------------------
# Conversion


def from_keras(
    model_or_path: Any,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    nchw: bool = False,
    dynamic_batch: bool = True,
    opset: int | None = None,
    tolerance: float = 1e-4,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    seed: int = 0,
    strict: bool = True,
    source: str | None = None,
    source_sha256: str | None = None,
) -> ConversionResult:
    """Convert a Keras model (object or file) or a SavedModel folder to verified ONNX via tf2onnx.

    Args:
        model_or_path: a Keras model, a ``.keras``/``.h5``/``.hdf5`` path, or a SavedModel folder.
        input_shapes: shapes for unknown dims, by input name, in the ONNX model's layout (NCHW
            with ``nchw``); with a static batch, also the batch to export with (default 1).
        nchw: expose 4-D inputs and outputs as NCHW; ``data`` is then NCHW too.
        dynamic_batch: keep axis 0 of the inputs dynamic (symbol ``batch``).
        opset: the ONNX opset (default: tf2onnx's).
        tolerance: the max absolute error allowed between Keras and onnxruntime outputs.
        data: verification inputs by input name (first axis = samples; at most 256 used).
        seed: seed of the random verification inputs (batch 2 with a dynamic batch).
        strict: raise VerificationError beyond ``tolerance``.
        source: how the result names the source. source_sha256: recorded in the provenance.

    Raises:
        ConversionError: TensorFlow is missing, or tf2onnx fails or leaves an op it cannot
            convert (the message names the op and the layer's node).
        InputError: an unreadable source, an unknown dimension not given, bad data.
        VerificationError: (strict) the ONNX outputs differ beyond ``tolerance``.
    """
    tf, keras, tf2onnx = _tf()
    if isinstance(model_or_path, (str, os.PathLike)):
        label = source or os.fspath(model_or_path)
        model, kind = load_source(os.fspath(model_or_path))
    else:
        model, kind = model_or_path, "object"
        label = source or str(getattr(model, "name", None) or type(model).__name__)

    if kind == "savedmodel":
        sig, out_names = _function_signature(model)
    else:
        sig = _model_signature(model, keras, tf)
        out_names = list(getattr(model, "output_names", None) or [])
    rank4_in = [n for n, shape, _ in sig if len(shape) == 4]
    overrides = {
        n: tuple(int(v[i]) for i in (0, 2, 3, 1)) if nchw and n in rank4_in and len(v) == 4 else tuple(v)
        for n, v in (input_shapes or {}).items()
    }
    unknown = [n for n in overrides if n not in [name for name, _, _ in sig]]
    if unknown:
        raise InputError(
            f"--input-shape names '{unknown[0]}', but {label}'s inputs are {[name for name, _, _ in sig]}"
        )
    if data is not None:
        feeds = _data_feeds(sig, data, rank4_in, nchw)
        shapes = {n: tuple(a.shape) for n, a in feeds.items()}
    else:
        shapes = _concrete_shapes(sig, overrides, 1, label)
        if dynamic_batch:  # verify at batch 2: exercises the dynamic axis
            shapes = {n: (2, *s[1:]) if s else s for n, s in shapes.items()}
        feeds = _random_feeds(sig, shapes, seed)

    specs = []
    for name, shape, dtype in sig:
        spec_shape = list(shape)
        if spec_shape:
            # a static batch is the one given (or 1); other unknown dims stay dynamic in the ONNX model
            spec_shape[0] = None if dynamic_batch else (overrides.get(name) or (1,))[0]
        specs.append(tf.TensorSpec(spec_shape, dtype, name=name))

    if kind == "savedmodel":
        names = [n for n, _, _ in sig]

        def call(*xs: Any) -> Any:
            result = model(**dict(zip(names, xs, strict=True)))
            return [result[k] for k in out_names]
    else:

        def call(*xs: Any) -> Any:
            return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    fn = tf.function(call, input_signature=specs)
    in_names = [s.name for s in specs]
    try:
        with _quiet():
            concrete = fn.get_concrete_function()  # tf2onnx reuses this trace (same signature)
            tf_outputs = [t for t in concrete.outputs if t.dtype != tf.resource]
            rank4_out = [t.name for t in tf_outputs if t.shape.rank == 4]
            # Keras keeps the batch axis symbolic (None) through every layer that preserves it
            out_batch = [bool(t.shape.rank) and t.shape[0] is None for t in tf_outputs]
            proto, _ = tf2onnx.convert.from_function(
                fn,
                input_signature=specs,
                opset=opset,
                inputs_as_nchw=rank4_in if nchw and rank4_in else None,
                outputs_as_nchw=rank4_out if nchw and rank4_out else None,
            )
    except Exception as e:
        raise ConversionError(f"{label}: tf2onnx cannot convert it: {_first_line(e)}") from e
    _check_ops(proto, label, [layer.name for layer in getattr(model, "layers", [])])

    # the Keras reference on the same inputs, in its own NHWC layout
    reference = _run_reference(fn, feeds, in_names, None if dynamic_batch else specs[0].shape[0], tf)
    _rename_outputs(proto, out_names, len(reference))
    if nchw:
        feeds = {n: _to_nchw(a) if n in rank4_in else a for n, a in feeds.items()}
        reference = [_to_nchw(r) for r in reference]
    if dynamic_batch:
        name_batch_axis(proto)
        _name_output_batch(proto, out_batch)
    notes: list[str] = []
    return finish(
        proto,
        feeds=feeds,
        reference=reference,
        exporter=EXPORTER,
        source=label,
        tolerance=tolerance,
        warnings=notes,
        data_label=data_label if data is not None else f"random (seed {seed})",
        strict=strict,
        source_sha256=source_sha256,
    )


def _run_reference(
    fn: Any, feeds: Mapping[str, np.ndarray], names: Sequence[str], static_batch: int | None, tf: Any
) -> list[np.ndarray]:
    """The Keras outputs on ``feeds``, in chunks of the static batch when there is one."""
    n = len(feeds[names[0]])
    step = static_batch or n
    if static_batch and n % static_batch:
        raise InputError(f"{n} samples do not split into the static batch of {static_batch}")
    chunks: list[list[np.ndarray]] = []
    with _quiet():
        for start in range(0, n, step):
            raw = fn(*[tf.constant(feeds[k][start : start + step]) for k in names])
            chunks.append([np.asarray(t) for t in tf.nest.flatten(raw)])
    return [np.concatenate(parts, axis=0) for parts in zip(*chunks, strict=True)]


def _check_ops(proto: onnx.ModelProto, label: str, layers: Sequence[str] = ()) -> None:
    """tf2onnx leaves a TF op it cannot convert in the graph under its TF name; name it and its layer."""
    for node in proto.graph.node:
        domain = node.domain or ""
        if domain in ("", "ai.onnx") and onnx.defs.has(node.op_type, ""):
            continue
        if domain in KNOWN_DOMAINS - {"", "ai.onnx"}:
            continue
        # tf2onnx names nodes after the TF graph: "<function>/<layer>/<op>"
        parts = [p for p in node.name.split("/") if p]
        layer = parts[-2] if len(parts) >= 2 else node.name
        base = re.sub(r"_\d+$", "", layer)  # TF scopes repeat calls as name_1
        if layer not in layers and base in layers:
            layer = base
        raise ConversionError(
            f"{label}: TensorFlow op '{node.op_type}' in layer '{layer}' has no ONNX conversion in tf2onnx"
        )


def _name_output_batch(proto: onnx.ModelProto, is_batch: Sequence[bool]) -> None:
    """tf2onnx gives each output a fresh symbol (``unk__105``); call the batch axes ``batch``."""
    for vi, batch in zip(proto.graph.output, is_batch, strict=False):
        dims = vi.type.tensor_type.shape.dim
        if batch and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH


def _rename_outputs(proto: onnx.ModelProto, out_names: Sequence[str], n_out: int) -> None:
    """Give the outputs the Keras names (tf2onnx calls them ``Identity:0``...), in place."""
    if len(proto.graph.output) != n_out:
        raise ConversionError(f"tf2onnx produced {len(proto.graph.output)} outputs for the model's {n_out}")
    names = list(out_names) if len(out_names) == n_out else [f"output_{i}" for i in range(n_out)]
    if n_out == 1 and len(out_names) != 1:
        names = ["output"]
    taken = {vi.name for vi in proto.graph.input} | {i.name for i in proto.graph.initializer}
    for vi, name in zip(proto.graph.output, names, strict=True):
        old = vi.name
        if name in taken:
            name = f"{name}_out"
        taken.add(name)
        for node in proto.graph.node:
            node.output[:] = [name if o == old else o for o in node.output]
            node.input[:] = [name if i == old else i for i in node.input]
        for info in proto.graph.value_info:
            if info.name == old:
                info.name = name
        vi.name = name


__all__ = ["BATCH", "from_keras", "load_source"]
