"""Helpers shared by the tests: tiny graphs from ONNX text with seeded initializers, ORT runs, and the
real sample models, built once per recipe version and shared by every test (and every xdist worker)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from models.built import built

REPO = Path(__file__).resolve().parent.parent
FP16_TOL = 1e-2  # normalized max error allowed after fp16 conversion


def model_from_text(text: str, initializers: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Parse an ONNX text model and add ``initializers`` (name -> array); checked."""
    model = onnx.parser.parse_model(text)
    for name, array in (initializers or {}).items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(array), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def rand(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0, dtype: type = np.float32) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run in onnxruntime with graph optimizations disabled (reference semantics)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(feeds))


def normalized_error(ref: np.ndarray, cand: np.ndarray) -> float:
    """Max absolute error of ``cand`` against ``ref``, relative to ``ref``'s largest magnitude."""
    ref = ref.astype(np.float64)
    return float(np.max(np.abs(ref - cand.astype(np.float64))) / np.max(np.abs(ref)))


def digits_assets() -> tuple[Path, Path, Path]:
    """(digits_cnn.onnx, digits_val.npz, digits_train.npz), training the model once if missing."""

    def build(out: Path) -> tuple[Path, Path, Path]:
        from models import digits

        assert digits.main(["--out", str(out)]) == 0  # returns at once when the files exist
        return out / "digits_cnn.onnx", out / "digits_val.npz", out / "digits_train.npz"

    return built("digits", build)


def segmenter_assets() -> tuple[Path, Path]:
    """(segmenter.onnx, segmenter_val.npz), trained once."""
    from models import segmenter

    return built("segmenter", segmenter.ensure)


def zoo_model(name: str) -> Path:
    """A torchvision classifier exported once (``models/zoo.py``)."""
    from models import zoo

    return built("zoo", lambda out: zoo.ensure(name, out))


def minilm_model() -> Path:
    """The MiniLM sentence encoder exported once (``models/minilm.py``)."""
    from models import minilm

    return built("minilm", minilm.ensure)


def self_labelled_squeezer(model: onnx.ModelProto, x: np.ndarray, calibration: int, **kwargs):  # type: ignore[no-untyped-def]
    """A :class:`onnxsqueeze.search.Squeezer` on ``model`` labelled by its own top-1 on ``x``: the
    first ``calibration`` samples calibrate, the rest are scored (size objective, 5-point budget,
    short timing). ``kwargs``: ``SqueezeOptions`` fields, plus ``cache_dir``, ``train``,
    ``model_path`` and ``source`` (the data's name in the recipe)."""
    from onnxsqueeze import evaluate as E
    from onnxsqueeze.recipe import CalibrationSource
    from onnxsqueeze.search import SqueezeOptions, Squeezer

    source = kwargs.pop("source", "t")
    extra = {k: kwargs.pop(k) for k in ("cache_dir", "train", "model_path") if k in kwargs}
    (y,) = run_ort(model, {"x": x})
    ds = E.Dataset({"x": x}, np.argmax(y, 1).astype(np.int64), source)
    cal, evalset = ds.take(0, calibration), ds.take(calibration, len(x))
    return Squeezer(
        model,
        E.Evaluator(model, evalset, "accuracy"),
        calibration=cal,
        calibration_source=CalibrationSource(source, 0, calibration, cal.sha256()),
        options=SqueezeOptions(budget=E.Budget(5.0), objective="size", latency_seconds=0.01, **kwargs),
        **{"cache_dir": None, **extra},
    )


def squeeze_small_cnn(folder: Path, techniques: str) -> tuple[Path, Path, dict]:
    """``squeeze`` through the CLI on :func:`tests.graphs.cnn` (80 seeded samples, 16 calibrate,
    agreement within 30 points, size objective, no cache) with ``techniques``; returns the model's
    path, the output folder and its results.json."""
    import json

    from typer.testing import CliRunner

    from onnxsqueeze import io as sio
    from onnxsqueeze.cli.app import app
    from tests.graphs import cnn

    src = sio.save(cnn(), folder / "m.onnx")
    data = sio.save_npz(folder / "d.npz", {"x": rand((80, 3, 8, 8), 5)})
    out = folder / "o"
    args = [
        "squeeze", str(src), "--data", str(data), "-o", str(out), "--max-drop", "30",
        "--metric", "agreement", "--objective", "size", "--techniques", techniques,
        "--calibration-samples", "16", "--latency-seconds", "0.01", "--no-cache", "--json",
    ]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return src, out, json.loads((out / "results.json").read_text())


def apply_recipe(out: Path, src: Path) -> bytes:
    """``apply`` (the CLI) of ``out``'s recipe.toml to ``src``: the replayed model's bytes."""
    from typer.testing import CliRunner

    from onnxsqueeze.cli.app import app

    replayed = out / "replayed.onnx"
    r = CliRunner().invoke(app, ["apply", str(out / "recipe.toml"), str(src), "-o", str(replayed)])
    assert r.exit_code == 0, r.output
    return replayed.read_bytes()
