"""The one output sink of the CLI: results on stdout, progress, warnings and errors on stderr."""

from __future__ import annotations

import functools
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onnxsqueeze.cli import _boundary
from onnxsqueeze.units import human_bytes as human_bytes  # re-exported for the commands
from onnxsqueeze.units import human_count as human_count


def _console(stderr: bool) -> Console:
    # Not a terminal (a CI log, ``> log 2>&1``): rich would cut tables to 80 columns with an
    # ellipsis; give the content all the width it needs instead.
    stream = sys.stderr if stderr else sys.stdout
    wide = None if _is_terminal(stream) else 4096
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=wide)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


out = _console(stderr=False)
err = _console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def debug() -> bool:
    return _boundary.debug()


def handle_errors(fn: F) -> F:
    """Turn a project error into one red line on stderr and its exit code (2 input, 1 check).

    What counts as a project error, and its code, is :func:`onnxsqueeze.cli._boundary.describe`;
    Ctrl-C and SIGTERM exit 130 / 143 with temp files removed.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            from onnxsqueeze import io as sio

            sio.remove_temps()  # the boundary (cli._entry.run) says so and exits 130 / 143
            raise typer.Exit(_boundary.interrupted_exit_code()) from None
        except Exception as e:
            found = _boundary.describe(e)
            if found is None:
                raise
            if debug():
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {escape(found[0])}")
            raise typer.Exit(found[1]) from None

    return wrapper  # type: ignore[return-value]


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}")


def info(message: str) -> None:
    err.print(escape(message))


def emit_json(obj: Any) -> None:
    """Print a JSON document on stdout (plain, never wrapped or coloured)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


PROGRESS_EVERY_S = 5.0


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr; yields ``update(done, total, description=None)`` for callbacks.

    Off a terminal the bar is hidden and a line is printed every ``PROGRESS_EVERY_S`` seconds.
    """
    title = description
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=total)
        last = [time.monotonic()]

        def update(done: int, total_: int, description: str | None = None) -> None:
            if description is None:
                bar.update(task, completed=done, total=total_)
            else:
                bar.update(task, completed=done, total=total_, description=description)
            # off a terminal (CI logs, pipes) the bar is hidden: a line every few seconds instead
            if not err.is_terminal and time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                last[0] = time.monotonic()
                err.print(escape(f"{description or title}: {done}/{total_}"))

        yield update


def show(json_: bool, doc: Any, render: Callable[[], None]) -> None:
    """The result of a command: ``doc`` as JSON on stdout with ``--json``, else ``render()``."""
    if json_:
        emit_json(doc)
    else:
        render()


def refuse_artifact(output: Path, inputs: Sequence[Path | None]) -> None:
    """Refuse, before any work, to write ``output`` or its manifest over one of ``inputs``."""
    from onnxsqueeze import io as sio
    from onnxsqueeze.manifest import sidecar_path

    kept = [p for p in inputs if p is not None]
    sio.refuse_overwrite(output, kept)
    sio.refuse_overwrite(sidecar_path(output), kept)


def write_artifact(
    model: Any,
    output: Path,
    report: dict[str, Any],
    json_: bool,
    render: Callable[[], None],
    **provenance: Any,
) -> None:
    """Save ``model`` with its manifest (:func:`onnxsqueeze.manifest.save_artifact`), then show ``report``
    (with the written paths under ``--json``)."""
    from onnxsqueeze.manifest import save_artifact

    art = save_artifact(model, output, **provenance)
    show(json_, report | {"output": str(art.path), "manifest": str(art.manifest_path)}, render)


@contextmanager
def epoch_progress(
    name: str, metric_format: str = ".4g", val_loss: bool = False
) -> Iterator[tuple[Callable[..., None], Callable[[Any], None]]]:
    """A training bar on stderr; yields ``(update, on_epoch)``: ``update`` for the teacher's batches,
    ``on_epoch`` for :class:`onnxsqueeze.distill.train.EpochLog` (a line per epoch)."""
    with progress(name) as update:

        def on_epoch(e: Any) -> None:
            mark = "  *best*" if e.best else ""
            line = (
                f"epoch {e.epoch}/{e.planned}  loss {e.train_loss:.4f}  "
                f"val {e.metric} {format(e.val_metric, metric_format)}"
            )
            update(e.epoch, e.planned, line)
            loss = f"  val loss {e.val_loss:.4f}" if val_loss else ""
            info(f"{line}{loss}  {e.elapsed_s:.0f}s{mark}")

        yield update, on_epoch


def file_hashes(*paths: Path | None) -> dict[str, str]:
    """``{path: sha256}`` of the files given (None skipped), for a manifest's provenance."""
    from onnxsqueeze import io as sio

    return {str(p): sio.sha256_file(p) for p in paths if p is not None}
