"""``python -m onnxsqueeze`` and the ``onnxsqueeze`` console script (``onnxsqueeze.__main__:main``).

SIGINT and SIGTERM are handled from the first line the interpreter runs here, before anything
heavy is imported (typer, onnx, onnxruntime, torch take seconds): a signal during start-up exits
130 / 143 with one line and no traceback. Nothing is written before the CLI's error boundary takes
over (:func:`onnxsqueeze.cli._entry.run` installs its own handlers, which unwind and remove
temp files), so this first handler only has to say so and leave.
"""

# NOTE: only the standard library's already-loaded modules before the handlers are in place.

import os
import signal

_EARLY: dict[int, tuple[int, str]] = {
    signal.SIGINT: (130, "interrupted"),
    signal.SIGTERM: (143, "terminated"),
}


def _early_exit(signum: int, _frame: object) -> None:
    code, word = _EARLY[signum]
    try:  # noqa: SIM105 (contextlib is not loaded yet; this runs before any import)
        os.write(2, f"error: {word}\n".encode())
    except OSError:  # stderr closed
        pass
    os._exit(code)


def install_early_handlers() -> None:
    """Exit 130 / 143 with one line on SIGINT / SIGTERM (until the CLI installs its own)."""
    for signum in _EARLY:
        signal.signal(signum, _early_exit)


install_early_handlers()


def main() -> None:
    """The entry point: the CLI's error boundary (signals and errors -> one line and an exit code)."""
    from onnxsqueeze.cli._entry import main as _main

    _main()


if __name__ == "__main__":
    main()
