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


@pytest.hookimpl(trylast=True)
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
    if getattr(config.option, "loadgroup", False):
        _slow_modules_first(items)
        _suffix_groups(items)


def _slow_modules_first(items: list[pytest.Item]) -> None:
    """Modules holding a slow test go first, each kept whole (module fixtures are built once):
    the scheduler hands tests out in this order, so a worker does not start a minutes-long test
    when the other has nothing left to run."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


def _suffix_groups(items: list[pytest.Item]) -> None:
    """On an xdist worker, give each grouped test the ``@group`` suffix that ``loadgroup``
    schedules by. pytest-xdist 3.8 does this by assigning ``item._nodeid``, which pytest 9 no
    longer reads (the id lives in ``item._id``): without this, every group was split over the
    workers and each worker built the shared fixtures (the corpus cells, module fixtures) again.
    Runs last, so a suffix xdist managed to set is kept as it is."""
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})  # fmt: skip
        nodeid = item.nodeid
        if not names or nodeid.rfind("@") > nodeid.rfind("]"):
            continue
        grouped = f"{nodeid}@{'_'.join(names)}"
        current = getattr(item, "_id", None)
        if current is not None and not isinstance(current, str):
            item._id = type(current).parse(grouped)  # type: ignore[attr-defined]
        else:
            item._nodeid = grouped  # type: ignore[attr-defined]
