"""Where the project's recipe-built sample models live: ``.cache/models/<recipe>-<hash>``.

The hash covers the recipe's source and the shared exporter, so an edited recipe builds afresh
instead of serving a stale model. The conformance corpus (``models/corpus.py``, run by
``scripts/setup.sh``) and the tests (``tests/helpers.py``) use the same folders, so a fresh clone
trains the digits CNN and exports MiniLM and MobileNetV3 once, not once for each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "models"
T = TypeVar("T")


def recipe_dir(recipe: str) -> Path:
    """``.cache/models/<recipe>-<hash of models/<recipe>.py and models/export.py>``."""
    h = hashlib.sha256()
    for name in (f"{recipe}.py", "export.py"):
        h.update((REPO / "models" / name).read_bytes())
    return CACHE / f"{recipe}-{h.hexdigest()[:12]}"


def built(recipe: str, build: Callable[[Path], T]) -> T:
    """``build(recipe_dir(recipe))`` under a file lock: parallel test workers (or setup beside
    them) wait for the one that trains or exports instead of doing it twice (the recipes'
    ``ensure`` return cached files)."""
    from filelock import FileLock

    out = recipe_dir(recipe)
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        return build(out)
