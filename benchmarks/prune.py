"""Structured channel pruning on torchvision architectures: validity, MACs and measured CPU latency.

For each model (``.cache/models/<name>.onnx``, see ``models/zoo.py``): prune ``--ratio`` of the
channels of every prunable group (``--round-to`` multiples), check the result (full onnx checker
with shape inference, interface unchanged, onnxruntime loads it), count MACs and params, and time
both models in the same process, interleaved run by run so that machine noise hits both alike.
Latency: onnxruntime CPU, all graph optimizations, batch 1, ``--threads`` intra-op threads, the
median of ``--runs`` runs after warm-up. The weights are random (architectures only), so quality
is reported as the cosine similarity of the logits to the unpruned model's on random inputs, with
the least-squares reconstruction when ``--calib N`` is given (N random inputs: it shows the re-fit
runs at this scale, not an accuracy).

Usage: ``python benchmarks/prune.py [NAMES...] [--ratio 0.3] [--round-to 8] [--runs 20] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxsqueeze import io as sio
from onnxsqueeze import prune

MODELS = ("resnet18", "resnet50", "mobilenet_v3_large", "mobilenet_v3_small")


def latency(
    models: list[Any], feeds: dict[str, np.ndarray], runs: int, threads: int
) -> list[tuple[float, float]]:
    """(median, min) seconds per run of each model, runs interleaved across the models.

    The machine is shared: the median is the typical run, the minimum the least disturbed one.
    """
    from onnxsqueeze import runtime

    sessions = [runtime.session(m, optimize=True, threads=threads) for m in models]
    for s in sessions:
        for _ in range(3):
            s.run(None, feeds)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, feeds)
            times[i].append(time.perf_counter() - t)
    return [(statistics.median(t), min(t)) for t in times]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from onnxsqueeze.verify import run as run_model

    path = Path(args.models) / f"{name}.onnx"
    original = sio.load(path)
    rng = np.random.default_rng(0)
    test = {"input": rng.standard_normal((8, 3, 224, 224)).astype(np.float32)}
    t0 = time.perf_counter()
    pruned, report = prune.prune_channels(original, ratio=args.ratio, round_to=args.round_to)
    prune_s = time.perf_counter() - t0
    ref = run_model(original, test)["logits"]
    row: dict[str, Any] = {
        "model": name,
        "ratio": args.ratio,
        "round_to": args.round_to,
        "groups_pruned": sum(g["status"] == "pruned" for g in report["groups"]),
        "groups": len(report["groups"]),
        "valid": True,  # prune_channels raised otherwise (checker, interface, onnxruntime, finite)
        "macs_before": report["before"]["macs"],
        "macs_after": report["after"]["macs"],
        "macs_ratio": report["before"]["macs"] / report["after"]["macs"],
        "params_ratio": report["before"]["params"] / report["after"]["params"],
        "prune_s": prune_s,
        "cosine": cosine(ref, run_model(pruned, test)["logits"]),
    }
    if args.calib:
        calib = {"input": rng.standard_normal((args.calib, 3, 224, 224)).astype(np.float32)}
        t0 = time.perf_counter()
        refit, _ = prune.prune_channels(original, ratio=args.ratio, round_to=args.round_to, calibration=calib)
        row["refit_s"] = time.perf_counter() - t0
        row["cosine_refit"] = cosine(ref, run_model(refit, test)["logits"])
    one = {"input": test["input"][:1]}
    (base_s, base_min), (pruned_s, pruned_min) = latency([original, pruned], one, args.runs, args.threads)
    row.update(
        {
            "latency_ms": base_s * 1e3,
            "latency_pruned_ms": pruned_s * 1e3,
            "speedup": base_s / pruned_s,
            "speedup_min": base_min / pruned_min,
        }
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(MODELS))
    parser.add_argument("--models", default=".cache/models")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calib", type=int, default=0, help="re-fit with N random inputs (0: no re-fit)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    print(
        "| model | groups pruned | MACs before | MACs after | MACs ratio | params ratio | "
        "latency (ms) | pruned (ms) | speedup (median) | speedup (min) | cosine |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.names:
        r = bench(name, args)
        rows.append(r)
        cos = f"{r['cosine']:.3f}" + (
            f" ({r['cosine_refit']:.3f} re-fit in {r['refit_s']:.0f} s)" if "cosine_refit" in r else ""
        )
        print(
            f"| {name} | {r['groups_pruned']}/{r['groups']} | {r['macs_before'] / 1e9:.3f} G | "
            f"{r['macs_after'] / 1e9:.3f} G | {r['macs_ratio']:.3f}x | {r['params_ratio']:.2f}x | "
            f"{r['latency_ms']:.1f} | {r['latency_pruned_ms']:.1f} | {r['speedup']:.2f}x | "
            f"{r['speedup_min']:.2f}x | {cos} |",
            flush=True,
        )
    if args.json:
        sio.write_bytes_atomic(args.json, json.dumps(rows, indent=2).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
