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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``), tests sharing a module- or class-scoped fixture
    (a converted Keras model, a local Ray instance, a benchmarked pair) run on one worker, so the
    fixture is built once; every other test is spread over the workers one by one. Session-wide
    models are shared through the on-disk cache instead (``tests.helpers.built``)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = any(
            d.scope in ("module", "class", "package")
            for defs in info.name2fixturedefs.values()
            for d in defs
            if d.baseid  # fixtures of the tests' own conftests and modules, not plugins'
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
