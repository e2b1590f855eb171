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
import dataclasses
import hashlib
import math
import os
import shutil
import stat
import tempfile
import time
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
# A model whose weights take at least this many bytes goes through the streaming paths: weights
# read by reference (memory-mapped, one tensor at a time), written straight to the output's external
# data, sessions created from files. Below it, the in-memory paths (normalization, the guarded
# precision search) are affordable. The CLI reads ONNXSQUEEZE_STREAM_BYTES.
STREAM_BYTES = 2**30

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
        if "\0" in location or len(location) > 1024:
            raise ModelLoadError(
                f"{path}: {where} has a malformed location ({len(location)} characters) (refused)"
            )
        try:
            target = (base / location).resolve()
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: {where} has an unusable location: {one_line(e)}") from e
        if target != base and base not in target.parents:
            raise ModelLoadError(f"{path}: {where} points outside the model's folder: '{location}' (refused)")
        problem = _not_a_regular_file(target)
        if problem == "no such file":
            raise ModelLoadError(f"{path}: {where} is missing: '{location}' does not exist")
        if problem:
            raise ModelLoadError(f"{path}: {where}: '{location}' {problem}")
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
        need = _data_bytes(tensor)
        have = length if length is not None else size - offset
        if need is not None and have != need:
            raise ModelLoadError(
                f"{path}: {where} has {have} bytes where its shape {list(tensor.dims)} needs {need}"
            )


# Element types whose elements are packed two to a byte.
_FOUR_BIT = {
    getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, n)
}


def _data_bytes(tensor: onnx.TensorProto) -> int | None:
    """The bytes ``tensor``'s raw data must have for its shape and type (None: not fixed-size)."""
    if tensor.data_type == onnx.TensorProto.STRING:
        return None
    n = math.prod(tensor.dims)
    if tensor.data_type in _FOUR_BIT:
        return (n + 1) // 2
    try:
        return n * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:  # an unknown or undefined element type: the checker's to refuse
        return None


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

    Returns:
        The model, its ``sparse_initializer`` stored dense (:func:`densified`).

    Raises:
        ModelLoadError: with a one-line message naming ``path`` and the problem.
    """
    path = Path(path)
    problem = _not_a_regular_file(path)
    if problem:
        raise ModelLoadError(f"{path}: {problem}" + (", not an ONNX file" if "directory" in problem else ""))
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
    if check:
        # From the file, before the weights are in memory: checking the proto in memory would
        # serialize it and parse it again in C++ (three copies of the weights at once).
        _check_file(path, model)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot load external data: {one_line(e)}") from e
    # Sparse initializers come back dense, as onnxruntime reads them: onnx_ir, which every pass
    # works on, would drop them (and the nodes reading them would read nothing).
    return densified(model)


def load_interface(path: PathLike) -> onnx.ModelProto:
    """A model's graph (inputs, outputs, nodes) without loading its external data.

    For code that needs the interface while onnxruntime reads the weights from the file itself
    (sessions from a path): the same refusals as :func:`load`, one copy of the weights fewer.
    """
    path = Path(path)
    problem = _not_a_regular_file(path)
    if problem:
        raise ModelLoadError(f"{path}: {problem}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"{path}: not an ONNX model (cannot be parsed: {one_line(e)})") from e
    _check_versions(model, path)
    _check_external_data(model, path)
    return model


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of a model's tensors: inline raw data plus the lengths its external data declares."""
    total = 0
    for tensor in _model_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            with contextlib.suppress(ValueError):
                total += int(info.get("length", 0))
        else:
            total += len(tensor.raw_data)
    return total


def streams(path: PathLike | None) -> bool:
    """Whether a model file is large enough (:data:`STREAM_BYTES`) for the streaming paths."""
    if path is None:
        return False
    try:
        return weight_bytes(load_interface(path)) >= STREAM_BYTES
    except ModelLoadError:  # not loadable: the regular path's loader says why, in its words
        return False


def densified(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its main graph's ``sparse_initializer`` stored as dense initializers (a copy;
    ``model`` itself when it has none), as onnxruntime reads them.

    onnx's strict shape inference mis-types values fed by sparse initializers (a ``Cast`` of a
    sparse int8 weight: "Inferred=8 Declared=1"), so checks and inference run on this form.
    """
    if not model.graph.sparse_initializer:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for sparse in out.graph.sparse_initializer:
        values = onnx.numpy_helper.to_array(sparse.values)
        dense = np.zeros(int(np.prod(sparse.dims)), dtype=values.dtype)
        indices = onnx.numpy_helper.to_array(sparse.indices).astype(np.int64)
        if indices.ndim == 2:  # [NNZ, rank] coordinates: linear positions
            indices = np.ravel_multi_index(tuple(indices.T), tuple(sparse.dims))
        dense[indices] = values.reshape(-1)
        out.graph.initializer.append(
            onnx.numpy_helper.from_array(dense.reshape(tuple(sparse.dims)), sparse.values.name)
        )
    del out.graph.sparse_initializer[:]
    return out


def _check_file(path: Path, parsed: onnx.ModelProto) -> None:
    """``onnx.checker`` with full check on the file (``parsed``: its proto, external data not
    loaded); raise ModelLoadError naming ``path``."""
    try:
        if parsed.graph.sparse_initializer:  # checked densified, in memory (see densified)
            onnx.checker.check_model(densified(parsed), full_check=True)
            return
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # ValidationError, InferenceError, and C++ errors surfacing as others
        raise ModelLoadError(f"{path}: invalid model: {one_line(e)}") from e


def load_lazy(path: PathLike, *, check: bool = True) -> ir.Model:
    """An ``onnx_ir`` model whose external weights stay on disk until a pass reads them.

    The same refusals as :func:`load`; ``onnx_ir`` memory-maps each external tensor when it is
    read, so a pass that replaces tensors one at a time holds one source tensor at a time.
    """
    path = Path(path)
    interface = load_interface(path)  # the refusals: special files, unsafe or missing external data, versions
    if check:
        _check_file(path, interface)
    if interface.graph.sparse_initializer:  # dense, as load gives it (no external data here)
        return ir.serde.deserialize_model(load(path, check=False))
    try:
        return ir.load(str(path))
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot load: {one_line(e)}") from e


def check_model(model: onnx.ModelProto, path: PathLike | None = None) -> None:
    """Run ``onnx.checker`` with full check; raise ModelLoadError naming ``path`` on failure."""
    label = str(path) if path is not None else f"model '{model.graph.name}'"
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in _model_tensors(model))
    model = densified(model)
    try:
        if path is not None and (external or model.ByteSize() >= PROTO_LIMIT):
            # from the file: external data is found beside it, and nothing is serialized again
            onnx.checker.check_model(str(path), full_check=True)
        elif model.ByteSize() < PROTO_LIMIT:
            onnx.checker.check_model(model, full_check=True)
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


def _not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (None when it is a regular file), without opening it.

    A named pipe would block the reader forever and ``/dev/zero`` would fill memory, so anything
    but a regular file is refused before it is opened.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except (OSError, ValueError) as e:
        return f"cannot be read: {getattr(e, 'strerror', None) or one_line(e)}"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if stat.S_ISFIFO(st.st_mode):
        return "is a named pipe, not a regular file (refused)"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "is a device, not a regular file (refused)"
    return "is not a regular file (refused)"


def require_regular_file(path: PathLike, what: str = "file") -> Path:
    """Return ``path`` if it is a regular file; else raise InputError saying what it is instead."""
    path = Path(path)
    problem = _not_a_regular_file(path)
    if problem:
        raise InputError(f"{path}: {'no such ' + what if problem == 'no such file' else problem}")
    return path


# Files a model output writes beside itself: its external data and its sidecar manifest.
COMPANION_SUFFIXES = (".data", ".manifest.json")


def companions(path: PathLike) -> list[Path]:
    """The files written beside a model output ``path`` (external data, sidecar manifest)."""
    path = Path(path)
    return [path.with_name(path.name + suffix) for suffix in COMPANION_SUFFIXES]


def referenced_files(path: PathLike) -> list[Path]:
    """A command input and, when it is an ONNX model, the external-data files it references.

    Best effort: a file that cannot be parsed references nothing (loading it reports the problem).
    """
    path = Path(path)
    found = [path]
    if path.suffix.lower() != ".onnx" or _not_a_regular_file(path):
        return found
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not parseable: the loader says why, here it only references itself
        return found
    for tensor in _model_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        if location and "\0" not in location and len(location) <= 1024:
            found.append(path.parent / location)
    return list(dict.fromkeys(found))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return path.absolute()


def check_output_path(path: PathLike) -> None:
    """Raise InputError if ``path`` cannot be written: a folder, a special file, a parent that is a
    file, or a folder that is not writable. Run before the work, so a refusal costs nothing.
    """
    path = Path(path)
    if "\0" in str(path):
        raise InputError(f"{path!r}: the output path contains a NUL byte")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name for the output")
    if path.exists() or path.is_symlink():
        problem = _not_a_regular_file(path)
        if problem and problem != "no such file":
            raise InputError(f"{path}: the output {problem}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():
            raise InputError(f"{parent}: the output folder is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{path}: cannot create the output: {parent} is a file, not a folder")
    # A probe, not os.access: root passes access checks on read-only mounts and /proc.
    try:
        if parent == path.parent:
            fd, probe = tempfile.mkstemp(dir=parent, prefix=".onnxsqueeze-probe.")
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".onnxsqueeze-probe."))
    except OSError as e:
        raise InputError(f"{path}: cannot write the output in {parent}: {e.strerror or one_line(e)}") from e


def check_outputs(outputs: Iterable[PathLike], inputs: Iterable[PathLike | None]) -> None:
    """Refuse, before any work, outputs that cannot be written or would overwrite an input.

    ``inputs`` are every file the command reads; an ONNX model among them also protects the
    external-data files it references. Paths are compared resolved (symbolic links) and by
    device and inode (hard links, bind mounts).

    Raises:
        InputError: one line naming the output and the input it would destroy.
    """
    protected: list[Path] = []
    for item in inputs:
        if item is not None:
            protected.extend(referenced_files(item))
    keys = [(p, _resolved(p), _identity(p)) for p in protected]
    for out in outputs:
        out = Path(out)
        check_output_path(out)
        resolved, ident = _resolved(out), _identity(out)
        for p, p_resolved, p_ident in keys:
            if resolved == p_resolved or (ident is not None and ident == p_ident):
                what = (
                    "the input file"
                    if p in [Path(i) for i in inputs if i is not None]
                    else f"{p}, a file an input references"
                )
                raise InputError(f"{out}: refusing to overwrite {what}; choose another output")


def refuse_overwrite(path: PathLike, protect: Iterable[PathLike | None]) -> None:
    """Raise InputError if writing ``path`` (and, for a model, its companions) would fail or
    overwrite one of ``protect`` (a command's inputs, with the files they reference).

    See :func:`check_outputs`.
    """
    path = Path(path)
    outputs = [path, *companions(path)] if path.suffix.lower() == ".onnx" else [path]
    check_outputs(outputs, list(protect))


def check_output_folder(folder: PathLike, names: Iterable[str], inputs: Iterable[PathLike | None]) -> None:
    """Refuse, before any work, an output folder that is a file, cannot be created or written, or
    whose files ``names`` (with a model's companions) would overwrite an input or a file it
    references. See :func:`check_outputs`.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: the output folder is a file; give a folder (it is created if missing)")
    check_output_path(folder / ".probe")  # the folder (or its nearest existing parent) is writable
    outputs: list[Path] = []
    for name in names:
        path = folder / name
        outputs += [path, *companions(path)] if name.endswith(".onnx") else [path]
    check_outputs(outputs, list(inputs))


# Temp files this process is writing; the signal handlers and the CLI's error boundary remove them.
_LIVE_TEMPS: set[str] = set()


def remove_temps() -> None:
    """Remove every temp file this process created and has not renamed into place yet."""
    for tmp in list(_LIVE_TEMPS):
        _remove(tmp)
        _LIVE_TEMPS.discard(tmp)


def _remove(path: PathLike) -> None:
    """Remove a temp file, or a temp folder with its contents (a streamed output)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def clean_stale_temps(path: PathLike) -> list[Path]:
    """Remove temp files a killed run left beside ``path`` (``.NAME.PID.XXXX.tmp`` of dead PIDs).

    Returns:
        The files removed.
    """
    path = Path(path)
    removed: list[Path] = []
    prefix = f".{path.name}."
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        middle = name[len(prefix) : -len(".tmp")].split(".")
        stale_path = path.parent / name
        if middle and middle[0].isdigit():
            stale = not _pid_alive(int(middle[0]))
        else:  # written before temp names carried the PID: stale once it is a minute old
            try:
                stale = time.time() - stale_path.stat().st_mtime > 60
            except OSError:
                stale = False
        if stale and str(stale_path) not in _LIVE_TEMPS:
            _remove(stale_path)
            if not os.path.lexists(stale_path):
                removed.append(stale_path)
    return removed


def _stage(path: Path, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` to a synced temp file beside ``path``; return its name (not yet in place)."""
    clean_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"{path}: cannot write: {e.strerror or one_line(e)}") from e
    _LIVE_TEMPS.add(tmp)
    try:
        set_default_mode(tmp)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:  # Ctrl-C included: never leave temp litter
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _LIVE_TEMPS.discard(tmp)
        if isinstance(e, OSError):
            raise InputError(f"{path}: cannot write: {e.strerror or one_line(e)}") from e
        raise
    return tmp


@dataclasses.dataclass
class Staged:
    """Files written to temp names, renamed into place together by :meth:`commit`.

    ``moves`` are ``(temp, final)`` pairs in commit order; the last one is the file whose presence
    says the set is complete (the model), so an interrupted commit leaves no model without its
    companions.
    """

    moves: list[tuple[str, Path]] = dataclasses.field(default_factory=list)
    folder: str | None = None  # a private temp folder holding the staged files (streamed outputs)

    def add(self, path: PathLike, chunks: Iterable[bytes]) -> str:
        tmp = _stage(Path(path), chunks)
        self.moves.append((tmp, Path(path)))
        return tmp

    def temp_of(self, path: PathLike) -> str | None:
        return next((tmp for tmp, final in self.moves if final == Path(path)), None)

    def commit(self) -> None:
        try:
            for tmp, final in self.moves:
                os.replace(tmp, final)
                _LIVE_TEMPS.discard(tmp)
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise InputError(f"{final}: cannot write: {e.strerror or one_line(e)}") from e
            raise
        for folder in {final.parent for _, final in self.moves}:
            _fsync_dir(folder)
        self.moves = []
        self._drop_folder()

    def abort(self) -> None:
        for tmp, _ in self.moves:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            _LIVE_TEMPS.discard(tmp)
        self.moves = []
        self._drop_folder()

    def _drop_folder(self) -> None:
        if self.folder is not None:
            _remove(self.folder)
            _LIVE_TEMPS.discard(self.folder)
            self.folder = None


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    staged = Staged()
    try:
        staged.add(path, chunks)
        staged.commit()
    except BaseException:
        staged.abort()
        raise


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


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{folder}: cannot create the output folder: {e.strerror or one_line(e)}") from e


def write_bytes_atomic(path: PathLike, data: bytes, *, protect: Iterable[PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` atomically; refuse to overwrite any ``protect`` path."""
    path = Path(path)
    check_outputs([path], list(protect))
    _mkdir(path.parent)
    _write_atomic(path, [data])
    return path


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
        protect: paths that must not be overwritten (the command's inputs and the files they
            reference).
        external_data: force (True) or forbid (False) an external ``<name>.data`` file; by
            default it is used only when the model would exceed protobuf's 2 GB limit.

    Returns:
        The path written.

    Raises:
        InputError: ``path`` is one of ``protect``, or the model is too large to save inline.
    """
    staged = stage(model, path, protect=protect, external_data=external_data)
    staged.commit()
    return Path(path)


def stage(
    model: onnx.ModelProto | ir.Model,
    path: PathLike,
    *,
    protect: Iterable[PathLike] = (),
    external_data: bool | None = None,
) -> Staged:
    """Write a model (and its external data) to temp files beside ``path``; see :func:`save`.

    The caller adds companions (a manifest) to the returned :class:`Staged` and commits: the
    external data and companions are renamed first, the model last.
    """
    path = Path(path)
    refuse_overwrite(path, list(protect))
    _mkdir(path.parent)
    proto = to_proto(model)
    size = proto.ByteSize()
    use_external = external_data if external_data is not None else size >= PROTO_LIMIT
    if size >= PROTO_LIMIT and external_data is False:
        raise InputError(f"{path}: the model is {size} bytes, over protobuf's 2 GB limit")
    staged = Staged()
    try:
        if not use_external:
            staged.add(path, [proto.SerializeToString(deterministic=True)])
            return staged
        data_path = path.with_name(path.name + ".data")
        out = onnx.ModelProto()
        out.CopyFrom(proto)
        staged.add(data_path, _externalize(out, data_path.name))
        staged.add(path, [out.SerializeToString(deterministic=True)])
    except BaseException:
        staged.abort()
        raise
    return staged


def stage_streamed(
    model: ir.Model, path: PathLike, *, protect: Iterable[PathLike] = ()
) -> tuple[Staged, Path]:
    """Write an ``onnx_ir`` model with every weight in external data, streamed tensor by tensor.

    The files go to a private temp folder beside ``path`` (``model`` and ``<name>.data`` under
    their final names, so onnxruntime can open the staged model from its path to verify it); the
    returned :class:`Staged` renames them into place (data first, model last). Weights still on
    disk (``onnx_ir``'s external tensors) are copied from their file without being held whole.

    Returns:
        The staged moves and the staged model's path.
    """
    path = Path(path)
    refuse_overwrite(path, list(protect))
    _mkdir(path.parent)
    clean_stale_temps(path)
    try:
        folder = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"{path}: cannot write: {e.strerror or one_line(e)}") from e
    _LIVE_TEMPS.add(folder)
    staged = Staged(folder=folder)
    tmp_model = Path(folder) / path.name
    data_name = path.name + ".data"
    try:
        ir.save(
            model, tmp_model, external_data=data_name, size_threshold_bytes=EXTERNAL_THRESHOLD, alignment=4096
        )
        for name in (data_name, path.name):
            staged_file = Path(folder) / name
            if staged_file.exists():
                set_default_mode(staged_file)
                staged.moves.append((str(staged_file), path.with_name(name)))
    except BaseException as e:
        staged.abort()
        if isinstance(e, OSError):
            raise InputError(f"{path}: cannot write: {e.strerror or one_line(e)}") from e
        raise
    return staged, tmp_model


def _externalize(out: onnx.ModelProto, location: str) -> Iterator[bytes]:
    """Move ``out``'s large tensors to external data at ``location``, yielding the file's bytes.

    Each tensor's bytes leave the proto as they are written, so at most one extra tensor is in
    memory at a time.
    """
    offset = 0
    for tensor in _model_tensors(out):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
            continue
        if len(tensor.raw_data) < EXTERNAL_THRESHOLD:
            continue
        pad = (-offset) % 4096  # page-aligned so runtimes can mmap
        if pad:
            yield b"\0" * pad
            offset += pad
        raw = tensor.raw_data
        tensor.ClearField("raw_data")
        yield raw
        del tensor.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = onnx.TensorProto.EXTERNAL
        offset += len(raw)
        del raw


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
    path = require_regular_file(path, "data file")
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
