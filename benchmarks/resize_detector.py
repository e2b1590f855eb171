"""``resize --scale S --keep-interface`` on a real detector: the nudenet YOLOv8n (dynamic batch/H/W).

Feeds scikit-image photographs (astronaut, coffee, chelsea) letterboxed the way nudenet does it
(pad right/bottom to a square, resize, RGB / 255) at ``--size``; runs the ``resize`` command on
them (``--data``), then compares the original and the rewritten model on the same inputs:

- MACs ratio (from the command's report, batch 1 at the data's size);
- latency ratio: one interleaved timing (``runtime.time_sessions``) of both models, same run;
- box agreement: nudenet's decoding (score >= 0.2, NMS 0.45) on both; the rewritten model's boxes
  are in the internal (scaled) image's pixels, so they are scaled back by ``size / internal``;
  a box of the original is matched by one of the same class with IoU >= 0.5; recall and precision;
- cosine of the per-image class-score vectors (max over anchors, per class).

Usage: ``PYTHONPATH=. python benchmarks/resize_detector.py [--model /work/corpus/320n.onnx]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    side = max(h, w)
    pad = np.zeros((side, side, 3), np.uint8)
    pad[:h, :w] = image[..., :3]
    resized = np.asarray(Image.fromarray(pad).resize((size, size), Image.BILINEAR), np.float32) / 255.0
    return resized.transpose(2, 0, 1)


def photos(size: int) -> np.ndarray:
    from skimage import data

    return np.stack([letterbox(f(), size) for f in (data.astronaut, data.coffee, data.chelsea)])


def decode(out: np.ndarray, scale: float = 1.0) -> list[tuple[int, float, np.ndarray]]:
    """nudenet's post-processing on one image's [22, A] output: (class, score, x1y1x2y2)."""
    rows = out.T
    scores = rows[:, 4:]
    best = scores.max(1)
    keep = best >= 0.2
    cls = scores.argmax(1)[keep]
    conf = best[keep]
    cx, cy, w, h = (rows[keep, :4] * scale).T
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    order = np.argsort(-conf)
    picked: list[int] = []
    for i in order:
        if conf[i] < 0.25:
            continue
        if all(iou(boxes[i], boxes[j]) <= 0.45 for j in picked):
            picked.append(int(i))
    return [(int(cls[i]), float(conf[i]), boxes[i]) for i in picked]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def matched(ref: list, cand: list) -> int:
    used: set[int] = set()
    n = 0
    for c, _, box in ref:
        for j, (c2, _, box2) in enumerate(cand):
            if j not in used and c2 == c and iou(box, box2) >= 0.5:
                used.add(j)
                n += 1
                break
    return n


def declared(model: object) -> dict[str, list[object]]:
    from onnxsqueeze import shapes

    graph = model.graph  # type: ignore[attr-defined]
    return {v.name: list(shapes.declared_shape(v)) for v in [*graph.input, *graph.output]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="/work/corpus/320n.onnx")
    p.add_argument("--size", type=int, default=320, help="letterboxed input size (nudenet: 320)")
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args(argv)

    from onnxsqueeze import io as sio
    from onnxsqueeze import runtime

    x = photos(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "photos.npz", Path(tmp) / "small.onnx"
        np.savez(data, images=x)
        cmd = [sys.executable, "-m", "onnxsqueeze", "resize", args.model, "--scale", str(args.scale)]
        cmd += ["--keep-interface", "--data", str(data), "-o", str(out), "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr.strip(), file=sys.stderr)
            return done.returncode
        report = json.loads(done.stdout)
        original, small = sio.load(Path(args.model)), sio.load(out)
    internal = report["internal_size"][0]
    a = runtime.session(original, optimize=True, threads=args.threads)
    b = runtime.session(small, optimize=True, threads=args.threads)
    (ra,) = a.run(None, {"images": x})
    (rb,) = b.run(None, {"images": x})
    refs = [decode(o) for o in ra]
    cands = [decode(o, args.size / internal) for o in rb]
    n_ref, n_cand = sum(map(len, refs)), sum(map(len, cands))
    hits = sum(matched(r, c) for r, c in zip(refs, cands, strict=True))
    va, vb = ra[:, 4:].max(2), rb[:, 4:].max(2)
    cosine = [
        float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))) for u, v in zip(va, vb, strict=True)
    ]
    one = {"images": x[:1]}
    ms = runtime.time_sessions([a, b], [one, one], rounds=args.rounds, runs=args.runs)
    result = {
        "model": args.model,
        "size": args.size,
        "scale": args.scale,
        "internal_size": report["internal_size"],
        "rounded": report["rounded"],
        "interface_kept": declared(original) == declared(small),
        "declared": declared(small),
        "macs_ratio": report["macs"]["ratio"] if report.get("macs") else None,
        "latency_ms": {"original": ms[0], "resized": ms[1]},
        "latency_ratio": ms[1] / ms[0],
        "boxes": {"original": n_ref, "resized": n_cand, "matched": hits},
        "box_recall": hits / n_ref if n_ref else None,
        "box_precision": hits / n_cand if n_cand else None,
        "class_score_cosine": cosine,
        "threads": args.threads,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
