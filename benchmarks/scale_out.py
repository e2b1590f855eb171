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

4. ``ray-phases``: where ``--ray``'s start and stop go (wall and CPU s), the way before session 5
   and the CLI's way now, alternated.

Usage: PYTHONPATH=. python benchmarks/scale_out.py [speedup|fleet|estimate|ray-phases|all] [--out .cache/bench-scale]
       [--workers 2] [--distill-minutes 0.5 | --train-epochs 10] [--techniques LIST]
       [--runs serial,workers,serial,workers,ray] [--models 100 --nodes 10 --cores 8] [--repeat 3]

``--train-epochs`` trains every student a fixed number of epochs (no time budget), so the
students, and hence the best model, are byte-identical whichever process trains them; with a
time budget they differ from run to run (serial runs included).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else "-"


def _cpu() -> float:
    """CPU seconds (user + system) of the finished child processes and the processes they reaped."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _adopt_orphans() -> None:
    """Become the subreaper of what the runs start (Linux): a worker forked by ``squeeze``'s fork
    server outlives the squeeze by a moment and is reparented here, so its CPU time is counted."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap(seconds: float = 10.0) -> None:
    """Wait (a while) for the orphans of a finished run, so RUSAGE_CHILDREN includes them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    _reap()
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


RUNS = {"serial": [], "workers": ["--workers", "{n}"], "ray": ["--ray", "--workers", "{n}"]}


def speedup(
    out: Path,
    workers: int,
    distill_minutes: float,
    techniques: str | None = None,
    runs: str = "serial,workers,ray",
    train_epochs: int | None = None,
) -> None:
    """Run ``runs`` (``serial``, ``workers``, ``ray``, in that order, repeats allowed: interleave
    ``serial,workers,serial,workers`` on a shared machine) from an empty cache each; print a table
    and one SUMMARY line: each backend's median wall time over the serial runs' median, and
    whether every run's best model and recipe are byte-identical to the first serial run's."""
    model, val, train = _digits(out)
    base = [
        sys.executable, "-m", "onnxsqueeze", "squeeze", str(model), "--data", str(val),
        "--train-data", str(train), "--max-drop", "1", "--objective", "size", "--no-cache",
        *(["--train-epochs", str(train_epochs)] if train_epochs else
          ["--distill-minutes", str(distill_minutes)]),
        *(["--techniques", techniques] if techniques else []),
    ]  # fmt: skip
    names = [r.strip() for r in runs.split(",") if r.strip()]
    if "serial" not in names or set(names) - set(RUNS):
        raise SystemExit(f"--runs {runs}: name serial and any of {', '.join(RUNS)}")
    _adopt_orphans()
    rows = []
    for i, name in enumerate(names):
        folder = out / f"{i:02d}-{name}"
        shutil.rmtree(folder, ignore_errors=True)
        extra = [a.format(n=workers) for a in RUNS[name]]
        load, cpu0 = os.getloadavg()[0], _cpu()
        wall = _run([*base, "-o", str(folder), *extra])
        res = json.loads((folder / "results.json").read_text())
        res["cpu_s"] = _cpu() - cpu0
        rows.append((name, wall, load, folder, res))
        print(f"  {name}: {wall:.1f} s (1-min load before {load:.1f})", file=sys.stderr, flush=True)
    ref = next(r for r in rows if r[0] == "serial")[3]
    shas = {f: (_sha(f / "digits_cnn.squeezed.onnx"), _sha(f / "recipe.toml")) for _, _, _, f, _ in rows}
    walls: dict[str, list[float]] = {}
    for name, wall, *_ in rows:
        walls.setdefault(name, []).append(wall)
    serial = statistics.median(walls["serial"])
    print(f"command: {' '.join(base[1:])} -o DIR [--workers {workers} | --ray --workers {workers}]")
    print(f"cores: {os.cpu_count()}")
    # CPU s: the squeeze process and its pool workers (Ray's workers are not its children: not
    # counted); on a loaded machine the wall time stretches, the CPU time much less.
    print(
        "| run | 1-min load before | wall s | vs serial median | CPU s | points (fresh evaluations) "
        "| best | size x | same model bytes | same recipe |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for _, wall, load, folder, res in rows:
        best = res["best"]
        print(
            f"| {folder.name} | {load:.1f} | {wall:.1f} | {wall / serial:.2f}x | {res['cpu_s']:.0f} "
            f"| {len(res['points'])} "
            f"({res['evaluations']}) | {best['label'] if best else '-'} "
            f"| {res['baseline']['size'] / best['size'] if best else 0:.2f} "
            f"| {shas[folder][0] == shas[ref][0]} | {shas[folder][1] == shas[ref][1]} |"
        )
    print("\nWhere the time went (wall s per phase; each student's training wall s, and CPU s in a worker):")
    for _, _, _, folder, res in rows:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in res.get("timings", {}).items())
        trains = {
            t["task"][len("train ") :]: t for t in res.get("trace", []) if t["task"].startswith("train ")
        }
        # In a worker: its CPU s, and when it started and ended (s from the search's start; the
        # start of the largest student's training is when the critical path got its core).
        students = ", ".join(
            f"{k} {v.get('seconds', 0.0):.1f}"
            + (
                f" (CPU {trains[k]['cpu']:.1f}, {trains[k]['start']:.1f}-{trains[k]['end']:.1f} s)"
                if trains.get(k, {}).get("cpu") is not None
                else ""
            )
            for k, v in res.get("students", {}).items()
        )
        print(f"- {folder.name}: {phases}; students {students or '-'}")
    identical = all(v == shas[ref] and v[0] != "-" for v in shas.values())
    ratios = ", ".join(
        f"{'--workers' if n == 'workers' else '--ray'} {workers} {statistics.median(w) / serial:.2f}x"
        f" (median of {len(w)})"
        for n, w in walls.items()
        if n != "serial"
    )
    loads = [r[2] for r in rows]
    cpus = {n: statistics.median(r[4]["cpu_s"] for r in rows if r[0] == n) for n in walls}
    print(
        f"SUMMARY: serial {serial:.1f} s (median of {len(walls['serial'])}); {ratios}; target <= 0.65x; "
        f"best model and recipe identical to serial: {'yes' if identical else 'no'}; "
        f"1-min load {min(loads):.1f}-{max(loads):.1f}; CPU s "
        + ", ".join(f"{n} {c:.0f}" for n, c in cpus.items())
        + (" (Ray's workers not counted)" if "ray" in cpus else "")
    )
    if max(loads) > 2 and _autogroup():
        print(
            "note: the kernel shares the cores between sessions (autogroup), not between processes: "
            "under other jobs' load a run gets one session's share whatever its workers, so these wall "
            "ratios follow the CPU seconds, not the parallelism; measure the speed-up on a quiet machine"
        )


def _autogroup() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


FLEET = """# model  data  [KEY=VALUE ...]  (written by benchmarks/scale_out.py)
{digits} {digits_val}
{onet} {onet_data} metric=agreement output=probs calibration_samples=40
{rnet} {rnet_data} metric=agreement output=probs calibration_samples=40
{pnet} {pnet_data} metric=agreement output=probs calibration_samples=40
"""


def fleet(out: Path, workers: int, ray: bool = False) -> None:
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
    ] + (["--ray"] if ray else [])  # fmt: skip
    wall = _run(cmd)
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min); wall {wall:.1f} s; command: {' '.join(cmd[1:])}")
    print((folder / "fleet.md").read_text())


# One process, as `squeeze --ray --workers N` starts (early: the CLI's way since session 5) or as it
# started before (the executor's ray.init after the CLI's imports). Prints wall s from the start.
RAY_PHASES = """
import os, sys, time
t0 = time.perf_counter()
early, n = sys.argv[1] == "early", int(sys.argv[2])
from onnxsqueeze import killguard, rayhead
def cpu(pids):
    total = 0.0
    for p in pids:
        try:
            f = killguard._stat(p)
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            pass
    return total
if early:
    rayhead.start_early(["squeeze", "m.onnx", "--ray", "--workers", str(n), "--train-data", "t.npz"])
import onnxsqueeze.cli.app  # the CLI's imports
t_cli = time.perf_counter() - t0
from onnxsqueeze.search.executor import RayExecutor
if not early:
    import ray
    ray.init(num_cpus=n, **rayhead.INIT_OPTIONS)  # the executor's call before session 5
ex = RayExecutor(workers=n, preload=("torch",))
t_up = time.perf_counter() - t0
import ray
ray.get(ex._local.warming if ex._local else ex._warming)
t_warm = time.perf_counter() - t0
pids = [p for r in killguard.children(os.getpid()) for p in [r, *killguard.children(r)]]
ray_cpu = cpu(pids)
c = time.perf_counter()
ex.close()
if not early:
    ray.shutdown()
t_close = time.perf_counter() - c
print(f"{t_cli:.2f} {t_up:.2f} {t_warm:.2f} {t_close:.2f} {sum(os.times()[:2]):.2f} {ray_cpu:.2f}", flush=True)
"""


def ray_phases(runs: int, workers: int) -> None:
    """Where `squeeze --ray`'s start and stop go, the old way (ray.init after the CLI's imports,
    shutdown before the outputs) and the CLI's way (started at the first line in a thread,
    stopped while the outputs are written), alternated ``runs`` times each: wall s from the
    process start to the CLI imported, the instance up, the workers' warm-up tasks (imports of
    onnxruntime and torch) done; close() and the whole process (its exit waits for a deferred
    shutdown); CPU s of the driver and of Ray's processes (GCS, raylet, API server, agents,
    workers) until the workers were warm."""
    rows = []
    for i in range(2 * runs):
        mode = ("before", "early")[i % 2]
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-c", RAY_PHASES, mode, str(workers)], capture_output=True, text=True
        )
        total = time.perf_counter() - t0
        if r.returncode != 0:
            sys.stderr.write(r.stderr[-3000:])
            raise SystemExit(f"ray phases ({mode}) failed: exit {r.returncode}")
        rows.append((mode, load, *map(float, r.stdout.split()[-6:]), total))
    print(
        "| start | 1-min load | CLI imported s | instance up s | workers warm s | close() s | process s "
        "| driver CPU s | Ray processes' CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, load, cli, up, warm, close, drv, rcpu, total in rows:
        print(
            f"| {mode} | {load:.1f} | {cli:.2f} | {up:.2f} | {warm:.2f} | {close:.2f} | {total:.2f} | {drv:.2f} | {rcpu:.2f} |"
        )


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
    ap.add_argument(
        "what", nargs="?", choices=("speedup", "fleet", "estimate", "ray-phases", "all"), default="all"
    )
    ap.add_argument("--out", default=".cache/bench-scale")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--distill-minutes", type=float, default=0.5)
    ap.add_argument("--techniques", default=None, help="squeeze --techniques for the speedup runs")
    ap.add_argument("--train-epochs", type=int, default=None, help="squeeze --train-epochs (reproducible)")
    ap.add_argument(
        "--runs",
        default="serial,workers,ray",
        help="speedup runs in order, e.g. serial,workers,serial,workers",
    )
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--cores", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3, help="ray-phases: runs of each way")
    ap.add_argument("--ray", action="store_true", help="fleet: on a local Ray instance (--workers CPUs)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.what == "ray-phases":
        ray_phases(args.repeat, args.workers)
    if args.what in ("speedup", "all"):
        speedup(out, args.workers, args.distill_minutes, args.techniques, args.runs, args.train_epochs)
    if args.what in ("fleet", "all"):
        fleet(out, args.workers, args.ray)
    if args.what in ("estimate", "all"):
        first = sorted(out.glob("*-serial/results.json")) or [out / "serial" / "results.json"]
        estimate(first[0], args.models, args.nodes, args.cores)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
