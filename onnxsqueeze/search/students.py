"""The base models a candidate's passes may run on besides the original: trained once, cached.

**Distillation** (the ``distill`` knob, offered only with training data): a setting names a
catalog student (``models/students.py``); the original teaches it on the training data
(:func:`onnxsqueeze.distill.distill`, seeded, a time budget per student, early stopping on a
seeded 10% of the training data) and the student replaces the model the other knobs' passes run
on. **Fine-tuning** (the ``+ft`` knobs): a pass runs on the original, then recovery training
against it (:func:`onnxsqueeze.finetune.finetune`).

A trained base is cached as ONNX bytes beside what its training measured, keyed by the
original's hash, the training data's hash, the spec and the time budget; its sha256 enters the
keys of the evaluations built on it. Training is not replayed by ``apply`` (a time budget and
torch's kernels make it irreproducible byte for byte): the recipe records the base model (path
beside the recipe and sha256) and ``apply`` replays the passes on it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze.errors import InputError
from onnxsqueeze.evaluate import Dataset
from onnxsqueeze.search.cache import CACHE_FORMAT, digest
from onnxsqueeze.search.knobs import FT_PREFIX, ft_steps
from onnxsqueeze.search.options import SqueezeOptions


class Students:
    """Distilled students and fine-tuned bases of one original, by spec (thread-safe).

    Args:
        model: the original (the teacher; the input of a fine-tuned base's pass).
        model_sha256: its hash.
        model_path: its file (training reads the teacher from a file; written to the cache when
            None).
        train: the training data (inputs, optional labels).
        calibration: the search's calibration data (a fine-tuned pass that calibrates uses it,
            else the training inputs).
        options: the time budgets of training (``distill_time_s``, ``finetune_time_s``).
        cache_dir: where trained bases are kept (``students/``; None: in memory only).
        timings: phase -> seconds, where training time is added (``distill``, ``finetune``).
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        model_sha256: str,
        *,
        model_path: Path | None,
        train: Dataset | None,
        calibration: Dataset | None,
        options: SqueezeOptions,
        cache_dir: Path | None,
        timings: dict[str, float],
    ) -> None:
        self.model = model
        self.model_sha256 = model_sha256
        self.model_path = model_path
        self.train = train
        self.calibration = calibration
        self.options = options
        self.cache_dir = cache_dir
        self.timings = timings
        self.info: dict[str, dict[str, Any]] = {}  # spec -> what its training measured
        self.models: dict[str, tuple[onnx.ModelProto, str]] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def key(self, spec: str) -> str:
        from onnxsqueeze import __version__

        assert self.train is not None
        doc: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "version": __version__,
            "teacher": self.model_sha256,
            "train": self.train.sha256(),
            "labels": self.train.labels is not None,
            "student": spec,
            "time_s": self.options.distill_time_s,
        }
        if spec.startswith(FT_PREFIX):
            steps = ft_steps(spec)
            doc |= {
                "student": None,
                "finetune": [s.to_dict() for s in steps],
                "time_s": self.options.finetune_time_s,
                "calibration": self._ft_calibration()[1] if any(s.calibration for s in steps) else None,
            }
        if self.options.train_epochs is not None:  # only when given: other keys stay as they were
            doc |= {"time_s": None, "epochs": self.options.train_epochs}
        return digest(doc)

    def get(self, spec: str) -> tuple[onnx.ModelProto, str]:
        """The base ``spec`` and its sha256: trained once (seeded, within its time budget), then
        from memory or the cache.

        A distilled student stops early on a seeded 10% of the training data: the evaluation data
        stay unseen. The sha256 of its ONNX bytes names it in cache keys and in the recipe.

        Raises:
            SqueezeError: the base cannot be built, trained or exported for this model.
        """
        known = self.known(spec)
        if known is not None:
            return known
        with self._lock_of(spec):
            known = self.known(spec)
            if known is not None:
                return known
            t0 = time.perf_counter()
            ft = spec.startswith(FT_PREFIX)
            model, info = self._finetune(spec) if ft else self._distill(spec)
            phase = "finetune" if ft else "distill"
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - t0
            self.adopt(spec, model.SerializeToString(deterministic=True), info)
        return self.models[spec]

    def _lock_of(self, spec: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(spec, threading.Lock())

    def _path(self, spec: str) -> Path | None:
        if self.cache_dir is None or self.train is None:
            return None
        return self.cache_dir / "students" / f"{self.key(spec)}.onnx"

    def known(self, spec: str) -> tuple[onnx.ModelProto, str] | None:
        """The base ``spec`` if it was trained already (in memory or in the cache), else None."""
        if spec in self.models:
            return self.models[spec]
        path = self._path(spec)
        if path is None or not path.is_file() or not path.with_suffix(".json").is_file():
            return None
        data = path.read_bytes()
        model = onnx.ModelProto()
        model.ParseFromString(data)
        info = json.loads(path.with_suffix(".json").read_text())
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            self.info[spec] = info | {"sha256": sha}
            self.models[spec] = (model, sha)
        return model, sha

    def adopt(self, spec: str, data: bytes, info: dict[str, Any]) -> None:
        """Take a base trained elsewhere (a worker, or :meth:`get` here): memory and cache."""
        if spec in self.models:
            return
        path = self._path(spec)
        if path is not None:
            sio.write_bytes_atomic(path.with_suffix(".json"), json.dumps(info, sort_keys=True).encode())
            sio.write_bytes_atomic(path, data)
        model = onnx.ModelProto()
        model.ParseFromString(data)
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            self.info[spec] = info | {"sha256": sha}
            self.models[spec] = (model, sha)

    def _teacher_path(self) -> Path:
        """The original's file (training reads the teacher from a file; cached when it has none)."""
        if self.model_path is not None:
            return self.model_path
        if self.cache_dir is None:
            raise InputError("training needs the model's file or a cache folder")
        return sio.save(self.model, self.cache_dir / "students" / f"teacher-{self.model_sha256}.onnx")

    def _ft_calibration(self) -> tuple[dict[str, np.ndarray], str]:
        """The calibration arrays of a fine-tuned base's pass (reconstruction) and their hash:
        the search's calibration data, else the training inputs."""
        data = self.calibration if self.calibration is not None else self.train
        assert data is not None
        return dict(data.inputs), data.sha256()

    def _finetune(self, spec: str) -> tuple[onnx.ModelProto, dict[str, Any]]:
        """The fine-tuned base ``spec``: its pass on the original, then recovery training."""
        from onnxsqueeze.finetune import FinetuneConfig, finetune
        from onnxsqueeze.recipe import build

        assert self.train is not None
        steps = ft_steps(spec)
        t0 = time.perf_counter()
        calibration = self._ft_calibration()[0] if any(s.calibration for s in steps) else None
        candidate = build(self.model, steps, calibration=calibration, source_sha256=self.model_sha256)
        data = dict(self.train.inputs)
        if self.train.labels is not None:
            data["labels"] = self.train.labels
        result = finetune(
            candidate,
            self._teacher_path(),
            data,
            config=FinetuneConfig(time_budget_s=self.options.finetune_time_s, seed=0)
            if self.options.train_epochs is None
            else FinetuneConfig(epochs=self.options.train_epochs, time_budget_s=None, seed=0),
            cache_dir=self.cache_dir / "teacher" if self.cache_dir is not None else None,
            use_cache=self.cache_dir is not None,
        )
        r = result.report
        info = {
            "method": "finetune",
            "steps": [s.to_dict() for s in steps[1:]],
            "metric": r.metric,
            "before": r.before,
            "after": r.after,
            "epochs": len(r.training.history),
            "train_samples": r.samples.get("train"),
            "seconds": time.perf_counter() - t0,
        }
        return result.model, info

    def _distill(self, spec: str) -> tuple[onnx.ModelProto, dict[str, Any]]:
        from onnxsqueeze.distill import TrainConfig, distill

        assert self.train is not None
        teacher = self._teacher_path()
        data = dict(self.train.inputs)
        if self.train.labels is not None:
            data["labels"] = self.train.labels
        t0 = time.perf_counter()
        result = distill(
            teacher,
            spec,
            data,
            config=TrainConfig(time_budget_s=self.options.distill_time_s, seed=0)
            if self.options.train_epochs is None
            else TrainConfig(epochs=self.options.train_epochs, time_budget_s=None, seed=0),
            cache_dir=self.cache_dir / "teacher" if self.cache_dir is not None else None,
            use_cache=self.cache_dir is not None,
            measure_latency=False,
        )
        r = result.report
        info = {
            "student": spec,
            "params": r.student.params,
            "teacher_params": r.teacher.params,
            "param_reduction": r.param_reduction,
            "epochs": len(r.training.history),
            "best_epoch": r.training.best_epoch,
            "train_samples": r.samples.get("train"),
            "seconds": time.perf_counter() - t0,
        }
        return result.model, info
