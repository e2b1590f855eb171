"""``squeeze`` and ``apply`` end to end on a tiny CNN: outputs, recipe round-trip (byte for byte),
cache hits, resume after an interrupt, the nothing-fits path, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from onnxsqueeze import evaluate as E
from onnxsqueeze import io as sio
from onnxsqueeze import search as S
from onnxsqueeze.cli.app import app
from onnxsqueeze.errors import BudgetNotMetError
from onnxsqueeze.recipe import CalibrationSource
from tests.graphs import cnn
from tests.helpers import model_from_text, rand, run_ort

runner = CliRunner()
# size: deterministic on a tiny graph; int8 only, so the outcome does not depend on which other
# techniques are installed.
FAST = ["--latency-seconds", "0.02", "--objective", "size", "--techniques", "int8,int8-dynamic"]


@pytest.fixture
def assets(tmp_path: Path) -> tuple[Path, Path]:
    model = cnn()
    x = rand((96, 3, 8, 8), 21)
    (y,) = run_ort(model, {"x": x})
    labels = np.argmax(y, 1).astype(np.int64)
    labels[::16] = (labels[::16] + 1) % 4  # a few wrong: baseline accuracy below 100 %
    path = tmp_path / "cnn.onnx"
    sio.save(model, path)
    data = tmp_path / "val.npz"
    sio.save_npz(data, {"x": x, "labels": labels})
    return path, data


def squeeze(model: Path, data: Path, out: Path, *extra: str):
    return runner.invoke(
        app,
        ["squeeze", str(model), "--data", str(data), "-o", str(out), "--max-drop", "5", *FAST, *extra],
    )


def test_squeeze_writes_the_outputs_and_apply_reproduces_the_model(assets, tmp_path):
    model, data = assets
    out = tmp_path / "out"
    r = squeeze(model, data, out, "--objective", "size")
    assert r.exit_code == 0, r.output
    best = out / "cnn.squeezed.onnx"
    for name in ("recipe.toml", "report.md", "results.json", "pareto.png", best.name):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results["best"]["settings"]) & {"int8", "int8-dynamic"}
    assert results["best"]["size"] < results["baseline"]["size"]  # tiny graph: overhead dominates
    assert results["best"]["drop"] <= 5
    assert results["best"]["sha256"] == sio.sha256_file(best)
    # the size the search measured is the file's: provenance in the sidecar, not in the model
    assert results["best"]["size"] == best.stat().st_size
    side = json.loads((out / "cnn.squeezed.onnx.manifest.json").read_text())
    assert side["verification"] == results["best"]["verify"] and side["recipe"]
    assert {p.key for p in sio.load(best).metadata_props} == {"onnxsqueeze"}
    onnx.checker.check_model(sio.load(best), full_check=True)
    report = (out / "report.md").read_text()
    assert "## Pareto front" in report and "## Tried and rejected" in report and "Baseline vs best" in report

    rebuilt = tmp_path / "rebuilt.onnx"
    r = runner.invoke(app, ["apply", str(out / "recipe.toml"), str(model), "-o", str(rebuilt)])
    assert r.exit_code == 0, r.output
    assert rebuilt.read_bytes() == best.read_bytes()
    assert (tmp_path / "rebuilt.onnx.manifest.json").is_file()


def test_rerun_is_served_from_the_cache(assets, tmp_path):
    model, data = assets
    out = tmp_path / "out"
    assert squeeze(model, data, out).exit_code == 0
    first = json.loads((out / "results.json").read_text())
    assert first["evaluations"] == len(first["points"]) and first["cache_hits"] == 0
    r = squeeze(model, data, out)
    assert r.exit_code == 0, r.output
    again = json.loads((out / "results.json").read_text())
    assert again["evaluations"] == 0 and again["cache_hits"] == len(first["points"])
    assert again["best"]["settings"] == first["best"]["settings"]
    assert [p["metric"] for p in again["points"]] == [p["metric"] for p in first["points"]]


def _squeezer(model: Path, data: Path, cache: Path) -> S.Squeezer:
    proto = sio.load(model)
    ds = E.load_npz_dataset(data)
    cal, evalset = ds.take(0, 16), ds.take(16, len(ds))
    return S.Squeezer(
        proto,
        E.Evaluator(proto, evalset, "accuracy"),
        calibration=cal,
        calibration_source=CalibrationSource(str(data), 0, 16, cal.sha256()),
        options=S.SqueezeOptions(
            budget=E.Budget(5.0), objective="size", latency_seconds=0.02, techniques=("int8", "int8-dynamic")
        ),
        cache_dir=cache,
        model_sha256=sio.sha256_file(model),
    )


def test_interrupted_run_resumes_from_the_cache(assets, tmp_path):
    model, data = assets
    cache = tmp_path / "cache"
    seen = []

    def interrupt_after_two(p: S.Point) -> None:
        seen.append(p)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _squeezer(model, data, cache).run(on_point=interrupt_after_two)
    assert len(list(cache.rglob("*.json"))) == 3  # the int8 plan and both measured points persisted
    assert not list(cache.rglob("*.tmp"))

    resumed = _squeezer(model, data, cache)
    result = resumed.run()
    assert resumed.cache_hits == 2
    assert resumed.evaluations == len(result.points) - 2
    assert [p.cached for p in result.points[:2]] == [True, True]


def test_static_int8_recipe_replays_byte_for_byte_with_its_calibration(assets, tmp_path):
    model, data = assets
    sq = _squeezer(model, data, tmp_path / "cache")
    settings = {"int8": 1}  # the most sensitive layer (measured on the evaluation data) stays float
    from onnxsqueeze.manifest import deployable

    # the written form: provenance in the sidecar (manifest.deployable)
    expected = deployable(sq.build(settings)).SerializeToString(deterministic=True)
    recipe = tmp_path / "recipe.toml"
    from onnxsqueeze import recipe as rcp

    rcp.save(sq.recipe(settings), recipe)
    assert "calibration = true" in recipe.read_text() and "[calibration]" in recipe.read_text()
    out = tmp_path / "replayed.onnx"
    r = runner.invoke(app, ["apply", str(recipe), str(model), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == expected

    # other calibration data: refused unless --force
    other = tmp_path / "other.npz"
    sio.save_npz(other, {"x": rand((32, 3, 8, 8), 99), "labels": np.zeros(32, np.int64)})
    r = runner.invoke(
        app, ["apply", str(recipe), str(model), "-o", str(tmp_path / "o2.onnx"), "--data", str(other)]
    )
    assert r.exit_code == 2 and "calibration samples differ" in r.output
    r = runner.invoke(
        app,
        ["apply", str(recipe), str(model), "-o", str(tmp_path / "o2.onnx"), "--data", str(other), "--force"],
    )
    assert r.exit_code == 0, r.output


NOTHING_TO_QUANTIZE = """
<ir_version: 8, opset_import: ["" : 17]>
plain (float[N, 4] x) => (float[N, 4] y) {
    y = Relu (x)
}
"""


def test_nothing_fits_exits_1_and_shows_the_closest_candidates(tmp_path):
    model = tmp_path / "plain.onnx"
    sio.save(model_from_text(NOTHING_TO_QUANTIZE), model)
    data = tmp_path / "d.npz"
    sio.save_npz(data, {"x": rand((40, 4), 3)})
    out = tmp_path / "out"
    r = squeeze(model, data, out)
    assert r.exit_code == 1
    assert "no candidate fits the budget" in r.output and "Traceback" not in r.output
    assert not list(out.glob("*.onnx")) and not (out / "recipe.toml").exists()
    report = (out / "report.md").read_text()
    assert "Nothing fits the budget" in report and "nothing to do for int8" in report


def test_nothing_fits_over_budget_lists_closest(assets, tmp_path):
    # mae must not rise at all: every quantized candidate moves the outputs, so none fits
    out = tmp_path / "out"
    r = squeeze(assets[0], assets[1], out, "--metric", "mae", "--max-drop", "0")
    assert r.exit_code == 1, r.output
    assert "no candidate fits the budget" in r.output and "closest: int8" in r.output
    assert "Traceback" not in r.output
    assert not list(out.rglob("*.squeezed.onnx")) and not (out / "recipe.toml").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["best"] is None and not results["not_improved"]
    assert all(not p["fits"] for p in results["points"][1:])
    assert "## Nothing fits the budget" in (out / "report.md").read_text()
    # the Python API raises the same error after writing the report
    sq = _squeezer(assets[0], assets[1], tmp_path / "cache")
    result = sq.run()
    result.points = result.points[:1]  # only the baseline: nothing else was evaluated
    result.best = None
    with pytest.raises(BudgetNotMetError, match="closest: none evaluated"):
        S.write_outputs(sq, result, tmp_path / "out2")


def test_nothing_better_on_the_objective_writes_the_pareto_models_and_exits_3(assets, tmp_path):
    """No quantization lowers MACs: the objective cannot improve, but the smaller files found
    are written under OUT/pareto/ with replayable recipes, and the exit code says so."""
    model, data = assets
    out = tmp_path / "out"
    r = squeeze(model, data, out, "--objective", "macs", "--techniques", "int8-dynamic,fp16")
    assert r.exit_code == 3, r.output
    assert "beats the original on macs" in r.output and "Traceback" not in r.output
    assert not (out / "cnn.squeezed.onnx").exists() and not (out / "recipe.toml").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["best"] is None
    alternatives = results["not_improved"]
    assert alternatives and {a["label"] for a in alternatives} <= {"fp16", "int8 dynamic"}
    for a in alternatives:
        assert a["size_ratio"] < 1.0 and any(w.startswith("size") for w in a["improved"])
        assert a["drop"] <= 5
        written = out / a["model"]
        assert written.parent.name == "pareto" and sio.sha256_file(written) == a["sha256"]
        replayed = tmp_path / f"replayed-{written.name}"
        r = runner.invoke(app, ["apply", str(out / a["recipe"]), str(model), "-o", str(replayed)])
        assert r.exit_code == 0, r.output
        assert replayed.read_bytes() == written.read_bytes()
    report = (out / "report.md").read_text()
    assert "## The objective was not improved" in report and "pareto/01-cnn.squeezed.onnx" in report


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--data", "missing.npz"], 2, "no such data file"),
        (["--objective", "speed"], 2, "unknown objective 'speed'"),
        (["--techniques", "magic"], 2, "unknown technique"),
        (["--max-drop", "-1"], 2, "--max-drop"),
        (["--metric", "f1"], 2, "unknown metric"),
    ],
)
def test_squeeze_bad_input(assets, tmp_path, args, code, message):
    model, data = assets
    base = ["squeeze", str(model), "--data", str(data), "-o", str(tmp_path / "o"), *FAST]
    if args[0] == "--data":
        base[3] = str(tmp_path / args[1])
        args = []
    r = runner.invoke(app, [*base, *args])
    assert r.exit_code == code, r.output
    assert message in r.output and "Traceback" not in r.output


def test_accuracy_without_labels_is_refused(tmp_path):
    model = tmp_path / "cnn.onnx"
    sio.save(cnn(), model)
    data = tmp_path / "nolabels.npz"
    sio.save_npz(data, {"x": rand((40, 3, 8, 8))})
    r = squeeze(model, data, tmp_path / "o", "--metric", "accuracy")
    assert r.exit_code == 2 and "needs 'labels'" in r.output


def test_apply_bad_input(assets, tmp_path):
    model, _ = assets
    recipe = tmp_path / "r.toml"
    recipe.write_text('format = 1\n[[steps]]\npass = "warp-drive"\n')
    r = runner.invoke(app, ["apply", str(recipe), str(model), "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 2 and "unknown pass 'warp-drive'" in r.output
    recipe.write_text('format = 1\n[[steps]]\npass = "int8"\noptions = { bits = 4 }\n')
    r = runner.invoke(app, ["apply", str(recipe), str(model), "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 2 and "unknown option(s) ['bits']" in r.output
    recipe.write_text("format = [")
    r = runner.invoke(app, ["apply", str(recipe), str(model), "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 2 and "not valid TOML" in r.output
    recipe.write_text('format = 1\nsource_sha256 = "00ff"\n[[steps]]\npass = "int8"\n')
    r = runner.invoke(app, ["apply", str(recipe), str(model), "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 2 and "differs from the recipe's source" in r.output
    r = runner.invoke(app, ["apply", str(recipe), str(model), "-o", str(model), "--force"])
    assert r.exit_code == 2 and "refusing to overwrite" in r.output


def test_time_budget_zero_measures_only_the_baseline_and_says_so(assets, tmp_path):
    model, data = assets
    out = tmp_path / "out"
    r = squeeze(model, data, out, "--time-budget", "0")
    assert r.exit_code == 1
    assert "time budget reached" in r.output
    results = json.loads((out / "results.json").read_text())
    assert results["truncated"] == "time budget reached" and len(results["points"]) == 1
    r = squeeze(model, data, out)  # resumes: the baseline comes from the cache
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text())["cache_hits"] == 1


def test_relative_budget(assets, tmp_path):
    model, data = assets
    out = tmp_path / "out"
    r = squeeze(model, data, out, "--relative", "--max-drop", "5", "--json")
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert results["budget"] == {"max_drop": 5.0, "relative": True}
    base = results["baseline"]["metric"]
    for p in results["points"]:
        if p["metric"] is not None:
            assert p["drop"] == pytest.approx((base - p["metric"]) / base * 100)


def test_ctrl_c_leaves_a_resumable_cache(assets, tmp_path, monkeypatch):
    model, data = assets
    out = tmp_path / "out"
    real = S.Squeezer.evaluate

    def evaluate_then_interrupt(self, settings):
        if settings:
            raise KeyboardInterrupt
        return real(self, settings)

    monkeypatch.setattr(S.Squeezer, "evaluate", evaluate_then_interrupt)
    r = squeeze(model, data, out)
    assert r.exit_code == 130
    assert "rerun the same command to resume" in r.output and "Traceback" not in r.output
    monkeypatch.setattr(S.Squeezer, "evaluate", real)
    r = squeeze(model, data, out)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text())["cache_hits"] == 1  # the baseline


def test_image_folder_data_and_a_replayable_recipe(tmp_path):
    from PIL import Image

    from tests.graphs import CNN

    model = tmp_path / "cnn.onnx"
    wide = {  # weights large enough for int8 static (QDQ) to be smaller than float
        "w1": rand((32, 3, 3, 3), 1, 0.3),
        "b1": rand((32,), 2, 0.1),
        "w2": rand((64, 32, 3, 3), 3, 0.1),
        "b2": rand((64,), 4, 0.1),
        "wf": rand((4, 64), 5, 0.5),
        "bf": rand((4,), 6, 0.1),
    }
    sio.save(model_from_text(CNN, wide), model)
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for cls in ("a", "b"):
        (images / cls).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(images / cls / f"{i}.png")
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        ["squeeze", str(model), "--data", str(images), "--metric", "agreement", "--image-size", "8x8",
         "--calibration-samples", "8", "--max-drop", "10", "-o", str(out), *FAST, "--techniques", "int8"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (out / "calibration.npz").is_file()
    recipe = (out / "recipe.toml").read_text()
    assert 'data = "calibration.npz"' in recipe
    replayed = tmp_path / "replayed.onnx"
    r = runner.invoke(app, ["apply", str(out / "recipe.toml"), str(model), "-o", str(replayed)])
    assert r.exit_code == 0, r.output
    assert replayed.read_bytes() == (out / "cnn.squeezed.onnx").read_bytes()


def test_cost_objective_prices_on_an_instance(assets, tmp_path):
    model, data = assets
    out = tmp_path / "out"
    # --max-drop 0 on mae: no candidate fits, so the outcome does not depend on timing noise;
    # the baseline is still priced on the instance
    r = squeeze(
        model,
        data,
        out,
        "--objective",
        "cost",
        "--instance",
        "aws/c7i.xlarge",
        "--metric",
        "mae",
        "--max-drop",
        "0",
    )
    assert r.exit_code == 1, r.output
    results = json.loads((out / "results.json").read_text())
    assert results["objective"] == "cost" and results["price"]["usd_per_hour"] == pytest.approx(0.1785)
    assert "c7i.xlarge" in results["price"]["source"]
    base = results["baseline"]
    assert base["cost"] == pytest.approx(0.1785 / 3600 * base["latency_ms"] / 1e3 * 1e6)
    r = squeeze(model, data, tmp_path / "o2", "--instance", "nowhere/x1")
    assert r.exit_code == 2 and "nowhere/x1" in r.output


def test_apply_reports_verification_and_gates_on_tolerance(assets, tmp_path):
    model, data = assets
    sq = _squeezer(model, data, tmp_path / "cache")
    from onnxsqueeze import recipe as rcp

    recipe = tmp_path / "recipe.toml"
    rcp.save(sq.recipe({"int8-dynamic": True}), recipe)
    out = tmp_path / "o.onnx"
    r = runner.invoke(app, ["apply", str(recipe), str(model), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["verify"]["max_abs"] > 0 and doc["sha256"] == sio.sha256_file(out)
    tight = tmp_path / "tight.onnx"
    r = runner.invoke(app, ["apply", str(recipe), str(model), "-o", str(tight), "--tolerance", "1e-9"])
    assert r.exit_code == 1 and "not written" in r.output and not tight.exists()
    r = runner.invoke(
        app, ["apply", str(recipe), str(model), "-o", str(tight), "--tolerance", "1e-9", "--force"]
    )
    assert r.exit_code == 0 and tight.read_bytes() == out.read_bytes()


def test_help_lists_every_knob_and_the_exit_codes():
    r = runner.invoke(app, ["squeeze", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    for knob in S.KNOBS:
        assert knob.name in text, knob.name
    assert "Exit 1 when nothing fits the budget" in text and "exit 3" in text
