"""Recovery fine-tuning on the digits CNN: one-shot pruning vs fine-tuned vs gradual (issue 15).

Usage: ``PYTHONPATH=. python benchmarks/finetune.py [--budget SECONDS] [--clock cpu|wall] [--only ...]
[--json out/ft.json]``; the last lines are one summary per target
(needs ``python -m models.digits --out .cache/models``). Every figure is accuracy on the 360
held-out digits (``digits_val.npz``), measured in onnxruntime; training uses ``digits_train.npz``
(its labels included, as the issue's training set has them) with the teacher's outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from onnxsqueeze import io as sio
from onnxsqueeze import prune as api
from onnxsqueeze.finetune import FinetuneConfig, finetune
from onnxsqueeze.finetune.gradual import gradual_sparsity, sparsity_of

MODELS = Path(".cache/models")


def progress(e) -> None:
    print(
        f"  epoch {e.epoch}/{e.planned} loss {e.train_loss:.4f} val {e.metric} {e.val_metric:.4f} "
        f"{e.elapsed_s:.0f} s{' *' if e.best else ''}",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of each fine-tuning run")
    ap.add_argument(
        "--clock",
        default="cpu",
        choices=["cpu", "wall"],
        help="what the budget counts: the process's CPU seconds (the default, for a loaded machine) or wall",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", default="sparsity,global,channels,gradual")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    teacher = MODELS / "digits_cnn.onnx"
    original = sio.load(teacher)
    train, val = (
        dict(sio.load_npz(MODELS / "digits_train.npz")),
        dict(sio.load_npz(MODELS / "digits_val.npz")),
    )
    cache = Path("out/ft_cache")
    cfg = FinetuneConfig(time_budget_s=args.budget, clock=args.clock)
    summary: list[str] = []
    rows: list[dict] = []
    load = os.getloadavg()

    def row(name: str, model, acc: float, seconds: float, note: str = "") -> float:
        r = {
            "model": name,
            "accuracy": acc,
            "sparsity": round(sparsity_of(model), 4),
            "params": sum(int(np.prod(i.dims)) for i in model.graph.initializer),
            "seconds": round(seconds, 1),
            "note": note,
        }
        rows.append(r)
        print(json.dumps(r), flush=True)
        return acc

    def target(label: str, acc: float, max_drop: float, seconds: float, cpu: float) -> None:
        drop = 100 * (base - acc)
        summary.append(
            f"digits {label}: accuracy {100 * acc:.2f}% (original {100 * base:.2f}%, drop {drop:.2f} "
            f"points) in {cpu:.0f} CPU-s / {seconds:.0f} s wall (load {os.getloadavg()[0]:.1f}); "
            f"target (<= {max_drop:g} point{'s' if max_drop != 1 else ''}) met: "
            f"{'yes' if drop <= max_drop else 'no'}"
        )

    def acc_of(model) -> float:
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        out = sess.run(None, {sess.get_inputs()[0].name: val["input"]})[0]
        return float((out.argmax(1) == val["labels"]).mean())

    base = row("original", original, acc_of(original), 0.0)
    only = args.only.split(",")
    if "sparsity" in only:
        t = time.perf_counter()
        one, _ = api.prune_weights(original, sparsity=0.95)
        row("sparsity 95% one-shot", one, acc_of(one), time.perf_counter() - t)
        t = time.perf_counter()
        r = finetune(one, teacher, train, val=val, config=cfg, cache_dir=cache, on_epoch=progress)
        row(
            "sparsity 95% one-shot + finetune",
            r.model,
            acc_of(r.model),
            time.perf_counter() - t,
            f"{r.report.training.stop_reason}, {len(r.report.training.history)} epochs",
        )
    if "global" in only:
        t = time.perf_counter()
        one, _ = api.prune_weights(original, sparsity=0.95, scope="global", calibration=api.limit(train, 512))
        row("sparsity 95% one-shot (global, lsq re-fit)", one, acc_of(one), time.perf_counter() - t)
        t, c = time.perf_counter(), time.process_time()
        r = finetune(one, teacher, train, val=val, config=cfg, cache_dir=cache, on_epoch=progress)
        tr = r.report.training
        acc = row(
            "sparsity 95% one-shot (global, lsq) + finetune",
            r.model,
            acc_of(r.model),
            time.perf_counter() - t,
            f"{tr.stop_reason}, {len(tr.history)} epochs, lr {tr.lr:.2g}"
            + (" (range test)" if tr.lr_found else ""),
        )
        target(
            f"sparsity {100 * sparsity_of(r.model):.1f}%",
            acc,
            1.0,
            time.perf_counter() - t,
            time.process_time() - c,
        )
    if "gradual" in only:
        t = time.perf_counter()
        r = gradual_sparsity(
            original,
            teacher,
            train,
            sparsity=0.95,
            steps=5,
            scope="global",
            val=val,
            config=cfg,
            cache_dir=cache,
        )
        row(
            "sparsity 95% gradual (global, cubic, 5 steps) + finetune",
            r.model,
            acc_of(r.model),
            time.perf_counter() - t,
            f"last step: {r.report.training.stop_reason}, {len(r.report.training.history)} epochs",
        )
    if "channels" in only:
        t = time.perf_counter()
        calib = api.limit(train, 512)
        one, _ = api.prune_channels(original, ratio=0.6, calibration=calib)
        row("channels -60% one-shot (lsq re-fit)", one, acc_of(one), time.perf_counter() - t)
        t, c = time.perf_counter(), time.process_time()
        r = finetune(one, teacher, train, val=val, config=cfg, cache_dir=cache, on_epoch=progress)
        acc = row(
            "channels -60% + finetune",
            r.model,
            acc_of(r.model),
            time.perf_counter() - t,
            f"{r.report.training.stop_reason}, {len(r.report.training.history)} epochs",
        )
        target("channels -60%", acc, 2.0, time.perf_counter() - t, time.process_time() - c)
    out = {
        "rows": rows,
        "budget_s": args.budget,
        "clock": args.clock,
        "load_before": load,
        "load_after": os.getloadavg(),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
