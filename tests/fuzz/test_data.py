"""Mutated ``--data`` files: every bad array is one line (exit 2), a good one verifies, and a
verification never passes on NaN/Inf or on no sample."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxsqueeze import io as sio
from tests.fuzz.conftest import EXAMPLES, assert_clean_ending, assert_no_litter, run_cli, snapshot
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 6] x, int64[N] ids) => (float[N, 3] y) {
    h = MatMul (x, w)
    f = Cast <to = 1> (ids)
    u = Unsqueeze (f, axes)
    y = Add (h, u)
}
"""

DTYPES = st.sampled_from(
    ["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64", "<U3"]
)


@st.composite
def arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in draw(st.lists(st.sampled_from(["x", "ids", "labels", "other"]), unique=True, max_size=4)):
        dtype = np.dtype(draw(DTYPES))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7))
        if dtype.kind == "U":
            out[name] = np.full(shape, "abc", dtype=dtype)
        elif dtype.kind == "c":
            out[name] = np.ones(shape, dtype=dtype)
        else:
            elements = st.floats(allow_nan=True, allow_infinity=True, width=16) if dtype.kind == "f" else None
            out[name] = draw(hnp.arrays(dtype, shape, elements=elements))
    return out


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=arrays())
def test_mutated_npz(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], data: dict[str, np.ndarray]
) -> None:
    folder = tmp_path_factory.mktemp("npz")
    model = sio.save(
        model_from_text(TEXT, {"w": rand((6, 3), 1), "axes": np.array([1], np.int64)}), folder / "m.onnx"
    )
    npz = folder / "d.npz"
    np.savez(npz, **data)
    before = snapshot(folder)
    code, out, err = run_cli(capsys, "verify", model, model, "--data", npz, "--tolerance", "0", "--json")
    assert_clean_ending(code, err, allowed=(0, 2))
    if code == 0:
        x = np.asarray(data["x"])
        assert x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] == 6
        assert np.all(np.isfinite(x.astype(np.float64)))
        assert '"passed": true' in out
    code, _, err = run_cli(capsys, "fp16", model, "--data", npz, "-o", folder / "h.onnx", "--samples", "4")
    assert_clean_ending(code, err)
    if code == 0:
        assert (folder / "h.onnx.manifest.json").exists()
    after = {k: v for k, v in snapshot(folder).items() if not k.startswith("h.onnx")}
    assert after == before
    assert_no_litter(folder)
