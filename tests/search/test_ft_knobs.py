"""The fine-tuned knobs (``sparsity+ft``, ``channels+ft``, ``resolution+ft``): offered only with
training data, trained once per (original, data, pass, budget) and cached, carried back from a
worker replica, recorded as the recipe's base model so ``apply`` replays byte for byte, and zeros
of a sparse candidate kept exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx2torch")

from typer.testing import CliRunner

import onnxsqueeze.finetune as ft_module
from onnxsqueeze import evaluate as E
from onnxsqueeze import io as sio
from onnxsqueeze import recipe as rcp
from onnxsqueeze.cli.app import app
from onnxsqueeze.search import Squeezer
from onnxsqueeze.search.knobs import ft_steps
from onnxsqueeze.search.outputs import write_candidate
from tests.graphs import cnn
from tests.helpers import rand, run_ort, self_labelled_squeezer

FT = ("sparsity+ft", "channels+ft", "resolution+ft")


def _squeezer(
    tmp_path: Path,
    *,
    train: bool = True,
    cache: str | None = "cache",
    finetune_time_s: float = 2.0,
    techniques: tuple[str, ...] = FT,
    train_epochs: int | None = None,
) -> Squeezer:
    model = cnn()
    path = tmp_path / "cnn.onnx"
    if not path.exists():
        sio.save(model, path)
    x = rand((96, 3, 8, 8), 5)
    if not (tmp_path / "val.npz").exists():  # what `apply` replays against: labels = the model's top-1
        (y,) = run_ort(model, {"x": x})
        sio.save_npz(tmp_path / "val.npz", {"x": x, "labels": np.argmax(y, 1).astype(np.int64)})
    return self_labelled_squeezer(
        model,
        x,
        16,
        source="val.npz",
        techniques=techniques,
        finetune_time_s=finetune_time_s,
        train_epochs=train_epochs,
        cache_dir=tmp_path / cache if cache else None,
        train=E.Dataset({"x": rand((64, 3, 8, 8), 9)}, None, "train.npz") if train else None,
        model_path=path,
    )


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    """Counts the fine-tuning runs (the real function still runs)."""
    seen: list[str] = []
    real = ft_module.finetune

    def counting(*args, **kwargs):
        seen.append("finetune")
        return real(*args, **kwargs)

    monkeypatch.setattr(ft_module, "finetune", counting)
    return seen


def test_ft_knobs_are_offered_only_with_training_data(tmp_path):
    without = _squeezer(tmp_path, train=False)
    assert not {k.name for k in without.knobs} & set(FT)
    assert all("no training data" in without.skipped[name] for name in FT)
    with_data = _squeezer(tmp_path)
    assert set(FT) <= {k.name for k in with_data.knobs}
    # one fine-tuned pass per candidate (a fine-tuned knob combines with distill: see below)
    assert {k.group for k in with_data.knobs if k.name in FT} == {"ft"}


def test_resolution_ft_is_not_offered_for_size_unless_named(tmp_path):
    """It keeps the interface (a Resize in front): the file never gets smaller."""
    sq = _squeezer(tmp_path, techniques=None)  # objective size, no technique named
    offered = {k.name for k in sq.knobs}
    assert "channels+ft" in offered and not {"resolution", "resolution+ft"} & offered
    assert "cannot lower size" in sq.skipped["resolution+ft"]
    assert "cannot lower size" in sq.skipped["resolution"]
    assert "resolution+ft" in {k.name for k in _squeezer(tmp_path).knobs}  # named: tried anyway


def test_sparsity_ft_lowers_the_size_but_is_offered_only_by_name(tmp_path):
    """Its zeros are stored sparse (smaller file), but every setting trains a base: by name only,
    as the one-shot sparsity knob."""
    sq = _squeezer(tmp_path, techniques=None)
    offered = {k.name for k in sq.knobs}
    assert not {"sparsity", "sparsity+ft"} & offered
    assert "name it in --techniques" in sq.skipped["sparsity+ft"]
    assert "size" in next(k for k in _squeezer(tmp_path).knobs if k.name == "sparsity+ft").improves


def test_rerun_hits_the_cache_and_does_not_fine_tune_again(tmp_path, calls):
    first = _squeezer(tmp_path)
    p1 = first.evaluate({"sparsity+ft": 0.5})
    assert p1.error is None and calls == ["finetune"]
    (spec,) = first.students
    assert first.students[spec]["method"] == "finetune"
    second = _squeezer(tmp_path)  # a new run, same cache folder
    p2 = second.evaluate({"sparsity+ft": 0.5})
    assert calls == ["finetune"]
    assert (p2.metric, p2.size) == (p1.metric, p1.size)
    assert second.base_model({"sparsity+ft": 0.5})[1] == first.base_model({"sparsity+ft": 0.5})[1]
    # another budget is another fine-tuned model
    third = _squeezer(tmp_path, finetune_time_s=3.0)
    assert third.bases.known(spec) is None


def test_zeros_of_the_sparse_pass_stay_exact_after_fine_tuning(tmp_path):
    sq = _squeezer(tmp_path, cache=None)
    tuned, _ = sq.base_model({"sparsity+ft": 0.5})
    one_shot = rcp.build(sq.model, ft_steps("ft:sparsity:0.5"), calibration=sq.calibration.inputs)

    def weights(m: onnx.ModelProto) -> list[np.ndarray]:
        return [w for w in (onnx.numpy_helper.to_array(i) for i in m.graph.initializer) if w.ndim > 1]

    before, after = weights(one_shot), weights(tuned)
    assert sum(int((w == 0).sum()) for w in before) > 0
    for w in before:  # matched by shape: each zero pattern survives training exactly
        same = [a for a in after if a.shape == w.shape]
        assert same and any(np.all(a[w == 0] == 0) for a in same)
    assert not any(any(np.array_equal(a, w) for a in after) for w in before)  # it did train


def test_recipe_replays_byte_for_byte_with_apply(tmp_path):
    sq = _squeezer(tmp_path)
    settings = {"channels+ft": 0.3}
    assert sq.evaluate(settings).error is None
    out = tmp_path / "out"
    out.mkdir()
    _, written = write_candidate(sq, settings, out, "cnn", recipe_name="recipe.toml")
    r = rcp.load(written["recipe"])
    assert r.base is not None and r.base.method == "finetune"
    assert [s.pass_name for s in r.base.steps] == ["cleanup", "channels"]
    assert written["finetuned"].name == "cnn.finetuned.onnx"
    res = CliRunner().invoke(
        app,
        ["apply", str(written["recipe"]), str(tmp_path / "cnn.onnx"), "-o", str(tmp_path / "replayed.onnx")],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "replayed.onnx").read_bytes() == written["model"].read_bytes()
    # a tampered base model is refused
    written["finetuned"].write_bytes(written["finetuned"].read_bytes() + b"\0")
    res = CliRunner().invoke(
        app, ["apply", str(written["recipe"]), str(tmp_path / "cnn.onnx"), "-o", str(tmp_path / "again.onnx")]
    )
    assert res.exit_code != 0 and not (tmp_path / "again.onnx").exists()


def test_a_worker_replica_sends_the_fine_tuned_model_back(tmp_path, calls):
    driver = _squeezer(tmp_path, cache="driver")
    replica = _squeezer(tmp_path, cache=None)
    settings = {"resolution+ft": 0.75}
    reply = replica.measure_request(driver._request(settings))
    assert calls == ["finetune"] and "error" not in reply["doc"]
    ((spec, data),) = reply["students"].items()
    driver.adopt_student(spec, data["bytes"], data["info"])
    assert driver.evaluate(settings).error is None  # measured with the replica's model: no retraining
    assert calls == ["finetune"]
    # a fresh replica given the driver's bytes does not train either
    other = _squeezer(tmp_path, cache=None)
    again = other.measure_request(driver._request(settings))
    assert calls == ["finetune"] and again["students"] == {}
    assert again["doc"]["metric"] == reply["doc"]["metric"]


def test_a_fine_tuned_student_is_built_from_the_student_cached_and_replayed(tmp_path, calls):
    """``distill + channels+ft``: the student's channels pruned, then fine-tuned against the
    original; trained once (a rerun reads the cache), recorded with both steps, replayed by
    ``apply`` to the same bytes."""
    techniques = ("distill", "channels+ft")
    sq = _squeezer(tmp_path, techniques=techniques, train_epochs=2)
    settings = {"distill": "cnn4", "channels+ft": 0.5}
    p = sq.evaluate(settings)
    assert p.error is None, p.error
    assert calls == ["finetune"] and set(sq.students) == {"cnn4", "ft:channels:0.5@cnn4"}
    student, student_sha = sq.base_model({"distill": "cnn4"})
    tuned, tuned_sha = sq.base_model(settings)
    assert tuned_sha not in (student_sha, sq.model_sha256)
    info = sq.students["ft:channels:0.5@cnn4"]
    assert info["method"] == "finetune" and info["student"] == "cnn4"

    def params(m: onnx.ModelProto) -> int:
        return sum(int(np.prod(i.dims)) for i in m.graph.initializer)

    # pruned from the student (fewer weights than it), not from the original
    assert params(tuned) < params(student)
    assert sq.model_sha256 != student_sha
    one_shot = rcp.build(student, ft_steps("ft:channels:0.5@cnn4"), calibration=sq.calibration.inputs)

    def weights(m: onnx.ModelProto) -> list[tuple[int, ...]]:
        return sorted(tuple(i.dims) for i in m.graph.initializer if len(i.dims) > 1)

    assert weights(tuned) == weights(one_shot) != weights(student)  # the student's pruned layers

    out = tmp_path / "out"
    out.mkdir()
    _, written = write_candidate(sq, settings, out, "cnn", recipe_name="recipe.toml")
    r = rcp.load(written["recipe"])
    assert r.base is not None and (r.base.method, r.base.student) == ("finetune", "cnn4")
    assert [s.pass_name for s in r.base.steps] == ["cleanup", "channels"]
    assert r.base.sha256 == tuned_sha
    res = CliRunner().invoke(
        app,
        ["apply", str(written["recipe"]), str(tmp_path / "cnn.onnx"), "-o", str(tmp_path / "replayed.onnx")],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "replayed.onnx").read_bytes() == written["model"].read_bytes()

    again = _squeezer(tmp_path, techniques=techniques, train_epochs=2)  # a new run, same cache
    p2 = again.evaluate(settings)
    assert calls == ["finetune"]  # neither the student nor its fine-tuning trained again
    assert (p2.metric, p2.size) == (p.metric, p.size)
    assert again.base_model(settings)[1] == tuned_sha

    # fixed-length training is deterministic: a fresh cache trains the same bytes
    fresh = _squeezer(tmp_path, techniques=techniques, train_epochs=2, cache="fresh")
    assert fresh.base_model(settings)[1] == tuned_sha
