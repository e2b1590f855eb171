"""The CLI's one error boundary: every way a run can end becomes one line and an exit code.

- a project error (``SqueezeError``), or an ``onnx_ir`` pass's ``PreconditionError`` /
  ``PostconditionError`` / ``PassError``: its message, exit 2 (bad input) or 1 (failed check);
- an ``OSError`` (a file the command reads or writes), ``MemoryError``: one line, exit 2;
- click's usage errors (unknown option, bad value): one line and a hint, exit 2;
- SIGINT / SIGTERM, from the first instant of :func:`onnxsqueeze.cli._entry.run`: ``interrupted`` /
  ``terminated``, exit 130 / 143, temp files removed.

An unexpected exception keeps its traceback (it is a bug to fix); ``ONNXSQUEEZE_DEBUG=1`` shows
tracebacks for all.
"""

# NOTE: this module imports only the standard library at its top: it runs before everything else.
# The runner that uses it is :mod:`onnxsqueeze.cli._entry`, apart so that the commands' output sink
# (``_output``) imports this mapping without importing the CLI (no import cycle).

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
NAMES: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
_received: list[int] = []


_deferring: list[bool] = []  # non-empty inside deferred_signals(); True once a signal waits there


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _received:  # already unwinding: one signal is enough
        return
    _received.append(signum)
    if _deferring:
        _deferring[-1] = True
        return
    raise KeyboardInterrupt  # every cleanup path (temp files, caches) handles this one


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT / SIGTERM wait until the block is done, then unwind the run as usual.

    For the import of onnx's C++ extension (nanobind): a KeyboardInterrupt raised by the handler
    while its module initialisation calls back into Python becomes a C++ exception nothing
    catches there, and the process aborts (``terminate called after throwing an instance of
    'nanobind::python_error'``, a traceback, exit 134), seen under load in the start-up fuzz test.
    """
    _deferring.append(False)
    try:
        yield
    finally:
        waited = _deferring.pop()
    if waited:
        raise KeyboardInterrupt


def _on_unraisable(unraisable: Any) -> None:
    """A signal's KeyboardInterrupt raised while CPython ran a weakref callback or a ``__del__``
    (importlib's module-lock callback, under load) is swallowed there and printed as "Exception
    ignored in ...", with a traceback, and the work would go on. Deliver the signal again instead:
    it lands in ordinary code at the next instruction and unwinds the run as intended."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received:
        # Sent from another thread: sent from here (signal.raise_signal, os.kill), its handler
        # would run inside this hook, where its exception is swallowed again. The main thread
        # runs it at its next instruction after this hook returns.
        _thread.start_new_thread(os.kill, (os.getpid(), _received.pop()))
        return
    sys.__unraisablehook__(unraisable)


def install_signal_handlers() -> dict[int, Any]:
    """SIGINT and SIGTERM unwind the process like Ctrl-C (so cleanup runs), then exit 130 / 143.

    Returns:
        The handlers replaced, to restore when the run is over (an in-process caller, tests);
        the previous unraisable-exception hook under the key 0.
    """
    del _received[:], _deferring[:]
    previous: dict[int, Any] = {0: sys.unraisablehook}
    sys.unraisablehook = _on_unraisable
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, _on_signal)
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    """Put back what :func:`install_signal_handlers` replaced."""
    for key, handler in previous.items():
        if key == 0:
            sys.unraisablehook = handler
        else:
            signal.signal(key, handler)


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
