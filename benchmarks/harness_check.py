"""Check the benchmark harness against a plain ``session.run`` timing loop in the same process.

For each model, alternately (``--repeats`` times, which goes first alternating): a plain loop
timing ``session.run`` with ``time.perf_counter`` around each call, on a session of its own
created with the same settings, and ``onnxsqueeze.bench.benchmark`` on the same model with the
same count (``--iterations``, capped so a segment lasts about ``--segment-s`` seconds). The figure of merit
is the harness's p50 over the plain loop's p50 (medians over the repeats); it must agree within
``--tolerance`` (10%).

The harness's overhead per call is reported two ways:
- ``loop overhead``: the time a measured segment spends outside the timed calls, per call
  (the loop's bookkeeping: appending a sample, checking the quotas);
- ``p50 delta`` on a trivial model (Identity of one float), where the run itself is a few
  microseconds: the harness's p50 minus the plain loop's.

Usage: ``python benchmarks/harness_check.py [--threads 1] [--iterations 200] [--repeats 6] [MODEL ...]``
(default models: the trivial one, digits_cnn, mobilenet_v3_small and resnet18 from .cache/models).
Exit status 1 when a model disagrees beyond the tolerance.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxsqueeze import io as sio
from onnxsqueeze import runtime, shapes
from onnxsqueeze.bench import benchmark
from onnxsqueeze.bench import harness as bench_harness

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"
DEFAULT_MODELS = ["digits_cnn.onnx", "mobilenet_v3_small.onnx", "resnet18.onnx"]
TRIVIAL = """
<ir_version: 8, opset_import: ["" : 17]>
trivial (float[N, 1] x) => (float[N, 1] y) {
    y = Identity(x)
}
"""


def plain_loop(path: Path, n: int, warmup: int, threads: int) -> tuple[float, float]:
    """(p50 ms, mean ms) of ``session.run`` timed one call at a time."""
    sess = runtime.session(path, provider="cpu", optimize=True, threads=threads)
    proto = sio.load(path, check=False)
    feeds = shapes.make_inputs(proto, shapes.resolve_input_shapes(proto, batch=1), seed=0)
    for _ in range(warmup):
        sess.run(None, feeds)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        lat.append(time.perf_counter() - t0)
    return float(np.median(lat) * 1e3), float(np.mean(lat) * 1e3)


def calls_for(path: Path, iterations: int, segment_s: float, threads: int) -> int:
    """``iterations``, capped so that one timed segment lasts about ``segment_s`` (at least 20 calls)."""
    p50_ms, _ = plain_loop(path, 3, 1, threads)
    return max(20, min(iterations, int(segment_s * 1e3 / max(p50_ms, 1e-6))))


def harness_run(path: Path, n: int, warmup: int, threads: int) -> tuple[float, float, float]:
    """(p50 ms, mean ms, loop overhead per call in µs) from ``benchmark``."""
    result = benchmark([path], warmup=warmup, iterations=n, duration=0, rounds=1, threads=threads)
    row = result.result(0, 1)
    lat = row["latency_ms"]
    outside_s = row["duration_s"] - lat["mean"] * lat["count"] / 1e3
    return lat["p50"], lat["mean"], outside_s / lat["count"] * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--segment-s", type=float, default=2.0, help="cap on one timed segment, seconds")
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        from tests.helpers import model_from_text

        trivial = sio.save(model_from_text(TRIVIAL), Path(tmp) / "trivial_identity.onnx")
        models = args.models or [trivial, *(CACHE / m for m in DEFAULT_MODELS)]
        print(
            f"threads {args.threads}, up to {args.iterations} calls (about {args.segment_s:g} s) x "
            f"{args.repeats} repeats in alternating order, batch 1, CPU"
        )
        print(
            f"environment: {bench_harness._cpu_model()}, load average {__import__('os').getloadavg()[0]:.2f}"
        )
        print()
        print(
            "| Model | plain loop p50 ms | harness p50 ms | ratio | plain mean ms | harness mean ms | "
            "loop overhead µs/call | p50 delta µs |"
        )
        print("|:--|--:|--:|--:|--:|--:|--:|--:|")
        failed = []
        for path in models:
            n = calls_for(path, args.iterations, args.segment_s, args.threads)
            plain, harn = [], []
            for r in range(args.repeats):
                # alternate which goes first (A B, B A, ...) so that drift of the machine cancels
                if r % 2 == 0:
                    plain.append(plain_loop(path, n, args.warmup, args.threads))
                    harn.append(harness_run(path, n, args.warmup, args.threads))
                else:
                    harn.append(harness_run(path, n, args.warmup, args.threads))
                    plain.append(plain_loop(path, n, args.warmup, args.threads))
            p_p50 = statistics.median(p[0] for p in plain)
            h_p50 = statistics.median(h[0] for h in harn)
            p_mean = statistics.median(p[1] for p in plain)
            h_mean = statistics.median(h[1] for h in harn)
            overhead = statistics.median(h[2] for h in harn)
            ratio = h_p50 / p_p50
            ok = abs(ratio - 1) <= args.tolerance
            if not ok:
                failed.append(path.name)
            print(
                f"| {path.name} | {p_p50:.4f} | {h_p50:.4f} | {ratio:.3f}{'' if ok else ' ✗'} | "
                f"{p_mean:.4f} | {h_mean:.4f} | {overhead:.2f} | {(h_p50 - p_p50) * 1e3:+.1f} |"
            )
    print()
    if failed:
        print(
            f"FAILED: harness p50 differs from the plain loop by more than {args.tolerance:.0%} for {failed}"
        )
        return 1
    print(f"OK: harness p50 within {args.tolerance:.0%} of the plain loop for every model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
