"""The only code that touches disk: loading and checking models, atomic saving, hashing, data files.

Loading refuses, with one line naming the file and the problem, everything that is not a valid
ONNX model: a missing path, a directory, an empty or garbage file, external data that is missing
or points outside the model's folder, an opset newer than the installed onnx knows.

Saving is atomic (temp file in the target folder, fsync, rename), deterministic (the same model
gives the same bytes, so artifacts can be content-hashed) and never overwrites the input.
Models whose protobuf would exceed 2 GB are written with their weights in one external data file
``<name>.data`` beside the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.errors import InputError, ModelLoadError, one_line

# NOTE: protobuf refuses to serialize a message of 2 GiB or more; leave headroom for the graph.
PROTO_LIMIT = 2**31 - 64 * 2**20
# Tensors at least this large move to the external data file when external data is used.
EXTERNAL_THRESHOLD = 1024

PathLike = str | os.PathLike[str]


def iter_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of a graph and its subgraphs: initializers, sparse ones, Constant values."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            yield from attr.tensors
            if attr.HasField("g"):
                yield from iter_tensors(attr.g)
            for sub in attr.graphs:
                yield from iter_tensors(sub)


def _model_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from iter_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                if attr.HasField("g"):
                    yield from iter_tensors(attr.g)


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    base = path.parent.resolve()
    for tensor in _model_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"external data of tensor '{tensor.name}'"
        if not location:
            raise ModelLoadError(f"{path}: {where} has no location")
        if os.path.isabs(location) or location.startswith(("/", "\\")):
            raise ModelLoadError(f"{path}: {where} uses an absolute path '{location}' (refused)")
        target = (base / location).resolve()
        if target != base and base not in target.parents:
            raise ModelLoadError(f"{path}: {where} points outside the model's folder: '{location}' (refused)")
        if not target.is_file():
            raise ModelLoadError(f"{path}: {where} is missing: '{location}' does not exist")
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError as e:
            raise ModelLoadError(f"{path}: {where} has a malformed offset or length") from e
        size = target.stat().st_size
        if offset < 0 or offset > size or (length is not None and (length < 0 or offset + length > size)):
            raise ModelLoadError(
                f"{path}: {where} reads past the end of '{location}' ({size} bytes): truncated?"
            )


def _check_versions(model: onnx.ModelProto, path: Path) -> None:
    known = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > known:
            raise ModelLoadError(
                f"{path}: opset {opset.version} is newer than the installed onnx "
                f"{onnx.__version__} supports (max {known}); upgrade onnx"
            )
    if model.ir_version > onnx.IR_VERSION:
        raise ModelLoadError(
            f"{path}: IR version {model.ir_version} is newer than the installed onnx "
            f"{onnx.__version__} supports (max {onnx.IR_VERSION}); upgrade onnx"
        )


def load(path: PathLike, *, check: bool = True) -> onnx.ModelProto:
    """Load an ONNX model with its external data, refusing anything unsafe or invalid.

    Args:
        path: the ``.onnx`` file.
        check: run ``onnx.checker`` (full check, which includes strict shape inference).

    Raises:
        ModelLoadError: with a one-line message naming ``path`` and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read: {e.strerror or e}") from e
    if not data:
        raise ModelLoadError(f"{path}: empty file")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError, RuntimeError or others on garbage
        raise ModelLoadError(f"{path}: not an ONNX model (cannot be parsed: {one_line(e)})") from e
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(f"{path}: not an ONNX model (no graph, IR version or opset)")
    _check_versions(model, path)
    _check_external_data(model, path)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot load external data: {one_line(e)}") from e
    if check:
        check_model(model, path)
    return model


def check_model(model: onnx.ModelProto, path: PathLike | None = None) -> None:
    """Run ``onnx.checker`` with full check; raise ModelLoadError naming ``path`` on failure."""
    label = str(path) if path is not None else f"model '{model.graph.name}'"
    try:
        if model.ByteSize() < PROTO_LIMIT:
            onnx.checker.check_model(model, full_check=True)
        elif path is not None:
            onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # ValidationError, InferenceError, and C++ errors surfacing as others
        raise ModelLoadError(f"{label}: invalid model: {one_line(e)}") from e


def load_ir(path: PathLike, *, check: bool = True) -> ir.Model:
    """Load a model (see :func:`load`) as an ``onnx_ir`` model for passes."""
    return ir.serde.deserialize_model(load(path, check=check))


def to_proto(model: onnx.ModelProto | ir.Model) -> onnx.ModelProto:
    """The protobuf form of a model (a no-op for a ModelProto)."""
    if isinstance(model, onnx.ModelProto):
        return model
    return ir.serde.serialize_model(model)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        set_default_mode(tmp)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: never leave temp litter
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_default_mode(path: PathLike) -> None:
    """Give a file or folder the permissions a plain ``open()`` / ``mkdir()`` would have.

    ``tempfile.mkstemp`` and ``mkdtemp`` create 0600 files and 0700 folders; an artifact staged
    with them and renamed into place must not stay private to its writer (a serving container
    often runs as another user).
    """
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_umask())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: PathLike, data: bytes, *, protect: Iterable[PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` atomically; refuse to overwrite any ``protect`` path."""
    path = Path(path)
    refuse_overwrite(path, protect)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, [data])
    return path


def refuse_overwrite(path: PathLike, protect: Iterable[PathLike]) -> None:
    """Raise InputError if writing ``path`` would overwrite one of ``protect`` (a command's inputs).

    Compares resolved paths and, for existing files, the inode (hard links, bind mounts), so an
    output spelled differently from the input is still refused.
    """
    path = Path(path)
    for p in protect:
        if Path(p).resolve() == path.resolve() or _same_file(Path(p), path):
            raise InputError(f"{path}: refusing to overwrite the input file; choose another output")


def save(
    model: onnx.ModelProto | ir.Model,
    path: PathLike,
    *,
    protect: Iterable[PathLike] = (),
    external_data: bool | None = None,
) -> Path:
    """Save a model atomically and deterministically.

    Args:
        model: the model (protobuf or onnx_ir); it is not modified.
        path: the target ``.onnx`` file; missing parent folders are created.
        protect: paths that must not be overwritten (the command's inputs).
        external_data: force (True) or forbid (False) an external ``<name>.data`` file; by
            default it is used only when the model would exceed protobuf's 2 GB limit.

    Returns:
        The path written.

    Raises:
        InputError: ``path`` is one of ``protect``, or the model is too large to save inline.
    """
    path = Path(path)
    protect = list(protect)
    refuse_overwrite(path, protect)
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = to_proto(model)
    size = proto.ByteSize()
    use_external = external_data if external_data is not None else size >= PROTO_LIMIT
    if size >= PROTO_LIMIT and external_data is False:
        raise InputError(f"{path}: the model is {size} bytes, over protobuf's 2 GB limit")
    if not use_external:
        _write_atomic(path, [proto.SerializeToString(deterministic=True)])
        return path

    data_path = path.with_name(path.name + ".data")
    refuse_overwrite(data_path, protect)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    blobs: list[bytes] = []
    offset = 0
    for tensor in _model_tensors(out):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
            continue
        raw = tensor.raw_data
        if len(raw) < EXTERNAL_THRESHOLD:
            continue
        pad = (-offset) % 4096  # page-aligned so runtimes can mmap
        if pad:
            blobs.append(b"\0" * pad)
            offset += pad
        blobs.append(raw)
        del tensor.external_data[:]
        for key, value in (
            ("location", data_path.name),
            ("offset", str(offset)),
            ("length", str(len(raw))),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        offset += len(raw)
    # Data first: a crash between the two renames leaves the old model consistent or no model.
    _write_atomic(data_path, blobs)
    _write_atomic(path, [out.SerializeToString(deterministic=True)])
    return path


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_model(model: onnx.ModelProto | ir.Model) -> str:
    """Hex sha256 of a model's deterministic serialization."""
    return hashlib.sha256(to_proto(model).SerializeToString(deterministic=True)).hexdigest()


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """Load an ``.npz`` of named arrays (no pickles).

    Raises:
        InputError: the file is missing or not a readable ``.npz``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such data file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as e:
        raise InputError(f"{path}: not a readable .npz file ({one_line(e)})") from e


def save_npz(path: PathLike, arrays: dict[str, np.ndarray], *, protect: Iterable[PathLike] = ()) -> Path:
    """Write arrays to an ``.npz`` atomically."""
    import io as _io

    buf = _io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return write_bytes_atomic(path, buf.getvalue(), protect=protect)
