"""A local pool's processes exit when the process that started them is gone.

A driver killed by SIGKILL (or OOM) runs no cleanup: its ``ProcessPoolExecutor`` workers wait on
a queue whose other end they hold themselves, and its fork server waits for work, forever (three
processes left behind by every such kill, seen after CI's "resume after the driver is killed"
test). Each of them watches its parent instead: the fork server's parent is the driver, a
worker's parent is the fork server (or the driver, when spawned); when the parent changes (the
process was re-parented to init or a subreaper), it exits. A chain: driver gone -> fork server
exits -> its workers exit.

Importing this module starts the watch in the importing process, so only such processes import
it: the fork server (first in its preload list, :data:`onnxsqueeze.forkserver.PRELOAD`) and the
workers (pool and Ray workers import that list too). A forked worker does not inherit the
server's thread: it calls :func:`watch` as it starts (idempotent).

A local Ray instance (``squeeze --ray``) is the other case: its GCS and raylet die with the driver
(Ray sets PR_SET_PDEATHSIG on them) and the raylet's workers exit when it is gone, but the raylet's
two agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) see it die, try to report that to
the dead GCS and hang: both were left behind by every SIGKILLed ``squeeze --ray``. :func:`guard`
starts a small process (this file run as a script) that SIGKILLs such processes once the driver
is gone.
"""

# NOTE: standard library only: the fork server imports it first.

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable

INTERVAL_S = 1.0
GRACE_S = 2.0


NAME = "onnxsqueeze-orphan-watch"


def watch(interval: float = INTERVAL_S) -> threading.Thread:
    """Exit this process (status 1) once its parent has changed, after multiprocessing's
    finalizers (no atexit: its owner is gone).

    Idempotent in a process (a forked child has no thread of its parent's, so it starts its own).
    """
    for thread in threading.enumerate():
        if thread.name == NAME:
            return thread
    parent = os.getppid()

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        # A driver that ended normally shut its pool down first: leave that exit a moment, then
        # run what it would have run (multiprocessing's finalizers: a worker's scratch folder).
        time.sleep(GRACE_S)
        from multiprocessing import util

        util._run_finalizers(0)  # type: ignore[attr-defined]
        util._run_finalizers()  # type: ignore[attr-defined]
        os._exit(1)

    thread = threading.Thread(target=loop, name=NAME, daemon=True)
    thread.start()
    return thread


def _stat(pid: int | str) -> list[str]:
    """``/proc/PID/stat``'s fields after the command name (from the state, field 3, on)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _started(pid: int) -> str | None:
    """The process's start time (field 22): a reused pid is not the same process."""
    try:
        return _stat(pid)[19]
    except (OSError, IndexError):
        return None


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: ``/proc``; none elsewhere)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if int(_stat(entry.name)[1]) == pid:
                        found.append(int(entry.name))
    return found


def guard(pids: Iterable[int]) -> subprocess.Popen[bytes] | None:
    """Start a process that SIGKILLs ``pids`` when this process is gone (None without ``/proc``).

    Kill the guard (``.kill()``) once ``pids`` were stopped normally."""
    targets = [f"{pid}:{started}" for pid in pids if (started := _started(pid)) is not None]
    if not targets:
        return None
    return subprocess.Popen(
        [sys.executable, "-S", __file__, *targets],  # the file, not the package: the standard library only
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_when_orphaned(targets: list[str], interval: float = INTERVAL_S) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(interval)
    for target in targets:
        pid, _, started = target.partition(":")
        if _started(int(pid)) == started:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


if __name__ == "__main__":  # guard()'s process
    _kill_when_orphaned(sys.argv[1:])
else:
    watch()
