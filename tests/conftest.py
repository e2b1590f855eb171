from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The repo root on sys.path so tests can import the recipes in models/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import digits_assets


@pytest.fixture(scope="session")
def digits() -> tuple[Path, Path, Path]:
    """The trained digits CNN and its data: (model.onnx, val.npz, train.npz)."""
    pytest.importorskip("torch")
    return digits_assets()
