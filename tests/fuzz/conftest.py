"""Shared pieces of the fuzz suite: the example count, a CLI runner and the invariants checked.

The default example counts keep the suite within about two minutes on a loaded 2-core machine;
``ONNXSQUEEZE_FUZZ_EXAMPLES=N`` runs N examples per in-process property (and N/5 signal runs).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from onnxsqueeze.cli import _entry

EXAMPLES = int(os.environ.get("ONNXSQUEEZE_FUZZ_EXAMPLES", "30"))
SIGNAL_RUNS = max(4, EXAMPLES // 5)


def snapshot(folder: Path) -> dict[str, str]:
    """Name -> sha256 of every regular file in ``folder`` (links named, not followed)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_symlink():
            out[p.name] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[p.name] = "<not a file>"
    return out


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run the CLI in-process through its error boundary: (exit code, stdout, stderr)."""
    code = _entry.run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_ending(code: int, err: str, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
    """The run ended with an allowed code; a failure says so in exactly one ``error:`` line."""
    assert "Traceback" not in err, err[-1500:]
    assert code in allowed, err
    if code:
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, err
        assert err.rstrip().splitlines()[-1] == errors[0], err


def assert_no_litter(folder: Path) -> None:
    litter = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or "onnxsqueeze-probe" in p.name]
    assert not litter, litter
