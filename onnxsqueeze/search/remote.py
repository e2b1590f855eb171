"""A :class:`~onnxsqueeze.search.squeezer.Squeezer`'s side of a search run on several processes.

What runs where is described in :mod:`.executor`. :class:`Remote` is the part of the Squeezer that
talks to the executor (the Squeezer's ``worker_spec`` is what a worker builds its replica from):
requests (settings, the driver's plans and baseline, trained students) and their replies, the
distilled students sent to the workers as the run starts (:meth:`Remote.train_ahead`), and the
``trace`` of when each request ran where. The Squeezer (``squeezer.py``) keeps the candidates,
their measurement and the cache.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import onnx

from onnxsqueeze.errors import SqueezeError
from onnxsqueeze.evaluate import Dataset, Evaluator
from onnxsqueeze.recipe import Step
from onnxsqueeze.search.executor import Executor
from onnxsqueeze.search.knobs import Knob, Settings, base_of, base_spec, base_specs
from onnxsqueeze.search.options import SqueezeOptions
from onnxsqueeze.search.students import Students

if TYPE_CHECKING:
    from onnxsqueeze.search.squeezer import Squeezer


class Remote:
    """Mixed into the Squeezer, which sets these attributes (see ``Squeezer.__init__``)."""

    model: onnx.ModelProto
    model_sha256: str
    evaluator: Evaluator
    calibration: Dataset | None
    train: Dataset | None
    options: SqueezeOptions
    input_shapes: dict[str, tuple[int, ...]] | None
    knobs: list[Knob]
    _offered: list[Knob]
    plans: dict[str, Any]
    bases: Students
    students: dict[str, dict[str, Any]]
    executor: Executor
    trace: list[dict[str, Any]]
    wall_started: float
    _baseline_metric: float | None
    _scale: float
    _clean: dict[str, tuple[onnx.ModelProto, list[bool], tuple[Step, ...]]]
    _clean_lock: threading.Lock
    _lock: threading.Lock
    _handle: Any
    _handle_lock: threading.Lock
    _training: dict[str, concurrent.futures.Future[None]]

    if TYPE_CHECKING:  # the Squeezer's

        def student(self, spec: str) -> tuple[onnx.ModelProto, str]: ...

        def adopt_student(self, spec: str, data: bytes, info: dict[str, Any]) -> None: ...

        def _measure(self, settings: Settings) -> dict[str, Any]: ...

    def bind_plans(self, plans: Mapping[str, Any], knob_names: Sequence[str]) -> None:
        """A replica's knobs: the driver's (``knob_names``, in order) bound to the driver's plans
        (once per set of plans: every request carries them)."""
        if list(knob_names) == [k.name for k in self.knobs] and dict(plans) == self.plans:
            return  # bound already (or the driver itself, prepared or not: nothing to bind)
        by_name = {k.name: k for k in self._offered}
        knobs = []
        for name in knob_names:
            knob = by_name[name]
            if knob.plan is not None:
                self.plans[name] = plans.get(name)
                knob = knob.bind(plans.get(name))
            knobs.append(knob)
        self.knobs = knobs

    def measure_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Measure one candidate for an executor: ``{"settings", "students"}`` -> reply.

        ``students`` carries the exact bytes of students the driver has, so they are not
        retrained; a student trained here comes back in the reply's ``students``.
        """
        for spec, data in dict(request.get("students", {})).items():
            self._adopt(spec, data)
        if request.get("train") is not None:  # train_ahead: the student alone
            return self._train_request(str(request["train"]))
        if request.get("plans") is not None:
            self.bind_plans(request["plans"], request["knobs"])
        baseline = request.get("baseline") or {}
        if baseline.get("metric") is not None:
            self._baseline_metric, self._scale = baseline["metric"], baseline["scale"]
        settings = dict(request["settings"])
        trained: dict[str, Any] = {}
        base = base_of(settings, self.knobs) if settings else None
        if base is not None:
            specs = base_specs(base_spec(base))  # a fine-tuned student's student first
            had = {spec for spec in specs if spec in self.bases.models}
            try:
                self.student(specs[-1])
            except SqueezeError as e:  # not cached: the student may train another time
                return {"doc": {"error": str(e), "seconds": 0.0}, "students": {}, "transient": True}
            for spec in specs:
                if spec not in had:
                    trained[spec] = self._student_bytes(spec)
        return {"doc": self._measure(settings), "students": trained, "transient": False}

    def _train_request(self, spec: str) -> dict[str, Any]:
        """Train the student ``spec`` (a :meth:`train_ahead` request): its bytes in the reply."""
        had = spec in self.bases.models
        try:
            self.student(spec)
        except SqueezeError as e:  # the candidates on it say why (they train it again, or fail)
            return {"doc": {"error": str(e), "seconds": 0.0}, "students": {}, "transient": True}
        trained = {} if had else {spec: self._student_bytes(spec)}
        return {"doc": {}, "students": trained, "transient": False}

    def _adopt(self, spec: str, data: Mapping[str, Any]) -> None:
        """Take a base from a request or a reply (:meth:`_student_bytes`)."""
        self.adopt_student(spec, data["bytes"], data["info"])
        if data.get("clean") is not None:  # the other side's normalized form: not redone here
            form, applied, steps = data["clean"]
            model = onnx.ModelProto()
            model.ParseFromString(form)
            with self._clean_lock:
                self._clean.setdefault(self.bases.models[spec][1], (model, list(applied), tuple(steps)))

    def _student_bytes(self, spec: str) -> dict[str, Any]:
        """A trained base for a request or a reply: its bytes, what its training measured and,
        once this side has it, its normalized form (the same function's output: not redone)."""
        model, sha = self.bases.models[spec]
        clean = self._clean.get(sha)
        return {
            "bytes": model.SerializeToString(deterministic=True),
            "info": {k: v for k, v in self.students[spec].items() if k != "sha256"},
            "clean": None
            if clean is None
            else (clean[0].SerializeToString(deterministic=True), list(clean[1]), tuple(clean[2])),
        }

    def train_ahead(self) -> None:
        """With several workers: send the distilled students to the workers now, largest first.

        Training needs only the teacher and the training data, and the students are the longest
        tasks of the search (the critical path), so they start while the driver makes the plans
        and measures the original. A candidate on a student waits for its training
        (:meth:`evaluate`); the student is trained once, with the same seed and data as the
        serial run, so its bytes (with ``--train-epochs``) and the decisions are the serial ones.
        A training that fails is done again where a candidate needs it (its error reported there).
        """
        if self.executor.workers <= 1 or self.train is None:
            return
        specs = [
            base_spec(k.step_of(s))
            for k in self.knobs
            if k.base and k.plan is None and k.group == "base"
            for s in k.settings
        ]
        specs = [s for s in dict.fromkeys(specs) if s not in self._training and self.bases.known(s) is None]
        if not specs:
            return
        handle = self._register()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="train")
        for spec in specs:  # the knob's order: larger students (longer training) first
            self._training[spec] = pool.submit(self._train_remote, handle, spec, time.time())
        pool.shutdown(wait=False)

    def _train_remote(self, handle: Any, spec: str, sent: float) -> None:
        reply = self._run_remote(handle, {"train": spec}, f"train {spec}", sent)
        for name, data in reply.get("students", {}).items():
            self._adopt(name, data)

    def _await_training(self, settings: Settings) -> None:
        """Wait for the students ``settings`` are built on that :meth:`train_ahead` sent off."""
        base = base_of(settings, self.knobs) if settings else None
        for spec in base_specs(base_spec(base)) if base is not None else []:
            future = self._training.get(spec)
            if future is not None:
                future.result()

    def _register(self) -> Any:
        with self._handle_lock:  # the search's threads may get here at once
            if self._handle is None:
                self._handle = self.executor.register(cast("Squeezer", self))
            return self._handle

    def _run_remote(
        self, handle: Any, request: dict[str, Any], task: str, sent: float | None = None
    ) -> dict[str, Any]:
        """``executor.run`` with the request's times in :attr:`trace` (``sent``: when it was
        handed to a thread, if before this call)."""
        sent = time.time() if sent is None else sent
        reply = self.executor.run(handle, request)
        back = time.time()
        where = reply.get("trace") or {}
        with self._lock:
            self.trace.append(
                {
                    "task": task,
                    "worker": "driver" if where.get("worker") == os.getpid() else where.get("worker"),
                    "sent": round(sent - self.wall_started, 3),
                    "start": round(where["start"] - self.wall_started, 3) if "start" in where else None,
                    "end": round(where["end"] - self.wall_started, 3) if "end" in where else None,
                    "back": round(back - self.wall_started, 3),
                    "cpu": round(where["cpu"], 3) if "cpu" in where else None,
                }
                | ({"abandoned": True} if reply.get("abandoned") else {})
            )
        return reply

    def _request(self, settings: Settings) -> dict[str, Any]:
        students = {}
        base = base_of(settings, self.knobs) if settings else None
        for spec in base_specs(base_spec(base)) if base is not None else []:
            if self.bases.known(spec) is not None:
                students[spec] = self._student_bytes(spec)
        # A replica decides early stopping and whether to time against the driver's baseline,
        # and binds its knobs to the driver's plans.
        return {
            "settings": dict(settings),
            "students": students,
            "baseline": {"metric": self._baseline_metric, "scale": self._scale},
            "knobs": [k.name for k in self.knobs],
            "plans": dict(self.plans),
        }
