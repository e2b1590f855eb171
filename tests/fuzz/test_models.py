"""Mutated models: random bytes and structural mutations end in one line or a result, never a
traceback, and the input files are never changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxsqueeze import io as sio
from tests.fuzz.conftest import EXAMPLES, assert_clean_ending, assert_no_litter, run_cli, snapshot
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8] x) => (float[N, 4] y) {
    h = MatMul (x, w)
    r = Relu (h)
    y = Add (r, b)
}
"""

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def base_model() -> onnx.ModelProto:
    return model_from_text(TEXT, {"w": rand((8, 4), 1), "b": rand((4,), 2)})


VALID = base_model().SerializeToString()


@SETTINGS
@given(
    edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(1, len(VALID)),
)
def test_byte_mutations(
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    edits: list[tuple[int, int]],
    cut: int,
) -> None:
    folder = tmp_path_factory.mktemp("bytes")
    data = bytearray(VALID[:cut])
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    path = folder / "m.onnx"
    path.write_bytes(bytes(data))
    before = snapshot(folder)
    for args in (["inspect", path], ["verify", path, path, "--tolerance", "0"]):
        code, _, err = run_cli(capsys, *args)
        assert_clean_ending(code, err)
    assert snapshot(folder) == before
    assert_no_litter(folder)


ELEM_TYPES = [t for t in onnx.TensorProto.DataType.values() if t != onnx.TensorProto.STRING]


@st.composite
def mutated(draw: st.DrawFn) -> onnx.ModelProto:
    """A structurally mutated model: input dims, dtypes, names, initializers, external data."""
    m = base_model()
    vi = m.graph.input[0]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["dim", "rank", "dtype", "name", "drop_init", "init_dims", "external", "no_inputs"]
            )
        )
        if kind == "dim":
            dims = vi.type.tensor_type.shape.dim
            if dims:
                d = dims[draw(st.integers(0, len(dims) - 1))]
                choice = draw(st.sampled_from(["value", "param", "clear"]))
                if choice == "value":
                    d.dim_value = draw(st.sampled_from([0, 1, 3, 10**12, 2**62]))
                elif choice == "param":
                    d.dim_param = draw(st.text(min_size=1, max_size=5))
                else:
                    d.Clear()
        elif kind == "rank":
            vi.type.tensor_type.shape.dim.add().dim_value = draw(st.integers(1, 3))
        elif kind == "dtype":
            vi.type.tensor_type.elem_type = draw(st.sampled_from(ELEM_TYPES))
        elif kind == "name":
            name = draw(st.text(min_size=0, max_size=8))
            for node in m.graph.node:
                node.input[:] = [name if i == vi.name else i for i in node.input]
            vi.name = name
        elif kind == "drop_init" and m.graph.initializer:
            del m.graph.initializer[draw(st.integers(0, len(m.graph.initializer) - 1))]
        elif kind == "init_dims" and m.graph.initializer:
            init = m.graph.initializer[0]
            init.dims[:] = draw(st.lists(st.integers(0, 9), min_size=0, max_size=3))
        elif kind == "external" and m.graph.initializer:
            init = m.graph.initializer[0]
            init.ClearField("raw_data")
            del init.float_data[:]
            init.data_location = onnx.TensorProto.EXTERNAL
            del init.external_data[:]
            for key, value in (
                (
                    "location",
                    draw(st.sampled_from(["w.bin", "../w.bin", "sub", "", "a\0b", "x" * 5000, "fifo"])),
                ),
                ("offset", draw(st.sampled_from(["0", "-1", "9" * 30, "x"]))),
                ("length", draw(st.sampled_from(["128", "0", "99999999"]))),
            ):
                entry = init.external_data.add()
                entry.key, entry.value = key, value
        elif kind == "no_inputs":
            del m.graph.input[:]
    return m


@SETTINGS
@given(model=mutated())
def test_structural_mutations(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str], model: onnx.ModelProto
) -> None:
    import os

    folder = tmp_path_factory.mktemp("struct")
    (folder / "w.bin").write_bytes(rand((8, 4), 1).tobytes())
    (folder / "sub").mkdir()
    os.mkfifo(folder / "fifo")
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    before = snapshot(folder)
    for args in (
        ["inspect", path],
        ["verify", path, path, "--tolerance", "0"],
        ["fp16", path, "-o", folder / "out" / "h.onnx", "--samples", "2"],
    ):
        code, _, err = run_cli(capsys, *args)
        assert_clean_ending(code, err)
        if args[0] == "fp16" and code == 0:
            assert (folder / "out" / "h.onnx.manifest.json").exists()  # a written model has its manifest
    after = snapshot(folder)
    after.pop("out", None)
    assert after == before
    assert_no_litter(folder)


def test_the_base_model_passes_every_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The mutations start from a model every command accepts (so the fuzz tests mutations)."""
    path = sio.save(base_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.ones((3, 8), np.float32))
    for args in (
        ["inspect", path],
        ["verify", path, path, "--tolerance", "0", "--data", tmp_path / "d.npz"],
        ["fp16", path, "-o", tmp_path / "h.onnx"],
    ):
        code, _, err = run_cli(capsys, *args)
        assert code == 0, err
