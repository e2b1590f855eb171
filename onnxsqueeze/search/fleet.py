"""Fleets: one squeeze per model, all on the same executor, and a summary of the whole run.

``onnxsqueeze squeeze A.onnx B.onnx ... -o DIR`` (or ``--models-from list.txt``) writes each
model's usual output folder under ``DIR/<model>/`` and ``DIR/fleet.md`` / ``DIR/fleet.json``:
per model the baseline, the best candidate, its size and latency ratios, the drop and the time.

Models run concurrently (as many at once as the executor has workers); each model's own search
bisects its knobs concurrently too, and the executor queues what exceeds its workers. A model
that cannot be squeezed (bad data, nothing within budget) is reported in the summary and the
others go on.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from onnxsqueeze import io as sio
from onnxsqueeze.errors import BudgetNotMetError, InputError, ObjectiveNotImprovedError, SqueezeError
from onnxsqueeze.evaluate import Budget
from onnxsqueeze.search.algorithm import Point
from onnxsqueeze.search.executor import Executor
from onnxsqueeze.search.knobs import describe_settings
from onnxsqueeze.search.options import SqueezeOptions
from onnxsqueeze.search.outputs import write_outputs
from onnxsqueeze.search.run import make_squeezer
from onnxsqueeze.search.squeezer import Squeezer

FLEET_SCHEMA = "onnxsqueeze.fleet/1"


@dataclasses.dataclass(frozen=True)
class FleetEntry:
    """One model of a fleet with its data (``train_data`` offers distillation)."""

    model: Path
    data: Path
    train_data: Path | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # per-model squeeze settings (metric, output...)


# Per-model settings a models list may give as KEY=VALUE (the rest of the flags are the fleet's).
LINE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "metric": str,
    "output": str,
    "threshold": float,
    "samples": int,
    "calibration_samples": int,
}


def fleet_entries(
    models: Sequence[Path], models_from: Path | None, data: Path | None, train_data: Path | None
) -> list[FleetEntry]:
    """The models to squeeze: ``--models-from``'s lines, then ``models`` (all on ``data``).

    Raises:
        InputError: no model, or models without data.
    """
    entries = read_models_list(models_from, data=data, train_data=train_data) if models_from else []
    if models and data is None:
        raise InputError("missing --data: the evaluation data of the model(s)")
    entries += [FleetEntry(Path(m), data, train_data) for m in models]  # type: ignore[arg-type]
    if not entries:
        raise InputError("no model given: name one or more .onnx files, or --models-from LIST")
    return entries


def read_models_list(path: str | Path, *, data: Path | None, train_data: Path | None) -> list[FleetEntry]:
    """Parse a ``--models-from`` file: one ``MODEL [DATA [TRAIN_DATA]] [KEY=VALUE ...]`` per line.

    Blank lines and ``#`` comments are skipped; relative paths are relative to the list file;
    a line without DATA uses ``data`` (the ``--data`` flag), likewise TRAIN_DATA. ``KEY=VALUE``
    sets one of :data:`LINE_OPTIONS` for that model (``metric=agreement output=probs``).

    Raises:
        InputError: the file cannot be read, or a line names no data and ``--data`` is not given.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read the models list: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: the models list is not text") from e
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        fields = [w for w in words if "=" not in w]
        if not fields:
            continue
        if len(fields) > 3:
            raise InputError(f"{path}:{n}: expected 'MODEL [DATA [TRAIN_DATA]]', got {len(fields)} paths")
        overrides = []
        for word in (w for w in words if "=" in w):
            k, _, v = word.partition("=")
            k = k.replace("-", "_")
            if k not in LINE_OPTIONS:
                raise InputError(f"{path}:{n}: unknown setting '{k}'; known: {', '.join(LINE_OPTIONS)}")
            try:
                overrides.append((k, LINE_OPTIONS[k](v)))
            except ValueError as e:
                raise InputError(f"{path}:{n}: {k}={v}: not a valid value") from e
        paths = [p if p.is_absolute() else path.parent / p for p in map(Path, fields)]
        model_data = paths[1] if len(paths) > 1 else data
        if model_data is None:
            raise InputError(f"{path}:{n}: no data for {fields[0]}; give it on the line or with --data")
        entries.append(
            FleetEntry(paths[0], model_data, paths[2] if len(paths) > 2 else train_data, tuple(overrides))
        )
    if not entries:
        raise InputError(f"{path}: no models listed")
    return entries


def fleet_names(models: Sequence[Path]) -> list[str]:
    """A folder name per model: the file's stem, with ``-2``, ``-3``... for repeated stems."""
    names: list[str] = []
    for m in models:
        stem = m.name.removesuffix(".onnx") or "model"
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


@dataclasses.dataclass
class FleetRow:
    """One model's line in the fleet summary."""

    name: str
    model: str
    status: str  # ok | not improved | nothing fits | error
    message: str = ""
    metric: str | None = None
    baseline: float | None = None
    best: float | None = None
    drop: float | None = None
    candidate: str | None = None
    size_ratio: float | None = None  # original / best (x smaller)
    latency_ratio: float | None = None  # original / best (x faster)
    points: int = 0
    measured: int = 0
    seconds: float = 0.0


def _row(name: str, entry: FleetEntry, squeezer: Squeezer, result: Any, seconds: float) -> FleetRow:
    b, base = result.best, result.baseline
    row = FleetRow(
        name=name,
        model=str(entry.model),
        status="ok" if b is not None else "nothing fits",
        metric=squeezer.evaluator.metric.name,
        baseline=base.metric,
        points=len(result.points),
        measured=squeezer.evaluations,
        seconds=seconds,
    )
    if b is not None:
        row.best, row.drop = b.metric, b.drop
        row.candidate = describe_settings(b.settings, squeezer.knobs)
        if b.size and base.size:
            row.size_ratio = base.size / b.size
        if b.latency_ms and base.latency_ms:
            row.latency_ratio = base.latency_ms / b.latency_ms
    return row


def squeeze_fleet(
    entries: Sequence[FleetEntry],
    out_dir: str | Path,
    *,
    options: SqueezeOptions,
    executor: Executor,
    on_point: Callable[[str, Squeezer, Point], None] | None = None,
    on_model: Callable[[str, FleetRow], None] | None = None,
    **make_kwargs: Any,
) -> tuple[list[FleetRow], dict[str, Path]]:
    """Squeeze every model of ``entries`` into ``out_dir/<name>/``; write fleet.md and fleet.json.

    ``make_kwargs`` go to :func:`make_squeezer` (metric, samples, calibration...). Returns the
    summary rows (in the order of ``entries``) and the summary files.
    """
    out = Path(out_dir)
    names = fleet_names([e.model for e in entries])
    rows: list[FleetRow | None] = [None] * len(entries)
    t_start = time.perf_counter()

    def one(i: int) -> FleetRow:
        entry, name = entries[i], names[i]
        t0 = time.perf_counter()
        try:
            squeezer = make_squeezer(
                entry.model,
                entry.data,
                options=options,
                out_dir=out / name,
                train_data=entry.train_data,
                **(make_kwargs | dict(entry.overrides)),
            )
            squeezer.executor = executor
            result = squeezer.run(on_point=(lambda p: on_point(name, squeezer, p)) if on_point else None)
            row = _row(name, entry, squeezer, result, time.perf_counter() - t0)
            try:
                write_outputs(
                    squeezer,
                    result,
                    out / name,
                    protect=[e for e in (entry.model, entry.data, entry.train_data) if e is not None],
                    model_name=name,
                    elapsed_s=row.seconds,
                )
            except ObjectiveNotImprovedError as e:  # the Pareto models are written all the same
                row.status, row.message = "not improved", str(e)
            except BudgetNotMetError as e:
                row.status, row.message = "nothing fits", str(e)
        except SqueezeError as e:
            row = FleetRow(name, str(entry.model), "error", str(e), seconds=time.perf_counter() - t0)
        if on_model:
            on_model(name, row)
        return row

    at_once = max(1, min(executor.workers, len(entries)))
    if at_once == 1:
        for i in range(len(entries)):
            rows[i] = one(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=at_once) as pool:
            for i, row in zip(range(len(entries)), pool.map(one, range(len(entries))), strict=True):
                rows[i] = row
    done = [r for r in rows if r is not None]
    files = write_summary(done, out, options.budget, executor.describe(), time.perf_counter() - t_start)
    return done, files


_write_lock = threading.Lock()


def summary_dict(rows: Sequence[FleetRow], budget: Budget, executor: str, seconds: float) -> dict[str, Any]:
    return {
        "schema": FLEET_SCHEMA,
        "budget": {"max_drop": budget.max_drop, "relative": budget.relative},
        "executor": executor,
        "seconds": seconds,
        "models": [dataclasses.asdict(r) for r in rows],
    }


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def render_summary(rows: Sequence[FleetRow], budget: Budget, executor: str, seconds: float) -> str:
    ok = sum(r.status == "ok" for r in rows)
    lines = [
        "# onnxsqueeze fleet",
        "",
        f"{ok} of {len(rows)} model(s) squeezed within {budget.max_drop:g}"
        f"{'%' if budget.relative else ' point(s)'}; {seconds:.1f} s in all; candidates measured "
        f"{executor}.",
        "",
        "| model | metric | baseline | best | drop | smaller | faster | best candidate | points (measured) | time s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = r.status if not r.message else f"{r.status}: {r.message.splitlines()[0][:120]}"
        lines.append(
            f"| {r.name} | {r.metric or '-'} | {_f(r.baseline)} | {_f(r.best)} | {_f(r.drop)} | "
            f"{_x(r.size_ratio)} | {_x(r.latency_ratio)} | {r.candidate or '-'} | "
            f"{r.points} ({r.measured}) | {r.seconds:.1f} | {status.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def write_summary(
    rows: Sequence[FleetRow], out: Path, budget: Budget, executor: str, seconds: float
) -> dict[str, Path]:
    with _write_lock:
        doc = summary_dict(rows, budget, executor, seconds)
        return {
            "json": sio.write_bytes_atomic(out / "fleet.json", (json.dumps(doc, indent=2) + "\n").encode()),
            "markdown": sio.write_bytes_atomic(
                out / "fleet.md", render_summary(rows, budget, executor, seconds).encode()
            ),
        }
