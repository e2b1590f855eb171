"""The teacher's outputs over a data set, computed once in onnxruntime and cached on disk.

The cache key is the teacher file's sha256 and a sha256 of the input arrays the teacher reads
(names, dtypes, shapes and bytes), plus the output name: any change to the model or the data is
a miss, and a rerun on the same pair skips the teacher entirely. Entries are ``.npz`` files
written atomically, so an interrupted run never leaves a half-written entry behind.

What is cached are logits. A teacher whose output already is a probability distribution (rows
non-negative and summing to 1) is converted with ``log(p)``, which gives the same softened
distribution ``softmax(log(p) / T)`` as the logits would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze import runtime, shapes
from onnxsqueeze.errors import InputError, UnsupportedModelError

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/onnxsqueeze/teacher`` (``~/.cache/onnxsqueeze/teacher`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onnxsqueeze" / "teacher"


@dataclasses.dataclass(frozen=True)
class TeacherOutputs:
    """The teacher's logits ``[N, C]`` (and intermediate tensors) for a data set; cache hit or not."""

    logits: np.ndarray
    cache_hit: bool
    path: Path | None
    features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def data_hash(arrays: Mapping[str, np.ndarray], names: list[str]) -> str:
    """sha256 over the named arrays' names, dtypes, shapes and bytes, in ``names`` order."""
    digest = hashlib.sha256()
    for name in names:
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def output_name(model: onnx.ModelProto, output: str | None = None) -> str:
    """The teacher output to distill from: ``output`` if given, else the first graph output."""
    names = [o.name for o in model.graph.output]
    if output is None:
        return names[0]
    if output not in names:
        raise InputError(f"the teacher has no output '{output}'; its outputs are {names}")
    return output


def as_logits(values: np.ndarray, label: str) -> np.ndarray:
    """Class scores ``[N, C]`` as float32 logits (probability rows become ``log(p)``)."""
    if values.ndim != 2 or values.shape[1] < 2 or not np.issubdtype(values.dtype, np.floating):
        raise UnsupportedModelError(
            f"{label}: distillation needs class scores [N, C] (C >= 2) from the teacher; its output "
            f"has shape {list(values.shape)} and dtype {values.dtype}"
        )
    v = values.astype(np.float32)
    if v.min() >= 0 and np.allclose(v.sum(axis=1), 1.0, atol=1e-3):
        v = np.log(np.clip(v, 1e-12, None))
    return v


def with_outputs(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the intermediate ``tensors``.

    Raises:
        InputError: a name is no tensor of the graph (the message lists a few that are).
    """
    produced = [o for node in model.graph.node for o in node.output if o]
    missing = [t for t in tensors if t not in produced]
    if missing:
        sample = ", ".join(produced[:: max(1, len(produced) // 8)][:8])
        raise InputError(
            f"--feature: the teacher has no tensor {missing[0]!r} (node outputs include: {sample})"
        )
    return runtime.with_outputs(model, tensors, infer_types=True)


def teacher_logits(
    teacher: onnx.ModelProto,
    teacher_sha256: str,
    data: Mapping[str, np.ndarray],
    *,
    cache_dir: Path | None,
    output: str | None = None,
    features: Sequence[str] = (),
    batch_size: int = 64,
    threads: int | None = 2,
    label: str = "teacher",
    on_batch: Callable[[int, int], None] | None = None,
) -> TeacherOutputs:
    """The teacher's logits for ``data`` (arrays keyed by the teacher's input names).

    Args:
        teacher: the loaded teacher model.
        teacher_sha256: its file's sha256 (the first half of the cache key).
        data: input arrays, first axis = samples; extra keys (labels) are ignored.
        cache_dir: where entries live; None disables the cache.
        output: which teacher output holds the class scores (default: the first).
        features: intermediate tensors to return too (for feature matching); cached with the logits.
        batch_size: samples per onnxruntime run.
        threads: onnxruntime intra-op threads.
        label: how messages name the teacher.
        on_batch: ``(done, total)`` progress while the teacher runs (not called on a hit).

    Raises:
        InputError: the data lacks an input of the teacher.
        UnsupportedModelError: the output is not class scores ``[N, C]``.
    """
    out_name = output_name(teacher, output)
    names = [vi.name for vi in shapes.graph_inputs(teacher)]
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"the data has no array for teacher input(s) {missing}; it has {sorted(data)}")
    features = list(dict.fromkeys(features))
    key = f"v{CACHE_VERSION}-{teacher_sha256[:20]}-{data_hash(data, names)[:20]}-{_safe(out_name)}"
    if features:
        key += "-f" + hashlib.sha256("\0".join(features).encode()).hexdigest()[:12]
    path = cache_dir / f"{key}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            cached = sio.load_npz(path)
            if len(cached["logits"]) == len(data[names[0]]):
                feats = {f: cached[f"feature:{f}"] for f in features}
                return TeacherOutputs(cached["logits"], True, path, feats)
        except (InputError, KeyError):
            pass  # a damaged entry: recompute and overwrite it
    model = with_outputs(teacher, features) if features else teacher
    sess = runtime.session(model, optimize=True, threads=threads)
    feeds = {
        vi.name: np.asarray(data[vi.name]).astype(shapes.input_dtype(vi), copy=False)
        for vi in shapes.graph_inputs(teacher)
    }
    outputs = runtime.run_batched(sess, feeds, batch_size=batch_size, on_batch=on_batch)
    logits = as_logits(outputs[out_name], f"{label} output '{out_name}'")
    feats = {f: outputs[f].astype(np.float32) for f in features}
    if path is not None:
        sio.save_npz(path, {"logits": logits, **{f"feature:{f}": v for f, v in feats.items()}})
    return TeacherOutputs(logits, False, path, feats)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def teacher_outputs(
    teacher: onnx.ModelProto,
    teacher_sha256: str,
    data: Mapping[str, np.ndarray],
    *,
    cache_dir: Path | None,
    batch_size: int = 64,
    threads: int | None = 2,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], bool]:
    """All of the teacher's outputs for ``data``, as they are (any shape), cached like the logits.

    For fine-tuning, where the outputs need not be class scores (boxes, masks). The key is the
    logits cache's with ``all-outputs`` for the output name.

    Returns:
        ``({output name: array}, cache hit)``.
    """
    names = [vi.name for vi in shapes.graph_inputs(teacher)]
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"the data has no array for teacher input(s) {missing}; it has {sorted(data)}")
    outs = [o.name for o in teacher.graph.output]
    key = f"v{CACHE_VERSION}-{teacher_sha256[:20]}-{data_hash(data, names)[:20]}-all-outputs"
    path = cache_dir / f"{key}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            cached = sio.load_npz(path)
            if all(f"output:{o}" in cached for o in outs):
                return {o: cached[f"output:{o}"] for o in outs}, True
        except InputError:
            pass  # a damaged entry: recompute and overwrite it
    sess = runtime.session(teacher, optimize=True, threads=threads)
    feeds = {
        vi.name: np.asarray(data[vi.name]).astype(shapes.input_dtype(vi), copy=False)
        for vi in shapes.graph_inputs(teacher)
    }
    result = runtime.run_batched(sess, feeds, batch_size=batch_size, on_batch=on_batch)
    values = {o: np.asarray(result[o]) for o in outs}
    if path is not None:
        sio.save_npz(path, {f"output:{o}": v for o, v in values.items()})
    return values, False
