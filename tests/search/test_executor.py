"""Scale-out: the search decides the same whatever runs the candidates (threads, processes, Ray).

The Ray tests start a real local Ray instance (``ray.init(num_cpus=2)``); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app
from onnxsqueeze.evaluate import Budget
from onnxsqueeze.search import Knob, Point, search
from onnxsqueeze.search.executor import Executor, ProcessExecutor, make_executor, timing_slot
from tests.graphs import cnn
from tests.helpers import rand, run_ort

runner = CliRunner()
FAST = ["--latency-seconds", "0.02", "--objective", "size", "--techniques", "int8,int8-dynamic,fp16"]
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ the algorithm, in threads


def _knobs() -> list[Knob]:
    from onnxsqueeze.recipe import Step

    def k(name: str, n: int, monotone: bool = True) -> Knob:
        return Knob(
            name,
            tuple(range(1, n + 1)),
            monotone=monotone,
            step=lambda s, name=name: Step.of("fp16", {"level": s}),
            stage=1,
            label=lambda s, name=name: f"{name}={s}",
        )

    return [k("a", 7), k("b", 5), k("c", 3, monotone=False), k("d", 9)]


def _synthetic(seed: int, jitter: bool):
    """A deterministic metric/cost per settings; random sleeps shuffle the finishing order."""
    rng = random.Random(seed)
    weights = {"a": 0.4, "b": 0.9, "c": 0.3, "d": 0.2}

    def evaluate(settings):
        if jitter:
            time.sleep(rng.random() * 0.01)
        drop = sum(weights[k] * v for k, v in settings.items())
        size = 1000 - sum(40 * v for v in settings.values())
        return Point(settings=dict(settings), phase="", metric=100 - drop, size=size, drop=drop)

    return evaluate


def _run(parallel: int, jitter: bool):
    return search(
        _knobs(),
        _synthetic(0, jitter),
        lambda p: p.drop is not None and p.drop <= 3.0,
        objective="size",
        budget=Budget(3.0),
        parallel=parallel,
    )


def _summary(result):
    return (
        [(p.phase, sorted(p.settings.items()), p.fits) for p in result.points],
        result.rejected,
        result.chosen,
        {k: (None if v is None else sorted(v.settings.items())) for k, v in result.singles.items()},
    )


def test_parallel_bisection_decides_exactly_like_the_serial_search():
    serial = _run(1, jitter=False)
    assert serial.best is not None and len(serial.points) > 8
    for _ in range(3):  # the threads finish in a different order each time
        assert _summary(_run(4, jitter=True)) == _summary(serial)


def test_parallel_search_really_overlaps_evaluations():
    active, peak, lock = [0], [0], threading.Lock()

    def evaluate(settings):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return _synthetic(0, False)(settings)

    search(_knobs(), evaluate, lambda p: p.drop <= 3.0, objective="size", budget=Budget(3.0), parallel=4)
    assert peak[0] >= 2


def _ladder(n: int, base: bool) -> Knob:
    from onnxsqueeze.recipe import Step

    return Knob(
        "ladder",
        tuple(range(1, n + 1)),
        monotone=True,
        step=lambda s: Step.of("fp16", {"level": s}),
        stage=1,
        label=lambda s: f"ladder={s}",
        base=base,
    )


@pytest.mark.parametrize("max_drop", [0.5, 2.5, 4.5, 7.5, 20.0])
def test_speculative_bisection_makes_the_serial_decisions(max_drop):
    """Free workers evaluate both next bisection points ahead of the path; the points, the
    rejections and the best are the serial run's, and the extra evaluations stay out of them."""

    def run(parallel: int, knobs: list[Knob]):
        calls: list[tuple] = []
        lock = threading.Lock()
        synthetic = _synthetic(1, jitter=parallel > 1)
        weights = {"ladder": 1.0}

        def evaluate(settings):
            with lock:
                calls.append(tuple(sorted(settings.items())))
            if "ladder" in settings:
                drop = weights["ladder"] * settings["ladder"] ** 1.5 / 4
                return Point(settings=dict(settings), phase="", metric=100 - drop, size=900, drop=drop)
            return synthetic(settings)

        result = search(
            knobs,
            evaluate,
            lambda p: p.drop is not None and p.drop <= max_drop,
            objective="size",
            budget=Budget(max_drop),
            parallel=parallel,
        )
        return result, calls

    for knobs in ([_ladder(12, base=True)], [*_knobs(), _ladder(12, base=True)]):
        serial, serial_calls = run(1, knobs)
        assert serial.speculative == 0 and len(serial_calls) == len(set(serial_calls))
        spec, spec_calls = run(2, knobs)
        assert _summary(spec) == _summary(serial)
        assert set(serial_calls) <= set(spec_calls)
        # each candidate measured once; what the path never asked for is counted, not a point
        assert len(spec_calls) == len(set(spec_calls))
        assert spec.speculative == len(spec_calls) - len(serial_calls)
    # one knob, two slots: the point after the one in flight is always started ahead
    one, calls = run(2, [_ladder(12, base=True)])
    assert len(calls) > len(one.points)


def test_evaluations_left_running_ahead_are_abandoned_as_the_search_ends():
    """An evaluation run ahead that the path never asked for is still running when the search
    is done: the search asks the executor to stop it (``abandon``) instead of waiting for it, and
    decides as the serial run does. Here such evaluations would run until abandon() is called."""
    knobs = [_ladder(12, base=True)]
    serial_calls: set[tuple] = set()

    def evaluate_with(calls: set[tuple], released: threading.Event):
        def evaluate(settings):
            calls.add(tuple(sorted(settings.items())))
            if serial_calls and tuple(sorted(settings.items())) not in serial_calls:
                assert released.wait(120), "not abandoned"  # a result nobody needs
            drop = settings.get("ladder", 0) ** 1.5 / 4
            return Point(settings=dict(settings), phase="", metric=100 - drop, size=900, drop=drop)

        return evaluate

    def run(parallel: int, abandon=None):
        calls: set[tuple] = set()
        released = threading.Event()
        result = search(
            knobs, evaluate_with(calls, released), lambda p: p.drop is not None and p.drop <= 4.5,
            objective="size", budget=Budget(4.5), parallel=parallel,
            abandon=None if abandon is None else lambda: abandon(released),
        )  # fmt: skip
        return result, calls

    serial, calls = run(1)
    serial_calls.update(calls)
    abandoned: list[int] = []

    def abandon(released: threading.Event) -> None:
        abandoned.append(1)
        released.set()

    spec, spec_calls = run(2, abandon)
    assert _summary(spec) == _summary(serial)
    assert abandoned == [1] and spec_calls > serial_calls  # one left running at the end, stopped


def test_timing_slot_admits_one_holder_at_a_time():
    inside, overlap = [0], [False]

    def hold():
        with timing_slot():
            inside[0] += 1
            overlap[0] |= inside[0] > 1
            time.sleep(0.02)
            inside[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap[0]


# ------------------------------------------------------------------ real candidates


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp_path = tmp_path_factory.mktemp("assets")
    model = cnn()
    x = rand((96, 3, 8, 8), 21)
    (y,) = run_ort(model, {"x": x})
    labels = np.argmax(y, 1).astype(np.int64)
    labels[::16] = (labels[::16] + 1) % 4
    path = tmp_path / "cnn.onnx"
    sio.save(model, path)
    data = tmp_path / "val.npz"
    sio.save_npz(data, {"x": x, "labels": labels})
    return path, data


def _squeeze(model: Path, data: Path, out: Path, *extra: str):
    r = runner.invoke(
        app, ["squeeze", str(model), "--data", str(data), "-o", str(out), "--max-drop", "5", *FAST, *extra]
    )
    assert r.exit_code == 0, r.output
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def serial(assets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serial run every parallel run must equal byte for byte (run once for the module)."""
    model, data = assets
    out = tmp_path_factory.mktemp("serial") / "serial"
    _squeeze(model, data, out, "--no-cache")
    return out


def _same_as_serial(serial: Path, other: Path) -> None:
    assert (other / "cnn.squeezed.onnx").read_bytes() == (serial / "cnn.squeezed.onnx").read_bytes()
    assert (other / "recipe.toml").read_bytes() == (serial / "recipe.toml").read_bytes()
    a, b = (json.loads((d / "results.json").read_text()) for d in (serial, other))
    assert [p["label"] for p in a["points"]] == [p["label"] for p in b["points"]]
    assert [(p["metric"], p["size"]) for p in a["points"]] == [(p["metric"], p["size"]) for p in b["points"]]
    assert a["rejected"] == b["rejected"]


@pytest.mark.slow
def test_process_pool_gives_the_serial_best_model_byte_for_byte(assets, serial, tmp_path):
    model, data = assets
    results = _squeeze(model, data, tmp_path / "pool", "--no-cache", "--workers", "2")
    _same_as_serial(serial, tmp_path / "pool")
    assert results["executor"] == "2 local worker processes"
    assert "one candidate at a time per machine" in (tmp_path / "pool" / "report.md").read_text()


@pytest.mark.slow
def test_students_trained_in_workers_are_the_serial_ones_byte_for_byte(assets, tmp_path):
    """With --train-epochs, the two students (trained at once in two workers, the second ahead
    of the bisection's path) and the best model are the serial run's, byte for byte."""
    model, data = assets
    x = rand((128, 3, 8, 8), 33)
    (y,) = run_ort(sio.load(model), {"x": x})
    train = tmp_path / "train.npz"
    sio.save_npz(train, {"x": x, "labels": np.argmax(y, 1).astype(np.int64)})
    args = ["--train-data", str(train), "--distill-students", "cnn8,cnn4", "--train-epochs", "2",
            "--no-cache", "--max-drop", "100", "--techniques", "distill,int8-dynamic"]  # fmt: skip
    serial = _squeeze(model, data, tmp_path / "serial", *args)
    pool = _squeeze(model, data, tmp_path / "pool", *args, "--workers", "2")
    _same_as_serial(tmp_path / "serial", tmp_path / "pool")
    students = {k: v["sha256"] for k, v in serial["students"].items()}
    assert set(students) == {"cnn8", "cnn4"}
    assert {k: v["sha256"] for k, v in pool["students"].items()} == students
    # Both were sent to the workers as the run started (before the plans were done), each
    # trained once there; the serial run trains them in its own process when asked.
    trains = [t for t in pool["trace"] if t["task"].startswith("train ")]
    plan = next(t for t in pool["trace"] if t["task"] == "plan")
    assert sorted(t["task"] for t in trains) == ["train cnn4", "train cnn8"]
    assert all(t["sent"] <= plan["start"] and isinstance(t["worker"], int) for t in trains)
    assert all(t["cpu"] > 0 for t in trains)
    assert not any(t["task"].startswith("train ") for t in serial["trace"])
    assert {t["worker"] for t in serial["trace"]} == {"driver"}


@pytest.mark.slow
def test_a_failing_candidate_is_reported_and_the_pool_goes_on(assets, tmp_path):
    from onnxsqueeze import search as S

    model, data = assets
    options = S.SqueezeOptions(budget=Budget(5.0), objective="size", techniques=("int8",))
    squeezer = S.make_squeezer(model, data, options=options, out_dir=tmp_path, use_cache=False)
    squeezer.prepare()
    with ProcessExecutor(2) as executor:
        handle = executor.register(squeezer)
        bad = executor.run(handle, {"settings": {"no-such-knob": 1}, "students": {}})
        assert "worker failed: KeyError" in bad["doc"]["error"]
        good = executor.run(handle, {"settings": {}, "students": {}})
        assert good["doc"].get("error") is None and good["doc"]["metric"] > 0


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(assets, serial, tmp_path):
    """SIGKILL the driver of a 2-worker run once some results are cached; the rerun resumes."""
    model, data = assets
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "onnxsqueeze", "squeeze", str(model), "--data", str(data), "-o", str(out),
           "--max-drop", "5", *FAST, "--workers", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / ".cache"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(cache.glob("??/*.json"))) >= 3:
            break
        time.sleep(0.05)
    done_before = len(list(cache.glob("??/*.json")))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done_before >= 1
    assert not (out / "results.json").exists() or proc.returncode == 0
    resumed = _squeeze(model, data, out, "--workers", "2")
    assert resumed["cache_hits"] >= 1
    _same_as_serial(serial, out)


DRIVER = """
import multiprocessing.forkserver as fs, os, sys, time
from onnxsqueeze.search.executor import ProcessExecutor
if __name__ == "__main__":
    ex = ProcessExecutor(2)
    ex._starting.join()
    workers = {ex._pool.submit(os.getpid).result() for _ in range(8)}
    print(fs._forkserver._forkserver_pid, *sorted(workers), flush=True)
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_killed_driver_leaves_no_worker_or_fork_server_behind(tmp_path):
    """SIGKILL runs no cleanup: the pool's workers (waiting on a queue whose other end they hold)
    and its fork server used to stay forever; they now watch their parent and exit."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) >= 2 and all(_alive(p) for p in pids), pids  # the fork server and its workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "left behind after the driver was killed"


RAY_DRIVER = """
import os, sys, time
from onnxsqueeze import rayhead
from onnxsqueeze.search.executor import RayExecutor
early = sys.argv[1] != "library"  # else: a library caller's executor starts its own instance
assert not early or rayhead.start_early(["squeeze", "m.onnx", "--ray", "--workers", "2"])
assert "typer" not in sys.modules and "onnxruntime" not in sys.modules  # started before the CLI
ex = RayExecutor(workers=2)
import ray
assert (ex._local is rayhead._EARLY) is early and ex._local.detached is early and ex.workers == 2
workers = sorted(set(ray.get(ex._warming)))
print(*workers, flush=True)
sys.stdin.readline()  # the test has listed this process's descendants
assert "onnxsqueeze.orphans" not in sys.modules  # the driver does not exit with its parent
if sys.argv[1] == "close":
    ex.close()  # leaves the instance to the process's exit, which SIGKILLs it (no 1.1-1.4 s wait)
elif sys.argv[1] == "library":
    ex.close()  # returns once the instance is shut down
    assert not ray.is_initialized() and not ex._local._thread.is_alive()
    print("closed", flush=True)
    time.sleep(300)
else:
    time.sleep(300)
"""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("end", ["close", "kill", "library"])
def test_the_clis_early_ray_instance_leaves_no_process_behind(tmp_path, end):
    """`squeeze --ray` starts its local Ray instance in a thread as the CLI starts, and that thread
    stays until the shutdown: Ray ties its node's processes to the thread that started them
    (PR_SET_PDEATHSIG), and an instance started by a thread that then ended lost its GCS ("Failed
    to connect to GCS within 60 seconds"). Closed, the executor leaves the instance to the
    process's exit, which kills its processes without ray.shutdown()'s waits; SIGKILLed, the driver's GCS and raylet die with it, their workers exit, and
    the raylet's two agents (which hung on, found by this test) are killed by a guard process.
    An executor made by a library caller starts its own instance and close() stops it."""
    ray = pytest.importorskip("ray")
    del ray
    script = tmp_path / "driver.py"
    script.write_text(RAY_DRIVER)
    # A cluster address in the environment (or a stale `ray start` file) is not --ray's instance.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "127.0.0.1:9"}
    proc = subprocess.Popen(
        [sys.executable, str(script), end], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    workers = [int(p) for p in proc.stdout.readline().split()]
    time.sleep(1.0)  # the instance up a while: its GCS alive though the tasks ran from the main thread
    pids = _descendants(proc.pid)
    assert len(workers) == 2 and set(workers) <= set(pids), (workers, pids)
    assert len(pids) >= 4 and all(_alive(p) for p in pids)  # the GCS, the raylet, ... and the workers
    proc.stdin.write("go\n")
    proc.stdin.close()
    if end == "library":
        assert proc.stdout.readline().strip() == "closed"
        assert not [p for p in pids if _alive(p)], "Ray processes left behind by close()"
    if end != "close":
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=120) == (0 if end == "close" else -signal.SIGKILL)
    deadline = time.monotonic() + (60 if end == "kill" else 0)
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "Ray processes left behind"


@pytest.mark.slow
def test_the_cli_with_its_early_ray_instance_gives_the_serial_bytes(assets, serial, tmp_path):
    """The command itself (its Ray instance started in its first lines, killed as it exits):
    the serial run's model and recipe, one line per point and none of Ray's log lines."""
    pytest.importorskip("ray")
    model, data = assets
    out = tmp_path / "cli-ray"
    cmd = [sys.executable, "-m", "onnxsqueeze", "squeeze", str(model), "--data", str(data), "-o", str(out),
           "--max-drop", "5", *FAST, "--no-cache", "--ray", "--workers", "2"]  # fmt: skip
    r = subprocess.run(
        cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    _same_as_serial(serial, out)
    assert json.loads((out / "results.json").read_text())["executor"].startswith("Ray (a local Ray instance)")
    assert not [ln for ln in r.stderr.splitlines() if " WARNING " in ln or " INFO " in ln], r.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["squeeze", "m.onnx", "--workers", "2"],
        ["squeeze", "m.onnx", "--ray-address", "h:6379", "--ray"],
        ["squeeze", "--help", "--ray"],
        ["prune", "m.onnx", "--ray"],
        [],
    ],
)
def test_no_early_ray_instance_without_a_local_one(argv):
    from onnxsqueeze import rayhead

    assert rayhead.start_early(argv) is False and rayhead._EARLY is None


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_serial_best_model_byte_for_byte(assets, serial, tmp_path, local_ray):
    model, data = assets
    results = _squeeze(model, data, tmp_path / "ray", "--no-cache", "--ray")
    _same_as_serial(serial, tmp_path / "ray")
    assert results["executor"].startswith("Ray (a local Ray instance), 2 tasks")


@pytest.mark.slow
def test_a_failing_ray_task_is_reported_per_candidate(assets, tmp_path, local_ray):
    from onnxsqueeze import search as S

    model, data = assets
    options = S.SqueezeOptions(budget=Budget(5.0), objective="size", techniques=("int8",))
    squeezer = S.make_squeezer(model, data, options=options, out_dir=tmp_path, use_cache=False)
    squeezer.prepare()
    with make_executor(ray=True) as executor:  # closed: the driver's sessions spin again
        handle = executor.register(squeezer)
        assert (
            "worker failed"
            in executor.run(handle, {"settings": {"no-such-knob": 1}, "students": {}})["doc"]["error"]
        )
        assert executor.run(handle, {"settings": {}, "students": {}})["doc"]["metric"] > 0


def test_ray_without_the_extra_is_one_line(assets, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    model, data = assets
    r = runner.invoke(app, ["squeeze", str(model), "--data", str(data), "-o", str(tmp_path / "o"), "--ray"])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'onnxsqueeze[ray]'" in lines[0]


def test_a_replica_made_before_the_plans_binds_them_from_each_request(assets, tmp_path):
    """The spec is shipped before the plans (so students can train from the start); a request
    carries the driver's plans, and the replica measures exactly what the driver measures."""
    from onnxsqueeze import search as S
    from onnxsqueeze.search.squeezer import build_replica

    model, data = assets
    options = S.SqueezeOptions(
        budget=Budget(5.0), objective="size", techniques=("int8",), latency_seconds=0.02
    )
    squeezer = S.make_squeezer(model, data, options=options, out_dir=tmp_path, use_cache=False)
    replica = build_replica(squeezer.worker_spec())  # before any plan
    assert squeezer.plans == {} and replica.knobs[0].plan is not None
    squeezer.prepare()
    squeezer.evaluate({})  # the baseline, which a replica's early stopping compares against
    settings = {"int8": squeezer.knobs[0].settings[0]}
    reply = replica.measure_request(squeezer._request(settings))
    assert replica.plans == squeezer.plans and replica.knobs[0].plan is None
    assert [k.settings for k in replica.knobs] == [k.settings for k in squeezer.knobs]
    own = squeezer.measure_request(squeezer._request(settings))["doc"]
    assert (reply["doc"]["metric"], reply["doc"]["size"]) == (own["metric"], own["size"])
    assert reply["doc"].get("error") is None


def test_a_worker_runs_one_session_thread_but_times_with_the_runs_threads():
    """Two workers on two cores: scoring sessions one thread each; timing keeps threads=0
    (onnxruntime's default, one per core), as in the serial run."""
    from onnxsqueeze import runtime
    from onnxsqueeze.search.executor import _worker_process

    try:
        _worker_process()
        assert runtime.session(cnn()).get_session_options().intra_op_num_threads == 1
        assert runtime.session(cnn(), threads=0).get_session_options().intra_op_num_threads == 0
        assert runtime.session(cnn(), threads=2).get_session_options().intra_op_num_threads == 2
    finally:
        runtime.set_default_threads(None)
    assert runtime.session(cnn()).get_session_options().intra_op_num_threads == 0


def test_default_executor_runs_in_process():
    e = make_executor()
    assert type(e) is Executor and e.workers == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["squeeze", "m.onnx", "--workers", "1"],
        ["squeeze", "m.onnx", "--workers=x"],
        ["squeeze", "m.onnx", "--ray", "--workers", "2"],
        ["squeeze", "m.onnx", "--ray-address=h:6379", "--workers=2"],
        ["prune", "m.onnx", "--workers", "2"],
        [],
    ],
)
def test_no_early_fork_server_without_a_local_pool(argv):
    from onnxsqueeze.forkserver import start_early

    assert start_early(argv) is False


def test_the_cli_starts_the_pools_fork_server_before_importing_itself():
    """`squeeze --workers 2`: the fork server starts before the CLI imports typer or onnxruntime,
    and the pool's workers are forked from that one server."""
    code = (
        "import os, sys\n"
        "from onnxsqueeze.forkserver import start_early\n"
        "assert start_early(['squeeze', 'm.onnx', '--workers=2'])\n"
        "assert 'typer' not in sys.modules and 'onnxruntime' not in sys.modules\n"
        "from multiprocessing import forkserver\n"
        "server = forkserver._forkserver._forkserver_pid\n"
        "from onnxsqueeze.search.executor import ProcessExecutor\n"
        "e = ProcessExecutor(2)\n"
        "parent = e._pool.submit(os.getppid).result()\n"
        "e.close()\n"
        "print(server, parent)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    server, parent = r.stdout.split()
    assert server == parent


SLOW_REPLICA = """
import multiprocessing.util, shutil, time
from onnxsqueeze import scratch

class Replica:
    def measure_request(self, request):
        time.sleep(request["sleep"])
        return {"doc": {"metric": 1.0}, "students": {}, "transient": False}

def build(spec):  # a scratch folder as build_replica's: removed by a worker that exits normally
    folder = scratch.make()
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(folder,), exitpriority=0)
    return Replica()
"""

ABANDONING_DRIVER = """
import os, sys, threading
from onnxsqueeze.search.algorithm import speculative
from onnxsqueeze.search.executor import ProcessExecutor, RayExecutor, WorkerSpec
import slowreplica

spec = WorkerSpec(model=b"", model_sha256="-", eval_inputs={}, eval_labels=None, metric="accuracy",
                  output=None, threshold=0.5, calibration_inputs=None, calibration_labels=None,
                  train_inputs=None, train_labels=None, options=None, build=slowreplica.build)

class Driver:
    def worker_spec(self):
        return spec

e = ProcessExecutor(2) if sys.argv[1] == "pool" else RayExecutor(workers=2)
handle = e.register(Driver())
replies = {}

def send(name, flag, sleep):
    token = speculative.set(flag)
    try:
        replies[name] = e.run(handle, {"sleep": sleep})
    finally:
        speculative.reset(token)

def out(n):
    while len(e._out) < n:
        threading.Event().wait(0.01)

# The path's request (no flag) out beside one run ahead: abandon() stops nothing.
path = threading.Thread(target=send, args=("path", None, 1.0))
ahead = threading.Thread(target=send, args=("kept", threading.Event(), 1.0))
path.start(); ahead.start(); out(2)
e.abandon()
path.join(); ahead.join()
# Two requests run ahead, never claimed: both stopped at once (they would sleep 10 minutes).
threads = [threading.Thread(target=send, args=(n, threading.Event(), 600)) for n in ("a", "b")]
for t in threads:
    t.start()
out(2)
threading.Event().wait(0.5)  # both in a worker
e.abandon()
for t in threads:
    t.join()
send("after", None, 0.0)  # a fresh pool serves the next request
e.close()
for name in ("path", "kept", "a", "b", "after"):
    r = replies[name]
    print(name, r.get("abandoned", False), r.get("transient"), r["doc"].get("metric"))
"""


@pytest.mark.parametrize("kind", ["pool", pytest.param("ray", marks=pytest.mark.slow)])
def test_executors_stop_requests_no_one_waits_for(tmp_path, kind):
    """abandon(): requests run ahead of the search's path and never claimed are stopped (pool:
    their workers killed; Ray: the tasks cancelled), each a transient failure marked abandoned,
    neither cached nor counted; a request the path or a training waits for is never stopped."""
    if kind == "ray":
        pytest.importorskip("ray")
    (tmp_path / "slowreplica.py").write_text(SLOW_REPLICA)
    tmp = Path(tempfile.mkdtemp(prefix="osq-", dir="/tmp"))  # short: the fork server's socket lives there
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "TMPDIR": str(tmp)}
    r = subprocess.run(
        [sys.executable, "-c", ABANDONING_DRIVER, kind], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    if kind == "pool":  # the killed workers' scratch folders went with them (scratch.sweep)
        assert not list(tmp.glob("onnxsqueeze-worker-*"))
    shutil.rmtree(tmp, ignore_errors=True)
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()}
    assert rows["path"] == ["False", "False", "1.0"] and rows["kept"] == ["False", "False", "1.0"]
    assert rows["a"][:2] == ["True", "True"] and rows["b"][:2] == ["True", "True"]
    assert rows["after"] == ["False", "False", "1.0"]


SLOW_EXIT = """
import atexit, time
atexit.register(time.sleep, 60)  # an interpreter teardown as slow as one with torch loaded, and more
"""

STOPPING_DRIVER = """
import os, sys
from multiprocessing import forkserver
from onnxsqueeze import forkserver as ours
from onnxsqueeze.search.executor import ProcessExecutor
e = ProcessExecutor(2, preload=("slowexit",))
first = e._pool.submit(os.getppid).result()
e.close()
ours.stop()  # what the exit does: killed and reaped, its state reset
assert not os.path.exists(f"/proc/{first}") and forkserver._forkserver._forkserver_pid is None
e = ProcessExecutor(2, preload=("slowexit",))  # a later pool starts a new server
second = e._pool.submit(os.getppid).result()
e.close()
print(first, second, flush=True)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_the_fork_server_is_stopped_as_the_driver_exits(tmp_path):
    """The server used to exit after the driver by tearing its interpreter down (~0.9 s with torch
    loaded), holding the command's output streams meanwhile. It is now killed and reaped as the
    driver exits: here a server whose teardown would last a minute is gone when the driver is."""
    (tmp_path / "slowexit.py").write_text(SLOW_EXIT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    with open(tmp_path / "out.txt", "w") as out:  # a file, not a pipe: the server's exit is not waited for
        proc = subprocess.run([sys.executable, "-c", STOPPING_DRIVER], env=env, stdout=out, timeout=300)
    assert proc.returncode == 0
    first, second = (int(p) for p in (tmp_path / "out.txt").read_text().split())
    assert first != second
    assert not _alive(first) and not _alive(second)


def test_the_drivers_sessions_do_not_spin_while_a_pool_runs():
    """A spinning onnxruntime thread of the driver would take a core from a worker; timing
    sessions (explicit threads) and the same session's outputs are unchanged."""
    from onnxsqueeze import runtime

    def spinning(sess):
        try:
            return sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        except Exception:  # not set: onnxruntime's default (spin)
            return None

    x = {"x": rand((4, 3, 8, 8), 5)}
    before = runtime.session(cnn()).run(None, x)[0]
    pool = ProcessExecutor(2)
    try:
        quiet = runtime.session(cnn())
        assert spinning(quiet) == "0"
        assert spinning(runtime.session(cnn(), threads=0)) is None
        np.testing.assert_array_equal(quiet.run(None, x)[0], before)
    finally:
        pool.close()
    assert spinning(runtime.session(cnn())) is None


def test_a_freed_worker_takes_the_paths_request_before_a_speculative_one():
    """The executor's gate: with every worker busy, a request of the search's path that arrives
    after a speculative one still goes first; a speculative one the path has claimed counts as
    the path's."""
    from onnxsqueeze.search.algorithm import speculative
    from onnxsqueeze.search.executor import _Gate

    gate = _Gate(1)
    order: list[str] = []
    release = threading.Event()

    def hold():
        with gate.slot():
            release.wait(10)

    def request(name: str, flag: threading.Event | None):
        speculative.set(flag)
        with gate.slot():
            order.append(name)

    holder = threading.Thread(target=hold)
    holder.start()
    while gate.out == 0:
        time.sleep(0.005)
    claimed = threading.Event()
    threads = []
    for name, flag in (("ahead", threading.Event()), ("claimed", claimed), ("path", None)):
        threads.append(threading.Thread(target=request, args=(name, flag)))
        threads[-1].start()
        while len(gate.waiting) < len(threads):
            time.sleep(0.005)
    claimed.set()
    release.set()
    for t in [holder, *threads]:
        t.join(10)
    assert order == ["claimed", "path", "ahead"]
    # A student's training returned: its worker waits for the path's request on it a moment.
    order.clear()
    with gate.slot(hold=True):
        pass
    ahead = threading.Thread(target=request, args=("ahead", threading.Event()))
    ahead.start()
    time.sleep(0.1)
    assert order == []
    path = threading.Thread(target=request, args=("path", None))
    path.start()
    for t in (path, ahead):
        t.join(10)
    assert order == ["path", "ahead"]


@pytest.mark.slow
def test_pool_workers_leave_no_scratch_behind(assets, serial, tmp_path):
    """`python -m onnxsqueeze squeeze --workers 2` (the fork server started early by the CLI):
    the serial result, and the workers' scratch folders (students, soft labels) are removed as
    they exit (they end with os._exit: no atexit)."""
    import tempfile

    model, data = assets
    tmp = Path(tempfile.mkdtemp(prefix="osq-", dir="/tmp"))  # short: the fork server's socket lives there
    out = tmp_path / "pool"
    cmd = [sys.executable, "-m", "onnxsqueeze", "squeeze", str(model), "--data", str(data), "-o", str(out),
           "--max-drop", "5", *FAST, "--no-cache", "--workers", "2"]  # fmt: skip
    r = subprocess.run(
        cmd, capture_output=True, text=True, env=os.environ | {"TMPDIR": str(tmp)}, timeout=900
    )
    assert r.returncode == 0, r.stderr[-2000:]
    _same_as_serial(serial, out)
    deadline = time.monotonic() + 30  # the workers exit just after the driver
    while list(tmp.glob("onnxsqueeze-worker-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(tmp.glob("onnxsqueeze-worker-*"))
    shutil.rmtree(tmp, ignore_errors=True)


def test_a_temp_folder_too_long_for_a_unix_socket_spawns_the_workers(tmp_path, monkeypatch):
    """The fork server's socket path must fit in 107 bytes: under a long TMPDIR the pool spawns
    its workers (they still work) instead of failing with "AF_UNIX path too long"."""
    import tempfile

    from onnxsqueeze import forkserver
    from onnxsqueeze.search.executor import _start_method

    if not forkserver.usable():
        pytest.skip("no fork server on this platform or temp folder")
    long = tmp_path / ("x" * 90)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    assert not forkserver.usable()
    assert _start_method(()).get_start_method() == "spawn"
    assert not forkserver.start_early(["squeeze", "m.onnx", "--workers", "2"])
    with ProcessExecutor(2) as ex:
        assert ex._pool.submit(os.getpid).result(timeout=300) != os.getpid()


def test_the_driver_imports_the_plots_library_once_its_candidates_are_out():
    """The driver waits while its workers measure: it imports matplotlib (pareto.png) meanwhile,
    from the first candidate on (not for a student's training sent at the start)."""
    e = Executor()
    e._driver_waits({"train": "cnn8"})
    assert not getattr(e, "_waiting", False)
    e._driver_waits({"settings": {}})
    assert e._waiting
    done = [t for t in threading.enumerate() if t.name == "import-outputs"]
    for t in done:
        t.join(60)
    assert "matplotlib.pyplot" in sys.modules
