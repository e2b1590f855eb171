"""Signals at random moments, in subprocesses: SIGINT exits 130, SIGTERM 143, each with one line;
no temp file is left, the inputs are unchanged, and a model on disk always has its manifest."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onnxsqueeze import io as sio
from tests.fuzz.conftest import SIGNAL_RUNS, snapshot
from tests.helpers import model_from_text, rand

ROOT = Path(__file__).resolve().parents[2]

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 256] x) => (float[N, 256] y) {
    h = MatMul (x, w1)
    r = Relu (h)
    y = MatMul (r, w2)
}
"""


@pytest.mark.parametrize("run", range(SIGNAL_RUNS))
def test_signal_at_a_random_moment(tmp_path: Path, run: int) -> None:
    rng = random.Random(run)
    signum = rng.choice([signal.SIGINT, signal.SIGTERM])
    model = sio.save(
        model_from_text(TEXT, {"w1": rand((256, 256), 1), "w2": rand((256, 256), 2)}),
        tmp_path / "m.onnx",
        external_data=rng.random() < 0.5,
    )
    before = snapshot(tmp_path)
    out = tmp_path / "out" / "h.onnx"
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxsqueeze", "fp16", str(model), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    time.sleep(rng.uniform(0.05, 6.0))  # from the interpreter's start to the final renames
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    expected = {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    code = proc.returncode
    # 0: it finished first; -signum: the signal came before the handlers (interpreter start-up)
    assert code in (0, expected, -signum), err
    assert "Traceback" not in err, err
    if code == expected:
        word = "interrupted" if signum == signal.SIGINT else "terminated"
        assert err.strip().splitlines()[-1].endswith(word), err
    assert snapshot(tmp_path) | {"out": before.get("out", "")} == before | {"out": before.get("out", "")}
    litter = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not litter, litter
    if out.exists():
        assert Path(f"{out}.manifest.json").exists()


def _catches_sigterm(pid: int) -> bool:
    """Whether ``pid`` has a handler for SIGTERM (Python has none by default: it is ours)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


# How the two entry points start: ``python -m onnxsqueeze`` and the console script's own lines.
ENTRY_POINTS = {
    "module": ["-m", "onnxsqueeze"],
    "script": ["-c", "import sys; from onnxsqueeze.__main__ import main; sys.exit(main())"],
}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads handlers from /proc")
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("after", [0.0, 0.02, 0.2, 1.0])
def test_signal_during_start_up(tmp_path: Path, entry: str, signum: int, after: float) -> None:
    """From the first instant the package's code runs (its SIGTERM handler appears in
    /proc/PID/status), through the heavy imports, a signal gives 130/143 and one line."""
    model = sio.save(
        model_from_text(TEXT, {"w1": rand((256, 256), 1), "w2": rand((256, 256), 2)}), tmp_path / "m.onnx"
    )
    proc = subprocess.Popen(
        [sys.executable, *ENTRY_POINTS[entry], "inspect", str(model)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while not _catches_sigterm(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, "no handler was installed"
        time.sleep(0.0005)
    time.sleep(after)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    expected = {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert proc.returncode in (0, expected), err  # 0: inspect finished before the signal
    assert "Traceback" not in err, err
    if proc.returncode == expected:
        word = "interrupted" if signum == signal.SIGINT else "terminated"
        lines = err.strip().splitlines()
        assert lines[-1] == f"error: {word}", err
        assert len([ln for ln in lines if ln.startswith("error:")]) == 1, err
