"""The CLI's one error boundary: every way a run ends is one line on stderr and an exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze.cli import _boundary, _entry
from tests.helpers import model_from_text, rand

ROOT = Path(__file__).resolve().parents[2]

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 64] x) => (float[N, 32] y) {
    y = MatMul (x, w)
}
"""


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return sio.save(model_from_text(TEXT, {"w": rand((64, 32), 1)}), tmp_path / "m.onnx", external_data=True)


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = _entry.run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["verify", "{m}", "{m}", "--tolerance", "nan"], 2, "'--tolerance': nan is not a finite number >= 0"),
        (["verify", "{m}", "{m}", "--tolerance", "-1"], 2, "-1.0 is not a finite number >= 0"),
        (["fp16", "{m}", "--bogus"], 2, "No such option: --bogus (see 'onnxsqueeze fp16 --help')"),
        (["fp16", "{m}"], 2, "Missing option '--output'"),
        (["fp16", "{m}", "-o", "{m}.data"], 2, "refusing to overwrite"),
        (["fp16", "{m}", "-o", "{d}"], 2, "is a directory"),
        (["fp16", "{m}", "-o", "{m}/x.onnx"], 2, "is a file, not a folder"),
        (["inspect", "/dev/zero"], 2, "is a device"),
        (["inspect", "{m}", "--input-shape", "x:1,2,3"], 0, None),
        (["verify", "{m}", "{m}", "--input-shape", "x:100000000000,64"], 2, "over the 8.0 GiB limit"),
    ],
)
def test_bad_invocations_are_one_line(
    capsys: pytest.CaptureFixture[str], model: Path, args: list[str], code: int, message: str | None
) -> None:
    data_before = (model.parent / "m.onnx.data").read_bytes()
    got, _, err = cli(capsys, *(a.format(m=model, d=model.parent) for a in args))
    assert got == code, err
    if message is not None:
        assert message in one_error_line(err)
    assert (model.parent / "m.onnx.data").read_bytes() == data_before
    assert sorted(p.name for p in model.parent.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_verify_on_meaningless_data_never_passes(capsys: pytest.CaptureFixture[str], model: Path) -> None:
    nan = model.parent / "nan.npz"
    np.savez(nan, x=np.full((4, 64), np.nan, np.float32))
    code, out, err = cli(capsys, "verify", model, model, "--data", nan, "--tolerance", "1")
    assert code == 2 and "holds 256 NaN/Inf value(s)" in one_error_line(err) and "within" not in out
    empty = model.parent / "empty.npz"
    np.savez(empty, x=np.zeros((0, 64), np.float32))
    code, out, err = cli(capsys, "verify", model, model, "--data", empty)
    assert code == 2 and "holds 0 samples" in one_error_line(err)


def test_prune_on_empty_data_writes_nothing(capsys: pytest.CaptureFixture[str], model: Path) -> None:
    empty = model.parent / "empty.npz"
    np.savez(empty, x=np.zeros((0, 64), np.float32))
    code, _, err = cli(
        capsys, "prune", model, "--sparsity", "0.5", "--data", empty, "-o", model.parent / "p.onnx"
    )
    assert code == 2 and "0 samples" in one_error_line(err)
    assert not (model.parent / "p.onnx").exists()


def test_fp16_that_converts_nothing_exits_1(capsys: pytest.CaptureFixture[str], model: Path) -> None:
    out = model.parent / "h.onnx"
    code, _, err = cli(capsys, "fp16", model, "-o", out, "--tolerance", "1e-12")
    line = one_error_line(err)
    # an impossible budget: either every node stays float32 (nothing converted) or the budget fails
    assert code == 1 and ("nothing was converted" in line or "beyond the budget" in line)
    assert not out.exists()


def test_written_model_has_its_manifest(capsys: pytest.CaptureFixture[str], model: Path) -> None:
    out = model.parent / "h.onnx"
    code, _, err = cli(capsys, "fp16", model, "-o", out)
    assert code == 0, err
    assert out.exists() and Path(f"{out}.manifest.json").exists()
    assert not [p for p in model.parent.iterdir() if p.name.endswith(".tmp")]


def test_describe_maps_pass_and_os_errors() -> None:
    from onnx_ir.passes import PassError, PostconditionError, PreconditionError

    assert _boundary.describe(PreconditionError("needs a static shape")) == (
        "the model does not meet a pass's requirements: needs a static shape",
        2,
    )
    assert _boundary.describe(PostconditionError("bad"))[1] == 1  # type: ignore[index]
    assert _boundary.describe(PassError("x"))[1] == 1  # type: ignore[index]
    assert _boundary.describe(PermissionError(13, "Permission denied", "/x")) == ("/x: Permission denied", 2)
    assert _boundary.describe(ValueError("a bug")) is None  # a bug keeps its traceback
    assert _boundary.one_line("input 'a\nb'\n") == "input 'a\\nb'"


def wait_for_handlers(pid: int, timeout: float = 60.0) -> None:
    """Wait until the process catches SIGTERM: the first thing the CLI's main() does.

    Before that, Python itself is starting (a signal then is the interpreter's to handle).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.005)
    raise AssertionError("the CLI never installed its signal handlers")


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "onnxsqueeze", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_signal_during_startup_is_one_line(model: Path, signum: int, code: int, word: str) -> None:
    """A signal while the heavy libraries are still importing exits cleanly, not with a traceback."""
    proc = _spawn("verify", str(model), str(model))
    wait_for_handlers(proc.pid)  # main() has started; onnxruntime and friends are still importing
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:  # finished first on a fast machine: nothing to check
        return
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"error: {word}"


def test_a_signal_turned_into_another_error_on_its_way_out_is_still_the_signal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """onnxruntime interrupted while importing raises ImportError('initialization failed') from
    the KeyboardInterrupt: exit 130 / 'interrupted', no traceback (seen once in a CI fuzz run)."""
    import onnxsqueeze.cli.app as cli_app

    def interrupted_import(**_: object) -> None:
        _boundary._received.append(signal.SIGINT)  # what the handler records before raising
        raise ImportError("initialization failed")

    monkeypatch.setattr(cli_app, "app", interrupted_import)
    try:
        code = _entry.run(["inspect", "m.onnx"])
    finally:
        del _boundary._received[:]
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: interrupted"


def test_a_signal_that_lands_in_a_finalizer_still_stops_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A KeyboardInterrupt raised inside a ``__del__`` or weakref callback (importlib's module-lock
    callback, seen in a CI fuzz run) is swallowed by CPython and printed with a traceback: the run
    delivers the signal again, stops, and says one line."""
    import onnxsqueeze.cli.app as cli_app

    finished: list[bool] = []

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100_000):  # the handler runs here, inside the finalizer
                pass

    def work(**_: object) -> None:
        obj = Finalized()
        del obj
        for _ in range(10_000_000):  # the redelivered signal stops this loop
            pass
        finished.append(True)

    monkeypatch.setattr(cli_app, "app", work)
    previous_hook = sys.unraisablehook
    try:
        code = _entry.run(["inspect", "m.onnx"])
    finally:
        del _boundary._received[:]
    err = capsys.readouterr().err
    assert code == 130 and not finished
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines() == ["error: interrupted"]
    assert sys.unraisablehook is previous_hook  # put back after the run


def test_a_signal_inside_deferred_signals_unwinds_the_run_once_the_block_is_done() -> None:
    """Inside ``deferred_signals`` (the import of onnx's C++ extension, which aborts the process
    when a KeyboardInterrupt is raised in its module initialisation) the handler only records the
    signal; the block runs to its end, then the run unwinds as for any signal."""
    previous = _boundary.install_signal_handlers()
    finished: list[bool] = []
    try:
        with pytest.raises(KeyboardInterrupt), _boundary.deferred_signals():
            signal.raise_signal(signal.SIGTERM)
            finished.append(True)  # not interrupted: the handler ran and returned
        assert finished == [True]
        assert _boundary.interrupted_exit_code() == 143
        del _boundary._received[:]
        with _boundary.deferred_signals():  # no signal: nothing raised after the block
            pass
    finally:
        _boundary.restore_signal_handlers(previous)
        del _boundary._received[:]


def test_non_terminal_output_is_not_cut(tmp_path: Path) -> None:
    long = "an_input_name_long_enough_to_overflow_eighty_columns_in_any_table_rich_would_draw_x"
    text = TEXT.replace(" x)", f" {long})").replace("(x,", f"({long},")
    path = sio.save(model_from_text(text, {"w": rand((64, 32), 1)}), tmp_path / "m.onnx")
    proc = _spawn("inspect", str(path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert long in out and "…" not in out
