from __future__ import annotations

import json
import resource
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
        _longest_first(items)
        _suffix_groups(items)


# The last full run's seconds per test (setup + call + teardown; written by --record-durations).
DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN_SLOW_S = 30.0  # a unit with a slow test but no recorded one: early, among the long ones


def _unit(item: pytest.Item) -> str:
    """What the loadgroup scheduler hands out whole: the test's xdist groups, else the test."""
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})  # fmt: skip
    return "_".join(names) if names else item.nodeid


def _longest_first(items: list[pytest.Item]) -> None:
    """Hand out the work units longest first (by DURATIONS; a unit is a group or a test): the
    scheduler gives them out in collection order, so a minutes-long test started last would run
    alone on one worker while the other has nothing left. Items of a unit stay in their order."""
    known: dict[str, float] = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    recorded: dict[str, float] = {}
    slow: set[str] = set()
    for item in items:
        unit = _unit(item)
        if item.nodeid in known:
            recorded[unit] = recorded.get(unit, 0.0) + float(known[item.nodeid])
        if item.get_closest_marker("slow"):
            slow.add(unit)

    def cost(unit: str) -> float:
        return recorded.get(unit, UNKNOWN_SLOW_S if unit in slow else 0.0)

    order = {unit: i for i, unit in enumerate(dict.fromkeys(_unit(item) for item in items))}
    items.sort(key=lambda item: (-cost(_unit(item)), order[_unit(item)]))


def _suffix_groups(items: list[pytest.Item]) -> None:
    """On an xdist worker, give each grouped test the ``@group`` suffix that ``loadgroup``
    schedules by. pytest-xdist 3.8 does this by assigning ``item._nodeid``, which pytest 9 no
    longer reads (the id lives in ``item._id``): without this, every group was split over the
    workers and each worker built the shared fixtures (the corpus cells, module fixtures) again.
    Runs last, so a suffix xdist managed to set is kept as it is."""
    for item in items:
        unit, nodeid = _unit(item), item.nodeid
        if unit == nodeid or nodeid.rfind("@") > nodeid.rfind("]"):
            continue
        grouped = f"{nodeid}@{unit}"
        current = getattr(item, "_id", None)
        if current is not None and not isinstance(current, str):
            item._id = type(current).parse(grouped)  # type: ignore[attr-defined]
        else:
            item._nodeid = grouped  # type: ignore[attr-defined]


# Per-test cost: wall seconds (setup + call + teardown) and CPU seconds of the test's process plus
# the subprocesses it waited for (the CLI runs of the corpus cells), summed at the end of the run.
# On a loaded machine the CPU figure is the one that compares between runs.
_CPU_START = pytest.StashKey[float]()


def _cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-durations",
        metavar="PATH",
        # give it as --record-durations=PATH: with a space, pytest reads an existing PATH as a test
        # path, roots the run in its folder and never loads this conftest (the option is unknown)
        help="merge each test's wall seconds into the JSON file PATH (tests/durations.json orders runs)",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    item.stash[_CPU_START] = _cpu_s()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "teardown" and _CPU_START in item.stash:
        report.user_properties.append(("cpu_s", _cpu_s() - item.stash[_CPU_START]))
    return report


class _Costs:
    """Collects the reports' durations and CPU seconds (on the xdist controller, or in-process)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.slow: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = (
            report.nodeid.split("@")[0]
            if report.nodeid.rfind("@") > report.nodeid.rfind("]")
            else report.nodeid
        )
        self.wall[nodeid] = self.wall.get(nodeid, 0.0) + report.duration
        if "slow" in report.keywords:
            self.slow.add(nodeid)
        for key, value in report.user_properties:
            if key == "cpu_s":
                self.cpu[nodeid] = self.cpu.get(nodeid, 0.0) + float(value)


_COSTS = pytest.StashKey[_Costs]()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        config.stash[_COSTS] = _Costs()
        config.pluginmanager.register(config.stash[_COSTS], "onnxsqueeze-costs")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    costs = config.stash.get(_COSTS, None)
    if costs is None or not costs.wall:
        return
    terminalreporter.write_line(
        f"test cost: {sum(costs.wall.values()):.1f} s of test durations (sum over workers), "
        f"{sum(costs.cpu.values()):.1f} CPU s in the tests' processes and waited subprocesses, "
        f"{len(costs.wall)} tests"
    )
    path = config.getoption("record_durations")
    if path:
        # every slow test (a skipped one costs nothing) and every other test of a second or more,
        # merged into the file's entries (the TF session and the main session write one file)
        kept = json.loads(Path(path).read_text()) if Path(path).is_file() else {}
        kept |= {k: round(v, 1) for k, v in costs.wall.items() if v >= 1.0 or k in costs.slow}
        Path(path).write_text(json.dumps(dict(sorted(kept.items())), indent=1) + "\n")
