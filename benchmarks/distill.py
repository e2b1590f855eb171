"""Distillation on the digits CNN: a >= 10x smaller student, and soft labels vs hard labels.

1. The headline run: ``distill(digits_cnn.onnx -> STUDENT)`` with a 2-minute time budget, early
   stopping on 10% of the training split, the report on the held-out ``digits_val.npz`` (which
   neither the teacher's recipe nor the student's early stopping saw).
2. The ablation: the same student, data, schedule and early stopping over several seeds, trained
   with the distillation loss (alpha 0.5, T 4), with the soft term alone (alpha 1) and on hard
   labels only (alpha 0), optionally on a small subset of the training data too (where soft
   labels are expected to matter most).

Prints a markdown section (for benchmarks/RESULTS.md) and writes the raw numbers as JSON.

Usage: ``PYTHONPATH=. python benchmarks/distill.py [--student cnn4] [--seeds 5] [--epochs 30]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = REPO / ".cache" / "models"


def _load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def headline(student: str, epochs: int, threads: int, cache: Path) -> dict:
    from onnxsqueeze.distill import TrainConfig, distill

    load_before = _load()
    t0 = time.perf_counter()
    result = distill(
        MODELS / "digits_cnn.onnx",
        student,
        MODELS / "digits_train.npz",
        test=MODELS / "digits_val.npz",
        config=TrainConfig(epochs=epochs, threads=threads, time_budget_s=120.0),
        cache_dir=cache,
    )
    wall = time.perf_counter() - t0
    report = result.report.to_dict()
    report["training"].pop("history")
    return report | {"wall_s": wall, "load_before": load_before, "load_after": _load()}


def ablation(
    student: str, seeds: int, epochs: int, threads: int, cache: Path, scarce: int | None
) -> dict[str, dict]:
    """Test accuracy per arm and seed.

    Without ``scarce``: all training data, labels for all, alpha 0.5 / 1 / 0.
    With ``scarce = N``: only N training samples keep their labels. Arms: hard labels on those N,
    distillation (alpha 0.5) on the same N, and pure teacher-student (no labels needed) on all the
    training inputs. Epochs and patience are scaled by the sample count, so every arm takes about
    the same number of optimizer steps.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.distill import TrainConfig, distill

    full = sio.load_npz(MODELS / "digits_train.npz")
    if scarce is None:
        arms = [
            ("distill (alpha 0.5, T 4)", full, 0.5),
            ("soft only (alpha 1, T 4)", full, 1.0),
            ("hard labels only (alpha 0)", full, 0.0),
        ]
    else:
        pick = np.sort(np.random.default_rng(123).permutation(len(full["labels"]))[:scarce])
        labelled = {k: v[pick] for k, v in full.items()}
        unlabelled = {"input": full["input"]}
        arms = [
            (f"hard labels only, {scarce} labelled samples", labelled, 0.0),
            (f"distill (alpha 0.5, T 4), the same {scarce} labelled samples", labelled, 0.5),
            (f"teacher-student (T 4) on all {len(full['input'])} inputs, no labels", unlabelled, 1.0),
        ]
    out: dict[str, dict] = {}
    for arm, train, alpha in arms:
        scale = len(full["input"]) / len(train["input"])
        accs, agrees, secs = [], [], []
        for seed in range(seeds):
            config = TrainConfig(
                epochs=round(epochs * scale),
                patience=round(10 * scale),
                threads=threads,
                seed=seed,
                alpha=alpha,
            )
            r = distill(
                MODELS / "digits_cnn.onnx",
                student,
                train,
                test=MODELS / "digits_val.npz",
                config=config,
                cache_dir=cache,
                measure_latency=False,
            ).report
            accs.append(r.student.accuracy)
            agrees.append(r.student.agreement)
            secs.append(r.training.seconds)
            print(f"  {arm} seed {seed}: accuracy {r.student.accuracy:.4f}", file=sys.stderr, flush=True)
        out[arm] = {"accuracy": accs, "agreement": agrees, "seconds": secs, "epochs": round(epochs * scale)}
    return out


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} % ± {100 * sd:.2f}"


def markdown(head: dict | None, abl: dict[str, dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"Command: `{command}` ({args.threads} training thread(s), load average {_load()} at the end).",
        "",
    ]
    if head is not None:
        lines = _headline_md(head, args, command)
    for title, table in abl.items():
        lines += [
            f"Soft vs hard labels, `{args.student}`, {title}, seeds 0..{args.seeds - 1}, "
            f"test accuracy on `digits_val.npz`:",
            "",
            "| training | epochs max | mean ± sd accuracy | per seed | mean agreement with teacher |",
            "|---|---:|---:|---|---:|",
        ]
        for arm, r in table.items():
            per = ", ".join(f"{100 * a:.1f}" for a in r["accuracy"])
            agree = 100 * statistics.mean(r["agreement"])
            lines.append(f"| {arm} | {r['epochs']} | {_mean_sd(r['accuracy'])} | {per} | {agree:.2f} % |")
        lines.append("")
    return "\n".join(lines)


def _headline_md(head: dict, args: argparse.Namespace, command: str) -> list[str]:
    t, s = head["models"]["teacher"], head["models"]["student"]
    tr = head["training"]
    return [
        f"Command: `{command}` (torch {head['torch']}, {args.threads} training thread(s); the machine has "
        f"2 cores shared with other jobs, load average {head['load_before']} before the headline run, "
        f"{head['load_after']} after).",
        "",
        f"Teacher `digits_cnn.onnx` -> student `{head['student']}`, trained on 90% of `digits_train.npz` "
        f"({head['samples']['train']} samples) with early stopping on the other 10%, reported on the "
        f"held-out `digits_val.npz` ({head['samples']['report']} samples). Time budget 2 min; "
        f"{tr['epochs_run']} epochs in {tr['seconds']:.1f} s ({tr['stop_reason']}), "
        f"{head['wall_s']:.1f} s wall in all (teacher labelling, training, export, report).",
        "",
        "| | teacher | student | ratio |",
        "|---|---:|---:|---:|",
        f"| params | {t['params']:,} | {s['params']:,} | {t['params'] / s['params']:.1f}x fewer |",
        f"| MACs / sample | {t['macs']:,} | {s['macs']:,} | {t['macs'] / s['macs']:.1f}x fewer |",
        f"| file | {t['file_bytes']:,} B | {s['file_bytes']:,} B | "
        f"{t['file_bytes'] / s['file_bytes']:.1f}x smaller |",
        f"| test accuracy | {100 * t['accuracy']:.2f} % | {100 * s['accuracy']:.2f} % | "
        f"{100 * (s['accuracy'] - t['accuracy']):+.2f} points |",
        f"| agreement with teacher | 100 % | {100 * s['agreement']:.2f} % | |",
        f"| latency, batch 1, ORT CPU 1 thread | {t['latency_ms']:.3f} ms | {s['latency_ms']:.3f} ms | "
        f"{t['latency_ms'] / s['latency_ms']:.1f}x faster |",
        "",
        f"Export check: ONNX vs PyTorch max abs {head['export']['max_abs']:.1e} on 64 samples.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="cnn4")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--scarce", type=int, default=None, help="Run the label-scarce ablation with N labels."
    )
    parser.add_argument("--no-headline", action="store_true", help="Skip the headline run.")
    parser.add_argument("--no-full", action="store_true", help="Skip the all-labels ablation.")
    parser.add_argument("--json", type=Path, default=REPO / "out" / "distill_bench.json")
    args = parser.parse_args(argv)
    import torch

    given = argv if argv is not None else sys.argv[1:]
    command = "PYTHONPATH=. python benchmarks/distill.py " + " ".join(given)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        head = None
        if not args.no_headline:
            head = headline(args.student, args.epochs, args.threads, cache) | {"torch": torch.__version__}
        abl = {}
        if not args.no_full:
            abl["all training data"] = ablation(
                args.student, args.seeds, args.epochs, args.threads, cache, None
            )
        if args.scarce:
            abl[f"{args.scarce} labelled training samples"] = ablation(
                args.student, args.seeds, args.epochs, args.threads, cache, args.scarce
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"headline": head, "ablation": abl}, indent=2, default=str))
    print(markdown(head, abl, args, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
