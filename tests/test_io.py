"""Model I/O: every bad input is one SqueezeError; saves are atomic, deterministic and safe."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxsqueeze import io as sio
from onnxsqueeze.errors import InputError, ModelLoadError, SqueezeError
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 3] y) {
    y = Gemm <transB = 1> (x, w, b)
}
"""


def small_model() -> onnx.ModelProto:
    return model_from_text(TEXT, {"w": rand((3, 4), 1), "b": rand((3,), 2)})


def big_model() -> onnx.ModelProto:
    return model_from_text(TEXT.replace("3]", "300]"), {"w": rand((300, 4), 1), "b": rand((300,), 2)})


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    sio.save(small_model(), path)
    return path


def test_load_roundtrip(model_file: Path) -> None:
    model = sio.load(model_file)
    assert model.graph.node[0].op_type == "Gemm"
    assert sio.load_ir(model_file).graph.num_nodes() == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.onnx", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.onnx", b""), "empty file"),
        (lambda d: _write(d / "text.onnx", b"hello, I am not a model\n"), "not an ONNX model"),
        (lambda d: _write(d / "json.onnx", b'{"graph": []}'), "not an ONNX model"),
    ],
)
def test_bad_files(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ModelLoadError) as e:
        sio.load(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_truncated_file(tmp_path: Path, model_file: Path) -> None:
    data = model_file.read_bytes()
    path = _write(tmp_path / "cut.onnx", data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cut.onnx"):
        sio.load(path)


def test_invalid_graph_fails_checker(tmp_path: Path) -> None:
    model = small_model()
    model.graph.node[0].input[1] = "nonexistent"
    path = _write(tmp_path / "bad.onnx", model.SerializeToString())
    with pytest.raises(ModelLoadError, match="invalid model"):
        sio.load(path)


def test_opset_too_new(tmp_path: Path) -> None:
    model = small_model()
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
    path = _write(tmp_path / "new.onnx", model.SerializeToString())
    with pytest.raises(ModelLoadError, match="newer than the installed onnx"):
        sio.load(path)


def _external(tmp_path: Path) -> Path:
    path = tmp_path / "ext" / "m.onnx"
    sio.save(big_model(), path, external_data=True)
    return path


def test_external_data_roundtrip(tmp_path: Path) -> None:
    path = _external(tmp_path)
    assert (path.parent / "m.onnx.data").exists()
    raw = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in raw.graph.initializer)
    loaded = sio.load(path)
    w = next(t for t in loaded.graph.initializer if t.name == "w")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(w), rand((300, 4), 1))


def _rewrite_location(path: Path, location: str) -> None:
    raw = onnx.load(str(path), load_external_data=False)
    for t in raw.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(raw.SerializeToString())


def test_external_data_missing(tmp_path: Path) -> None:
    path = _external(tmp_path)
    (path.parent / "m.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="is missing"):
        sio.load(path)


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin", "/etc/passwd"])
def test_external_data_traversal_refused(tmp_path: Path, location: str) -> None:
    path = _external(tmp_path)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 100000)
    _rewrite_location(path, location)
    with pytest.raises(ModelLoadError, match="refused"):
        sio.load(path)


def test_external_data_truncated(tmp_path: Path) -> None:
    path = _external(tmp_path)
    data = path.parent / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="truncated"):
        sio.load(path)


@pytest.mark.parametrize("length", ["0", "100", None])
def test_external_data_of_the_wrong_size_is_refused(tmp_path: Path, length: str | None) -> None:
    """A length that disagrees with the tensor's shape (0 bytes for a [300, 4] float, found by the
    structural fuzz test: inspect crashed reshaping the empty data), or no length with a file
    longer than the tensor, is refused in one line as the model loads."""
    path = _external(tmp_path)
    if length is None:
        data = path.parent / "m.onnx.data"
        data.write_bytes(data.read_bytes() + b"\0" * 8)
    raw = onnx.load(str(path), load_external_data=False)
    for t in raw.graph.initializer:
        entries = [e for e in t.external_data if e.key != "length"]
        del t.external_data[:]
        t.external_data.extend(entries)
        if length is not None and t.data_location == onnx.TensorProto.EXTERNAL:
            entry = t.external_data.add()
            entry.key, entry.value = "length", length
    path.write_bytes(raw.SerializeToString())
    with pytest.raises(ModelLoadError, match=r"has \d+ bytes where its shape \[300, 4\] needs 4800"):
        sio.load(path)


def test_large_models_go_external_automatically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The 2 GB limit itself cannot be reached in a unit test: lower the threshold instead.
    monkeypatch.setattr(sio, "PROTO_LIMIT", 2000)
    path = sio.save(big_model(), tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    assert path.stat().st_size < 2000
    assert len(sio.load(path).graph.initializer) == 2


def test_save_is_byte_identical(tmp_path: Path) -> None:
    a = sio.save(small_model(), tmp_path / "a.onnx")
    b = sio.save(sio.load(a), tmp_path / "b.onnx")
    c = sio.save(sio.load_ir(a), tmp_path / "c.onnx")
    d = sio.save(sio.load_ir(a), tmp_path / "d.onnx")
    assert a.read_bytes() == b.read_bytes()
    assert sio.sha256_file(c) == sio.sha256_file(d)


def test_refuses_to_overwrite_input(model_file: Path) -> None:
    before = model_file.read_bytes()
    with pytest.raises(InputError, match="refusing to overwrite the input"):
        sio.save(small_model(), model_file, protect=[model_file])
    link = model_file.parent / "alias.onnx"
    os.symlink(model_file, link)
    with pytest.raises(InputError):
        sio.save(small_model(), link, protect=[model_file])
    assert model_file.read_bytes() == before


@pytest.mark.parametrize(
    ("error", "raised"),
    [(OSError(28, "No space left on device"), InputError), (KeyboardInterrupt(), KeyboardInterrupt)],
)
def test_failed_save_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, raised: type[BaseException]
) -> None:
    """An OS error while writing becomes one line naming the output; nothing is left behind."""

    def boom(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(
        raised, match="out.onnx: cannot write: No space left" if raised is InputError else None
    ):
        sio.save(small_model(), tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = sio.save(small_model(), tmp_path / "out.onnx")
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(InputError, match="cannot write: crash"):
        sio.save(big_model(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]


def test_saved_file_has_normal_permissions(tmp_path: Path) -> None:
    path = sio.save(small_model(), tmp_path / "m.onnx")
    assert path.stat().st_mode & 0o044  # readable by others (not mkstemp's 0600)


def test_refuse_overwrite_sees_through_spelling_and_hard_links(model_file: Path) -> None:
    sio.refuse_overwrite(model_file.parent / "other.onnx", [model_file])  # a different file is fine
    with pytest.raises(InputError, match="refusing to overwrite"):
        sio.refuse_overwrite(model_file.parent / "." / model_file.name, [str(model_file)])
    hard = model_file.parent / "hard.onnx"
    os.link(model_file, hard)
    with pytest.raises(InputError, match="refusing to overwrite"):
        sio.refuse_overwrite(hard, [model_file])


def test_set_default_mode_opens_up_staged_folders(tmp_path: Path) -> None:
    import tempfile

    stage = Path(tempfile.mkdtemp(dir=tmp_path))
    assert stage.stat().st_mode & 0o077 == 0  # mkdtemp: private to its writer
    sio.set_default_mode(stage)
    mask = os.umask(0)
    os.umask(mask)
    assert stage.stat().st_mode & 0o777 == 0o777 & ~mask


def test_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such data file"):
        sio.load_npz(tmp_path / "none.npz")
    bad = _write(tmp_path / "bad.npz", b"garbage")
    with pytest.raises(InputError, match="not a readable .npz"):
        sio.load_npz(bad)
    good = sio.save_npz(tmp_path / "ok.npz", {"x": np.arange(3)})
    np.testing.assert_array_equal(sio.load_npz(good)["x"], np.arange(3))


VALID = small_model().SerializeToString()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(1, len(VALID)),
)
def test_mutated_bytes_only_raise_squeeze_errors(
    tmp_path: Path, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(VALID[:cut])
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    path = tmp_path / "fuzz.onnx"
    path.write_bytes(bytes(data))
    try:
        sio.load(path)
    except SqueezeError as e:
        assert "\n" not in str(e)


# --- outputs are checked before the work against every file the inputs reference -------------


def test_external_data_of_an_input_is_protected(tmp_path: Path) -> None:
    """Writing over the model's external-data file (by name, symlink or hard link) is refused."""
    model = _external(tmp_path)
    data = model.parent / "m.onnx.data"
    before = data.read_bytes()
    link = tmp_path / "alias.bin"
    os.symlink(data, link)
    hard = tmp_path / "hard.bin"
    os.link(data, hard)
    for target in (data, link, hard):
        with pytest.raises(InputError, match="refusing to overwrite .*a file an input references"):
            sio.refuse_overwrite(target, [model])
        with pytest.raises(InputError, match="refusing to overwrite"):
            sio.save(small_model(), target, protect=[model])
    assert data.read_bytes() == before
    # the output's own external data may not land on the input's either
    with pytest.raises(InputError, match="refusing to overwrite"):
        sio.refuse_overwrite(tmp_path / "other.onnx", [tmp_path / "other.onnx.data"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "f", b"x") / "out.onnx", "is a file, not a folder"),
        (lambda d: _write(d / "f", b"x") / "sub" / "out.onnx", "is a file, not a folder"),
        (lambda d: Path("/proc/onnxsqueeze-none/out.onnx"), "cannot write the output in /proc"),
    ],
)
def test_unwritable_outputs_refused_before_work(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(InputError, match=message):
        sio.check_outputs([make(tmp_path)], [])


def test_fifo_output_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="named pipe"):
        sio.check_output_path(fifo)


def test_output_folder_check(tmp_path: Path, model_file: Path) -> None:
    with pytest.raises(InputError, match="the output folder is a file"):
        sio.check_output_folder(model_file, ["report.md"], [model_file])
    with pytest.raises(InputError, match="refusing to overwrite the input"):
        sio.check_output_folder(model_file.parent, ["m.onnx"], [model_file])
    sio.check_output_folder(tmp_path / "new" / "folder", ["m.squeezed.onnx"], [model_file])
    assert not (tmp_path / "new").exists()  # a check creates nothing


# --- special files are refused without being opened -------------------------------------------


def test_fifo_and_devices_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(ModelLoadError, match="named pipe"):
        sio.load(fifo)
    with pytest.raises(ModelLoadError, match="is a device"):
        sio.load("/dev/zero")  # reading it would fill memory
    with pytest.raises(InputError, match="named pipe"):
        sio.load_npz(fifo)


@pytest.mark.parametrize(
    ("location", "message"),
    [("a\0b", "malformed location"), ("x" * 5000, "malformed location"), ("sub", "is a directory")],
)
def test_external_data_locations_that_are_not_files(tmp_path: Path, location: str, message: str) -> None:
    path = _external(tmp_path)
    (path.parent / "sub").mkdir()
    _rewrite_location(path, location)
    with pytest.raises(ModelLoadError, match=message):
        sio.load(path)


def test_external_data_fifo_is_not_called_missing(tmp_path: Path) -> None:
    path = _external(tmp_path)
    os.mkfifo(path.parent / "pipe")
    _rewrite_location(path, "pipe")
    with pytest.raises(ModelLoadError, match="named pipe"):
        sio.load(path)


# --- write order and temp files -------------------------------------------------------------------


def test_artifact_commit_renames_model_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash at the model's rename leaves no model and no temp file (the manifest went first)."""
    from onnxsqueeze.manifest import save_artifact, sidecar_path

    src = sio.save(small_model(), tmp_path / "src.onnx")
    out = tmp_path / "out.onnx"
    real_replace = os.replace
    order: list[str] = []

    def replace(a: str, b: object) -> None:
        order.append(Path(str(b)).name)
        if Path(str(b)) == out:
            raise KeyboardInterrupt  # killed between the two renames
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(big_model(), out, source_path=src)
    assert order == ["out.onnx.manifest.json", "out.onnx"]
    assert not out.exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    monkeypatch.setattr(os, "replace", real_replace)
    save_artifact(big_model(), out, source_path=src)
    assert out.exists() and sidecar_path(out).exists()


def test_stale_temps_of_dead_runs_are_cleaned(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = _write(tmp_path / f".out.onnx.{dead_pid}.abc123.tmp", b"half a model")
    live = _write(tmp_path / f".out.onnx.{os.getppid()}.def456.tmp", b"another run's")
    other = _write(tmp_path / f".other.onnx.{dead_pid}.x.tmp", b"not ours")
    sio.save(small_model(), tmp_path / "out.onnx")
    assert not stale.exists()
    assert live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["out.onnx"]


def test_remove_temps_removes_what_is_in_flight(tmp_path: Path) -> None:
    staged = sio.stage(big_model(), tmp_path / "m.onnx", external_data=True)
    assert len(list(tmp_path.iterdir())) == 2  # data and model, at temp names
    sio.remove_temps()
    assert list(tmp_path.iterdir()) == []
    staged.moves = []


def test_models_over_the_protobuf_limit_go_through_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The >2 GB code paths (sessions from a file, outputs with external data) on a small model,
    with the limit lowered to 12 KiB: what a 2.1 GB model takes, without 2.1 GB."""
    from onnxsqueeze.cli import _entry

    monkeypatch.setattr(sio, "PROTO_LIMIT", 12 * 1024)
    text = TEXT.replace("float[N, 3]", "float[N, 128]").replace("float[N, 4]", "float[N, 64]")
    weights = {"w": rand((128, 64), 1), "b": rand((128,), 2)}
    model = sio.save(model_from_text(text, weights), tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").exists()  # 32 KiB of weights (16 KiB in fp16): "over the limit"
    np.savez(tmp_path / "d.npz", x=rand((4, 64), 3))
    for args in (
        ["inspect", model],
        ["verify", model, model, "--data", tmp_path / "d.npz", "--tolerance", "0"],
        ["fp16", model, "-o", tmp_path / "h.onnx", "--data", tmp_path / "d.npz"],
        # --force: random weights lose the default task check at 50% (the gate has its own tests)
        ["prune", model, "--sparsity", "0.5", "-o", tmp_path / "p.onnx", "--force"],
    ):
        code = _entry.run([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 0, err
    for name in ("h.onnx", "p.onnx"):
        assert (tmp_path / f"{name}.data").exists() and (tmp_path / f"{name}.manifest.json").exists()
    pruned = sio.load(tmp_path / "p.onnx")
    w = next(onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer if t.name == "w")
    assert w.shape == (128, 64)
    assert 0.45 <= float(np.mean(w == 0)) <= 0.55
