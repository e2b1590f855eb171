"""The one output sink of the CLI: results on stdout, progress, warnings and errors on stderr."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onnxsqueeze.errors import SqueezeError
from onnxsqueeze.units import human_bytes as human_bytes  # re-exported for the commands
from onnxsqueeze.units import human_count as human_count

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def debug() -> bool:
    return os.environ.get("ONNXSQUEEZE_DEBUG", "") not in ("", "0")


def handle_errors(fn: F) -> F:
    """Turn a SqueezeError into one red line on stderr and its exit code (2 input, 1 check)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SqueezeError as e:
            if debug():
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {escape(str(e))}")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None

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
