"""The CLI's runner and entry point, inside the error boundary of :mod:`onnxsqueeze.cli._boundary`.

:func:`run` installs the signal handlers first, then imports the CLI (typer, the commands) and
runs it; every way it ends becomes one line and an exit code. Kept apart from ``_boundary`` so
that the commands' output sink imports the error mapping without importing the CLI itself.
"""

# NOTE: this module imports only the standard library and ``_boundary`` at its top: it runs before
# everything else (``onnxsqueeze.forkserver`` and ``rayhead``, imported in ``run``, are standard library
# only too).

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from onnxsqueeze.cli import _boundary
from onnxsqueeze.cli._boundary import (
    NAMES,
    debug,
    deferred_signals,
    describe,
    install_signal_handlers,
    interrupted_exit_code,
    one_line,
    restore_signal_handlers,
)


def _limits_from_environment() -> None:
    """``ONNXSQUEEZE_MAX_INPUT_BYTES``: the allocation guard's limit; ``ONNXSQUEEZE_STREAM_BYTES``:
    the weight size from which models take the streaming paths (the core reads no variable)."""
    from onnxsqueeze.errors import InputError

    for name, module, attr in (
        ("ONNXSQUEEZE_MAX_INPUT_BYTES", "onnxsqueeze.data", "MAX_INPUT_BYTES"),
        ("ONNXSQUEEZE_STREAM_BYTES", "onnxsqueeze.io", "STREAM_BYTES"),
    ):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        import importlib

        try:
            value = int(float(raw))
        except (ValueError, OverflowError) as e:
            raise InputError(f"{name}='{raw}': expected a number of bytes") from e
        setattr(importlib.import_module(module), attr, value)


def _say(message: str) -> None:
    try:
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed (a pipe that went away)
        pass


def _cleanup() -> None:
    io = sys.modules.get("onnxsqueeze.io")
    if io is not None:
        io.remove_temps()


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    previous: dict[int, Any] = {}
    code = 0
    try:
        previous = install_signal_handlers()  # inside the try: a signal right after it is caught
        from onnxsqueeze import forkserver, rayhead

        # `squeeze --workers N`: the pool's fork server imports torch while the CLI is imported;
        # `squeeze --ray`: the local Ray instance starts (in a thread) meanwhile.
        args = list(argv) if argv is not None else sys.argv[1:]
        forkserver.start_early(args)
        rayhead.start_early(args)
        with deferred_signals():  # a signal inside its C++ module's initialisation aborts the process
            import onnx  # noqa: F401
        import typer
        from typer._click import exceptions as cx  # typer >= 0.20 vendors click here

        from onnxsqueeze.cli.app import app

        _limits_from_environment()

        try:
            rv = app(
                args=list(argv) if argv is not None else None, standalone_mode=False, prog_name="onnxsqueeze"
            )
            code = rv if isinstance(rv, int) else 0
        except cx.NoArgsIsHelpError as e:  # a bare command: its help, as click would show it
            e.show()
            code = 2
        except cx.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            _say(one_line(e.format_message()) + hint)
            code = 2
        except cx.ClickException as e:
            _say(one_line(e.format_message()))
            code = e.exit_code
        except typer.Abort:
            raise KeyboardInterrupt from None
        if _boundary._received or code == 130:  # typer turns a KeyboardInterrupt into a silent exit 130
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        code = interrupted_exit_code()
        _cleanup()
        _say(NAMES.get(_boundary._received[0], "interrupted") if _boundary._received else "interrupted")
    except Exception as e:
        _cleanup()
        if _boundary._received:
            # The signal's KeyboardInterrupt became another exception on its way out: onnxruntime
            # interrupted while importing raises "ImportError: initialization failed" from it.
            if debug():
                traceback.print_exc()
            _say(NAMES.get(_boundary._received[0], "interrupted"))
            return interrupted_exit_code()
        found = describe(e)
        if found is None or debug():
            traceback.print_exc()
        if found is None:
            return 1
        _say(found[0])
        code = found[1]
    finally:
        _cleanup()
        restore_signal_handlers(previous)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    """The ``onnxsqueeze`` entry point."""
    code = run(argv)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed (a pipe that went away)
            stream.flush()
    if _boundary._received:
        # Interrupted, cleaned up, said so: leave now. A KeyboardInterrupt that landed in code an
        # extension ran through PyRun_String during an import leaves CPython's "unhandled Ctrl-C"
        # flag set, and a normal exit would then re-kill the process by SIGINT (130 for a SIGTERM).
        os._exit(code)
    # The work is done. A normal exit would tear the interpreter down, and CPython puts the default
    # signal handlers back during that teardown, before the extensions' own (torch, onnxruntime)
    # finish: a SIGTERM then killed the process with no line (seen once in CI, -15 after a finished
    # `inspect`). Run the exit hooks (worker pools, Ray, scratch folders) while our handlers still
    # answer, then leave without the teardown.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
