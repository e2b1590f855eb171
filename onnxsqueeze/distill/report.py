"""Teacher and student side by side: parameters, MACs, file size, accuracy, agreement, latency.

- params, MACs: :func:`onnxsqueeze.summary.weight_stats` and :func:`~onnxsqueeze.summary.count_macs`
  on the ONNX files, MACs for one sample;
- accuracy: top-1 against the labels of the report's data (None without labels);
- agreement: the fraction of samples whose top-1 class matches the teacher's;
- latency: median milliseconds of one batch-1 inference in onnxruntime (all graph optimizations,
  ``threads`` intra-op threads), teacher and student timed in alternating rounds so that load on
  a shared machine hits both alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import runtime, shapes
from onnxsqueeze.summary import count_macs, weight_stats


@dataclasses.dataclass(frozen=True)
class ModelStats:
    params: int
    macs: int | None
    file_bytes: int
    accuracy: float | None
    agreement: float
    latency_ms: float | None


def _macs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> int | None:
    one = {k: (1, *v.shape[1:]) for k, v in feeds.items()}
    try:
        return count_macs(model, one)[0]
    except Exception:  # MACs are informative; a model shape inference cannot follow reports None
        return None


def latencies(
    models: Mapping[str, onnx.ModelProto],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int = 1,
    rounds: int = 15,
    runs: int = 20,
) -> dict[str, float]:
    """Median ms per batch-1 run of each model, measured in interleaved rounds."""
    sessions = {k: runtime.session(m, optimize=True, threads=threads) for k, m in models.items()}
    one = {k: np.ascontiguousarray(v[:1]) for k, v in feeds.items()}
    ms = runtime.time_sessions(list(sessions.values()), [one] * len(sessions), rounds=rounds, runs=runs)
    return dict(zip(sessions, ms, strict=True))


def side_by_side(
    teacher: onnx.ModelProto,
    student: onnx.ModelProto,
    data: Mapping[str, np.ndarray],
    *,
    labels: np.ndarray | None,
    teacher_logits: np.ndarray,
    output: str,
    threads: int = 1,
    measure_latency: bool = True,
) -> dict[str, ModelStats]:
    """Both models' stats on ``data`` (inputs keyed by name; the teacher's logits already known)."""
    feeds = {vi.name: np.asarray(data[vi.name]) for vi in shapes.graph_inputs(student)}
    sess = runtime.session(student, optimize=True, threads=threads)
    student_logits = runtime.run_batched(sess, feeds, batch_size=256)[output]
    lat = (
        latencies({"teacher": teacher, "student": student}, feeds, threads=threads) if measure_latency else {}
    )
    t_top = teacher_logits.argmax(1)
    out = {}
    for name, model, logits in (("teacher", teacher, teacher_logits), ("student", student, student_logits)):
        top = np.asarray(logits).argmax(1)
        out[name] = ModelStats(
            params=int(weight_stats(model)["params"]),
            macs=_macs(model, feeds),
            file_bytes=len(model.SerializeToString(deterministic=True)),
            accuracy=float(np.mean(top == labels)) if labels is not None else None,
            agreement=float(np.mean(top == t_top)),
            latency_ms=lat.get(name),
        )
    return out


def stats_dict(stats: Mapping[str, ModelStats]) -> dict[str, Any]:
    return {k: dataclasses.asdict(v) for k, v in stats.items()}
