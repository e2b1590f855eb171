"""Latency of a model, and of a candidate against the original (interleaved A/B timing).

Both rest on :func:`onnxsqueeze.bench.timing.interleaved`: medians, not means, and the candidate
timed in bursts alternating with the reference so that load from other processes hits both alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx


def measure_latency(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    provider: str = "cpu",
    warmup: int = 5,
    min_iterations: int = 30,
    min_seconds: float = 0.5,
    threads: int | None = None,
) -> float:
    """Median batch latency in ms (optimized session): runs until both ``min_iterations`` and
    ``min_seconds`` are met, after ``warmup`` (:func:`onnxsqueeze.bench.timing.interleaved`)."""
    from onnxsqueeze import runtime

    sess = runtime.session(model, provider=provider, optimize=True, threads=threads)
    return time_sessions(
        sess, feeds, None, None, min_seconds=min_seconds, min_iterations=min_iterations, warmup=warmup
    )[0]


def compare_latency(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    reference_feeds: Mapping[str, np.ndarray],
    candidate_feeds: Mapping[str, np.ndarray],
    *,
    provider: str = "cpu",
    warmup: int = 5,
    min_iterations: int = 30,
    min_seconds: float = 0.5,
    burst: int = 5,
    threads: int | None = 1,
) -> tuple[float, float]:
    """Interleaved A/B timing: (candidate median ms, candidate / reference median ratio).

    Bursts of ``burst`` runs alternate between the two sessions (order reversed every other
    round, :func:`onnxsqueeze.bench.timing.interleaved`) until each has ``min_iterations`` runs
    and ``min_seconds`` have passed (at most ``20 * min_iterations`` runs), so load from other
    processes hits both alike; the ratio is what the search compares (the machine is shared and
    noisy; absolute times drift).

    ``threads=1`` by default: with onnxruntime's default intra-op pool, one session's worker
    threads keep spinning after its run and steal the cores from the other session's next burst.
    On the shared 2-core machine, the same graph timed against itself gave ratios of 0.77-1.29
    with the default pool and 0.998-1.002 with one thread (digits CNN, six runs each).
    """
    from onnxsqueeze import runtime

    sa = runtime.session(reference, provider=provider, optimize=True, threads=threads)
    sb = runtime.session(candidate, provider=provider, optimize=True, threads=threads)
    return time_sessions(
        sa, reference_feeds, sb, candidate_feeds, min_seconds=min_seconds, min_iterations=min_iterations,
        burst=burst, warmup=warmup,
    )  # fmt: skip


def time_sessions(
    ref: Any,
    ref_feeds: Mapping[str, np.ndarray],
    sess: Any | None,
    feeds: Mapping[str, np.ndarray] | None,
    *,
    min_seconds: float,
    min_iterations: int = 30,
    burst: int = 5,
    warmup: int = 5,
) -> tuple[float, float]:
    """(median ms, ratio to the reference) of ``sess`` timed interleaved with ``ref`` (see
    :func:`compare_latency`); of ``ref`` alone (ratio 1) when ``sess`` is None."""
    from onnxsqueeze.bench.timing import interleaved

    fa = dict(ref_feeds)
    if sess is None:
        (t,) = interleaved(
            [lambda: ref.run(None, fa)],
            warmup=warmup,
            burst=1,
            min_runs=min_iterations,
            min_seconds=min_seconds,
        )
        return t.median_ms, 1.0
    fb = dict(feeds or {})
    ta, tb = interleaved(
        [lambda: ref.run(None, fa), lambda: sess.run(None, fb)],
        warmup=warmup,
        burst=burst,
        min_runs=min_iterations,
        min_seconds=min_seconds,
        max_runs=20 * min_iterations,
    )
    return tb.median_ms, tb.median_ms / ta.median_ms
