"""The streaming paths for models over ``io.STREAM_BYTES`` (fp16, prune --sparsity), taken on a
small model with external data by lowering the threshold: the same outputs as the in-memory
paths, a manifest, no temp files, inputs unchanged; squeeze's streaming search (search.streaming)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze.cli import _entry
from onnxsqueeze.verify import run
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 64] x) => (float[N, 32] y) {
    h = MatMul (x, w1)
    r = Relu (h)
    y = MatMul (r, w2)
}
"""


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    weights = {"w1": rand((64, 48), 1, scale=0.2), "w2": rand((48, 32), 2, scale=0.2)}
    model = sio.save(model_from_text(TEXT, weights), src / "m.onnx", external_data=True)
    assert (src / "m.onnx.data").exists()
    np.savez(src / "d.npz", x=rand((6, 64), 3))
    return model, src / "d.npz"


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = _entry.run([str(a) for a in args])
    return code, capsys.readouterr().err


def _assert_nothing_lost(model: Path, before: dict[str, str], folder: Path) -> None:
    """The inputs' folder is byte for byte what it was, and no temp file is left under ``folder``."""
    assert _digest(model.parent) == before
    litter = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not litter, litter


@pytest.mark.parametrize(
    "command",
    [
        ["fp16", "--data", "{data}", "--samples", "6"],
        ["prune", "--sparsity", "0.5", "--eval-data", "{data}", "--force"],
    ],
    ids=["fp16", "prune"],
)
def test_streamed_result_matches_the_in_memory_one(
    tmp_path: Path,
    source: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    model, data = source
    args = [a.replace("{data}", str(data)) for a in command]
    before = _digest(model.parent)
    code, err = _cli(capsys, args[0], model, "-o", tmp_path / "mem" / "o.onnx", *args[1:], "--json")
    assert code == 0, err
    monkeypatch.setattr(sio, "STREAM_BYTES", 1)
    code, err = _cli(capsys, args[0], model, "-o", tmp_path / "str" / "o.onnx", *args[1:])
    assert code == 0, err

    streamed, in_memory = tmp_path / "str" / "o.onnx", tmp_path / "mem" / "o.onnx"
    # the streamed result keeps its weights in external data, referenced (not loaded) here
    proto = onnx.load(str(streamed), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer if t.dims)
    manifest = json.loads(Path(f"{streamed}.manifest.json").read_text())
    assert manifest["file"]["data_files"].keys() == {"o.onnx.data"}
    assert manifest["source"]["path"] == str(model)
    assert manifest["recipe"] and manifest["recipe"][-1]["pass"] in ("fp16", "sparsity")
    stamp = next(p.value for p in proto.metadata_props if p.key == "onnxsqueeze")
    assert json.loads(stamp)["origin_sha256"] == manifest["origin_sha256"] == manifest["source"]["sha256"]

    x = np.load(data)["x"]
    got, want = run(streamed, {"x": x}), run(in_memory, {"x": x})
    np.testing.assert_array_equal(got["y"], want["y"])
    _assert_nothing_lost(model, before, tmp_path)


def test_streamed_refusal_leaves_nothing(
    tmp_path: Path,
    source: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A streamed result beyond the budget is refused in one line: no output, no temp folder."""
    model, data = source
    monkeypatch.setattr(sio, "STREAM_BYTES", 1)
    before = _digest(model.parent)
    out = tmp_path / "o" / "h.onnx"
    code, err = _cli(capsys, "fp16", model, "-o", out, "--data", data, "--tolerance", "1e-9")
    assert code == 1, err
    assert err.strip().splitlines()[-1].startswith("error: float16: max abs error"), err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    assert _digest(model.parent) == before


def test_streaming_refuses_what_it_cannot_do(
    tmp_path: Path,
    source: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The re-fit (activations of every layer) does not stream: one line, exit 2."""
    model, data = source
    monkeypatch.setattr(sio, "STREAM_BYTES", 1)
    code, err = _cli(capsys, "prune", model, "--sparsity", "0.5", "--data", data, "-o", tmp_path / "p.onnx")
    assert code == 2, err
    assert "--reconstruction none" in err.strip().splitlines()[-1]


def test_streamed_squeeze_writes_a_verified_best(
    tmp_path: Path,
    source: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """squeeze over the threshold: the streamable knobs only (the others said skipped), the best
    written with external data and its manifest, the recipe replays it in memory to the same
    outputs, no temp file, inputs unchanged."""
    model, data = source
    monkeypatch.setattr(sio, "STREAM_BYTES", 1)
    before = _digest(model.parent)
    out = tmp_path / "sq"
    args = ["--data", data, "-o", out, "--max-drop", "100", "--no-cache", "--objective", "size"]
    code, err = _cli(capsys, "squeeze", model, *args, "--techniques", "fp16,sparsity,int8-weights,channels")
    assert code == 0, err

    results = json.loads((out / "results.json").read_text())
    evaluated = {next(iter(p["settings"]), None) for p in results["points"]}
    assert evaluated == {None, "fp16", "sparsity", "int8-weights"}, evaluated  # baseline, the streamed knobs
    report = (out / "report.md").read_text()
    assert "channels: no streaming build" in report and "timed alone" in report
    best = out / results["best"]["file"]
    assert results["best"]["verify"]["min_cosine"] > 0.99
    proto = onnx.load(str(best), load_external_data=False)
    external = [t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer]
    assert any(external)
    assert all(
        e or len(t.raw_data) < sio.EXTERNAL_THRESHOLD
        for e, t in zip(external, proto.graph.initializer, strict=True)
    )
    manifest = json.loads(Path(f"{best}.manifest.json").read_text())
    assert manifest["file"]["data_files"].keys() == {best.name + ".data"}
    assert manifest["source"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # the size is the files' bytes: smaller than the original's
    assert results["best"]["size"] < results["baseline"]["size"]

    code, err = _cli(capsys, "apply", out / "recipe.toml", model, "-o", tmp_path / "replayed.onnx")
    assert code == 0, err
    x = np.load(data)["x"]
    np.testing.assert_array_equal(run(best, {"x": x})["y"], run(tmp_path / "replayed.onnx", {"x": x})["y"])
    _assert_nothing_lost(model, before, tmp_path)


def test_streamed_squeeze_refuses_workers_before_any_work(
    tmp_path: Path,
    source: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, data = source
    monkeypatch.setattr(sio, "STREAM_BYTES", 1)
    out = tmp_path / "sq"
    code, err = _cli(capsys, "squeeze", model, "--data", data, "-o", out, "--max-drop", "5", "--workers", "2")
    assert code == 2, err
    assert "no --workers or --ray" in err.strip().splitlines()[-1] and "baseline" not in err
    assert not out.exists() or not list(out.glob("*.onnx"))


@pytest.mark.parametrize("settings", [{"fp16": True}, {"sparsity": 0.5}, {"int8-weights": True}], ids=str)
def test_streamed_candidates_equal_the_in_memory_builds(
    tmp_path: Path, source: tuple[Path, Path], settings: dict[str, object]
) -> None:
    """A candidate built tensor by tensor from the file has the outputs of the same steps run on
    the model in memory (the recipe's build)."""
    from onnxsqueeze.evaluate import Budget, load_npz_dataset
    from onnxsqueeze.recipe import build
    from onnxsqueeze.search.options import SqueezeOptions
    from onnxsqueeze.search.streaming import FileEvaluator, StreamingSqueezer

    model, data = source
    ds = load_npz_dataset(data)
    evaluator = FileEvaluator(model, ds, "agreement")
    squeezer = StreamingSqueezer(
        model,
        evaluator,
        scratch=tmp_path,
        calibration=None,
        calibration_source=None,
        options=SqueezeOptions(budget=Budget(1.0), techniques=("fp16", "sparsity", "int8-weights")),
        cache_dir=None,
    )
    steps = squeezer.steps(settings)
    streamed, idle = squeezer.build_lazy(settings)
    assert not idle
    staged, path = sio.stage_streamed(streamed, tmp_path / "scratch" / "c.onnx")
    in_memory = build(sio.load(model), steps)
    x = np.load(data)["x"]
    np.testing.assert_array_equal(run(path, {"x": x})["y"], run(in_memory, {"x": x})["y"])
    staged.abort()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_staged_folder_is_removed_by_the_cleanup(tmp_path: Path) -> None:
    """The temp folder of a streamed output goes with remove_temps (a signal) and with abort."""
    import onnx_ir as ir

    m = ir.serde.deserialize_model(model_from_text(TEXT, {"w1": rand((64, 48), 1), "w2": rand((48, 32), 2)}))
    staged, staged_model = sio.stage_streamed(m, tmp_path / "o.onnx")
    assert staged_model.exists() and staged_model.with_name("o.onnx.data").exists()
    sio.remove_temps()
    assert list(tmp_path.iterdir()) == []
    staged.moves = []
    staged, _ = sio.stage_streamed(m, tmp_path / "o.onnx")
    staged.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.onnx", "o.onnx.data"]
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(sio.load(tmp_path / "o.onnx").graph.initializer[0]),
        m.graph.initializers["w1"].const_value.numpy(),
    )
