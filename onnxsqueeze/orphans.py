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
server's thread: it calls :func:`watch` as it starts (idempotent). A local Ray instance's
processes are looked after by :mod:`onnxsqueeze.killguard` instead (the driver must not import
this module: it would exit when its own parent is gone).
"""

# NOTE: standard library only: the fork server imports it first.

from __future__ import annotations

import os
import threading
import time

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


watch()
