"""squeeze through the front door: --input-shape reaches the search, --class-axis, CTC outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze import search as S
from onnxsqueeze.cli.app import app
from onnxsqueeze.evaluate import Budget
from onnxsqueeze.search.outputs import write_candidate
from onnxsqueeze.search.squeezer import build_replica
from tests.graphs import constant_weights_model, ctc_model
from tests.helpers import rand, run_ort

runner = CliRunner()
FAST = ["--latency-seconds", "0.02", "--objective", "size", "--max-drop", "5"]


def _cli(model: Path, data: Path, out: Path, *extra: str):
    args = ["squeeze", str(model), "--data", str(data), "-o", str(out), *FAST, *extra, "--json"]
    return runner.invoke(app, args)


def test_input_shape_reaches_the_squeezer_and_its_worker_replicas(tmp_path: Path) -> None:
    """A model with dynamic H/W: the search counts MACs and plans at --input-shape, and the
    worker spec carries it, so replicas measure at the same shape."""
    src = sio.save(constant_weights_model(), tmp_path / "m.onnx")
    data = sio.save_npz(tmp_path / "d.npz", {"x": rand((40, 3, 12, 20), 1)})
    options = S.SqueezeOptions(budget=Budget(5.0), objective="size", latency_seconds=0.02)
    sq = S.make_squeezer(
        src, data, options=options, out_dir=tmp_path / "o", input_shapes={"x": [1, 3, 12, 20]}
    )
    assert sq.input_shapes == {"x": (1, 3, 12, 20)}
    assert sq.shapes_of(sq.model) == {"x": (1, 3, 12, 20)}
    spec = sq.worker_spec()
    assert spec.input_shapes == {"x": (1, 3, 12, 20)}
    replica = build_replica(spec)
    assert replica.input_shapes == sq.input_shapes and replica._context == sq._context
    baseline = sq.evaluate({})
    assert baseline.error is None and baseline.macs is not None and baseline.macs > 0
    # MACs at 12x20: conv1 8*27 + conv2 4*8 per pixel.
    assert baseline.macs == (8 * 27 + 4 * 8) * 12 * 20
    # Without --input-shape the key (and so the cache) is as before.
    plain = S.make_squeezer(src, data, options=options, out_dir=tmp_path / "p")
    assert "input_shapes" not in plain._context


def test_cli_input_shape_squeezes_a_dynamic_model(tmp_path: Path) -> None:
    src = sio.save(constant_weights_model(), tmp_path / "m.onnx")
    data = sio.save_npz(tmp_path / "d.npz", {"x": rand((40, 3, 12, 20), 1)})
    r = _cli(src, data, tmp_path / "o", "--input-shape", "x:1,3,12,20", "--techniques", "fp16")
    assert r.exit_code in (0, 1, 3), r.output  # 1: fp16 does not shrink a 2 kB model
    assert "Traceback" not in r.output
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["baseline"]["macs"] == (8 * 27 + 4 * 8) * 12 * 20
    assert results["points"] and all(p["error"] is None for p in results["points"])
    bad = _cli(src, data, tmp_path / "b", "--input-shape", "y:1,3,12,20")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    bad = _cli(src, data, tmp_path / "b", "--input-shape", "x:1,3,16,16")
    assert bad.exit_code == 2 and "disagrees with" in bad.output


def _ctc_assets(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    model = ctc_model()
    x = rand((1, 1, 8, 64), 3)
    (y,) = run_ort(model, {"x": x})
    src = sio.save(model, tmp_path / "ocr.onnx")
    # One image per file, as the OCR runs (batch 1): the search scores the [T, 1, C] output whole.
    data = sio.save_npz(tmp_path / "d.npz", {"x": np.concatenate([x] * 8)[:, :, :, :]})
    return src, data, y


def test_cli_agreement_on_a_ctc_output(tmp_path: Path) -> None:
    """[T, 1, C] scores (declared [1, seqlen]): agreement per time step, no 'not class scores'."""
    src, data, y = _ctc_assets(tmp_path)
    assert y.shape == (16, 1, 12)
    r = _cli(src, data, tmp_path / "o", "--metric", "agreement", "--techniques", "fp16")
    assert r.exit_code in (0, 1, 3), r.output  # 1: fp16 does not shrink a 2 kB model
    assert "Traceback" not in r.output
    assert "not class scores" not in r.output
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["baseline"]["metric"] == pytest.approx(100.0)
    r = _cli(src, data, tmp_path / "s", "--metric", "sequence", "--techniques", "fp16")
    assert r.exit_code in (0, 1, 3), r.output  # 1: fp16 does not shrink a 2 kB model
    assert "Traceback" not in r.output
    assert json.loads((tmp_path / "s" / "results.json").read_text())["baseline"]["metric"] == 100.0


def test_cli_class_axis(tmp_path: Path) -> None:
    """--class-axis names the class axis as on fp16/prune/verify; a wrong one is one line, exit 2."""
    src, data, _ = _ctc_assets(tmp_path)
    r = _cli(src, data, tmp_path / "o", "--metric", "agreement", "--class-axis", "2", "--techniques", "fp16")
    assert r.exit_code in (0, 1, 3), r.output  # 1: fp16 does not shrink a 2 kB model
    assert "Traceback" not in r.output
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["baseline"]["metric"] == pytest.approx(100.0)
    bad = _cli(
        src, data, tmp_path / "b", "--metric", "agreement", "--class-axis", "5", "--techniques", "fp16"
    )
    assert bad.exit_code == 2 and "--class-axis 5" in bad.output and "Traceback" not in bad.output


def test_the_search_normalizes_with_onnxslim_and_apply_replays_the_same_bytes(tmp_path: Path) -> None:
    """The front door's normalization (cleanup, then onnxslim where verified) is the search's:
    candidates start from the slimmed base, the recipe records it, apply rebuilds the same bytes."""
    from tests.graphs import transposes_model

    src = sio.save(transposes_model(), tmp_path / "m.onnx")
    data = sio.save_npz(tmp_path / "d.npz", {"x": rand((40, 3, 8, 8), 1)})
    options = S.SqueezeOptions(
        budget=Budget(5.0), objective="size", latency_seconds=0.02, techniques=("fp16", "int8-dynamic")
    )
    sq = S.make_squeezer(src, data, options=options, out_dir=tmp_path / "o", use_cache=False)
    settings = {"fp16": True}
    assert [s.pass_name for s in sq.steps(settings)] == ["cleanup", "onnxslim", "fp16"]
    fast, idle = sq._build_measured(settings)
    assert idle == []
    assert "Transpose" not in {n.op_type for n in fast.graph.node}
    full = sq.build(settings)
    assert fast.SerializeToString(deterministic=True) == full.SerializeToString(deterministic=True)
    _, files = write_candidate(sq, settings, tmp_path / "o", "m", recipe_name="recipe.toml")
    replayed = tmp_path / "replayed.onnx"
    r = runner.invoke(app, ["apply", str(files["recipe"]), str(src), "-o", str(replayed)])
    assert r.exit_code == 0, r.output
    assert replayed.read_bytes() == files["model"].read_bytes()


def test_apply_takes_input_shape_for_a_dynamic_model(tmp_path: Path) -> None:
    """apply verifies on random inputs when the recipe has no calibration: a dynamic H/W needs
    --input-shape (one line naming it without), and the replay is the squeeze's bytes."""
    src = sio.save(constant_weights_model(), tmp_path / "m.onnx")
    data = sio.save_npz(tmp_path / "d.npz", {"x": rand((40, 3, 12, 20), 1)})
    options = S.SqueezeOptions(budget=Budget(5.0), objective="size", techniques=("fp16",))
    sq = S.make_squeezer(
        src,
        data,
        options=options,
        out_dir=tmp_path / "o",
        input_shapes={"x": [1, 3, 12, 20]},
        use_cache=False,
    )
    _, files = write_candidate(sq, {"fp16": True}, tmp_path / "o", "m", recipe_name="recipe.toml")
    args = ["apply", str(files["recipe"]), str(src), "-o", str(tmp_path / "r.onnx")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--input-shape" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, [*args, "--input-shape", "x:1,3,12,20"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.onnx").read_bytes() == files["model"].read_bytes()
