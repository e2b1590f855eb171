"""Squeeze a real pretrained model, MTCNN's ONet (or RNet), within a 1-point agreement budget.

The nets are facenet-pytorch's pretrained face detectors (weights ship in its wheel; exported by
``models/facenet.py``). The data is real: scikit-image's ``lfw_subset()``, 100 LFW face crops and
100 non-face crops (25x25 grayscale, shipped in the package, no download). Each crop is scaled to
0..255, repeated to 3 channels, resized to the net's input with ``interpolate(mode="area")`` and
normalized as ``(x - 127.5) * 0.0078125``, exactly as ``facenet_pytorch``'s ``detect_face`` does
(no transpose). Faces and non-faces are interleaved so the calibration hold-out (the first
``--calibration-samples``) is balanced.

The .npz holds ``input`` and ``labels`` (1 face, 0 non-face); the search scores ``--metric
agreement`` on the ``probs`` output (face vs non-face argmax of the original), and the labels only
give a separate accuracy figure for the baseline and the best model on the evaluated samples.

It runs ``onnxsqueeze squeeze`` twice (the second run is served from the evaluation cache) and
prints the figures for benchmarks/RESULTS.md.

Usage: PYTHONPATH=. python benchmarks/squeeze_facenet.py [--net onet|rnet] [--max-drop 1]
       [--objective latency] [--calibration-samples 40] [--out .cache/bench-squeeze-facenet]
       [--time-budget MINUTES] [--techniques channels,int8]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks.squeeze import print_figures, run_twice

SIZES = {"onet": 48, "rnet": 24}


def write_lfw(path: Path, size: int) -> None:
    """``lfw_subset`` as MTCNN sees it: ``input`` [200, 3, size, size] float32 and ``labels``."""
    import skimage.data
    import torch
    from torch.nn.functional import interpolate

    from onnxsqueeze.io import save_npz

    crops = skimage.data.lfw_subset()  # (200, 25, 25) float64 in [0, 1]: 100 faces, then 100 non-faces
    labels = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)
    order = np.stack([np.arange(100), np.arange(100, 200)], axis=1).ravel()  # face, non-face, ...
    pixels = torch.from_numpy(np.round(crops[order] * 255).astype(np.float32))[:, None].repeat(1, 3, 1, 1)
    x = (interpolate(pixels, size=(size, size), mode="area") - 127.5) * 0.0078125
    save_npz(path, {"input": x.numpy(), "labels": labels[order]})


def accuracy(model: Path, data: Path, skip: int) -> float:
    """Face/non-face accuracy (argmax of ``probs``) on the samples after the calibration hold-out."""
    import onnxruntime as ort

    npz = np.load(data)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probs = sess.run(["probs"], {"input": npz["input"][skip:]})[0]
    return float((probs.argmax(axis=1) == npz["labels"][skip:]).mean() * 100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=sorted(SIZES), default="onet")
    ap.add_argument("--calibration-samples", type=int, default=40)
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--objective", default="latency")
    ap.add_argument("--out", default=".cache/bench-squeeze-facenet")
    ap.add_argument("--keep-cache", action="store_true", help="Do not clear the evaluation cache first.")
    ap.add_argument("--time-budget", type=float, default=None, help="Minutes (squeeze --time-budget).")
    ap.add_argument("--techniques", default=None, help="Knobs to try (squeeze --techniques).")
    args = ap.parse_args(argv)

    from models.facenet import ensure

    model = ensure(args.net)
    out = Path(args.out)
    data = out / f"lfw_subset_{args.net}.npz"
    if not data.exists():
        out.mkdir(parents=True, exist_ok=True)
        write_lfw(data, SIZES[args.net])
    result_dir = out / f"{args.net}-{args.objective}"
    if not args.keep_cache:
        shutil.rmtree(result_dir, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "onnxsqueeze", "squeeze", str(model), "--data", str(data),
        "--metric", "agreement", "--output-name", "probs", "--max-drop", str(args.max_drop),
        "--objective", args.objective, "--calibration-samples", str(args.calibration_samples),
        "-o", str(result_dir),
    ]  # fmt: skip
    timings = run_twice(cmd, args.time_budget, args.techniques)
    eval_set = (
        f"real LFW face / non-face crops (lfw_subset; +{args.calibration_samples} held out for calibration)"
    )
    print_figures(result_dir, model.name, eval_set, args.max_drop, timings)
    skip = args.calibration_samples
    squeezed = result_dir / f"{model.stem}.squeezed.onnx"
    print(
        f"| face accuracy (labels, not the search metric) | baseline {accuracy(model, data, skip):.2f} %",
        end="",
    )
    if squeezed.exists():
        print(f", best {accuracy(squeezed, data, skip):.2f} % |")
    else:
        print(" |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
