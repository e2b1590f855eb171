"""The local worker pool's fork server (``squeeze --workers N``), started as the CLI starts.

The pool's workers fork from a fork server that imports onnxruntime, torch and the passes'
libraries once (:mod:`onnxsqueeze.search.executor`): ~4 CPU seconds, the first segment of the
critical path of a scaled-out search (a student cannot start training before its worker is
forked). :func:`start_early` starts that server from the command line's first lines, so its
imports run on the second core while the driver imports the CLI (~0.8 s), instead of after.

What to preload is data here (:data:`PRELOAD`, :data:`TORCH_PRELOAD`), read by the executor too.
"""

# NOTE: this module imports only the standard library: it runs before the CLI is imported.

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# What every worker imports before its first candidate (the rest of a replica needs the spec),
# the passes' libraries included (imported on first use, they would cost the first candidates).
PRELOAD = (
    "onnxsqueeze.orphans",  # first: the server exits when the driver is gone (a SIGKILL)
    "onnxruntime",
    "onnx_ir",
    "onnxsqueeze.search.squeezer",
    "onnxsqueeze.recipe",
    "onnxslim",
    "onnxruntime.quantization",
    "onnxsqueeze.optimize.quantize",
    "onnxsqueeze.passes.channels",
    "onnxscript.optimizer",  # the cleanup's constant folding: 0.2 s on a worker's first candidate
)
# With ``preload=("torch",)`` (students to train): what training and exporting a student import
# (torch's optimizers import torch._dynamo; the student is exported with torch.onnx's exporter).
TORCH_PRELOAD = (
    "torch",
    "torch._dynamo",
    "torch.onnx._internal.exporter._core",
    "onnxsqueeze.distill",
    "onnxsqueeze.convert.torch",
)


def preloads(preload: tuple[str, ...]) -> tuple[str, ...]:
    """:data:`PRELOAD`, then ``preload``'s modules (``torch`` stands for :data:`TORCH_PRELOAD`)."""
    extra = [m for name in preload for m in (TORCH_PRELOAD if name == "torch" else (name,))]
    return tuple(dict.fromkeys((*PRELOAD, *extra)))


def warm(modules: tuple[str, ...]) -> int:
    """A worker's warm-up task (pool or Ray): one onnxruntime thread per session (two workers
    share two cores; latency is timed with explicit threads), then import ``modules``; returns
    the process id."""
    import contextlib
    import importlib

    from onnxsqueeze import runtime

    runtime.set_default_threads(1)
    for name in modules:
        with contextlib.suppress(ImportError):  # an optional extra missing: imported on use, or never
            importlib.import_module(name)
    return os.getpid()


def stop() -> None:
    """Stop this process's fork server, if it started one (SIGKILL, then reaped).

    Left alone, the server exits when the driver does, by tearing its interpreter down with
    torch loaded: ~0.9 s after the command's last line, and whoever reads the command's output
    (a shell pipe, a CI log, ``subprocess.run``) waited for it, since the server holds the
    output streams it inherited. Its workers are gone by then (the pool is shut down first),
    and the server owns nothing to clean (its socket's folder is the driver's). A later pool in
    this process starts a new server (``ensure_running`` finds none).
    """
    import contextlib
    import signal
    from multiprocessing import forkserver

    server: Any = forkserver._forkserver  # its private state: the stdlib has no public stop
    with server._lock:
        pid = server._forkserver_pid
        if pid is None:
            return
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        with contextlib.suppress(OSError, TypeError):
            os.close(server._forkserver_alive_fd)
        with contextlib.suppress(OSError, TypeError):  # a file-system socket (not an abstract one)
            os.unlink(server._forkserver_address)
        server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None


_stop_registered = False


def stop_at_exit() -> None:
    """:func:`stop` as this process exits (idempotent); called where a server may start."""
    global _stop_registered
    if not _stop_registered:
        import atexit

        atexit.register(stop)
        _stop_registered = True


def usable() -> bool:
    """Whether a fork server can start here: it listens on a Unix socket in a folder under the
    temp folder (``TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX``), and a socket path must fit in 107
    bytes (a long TMPDIR gave "AF_UNIX path too long"); the pool's workers are spawned otherwise."""
    import multiprocessing
    import tempfile

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    return len(os.fsencode(tempfile.gettempdir())) + len("/pymp-xxxxxxxx/listener-xxxxxxxx") < 104


def workers(argv: Sequence[str], default: int | None = 1) -> int | None:
    """``--workers N`` in ``argv`` (``default`` when absent; 1 when not a number: the CLI says
    what is wrong with it)."""
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--workers=") else None
        if arg == "--workers" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return 1
    return default


def trains(argv: Sequence[str]) -> bool:
    """Whether ``argv`` may train students (``--train-data``, or a fleet's list that can name it)."""
    return any(a.startswith(("--train-data", "--models-from")) for a in argv)


def start_early(argv: Sequence[str]) -> bool:
    """Start the fork server now if ``argv`` is a ``squeeze`` with a local pool (``--workers N``,
    N > 1, no ``--ray``); True if started.

    The executor later finds it running (its preload is the same list). A command line that turns
    out to be bad input only leaves a server that exits with this process.
    """
    args = list(argv)
    if not args or args[0] != "squeeze" or (workers(args) or 1) < 2:
        return False
    if any(a == "--ray" or a.startswith("--ray-address") for a in args):
        return False
    if not usable():
        return False
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(list(preloads(("torch",) if trains(args) else ())))
    stop_at_exit()
    forkserver.ensure_running()  # spawns the server; its imports run while the CLI loads
    return True
