"""Squeeze a torchvision architecture within a 1-point top-1 agreement budget, on real images.

The evaluation set is real photographs: crops of the scikit-image sample images (astronaut,
coffee, chelsea, rocket, ... all shipped inside the package, no download), written as an image
folder and loaded through onnxsqueeze's ImageFolder path with ImageNet preprocessing. Without
labels the metric is top-1 agreement with the original model; the budget is 1 point.

It runs ``onnxsqueeze squeeze`` twice (the second run is served from the evaluation cache) and
prints the figures for benchmarks/RESULTS.md.

Usage: python benchmarks/squeeze.py [--model .cache/models/resnet18.onnx] [--metric agreement]
       [--max-drop 1] [--images 160] [--out .cache/bench-squeeze] [--objective latency]
       [--time-budget MINUTES] [--techniques channels,int8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SAMPLES = (
    "astronaut", "camera", "cat", "chelsea", "coffee", "coins", "horse", "hubble_deep_field",
    "immunohistochemistry", "moon", "page", "rocket", "text", "colorwheel", "retina", "logo",
    "brick", "grass", "gravel", "clock",
)  # fmt: skip


def run_twice(cmd: list[str], time_budget: float | None, techniques: str | None) -> list[float]:
    """Run a squeeze command twice (the second is served from its cache); the wall times."""
    if time_budget is not None:
        cmd = [*cmd, "--time-budget", str(time_budget)]
    if techniques:
        cmd = [*cmd, "--techniques", techniques]
    print("$", " ".join(cmd), flush=True)
    timings = []
    for run in ("first", "rerun"):
        t = time.perf_counter()
        proc = subprocess.run(cmd, check=False)
        timings.append(time.perf_counter() - t)
        print(f"{run} run: exit {proc.returncode}, {timings[-1]:.1f} s", flush=True)
    return timings


def write_crops(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` random crops (50-100 % of the shorter side, random flips) of the sample images."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for name in SAMPLES:
        im = np.asarray(getattr(skimage.data, name)())
        if im.ndim == 2:
            im = np.stack([im] * 3, axis=-1)
        images.append(Image.fromarray(im[..., :3].astype(np.uint8)).convert("RGB"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = images[i % len(images)]
        side = int(min(im.size) * rng.uniform(0.5, 1.0))
        x = int(rng.integers(0, im.width - side + 1))
        y = int(rng.integers(0, im.height - side + 1))
        crop = im.crop((x, y, x + side, y + side)).resize((256, 256), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"{i:04d}.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=".cache/models/resnet18.onnx")
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--calibration-samples", type=int, default=32)
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--metric", default="agreement")
    ap.add_argument("--objective", default="latency")
    ap.add_argument("--out", default=".cache/bench-squeeze")
    ap.add_argument("--keep-cache", action="store_true", help="Do not clear the evaluation cache first.")
    ap.add_argument("--time-budget", type=float, default=None, help="Minutes (squeeze --time-budget).")
    ap.add_argument("--techniques", default=None, help="Knobs to try (squeeze --techniques).")
    args = ap.parse_args(argv)

    out = Path(args.out)
    images = out / "images"
    if not images.is_dir() or len(list(images.glob("*.png"))) != args.images:
        shutil.rmtree(images, ignore_errors=True)
        write_crops(images, args.images)
    result_dir = out / f"{Path(args.model).stem}-{args.metric}"
    if not args.keep_cache:
        shutil.rmtree(result_dir, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "onnxsqueeze", "squeeze", args.model, "--data", str(images),
        "--metric", args.metric, "--max-drop", str(args.max_drop), "--objective", args.objective,
        "--image-size", "224x224", "--calibration-samples", str(args.calibration_samples),
        "-o", str(result_dir),
    ]  # fmt: skip
    timings = run_twice(cmd, args.time_budget, args.techniques)
    eval_set = f"real-image crops (+{args.calibration_samples} for calibration)"
    print_figures(result_dir, Path(args.model).name, eval_set, args.max_drop, timings)
    return 0


def print_figures(result_dir: Path, model: str, eval_set: str, max_drop: float, timings: list[float]) -> None:
    """Print the RESULTS.md table of a finished squeeze (``timings``: first run and rerun, seconds)."""
    results = json.loads((result_dir / "results.json").read_text())
    base, best = results["baseline"], results["best"]
    metric = results["metric"]
    ms = "ms" if base["latency_ms"] >= 1 else "µs"
    scale = 1.0 if ms == "ms" else 1000.0
    rows = [
        ("model", model),
        ("eval set", f"{results['samples']} {eval_set}"),
        ("budget", f"{metric} drop <= {max_drop:g}"),
        ("baseline", f"{base['size'] / 1e6:.2f} MB, {base['latency_ms'] * scale:.1f} {ms} (batch 1)"),
    ]
    if best is None:
        near = sorted(
            (p for p in results["points"] if p["settings"] and p["drop"] is not None), key=lambda p: p["drop"]
        )
        rows.append(("best", "nothing fits"))
        for p in near[:3]:
            rows.append(
                (
                    "closest",
                    f"{p['label']}: {metric} {p['metric']:.2f} (drop {p['drop']:.2f}), "
                    f"{base['size'] / p['size']:.2f}x smaller, {base['latency_ms'] / p['latency_ms']:.2f}x faster",
                )
            )
    else:
        rows += [
            ("best", best["label"]),
            (metric, f"{best['metric']:.3f} (drop {best['drop']:.3f})"),
            ("size", f"{base['size'] / best['size']:.2f}x smaller ({best['size'] / 1e6:.2f} MB)"),
            (
                "latency",
                f"{base['latency_ms'] / best['latency_ms']:.2f}x faster "
                f"({best['latency_ms'] * scale:.1f} {ms})",
            ),
        ]
    rows += [
        ("points evaluated", str(len(results["points"]))),
        ("search time", f"{timings[0]:.0f} s; rerun from cache {timings[1]:.1f} s"),
    ]
    print("\n| | |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    raise SystemExit(main())
