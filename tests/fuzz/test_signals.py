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
