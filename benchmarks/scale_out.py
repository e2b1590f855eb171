"""Scale-out of ``squeeze``: serial vs ``--workers 2`` vs ``--ray`` (2 CPUs), and a fleet.

1. ``speedup``: the digits CNN squeeze with ``--train-data`` (graph knobs + distillation) run
   three times from an empty cache: in one process, with ``--workers 2`` and with ``--ray
   --workers 2`` (a local Ray instance with 2 CPUs). Prints the wall times, their ratios to the
   serial run, and whether the best model and recipe are byte-identical to the serial run's. The
   objective is ``size`` so the decisions do not depend on timing noise (latency is still
   measured and reported for every candidate).
2. ``fleet``: one ``squeeze --models-from`` over four real models (the digits CNN on scikit-learn
   digits; facenet-pytorch's pretrained MTCNN ONet, RNet and PNet on real LFW face / non-face
   crops from scikit-image, scored by top-1 agreement of their face/non-face ``probs``) with
   ``--workers``, and prints fleet.md.

Usage: PYTHONPATH=. python benchmarks/scale_out.py [speedup|fleet|all] [--out .cache/bench-scale]
       [--workers 2] [--distill-minutes 0.5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else "-"


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        sys.stderr.write(r.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall


def _digits(out: Path) -> tuple[Path, Path, Path]:
    from models import digits

    folder = Path(".cache/models")
    files = tuple(folder / n for n in ("digits_cnn.onnx", "digits_val.npz", "digits_train.npz"))
    if not all(f.exists() for f in files):
        assert digits.main(["--out", str(folder)]) == 0
    return files  # type: ignore[return-value]


def speedup(out: Path, workers: int, distill_minutes: float) -> None:
    model, val, train = _digits(out)
    base = [
        sys.executable, "-m", "onnxsqueeze", "squeeze", str(model), "--data", str(val),
        "--train-data", str(train), "--max-drop", "1", "--objective", "size",
        "--distill-minutes", str(distill_minutes), "--no-cache",
    ]  # fmt: skip
    runs = {
        "serial": [],
        f"--workers {workers}": ["--workers", str(workers)],
        f"--ray (local, {workers} CPUs)": ["--ray", "--workers", str(workers)],
    }
    rows = []
    serial_wall = None
    for name, extra in runs.items():
        folder = out / name.split()[0].strip("-")
        shutil.rmtree(folder, ignore_errors=True)
        wall = _run([*base, "-o", str(folder), *extra])
        res = json.loads((folder / "results.json").read_text())
        serial_wall = serial_wall or wall
        rows.append((name, wall, folder, res))
    ref = rows[0][2]
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min), cores: {os.cpu_count()}")
    print("| run | wall s | vs serial | points (measured) | best | size x | same model bytes | same recipe |")
    print("|---|---|---|---|---|---|---|---|")
    for name, wall, folder, res in rows:
        best = res["best"]
        same_model = _sha(folder / "digits_cnn.squeezed.onnx") == _sha(ref / "digits_cnn.squeezed.onnx")
        same_recipe = _sha(folder / "recipe.toml") == _sha(ref / "recipe.toml")
        print(
            f"| {name} | {wall:.1f} | {wall / serial_wall:.2f}x | {len(res['points'])} ({res['evaluations']}) "
            f"| {best['label'] if best else '-'} | {res['baseline']['size'] / best['size'] if best else 0:.2f} "
            f"| {same_model} | {same_recipe} |"
        )


FLEET = """# model  data  [KEY=VALUE ...]  (written by benchmarks/scale_out.py)
{digits} {digits_val}
{onet} {onet_data} metric=agreement output=probs calibration_samples=40
{rnet} {rnet_data} metric=agreement output=probs calibration_samples=40
{pnet} {pnet_data} metric=agreement output=probs calibration_samples=40
"""


def fleet(out: Path, workers: int) -> None:
    from benchmarks.squeeze_facenet import write_lfw
    from models.facenet import ensure as ensure_facenet

    out.mkdir(parents=True, exist_ok=True)
    digits, val, _ = _digits(out)
    paths = {"digits": digits, "digits_val": val}
    for net, size in (("onet", 48), ("rnet", 24), ("pnet", 24)):
        paths[net] = ensure_facenet(net)
        data = out / f"lfw_{net}.npz"
        if not data.exists():
            write_lfw(data, size)
        paths[f"{net}_data"] = data
    listing = out / "fleet.txt"
    listing.write_text(FLEET.format(**{k: Path(v).resolve() for k, v in paths.items()}))
    folder = out / "fleet"
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "onnxsqueeze", "squeeze", "--models-from", str(listing), "-o", str(folder),
        "--max-drop", "1", "--objective", "size", "--workers", str(workers), "--no-cache",
    ]  # fmt: skip
    wall = _run(cmd)
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min); wall {wall:.1f} s; command: {' '.join(cmd[1:])}")
    print((folder / "fleet.md").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", choices=("speedup", "fleet", "all"), default="all")
    ap.add_argument("--out", default=".cache/bench-scale")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--distill-minutes", type=float, default=0.5)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.what in ("speedup", "all"):
        speedup(out, args.workers, args.distill_minutes)
    if args.what in ("fleet", "all"):
        fleet(out, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
