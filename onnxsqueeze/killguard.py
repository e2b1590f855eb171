"""Processes killed when the driver is gone: a local Ray instance's (``squeeze --ray``).

Ray starts its node's GCS and raylet with PR_SET_PDEATHSIG, so they die with the driver, and the
raylet's workers exit when it is gone; but the raylet's two agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) see it die, try to report that to the dead GCS and hang: both were left
behind by every SIGKILLed ``squeeze --ray``. :func:`guard` starts a small process (this file run
as a script, standard library only) that SIGKILLs such processes once the driver is gone;
:func:`kill` is the same without waiting (the CLI's exit, :mod:`onnxsqueeze.rayhead`).

Unlike :mod:`onnxsqueeze.orphans`, importing this module starts nothing (the driver imports it).
"""

# NOTE: standard library only: it runs as a script with ``python -S``.

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

INTERVAL_S = 1.0


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


def alive(pid: int) -> bool:
    """Whether ``pid`` names a live process (a zombie is not; ``/proc``, else a signal 0)."""
    try:
        return _stat(pid)[0] not in ("Z", "X")
    except (OSError, IndexError):  # no entry (gone), or no /proc here
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


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
    targets = stamp(pids)
    if not targets:
        return None
    return subprocess.Popen(
        [sys.executable, "-S", __file__, *targets],  # the file, not the package: the standard library only
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stamp(pids: Iterable[int]) -> list[str]:
    """``PID:START`` for each live process of ``pids``: what :func:`kill` kills, and only if the
    pid still names that process."""
    return [f"{pid}:{started}" for pid in pids if (started := _started(pid)) is not None]


def kill(targets: Iterable[str]) -> None:
    """SIGKILL each ``PID:START`` of :func:`stamp` still running."""
    for target in targets:
        pid, _, started = target.partition(":")
        if _started(int(pid)) == started:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def _kill_when_orphaned(targets: list[str], interval: float = INTERVAL_S) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(interval)
    kill(targets)


if __name__ == "__main__":  # guard()'s process
    _kill_when_orphaned(sys.argv[1:])
