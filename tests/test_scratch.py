"""Workers' scratch folders: named after the worker's pid, swept when the worker is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from onnxsqueeze import scratch


def test_sweep_removes_the_folders_of_dead_or_named_workers_only(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(gone.stdout)  # a process that has exited (and been reaped)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = scratch.make()  # this process's: never swept here
        assert mine.parent == tmp_path and mine.name.startswith(f"onnxsqueeze-worker-{os.getpid()}-")
        folders = {
            "dead": tmp_path / f"onnxsqueeze-worker-{dead}-abc",
            "live": tmp_path / f"onnxsqueeze-worker-{live.pid}-def",
            "old": tmp_path / "onnxsqueeze-worker-k2j4h1",  # an older version's name: no pid
        }
        for folder in folders.values():
            (folder / "student").mkdir(parents=True)
        assert scratch.sweep() == 1
        assert not folders["dead"].exists()
        assert folders["live"].exists() and folders["old"].exists() and mine.exists()
        assert scratch.sweep([live.pid]) == 1  # a worker its caller killed: removed by pid
        assert not folders["live"].exists() and folders["old"].exists() and mine.exists()
    finally:
        live.kill()
        live.wait()
