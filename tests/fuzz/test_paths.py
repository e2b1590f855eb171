"""Path clashes: an output that is an input, a file an input references, or reaches one through a
symbolic or hard link, is refused before any work (exit 2) and nothing changes on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from onnxsqueeze import io as sio
from tests.fuzz.conftest import EXAMPLES, assert_clean_ending, assert_no_litter, run_cli, snapshot
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 64] x) => (float[N, 32] y) {
    y = MatMul (x, w)
}
"""

TARGETS = ["m.onnx", "m.onnx.data", "d.npz", "link-model", "link-data", "hard-data", "sub/../m.onnx.data"]
COMMANDS = st.sampled_from(["fp16", "prune", "apply-like"])


def setup(folder: Path, *, hard_link: bool = False) -> Path:
    model = sio.save(model_from_text(TEXT, {"w": rand((64, 32), 1)}), folder / "m.onnx", external_data=True)
    np.savez(folder / "d.npz", x=np.ones((2, 64), np.float32))
    os.symlink(folder / "m.onnx", folder / "link-model")
    os.symlink(folder / "m.onnx.data", folder / "link-data")
    if hard_link:  # onnx itself then refuses to load the data ("a potential hardlink attack")
        os.link(folder / "m.onnx.data", folder / "hard-data")
    (folder / "sub").mkdir()
    return model


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.sampled_from(TARGETS), command=st.sampled_from(["fp16", "prune"]), as_data=st.booleans())
def test_output_onto_an_input_is_refused(
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    target: str,
    command: str,
    as_data: bool,
) -> None:
    assume(target != "d.npz" or as_data)  # d.npz is an input only when given as --data
    folder = tmp_path_factory.mktemp("paths")
    model = setup(folder, hard_link=target == "hard-data")
    before = snapshot(folder)
    out = folder / target
    args: list[object] = [command, model, "-o", out]
    if command == "prune":
        args += ["--sparsity", "0.5"]
    if as_data:
        args += ["--data", folder / "d.npz"]
    code, _, err = run_cli(capsys, *args)
    assert_clean_ending(code, err, allowed=(2,))
    assert "refusing to overwrite" in err or (target == "hard-data" and "multiple hard links" in err)
    assert snapshot(folder) == before
    assert_no_litter(folder)


@pytest.mark.parametrize("case", ["model file", "data file", "data named like squeeze's file"])
def test_squeeze_folder_onto_inputs_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    model = setup(tmp_path)
    data = tmp_path / "d.npz"
    if case == "data named like squeeze's file":
        data = data.rename(tmp_path / "calibration.npz")
    before = snapshot(tmp_path)
    out = {"model file": model, "data file": data}.get(case, tmp_path)
    code, _, err = run_cli(capsys, "squeeze", model, "--data", data, "-o", out)
    assert_clean_ending(code, err, allowed=(2,))
    assert (
        "the output folder is a file" if case != "data named like squeeze's file" else "refusing to overwrite"
    ) in err
    assert snapshot(tmp_path) == before
    assert_no_litter(tmp_path)
