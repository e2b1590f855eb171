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

3. ``estimate``: from the serial run's measured per-candidate costs (results.json: plan seconds,
   build / score / timing seconds of every point, student training), the wall time of a fleet of
   ``--models`` such models on ``--nodes`` machines of ``--cores`` cores, and which resource limits it.

Usage: PYTHONPATH=. python benchmarks/scale_out.py [speedup|fleet|estimate|all] [--out .cache/bench-scale]
       [--workers 2] [--distill-minutes 0.5] [--techniques LIST] [--models 100 --nodes 10 --cores 8]
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


def speedup(out: Path, workers: int, distill_minutes: float, techniques: str | None = None) -> None:
    model, val, train = _digits(out)
    base = [
        sys.executable, "-m", "onnxsqueeze", "squeeze", str(model), "--data", str(val),
        "--train-data", str(train), "--max-drop", "1", "--objective", "size",
        "--distill-minutes", str(distill_minutes), "--no-cache",
        *(["--techniques", techniques] if techniques else []),
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


def estimate(results: Path, models: int, nodes: int, cores: int) -> None:
    """A fleet's wall time from one model's measured costs (a model like the one measured).

    - driver: each model's plans (channel sensitivity, int8 calibration ranking) run in the
      ``squeeze`` process; models run concurrently there, so at most ``cores`` at once;
    - workers: building and scoring candidates and training students, spread over
      ``nodes * cores`` task slots;
    - timing: one candidate timed at a time per node (the timing slot);
    - one model's critical path: plans, then the longest knob's bisection chain, then the greedy
      combination (sequential by design).
    """
    doc = json.loads(results.read_text())
    pts = doc["points"]
    plan = float(doc.get("timings", {}).get("plan", 0.0))
    work = sum((p.get("build_s") or 0.0) + (p.get("score_s") or 0.0) for p in pts)
    work += sum(float(s.get("seconds", 0.0)) for s in doc.get("students", {}).values())
    timed = sum(p.get("time_s") or 0.0 for p in pts)
    chains: dict[str, float] = {}
    combine = base = 0.0
    for p in pts:
        cost = p.get("seconds") or 0.0
        if p["phase"] == "baseline":
            base += cost
        elif p["phase"] == "single":
            (knob,) = p["settings"]
            chains[knob] = chains.get(knob, 0.0) + cost
        else:
            combine += cost
    students = {s["student"]: float(s.get("seconds", 0.0)) for s in doc.get("students", {}).values()}
    if students:
        chains["distill"] = chains.get("distill", 0.0) + sum(students.values())
    critical = plan + base + max(chains.values(), default=0.0) + combine
    limits = {
        "driver (plans)": models * plan / cores,
        "workers (build, score, train)": models * work / (nodes * cores),
        "timing slots (one per node)": models * timed / nodes,
        "one model's critical path": critical,
    }
    print(
        f"per model (measured, {results}): plans {plan:.1f} s, build+score+train {work:.1f} s, "
        f"timing {timed:.1f} s, {len(pts)} points; critical path {critical:.1f} s"
    )
    print(f"| {models} models on {nodes} nodes x {cores} cores | seconds |")
    print("|---|---|")
    for name, secs in limits.items():
        print(f"| {name} | {secs:.0f} |")
    worst = max(limits, key=lambda k: limits[k])
    print(f"estimate: about {limits[worst] / 60:.1f} minutes, limited by {worst}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", choices=("speedup", "fleet", "estimate", "all"), default="all")
    ap.add_argument("--out", default=".cache/bench-scale")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--distill-minutes", type=float, default=0.5)
    ap.add_argument("--techniques", default=None, help="squeeze --techniques for the speedup runs")
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--cores", type=int, default=8)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.what in ("speedup", "all"):
        speedup(out, args.workers, args.distill_minutes, args.techniques)
    if args.what in ("fleet", "all"):
        fleet(out, args.workers)
    if args.what in ("estimate", "all"):
        estimate(out / "serial" / "results.json", args.models, args.nodes, args.cores)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
