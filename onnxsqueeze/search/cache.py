"""The on-disk evaluation cache: one JSON document per key, written atomically.

A key is the sha256 of a JSON document (:func:`digest`): the search's context (model hash, data
hash, metric, provider, tool version, :data:`CACHE_FORMAT`...), the candidate's steps and, for a
candidate on a trained base model, that model's hash. An entry is written as soon as it is
measured, so an interrupted run resumes where it stopped and a repeated run is instant; a corrupt
entry reads as missing and is measured again. A candidate's model bytes may sit beside its entry
(``<key>.onnx``) so a rerun does not rebuild (calibrate) it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from onnxsqueeze import io as sio

# 2: partial (stopped-early) evaluations, latency only within budget, cheaper channel plans.
# 3: int8 plans measured on the normalized model, float biases in static int8 (other bytes).
# 4: written models leave out attributes at their default values (every recorded size changed).
# 5: weights stored as sparse_initializer where smaller (the sizes of sparse candidates changed).
CACHE_FORMAT = 5


def digest(doc: Mapping[str, Any]) -> str:
    """The key of ``doc``: sha256 of its canonical JSON (sorted keys; other values as strings)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


class EvalCache:
    """Entries under ``folder/<key[:2]>/<key>.json``; ``folder`` None: nothing is kept."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def path(self, key: str) -> Path | None:
        return self.folder / f"{key[:2]}" / f"{key}.json" if self.folder is not None else None

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a corrupt entry is re-measured
        return doc if isinstance(doc, dict) and doc.get("key") == key else None

    def put(self, key: str, doc: Mapping[str, Any]) -> None:
        path = self.path(key)
        if path is not None:
            sio.write_bytes_atomic(path, json.dumps({**doc, "key": key}, sort_keys=True).encode())

    def get_model(self, key: str) -> onnx.ModelProto | None:
        """The candidate model kept beside entry ``key``, or None (absent or damaged)."""
        path = self.path(key)
        if path is None or not path.with_suffix(".onnx").is_file():
            return None
        model = onnx.ModelProto()
        try:
            model.ParseFromString(path.with_suffix(".onnx").read_bytes())
            return model
        except Exception:  # a damaged entry is rebuilt
            return None

    def put_model(self, key: str, model: onnx.ModelProto) -> None:
        path = self.path(key)
        if path is not None:
            sio.write_bytes_atomic(path.with_suffix(".onnx"), model.SerializeToString(deterministic=True))
