"""A search worker's scratch folder (its students, soft labels), named after the worker's pid.

A worker that exits normally removes its folder (an exit hook and a multiprocessing finalizer,
:func:`onnxsqueeze.search.squeezer.build_replica`). A worker killed outright runs neither: the
pool's workers that :meth:`~onnxsqueeze.search.executor.ProcessExecutor.abandon` stops, the
local Ray instance's workers SIGKILLed as ``squeeze --ray`` exits, any worker of a killed
driver. Their folders are named ``onnxsqueeze-worker-<pid>-<random>``, so whoever killed them
removes them (:func:`sweep` with the pids), and a new worker sweeps the folders of dead
workers on its node as it starts.
"""

# NOTE: standard library only (and killguard, which is too): the CLI's exit path (rayhead) uses it.

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from onnxsqueeze import killguard

PREFIX = "onnxsqueeze-worker-"


def make() -> Path:
    """A new scratch folder for this worker process, in the temp folder."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def sweep(pids: Iterable[int] | None = None) -> int:
    """Remove the scratch folders of the workers ``pids`` (killed by the caller), or, with None,
    of every worker on this node no longer alive; returns how many were removed."""
    wanted = None if pids is None else {int(p) for p in pids}
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid_text = folder.name[len(PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        pid = int(pid_text)
        if (pid in wanted) if wanted is not None else not killguard.alive(pid):
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
                removed += 1
    return removed
