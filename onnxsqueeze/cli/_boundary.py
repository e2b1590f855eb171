"""The CLI's one error boundary: every way a run can end becomes one line and an exit code.

- a project error (``SqueezeError``), or an ``onnx_ir`` pass's ``PreconditionError`` /
  ``PostconditionError`` / ``PassError``: its message, exit 2 (bad input) or 1 (failed check);
- an ``OSError`` (a file the command reads or writes), ``MemoryError``: one line, exit 2;
- click's usage errors (unknown option, bad value): one line and a hint, exit 2;
- SIGINT / SIGTERM, from the first instant of :func:`run`: ``interrupted`` / ``terminated``,
  exit 130 / 143, temp files removed.

An unexpected exception keeps its traceback (it is a bug to fix); ``ONNXSQUEEZE_DEBUG=1`` shows
tracebacks for all.
"""

# NOTE: this module imports only the standard library at its top: it runs before everything else.

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
NAMES: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
_received: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _received:  # already unwinding: one signal is enough
        return
    _received.append(signum)
    raise KeyboardInterrupt  # every cleanup path (temp files, caches) handles this one


def install_signal_handlers() -> dict[int, Any]:
    """SIGINT and SIGTERM unwind the process like Ctrl-C (so cleanup runs), then exit 130 / 143.

    Returns:
        The handlers replaced, to restore when the run is over (an in-process caller, tests).
    """
    del _received[:]
    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, _on_signal)
    return previous


def interrupted_exit_code() -> int:
    """130 (SIGINT, Ctrl-C) or 143 (SIGTERM): the exit code of the signal that stopped the run."""
    return EXIT_CODES[_received[0]] if _received else 130


def one_line(message: str) -> str:
    """A message on one line: line breaks (an input named with a newline) are shown escaped."""
    return message.strip().replace("\r", "\\r").replace("\n", "\\n")


def debug() -> bool:
    return os.environ.get("ONNXSQUEEZE_DEBUG", "") not in ("", "0")


def describe(e: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code for an exception the CLI reports, or None for a bug."""
    from onnxsqueeze.errors import SqueezeError

    if isinstance(e, SqueezeError):
        return one_line(str(e)), e.exit_code
    names = [c.__name__ for c in type(e).__mro__ if c.__module__.startswith("onnx_ir")]
    if names:
        if "PreconditionError" in names:
            return one_line(f"the model does not meet a pass's requirements: {e}"), 2
        if "PostconditionError" in names:
            return one_line(f"a pass's result failed its check: {e}"), 1
        if "PassError" in names:
            cause = e.__cause__
            if cause is not None and describe(cause) is not None:
                return describe(cause)
            return one_line(f"a pass failed: {e}"), 1
    if isinstance(e, MemoryError):
        return "out of memory (the input is too large for this machine; try smaller shapes or batches)", 2
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        return one_line(f"{where}{e.strerror or e}"), 2
    return None


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
        if _received or code == 130:  # typer turns a KeyboardInterrupt into a silent exit 130
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        code = interrupted_exit_code()
        _cleanup()
        _say(NAMES.get(_received[0], "interrupted") if _received else "interrupted")
    except Exception as e:
        _cleanup()
        found = describe(e)
        if found is None or debug():
            traceback.print_exc()
        if found is None:
            return 1
        _say(found[0])
        code = found[1]
    finally:
        _cleanup()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    """The ``onnxsqueeze`` entry point."""
    code = run(argv)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed (a pipe that went away)
            stream.flush()
    if _received:
        # Interrupted, cleaned up, said so: leave now. A KeyboardInterrupt that landed in code an
        # extension ran through PyRun_String during an import leaves CPython's "unhandled Ctrl-C"
        # flag set, and a normal exit would then re-kill the process by SIGINT (130 for a SIGTERM).
        os._exit(code)
    sys.exit(code)
