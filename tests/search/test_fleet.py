"""Fleets: several models in one command, a folder each and a summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app
from onnxsqueeze.errors import InputError
from onnxsqueeze.search.fleet import fleet_names, read_models_list
from tests.graphs import cnn
from tests.helpers import rand, run_ort

runner = CliRunner()
FAST = ["--latency-seconds", "0.02", "--objective", "size", "--techniques", "int8,int8-dynamic"]


def _model(folder: Path, name: str, seed: int) -> tuple[Path, Path]:
    model = cnn()
    x = rand((64, 3, 8, 8), seed)
    (y,) = run_ort(model, {"x": x})
    path, data = folder / f"{name}.onnx", folder / f"{name}.npz"
    sio.save(model, path)
    sio.save_npz(data, {"x": x, "labels": np.argmax(y, 1).astype(np.int64)})
    return path, data


def test_models_list_parsing(tmp_path):
    (tmp_path / "list.txt").write_text(
        "# fleet\na.onnx a.npz metric=agreement output=probs\n\nsub/b.onnx  # uses --data\n"
    )
    entries = read_models_list(tmp_path / "list.txt", data=Path("/d.npz"), train_data=None)
    assert [(e.model, e.data, e.overrides) for e in entries] == [
        (tmp_path / "a.onnx", tmp_path / "a.npz", (("metric", "agreement"), ("output", "probs"))),
        (tmp_path / "sub/b.onnx", Path("/d.npz"), ()),
    ]
    (tmp_path / "bad.txt").write_text("a.onnx a.npz colour=red\n")
    with pytest.raises(InputError, match="unknown setting 'colour'"):
        read_models_list(tmp_path / "bad.txt", data=None, train_data=None)
    with pytest.raises(InputError, match="no data for"):
        read_models_list(tmp_path / "list.txt", data=None, train_data=None)
    assert fleet_names([Path("x/m.onnx"), Path("y/m.onnx"), Path("n.onnx")]) == ["m", "m-2", "n"]


def test_fleet_writes_a_folder_per_model_and_a_summary(tmp_path):
    a, da = _model(tmp_path, "alpha", 1)
    b, db = _model(tmp_path, "beta", 2)
    listing = tmp_path / "models.txt"
    listing.write_text(f"{a} {da}\n{b} {db}\n")
    out = tmp_path / "fleet"
    r = runner.invoke(
        app, ["squeeze", "--models-from", str(listing), "-o", str(out), "--max-drop", "5", *FAST, "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "onnxsqueeze.fleet/1"
    assert [m["name"] for m in doc["models"]] == ["alpha", "beta"]
    for m in doc["models"]:
        assert m["status"] == "ok" and m["size_ratio"] > 1 and m["drop"] <= 5
        assert (out / m["name"] / f"{m['name']}.squeezed.onnx").is_file()
        assert (out / m["name"] / "recipe.toml").is_file()
    md = (out / "fleet.md").read_text()
    assert "| alpha |" in md and "| beta |" in md
    assert json.loads((out / "fleet.json").read_text()) == doc


def test_one_bad_model_does_not_stop_the_fleet(tmp_path):
    a, da = _model(tmp_path, "good", 1)
    bad_data = tmp_path / "bad.npz"
    sio.save_npz(bad_data, {"wrong_name": rand((8, 3, 8, 8), 3)})
    out = tmp_path / "fleet"
    r = runner.invoke(
        app, ["squeeze", str(a), str(a), "--data", str(da), "-o", str(out), "--max-drop", "5", *FAST]
    )
    assert r.exit_code == 0, r.output
    listing = tmp_path / "l.txt"
    listing.write_text(f"{a} {da}\n{a} {bad_data}\n")
    r = runner.invoke(
        app, ["squeeze", "--models-from", str(listing), "-o", str(tmp_path / "f2"), "--max-drop", "5", *FAST]
    )
    assert r.exit_code == 1
    doc = json.loads((tmp_path / "f2" / "fleet.json").read_text())
    assert [m["status"] for m in doc["models"]] == ["ok", "error"]
    assert "wrong_name" in doc["models"][1]["message"] or "x" in doc["models"][1]["message"]
