"""The Squeezer: real candidates (built, scored, timed, cached) for the search, and ``squeeze``.

A candidate costs a build (the passes, on the base model normalized once per base), a score and
a timing, so the Squeezer spends as little as it can on each:

- **Successive halving**: the candidate is scored on a seeded quarter of the evaluation samples,
  then half, then all, and stops as soon as it cannot fit the budget even if every unseen sample
  scored its best (:func:`can_still_fit`, a worst-case bound: a candidate that fits on the full
  set is never stopped). A stopped point keeps its partial metric (``samples``) and is over budget.
- **Timing only within budget**: latency is measured (interleaved with the original's session,
  created once) only for a candidate that fits; the others have no latency.
- Every point records ``build_s``, ``score_s`` and ``time_s``; :attr:`Squeezer.timings` holds
  the seconds per phase (load, plan, baseline, single, combine, distill, outputs).

Every evaluation is cached on disk under a key of (model hash, data hash, metric, provider,
candidate steps, tool version); a result file is written atomically as soon as it is measured,
so an interrupted run (Ctrl-C, time budget) resumes where it stopped and a repeated run is
instant.

**Distillation** (the ``distill`` knob, offered only with training data): a setting names a
catalog student (``models/students.py``); the original teaches it on the training data
(:func:`onnxsqueeze.distill.distill`, seeded, a time budget per student, early stopping on a
seeded 10% of the training data) and the student replaces the model the other knobs' passes run
on. A student is trained once and cached (ONNX bytes, keyed by the original's hash, the training
data's hash, the spec and the time budget); its sha256 enters the keys of the evaluations built
on it. Training is not replayed by ``apply`` (a time budget and torch's kernels make it
irreproducible byte for byte): the recipe records the student as its base model (path beside the
recipe and sha256) and ``apply`` replays the passes on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze.errors import BudgetNotMetError, InputError, ObjectiveNotImprovedError, SqueezeError
from onnxsqueeze.evaluate import Budget, Dataset, Evaluator, Preprocess
from onnxsqueeze.recipe import CalibrationSource, Recipe, Step
from onnxsqueeze.search.algorithm import (
    LATENCY_MIN_GAIN,
    NOISY,
    Point,
    SearchResult,
    parse_objectives,
    search,
)
from onnxsqueeze.search.executor import Executor, WorkerSpec, timing_slot
from onnxsqueeze.search.knobs import (
    CLEANUP,
    FT_PREFIX,
    KNOBS,
    Knob,
    PlanContext,
    Settings,
    available_knobs,
    base_of,
    base_spec,
    describe_settings,
    ft_steps,
    steps_of,
)
from onnxsqueeze.search.report import (
    improvement,
    not_improved_message,
    nothing_fits_message,
    plot_pareto,
    render_report,
    results_dict,
)

# The instance a cost is priced on when none is given (onnxsqueeze.bench.cost's table): a 2-vCPU
# CPU machine, a T4 for CUDA. At a fixed price the cost objective ranks candidates like latency;
# it is reported in dollars per million inferences at batch 1.
DEFAULT_INSTANCE = {"cpu": "aws/c7i.large", "cuda": "aws/g4dn.xlarge", "tensorrt": "aws/g4dn.xlarge"}
# 2: partial (stopped-early) evaluations, latency only within budget, cheaper channel plans.
CACHE_FORMAT = 2


# ------------------------------------------------------------------------------- measurement


def measure_latency(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    provider: str = "cpu",
    warmup: int = 5,
    min_iterations: int = 30,
    min_seconds: float = 0.5,
    threads: int | None = None,
) -> float:
    """Median batch latency in ms (optimized session): runs until both ``min_iterations`` and
    ``min_seconds`` are met, after ``warmup`` (:func:`onnxsqueeze.bench.timing.interleaved`)."""
    from onnxsqueeze import runtime

    sess = runtime.session(model, provider=provider, optimize=True, threads=threads)
    return _time_sessions(
        sess, feeds, None, None, min_seconds=min_seconds, min_iterations=min_iterations, warmup=warmup
    )[0]


def compare_latency(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    reference_feeds: Mapping[str, np.ndarray],
    candidate_feeds: Mapping[str, np.ndarray],
    *,
    provider: str = "cpu",
    warmup: int = 5,
    min_iterations: int = 30,
    min_seconds: float = 0.5,
    burst: int = 5,
    threads: int | None = 1,
) -> tuple[float, float]:
    """Interleaved A/B timing: (candidate median ms, candidate / reference median ratio).

    Bursts of ``burst`` runs alternate between the two sessions (order reversed every other
    round, :func:`onnxsqueeze.bench.timing.interleaved`) until each has ``min_iterations`` runs
    and ``min_seconds`` have passed (at most ``20 * min_iterations`` runs), so load from other
    processes hits both alike; the ratio is what the search compares (the machine is shared and
    noisy; absolute times drift).

    ``threads=1`` by default: with onnxruntime's default intra-op pool, one session's worker
    threads keep spinning after its run and steal the cores from the other session's next burst.
    On the shared 2-core machine, the same graph timed against itself gave ratios of 0.77-1.29
    with the default pool and 0.998-1.002 with one thread (digits CNN, six runs each).
    """
    from onnxsqueeze import runtime

    sa = runtime.session(reference, provider=provider, optimize=True, threads=threads)
    sb = runtime.session(candidate, provider=provider, optimize=True, threads=threads)
    return _time_sessions(
        sa, reference_feeds, sb, candidate_feeds, min_seconds=min_seconds, min_iterations=min_iterations,
        burst=burst, warmup=warmup,
    )  # fmt: skip


def _time_sessions(
    ref: Any,
    ref_feeds: Mapping[str, np.ndarray],
    sess: Any | None,
    feeds: Mapping[str, np.ndarray] | None,
    *,
    min_seconds: float,
    min_iterations: int = 30,
    burst: int = 5,
    warmup: int = 5,
) -> tuple[float, float]:
    """(median ms, ratio to the reference) of ``sess`` timed interleaved with ``ref`` (see
    :func:`compare_latency`); of ``ref`` alone (ratio 1) when ``sess`` is None."""
    from onnxsqueeze.bench.timing import interleaved

    fa = dict(ref_feeds)
    if sess is None:
        (t,) = interleaved(
            [lambda: ref.run(None, fa)],
            warmup=warmup,
            burst=1,
            min_runs=min_iterations,
            min_seconds=min_seconds,
        )
        return t.median_ms, 1.0
    fb = dict(feeds or {})
    ta, tb = interleaved(
        [lambda: ref.run(None, fa), lambda: sess.run(None, fb)],
        warmup=warmup,
        burst=burst,
        min_runs=min_iterations,
        min_seconds=min_seconds,
        max_runs=20 * min_iterations,
    )
    return tb.median_ms, tb.median_ms / ta.median_ms


# The range of one sample's contribution to each metric (a metric is the mean over samples):
# what the unseen samples could at best add when a candidate is scored on a subset.
SAMPLE_RANGE: dict[str, tuple[float, float]] = {
    "accuracy": (0.0, 100.0),
    "agreement": (0.0, 100.0),
    "iou": (0.0, 100.0),
    "cosine": (-100.0, 100.0),
    "mae": (0.0, float("inf")),
}
# onnxslim's form of a base model is used when its outputs are within this fraction of the
# outputs' scale of the base model's (optimize.base.normalize's default).
SLIM_RTOL = 1e-4
SLIM = Step.of("onnxslim", {})
# The smallest subset worth scoring before the whole set (fewer samples prune almost nothing).
MIN_RUNG = 32


def can_still_fit(
    value: float,
    n: int,
    total: int,
    *,
    baseline: float,
    budget: Budget,
    best_per_sample: float,
    higher_is_better: bool = True,
    scale: float = 1.0,
) -> bool:
    """Whether a candidate scoring ``value`` on ``n`` of ``total`` samples may fit on all of them.

    Successive halving's stopping rule. The metric is a mean over samples, so on all of them it
    is at best ``(n * value + (total - n) * best_per_sample) / total`` (every unseen sample at its
    best). The candidate is dropped only when even that misses the budget: a worst-case margin,
    not a confidence interval, so a candidate that fits on the full set is never dropped, whatever
    the data and however the subset was drawn (the subset only decides how soon a hopeless one
    stops).
    """
    best = value if n >= total else (n * value + (total - n) * best_per_sample) / total
    drop = budget.drop(baseline, best, higher_is_better=higher_is_better, scale=scale)
    return drop <= budget.max_drop + 1e-9


@dataclasses.dataclass(frozen=True, kw_only=True)
class SqueezeOptions:
    """What ``squeeze`` optimizes and how.

    Attributes:
        budget: the accuracy budget.
        objective: latency, size, macs or cost, or a comma-separated priority list
            (``"latency,size"``): ties on the first (within the timing noise for latency and
            cost) are broken by the next.
        provider: execution provider for evaluation and latency.
        time_budget_s: stop starting new evaluations after this many seconds.
        techniques: restrict to these knob names (None: all offered).
        price_per_hour: for the cost objective; or ``instance``, a name in
            ``onnxsqueeze.bench.cost``'s table (default by provider, see ``DEFAULT_INSTANCE``).
        latency_seconds: minimum timing-loop duration per candidate.
        latency_threads: intra-op threads of the timed sessions (1: see :func:`compare_latency`;
            None: onnxruntime's default pool).
        batch_size: evaluation batch size.
        distill_time_s: training-time budget of each distilled student.
        distill_epochs: train each student for this many epochs instead (early stopping aside),
            with no time budget: reproducible byte for byte whatever process trains it.
        distill_students: the catalog students the ``distill`` knob tries, larger to smaller
            (None: the knob's own list).
        finetune_time_s: training-time budget of each fine-tuned base (the ``+ft`` knobs).
    """

    budget: Budget
    objective: str = "latency"
    provider: str = "cpu"
    time_budget_s: float | None = None
    techniques: tuple[str, ...] | None = None
    price_per_hour: float | None = None
    instance: str | None = None
    latency_seconds: float = 0.5
    latency_threads: int | None = 1
    batch_size: int = 64
    distill_time_s: float = 60.0
    distill_epochs: int | None = None
    distill_students: tuple[str, ...] | None = None
    finetune_time_s: float = 30.0


class Squeezer:
    """Wires real evaluations (build the candidate, score it, measure costs) to :func:`search`.

    Args:
        model: the original model.
        evaluator: scores models (holds the evaluation data and metric).
        calibration: arrays for passes that calibrate (int8 static, channel reconstruction).
        calibration_source: where they came from (recorded in the recipe).
        options: see :class:`SqueezeOptions`.
        cache_dir: where evaluations are cached (None: no cache).
        model_sha256: the original file's hash (computed from the model when None).
        train: training data (inputs, optional labels) for the knobs that train (distill); they
            are not offered without it.
        model_path: the original's file (the teacher of distillation; written to the cache when
            None).
        input_shapes: ``--input-shape``: the shapes (batch 1) dynamic inputs are planned, counted
            (MACs) and checked at; the evaluation data must have them (see :func:`make_squeezer`).
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        evaluator: Evaluator,
        *,
        calibration: Dataset | None,
        calibration_source: CalibrationSource | None,
        options: SqueezeOptions,
        cache_dir: str | Path | None,
        model_sha256: str | None = None,
        knobs: Sequence[Knob] = KNOBS,
        train: Dataset | None = None,
        model_path: str | Path | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        parse_objectives(options.objective)  # InputError early, before any work
        self.input_shapes = (
            {k: tuple(int(d) for d in v) for k, v in input_shapes.items()} if input_shapes else None
        )
        self.model = model
        self.evaluator = evaluator
        self.calibration = calibration
        self.calibration_source = calibration_source
        self.options = options
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.model_sha256 = model_sha256 or sio.sha256_model(model)
        self.train = train
        self.model_path = Path(model_path) if model_path is not None else None
        self.students: dict[str, dict[str, Any]] = {}  # spec -> what its distillation measured
        self._student_models: dict[str, tuple[onnx.ModelProto, str]] = {}
        offered, skipped = available_knobs(knobs)
        for k in [k for k in offered if k.base]:
            if train is None:
                skipped[k.name] = "no training data (--train-data)"
                offered.remove(k)
            elif options.distill_students and k.name == "distill":
                offered[offered.index(k)] = dataclasses.replace(k, settings=tuple(options.distill_students))
        if options.techniques is not None:
            known = {k.name for k in knobs}
            unknown = sorted(set(options.techniques) - known)
            if unknown:
                raise InputError(f"unknown technique(s) {unknown}; known: {', '.join(sorted(known))}")
            for k in offered:
                if k.name not in options.techniques:
                    skipped[k.name] = "not requested (--techniques)"
            offered = [k for k in offered if k.name in options.techniques]
        else:
            wanted = set(parse_objectives(options.objective))
            for k in [k for k in offered if not wanted & set(k.improves)]:
                skipped[k.name] = (
                    f"cannot lower {options.objective} "
                    f"({'no measured objective' if not k.improves else ', '.join(k.improves) + ' only'}; "
                    "name it in --techniques to try it anyway)"
                )
                offered.remove(k)
        if calibration is None:
            for k in list(offered):
                keep = tuple(s for s in k.settings if not k.step_of(s).calibration)
                if len(keep) < len(k.settings):
                    skipped[f"{k.name} (calibrated settings)"] = "no calibration data"
                offered.remove(k)
                if keep:
                    offered.append(dataclasses.replace(k, settings=keep))
            offered.sort(key=lambda k: [x.name for x in knobs].index(k.name))
        self.knobs = offered
        self.skipped = skipped
        from onnxsqueeze.bench.cost import resolve_price

        price = resolve_price(
            price_per_hour=options.price_per_hour, instance=options.instance
        ) or resolve_price(instance=DEFAULT_INSTANCE.get(options.provider, DEFAULT_INSTANCE["cpu"]))
        assert price is not None
        self.price = price.usd_per_hour
        self.price_source = price.source
        self.evaluations = 0  # fresh (uncached) evaluations in this run
        self.notes: list[str] = []
        self.plans: dict[str, Any] = {}
        self.cache_hits = 0
        self._baseline_metric: float | None = None
        self._baseline_latency: float | None = None
        self._scale = 1.0
        # base sha -> (normalized model, whether each normalization step modified it, the steps)
        self._clean: dict[str, tuple[onnx.ModelProto, list[bool], tuple[Step, ...]]] = {}
        self._clean_lock = threading.Lock()
        self._reference_session: tuple[Any, dict[str, np.ndarray]] | None = None
        # Successive halving scores subsets in this seeded order (a class-sorted dataset would
        # otherwise give a first rung of one class).
        self._order = np.random.default_rng(0).permutation(len(evaluator.dataset))
        self.timings: dict[str, float] = {}  # phase -> seconds in this run (see results_dict)
        self._context = self._context_key()
        self._lock = threading.Lock()
        self._student_locks: dict[str, threading.Lock] = {}
        # Where candidates are measured (see .executor); the CLI sets a pool or Ray here.
        self.executor: Executor = Executor()
        self._handle: Any = None
        self._handle_lock = threading.Lock()

    # ------------------------------------------------------------------ cache
    def _context_key(self) -> dict[str, Any]:
        from onnxsqueeze import __version__

        ev = self.evaluator
        return {
            "format": CACHE_FORMAT,
            "version": __version__,
            "model": self.model_sha256,
            "data": ev.dataset.sha256(),
            "metric": ev.metric.name,
            "output": ev.output_index,
            "threshold": ev.threshold,
            "provider": self.options.provider,
            "calibration": self.calibration.sha256() if self.calibration is not None else None,
            "latency_seconds": self.options.latency_seconds,
            "latency_threads": self.options.latency_threads,
        } | (
            # Only when given, so that the keys of searches without them are unchanged.
            {"input_shapes": self.input_shapes, "class_axis": ev.class_axis}
            if self.input_shapes or ev.class_axis is not None
            else {}
        )

    def cache_key(self, steps: Sequence[Step], base: str | None = None) -> str:
        """The key of a candidate: the context, its steps and (distilled) its base model's hash."""
        doc: dict[str, Any] = {**self._context, "steps": [s.to_dict() for s in steps]}
        if base is not None:
            doc["base"] = base
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def key_of(self, settings: Mapping[str, Any]) -> str:
        """:meth:`cache_key` of a candidate (training its base model first if needed)."""
        if not settings:
            return self.cache_key([])
        base = base_of(settings, self.knobs)
        base_sha = self.base_model(settings)[1] if base is not None else None
        return self.cache_key(self.steps(settings), base_sha)

    # ------------------------------------------------------------------ base models
    def base_model(self, settings: Mapping[str, Any]) -> tuple[onnx.ModelProto, str]:
        """The model a candidate's passes run on and its sha256: the original or a student."""
        base = base_of(settings, self.knobs)
        if base is None:
            return self.model, self.model_sha256
        return self.student(base_spec(base))

    def _student_key(self, spec: str) -> str:
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
        if self.options.distill_epochs is not None:  # only when given: other keys stay as they were
            doc |= {"time_s": None, "epochs": self.options.distill_epochs}
        if spec.startswith(FT_PREFIX):
            steps = ft_steps(spec)
            doc |= {
                "student": None,
                "finetune": [s.to_dict() for s in steps],
                "time_s": self.options.finetune_time_s,
                "calibration": self._ft_calibration()[1] if any(s.calibration for s in steps) else None,
            }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def student(self, spec: str) -> tuple[onnx.ModelProto, str]:
        """The original distilled into the catalog student ``spec`` on the training data.

        Trained once (seeded, ``options.distill_time_s`` of training, early stopping on a seeded
        10% of the training data: the evaluation data stay unseen) and cached as ONNX bytes with
        what the distillation measured; the sha256 of those bytes names the student in cache keys
        and in the recipe.

        Raises:
            SqueezeError: the student cannot be built, trained or exported for this model.
        """
        known = self._known_student(spec)
        if known is not None:
            return known
        with self._student_lock(spec):
            known = self._known_student(spec)
            if known is not None:
                return known
            t0 = time.perf_counter()
            ft = spec.startswith(FT_PREFIX)
            model, info = self._finetune(spec) if ft else self._distill(spec)
            phase = "finetune" if ft else "distill"
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - t0
            self.adopt_student(spec, model.SerializeToString(deterministic=True), info)
        return self._student_models[spec]

    def _student_lock(self, spec: str) -> threading.Lock:
        with self._lock:
            return self._student_locks.setdefault(spec, threading.Lock())

    def _student_path(self, spec: str) -> Path | None:
        if self.cache_dir is None or self.train is None:
            return None
        return self.cache_dir / "students" / f"{self._student_key(spec)}.onnx"

    def _known_student(self, spec: str) -> tuple[onnx.ModelProto, str] | None:
        """The student ``spec`` if it was trained already (in memory or in the cache), else None."""
        if spec in self._student_models:
            return self._student_models[spec]
        path = self._student_path(spec)
        if path is None or not path.is_file() or not path.with_suffix(".json").is_file():
            return None
        data = path.read_bytes()
        model = onnx.ModelProto()
        model.ParseFromString(data)
        info = json.loads(path.with_suffix(".json").read_text())
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            self.students[spec] = info | {"sha256": sha}
            self._student_models[spec] = (model, sha)
        return model, sha

    def adopt_student(self, spec: str, data: bytes, info: dict[str, Any]) -> None:
        """Take a student trained elsewhere (a worker, or :meth:`_distill` here): memory and cache."""
        if spec in self._student_models:
            return
        path = self._student_path(spec)
        if path is not None:
            sio.write_bytes_atomic(path.with_suffix(".json"), json.dumps(info, sort_keys=True).encode())
            sio.write_bytes_atomic(path, data)
        model = onnx.ModelProto()
        model.ParseFromString(data)
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            self.students[spec] = info | {"sha256": sha}
            self._student_models[spec] = (model, sha)

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
            config=FinetuneConfig(time_budget_s=self.options.finetune_time_s, seed=0),
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
            if self.options.distill_epochs is None
            else TrainConfig(epochs=self.options.distill_epochs, time_budget_s=None, seed=0),
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

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / f"{key[:2]}" / f"{key}.json" if self.cache_dir is not None else None

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a corrupt entry is re-measured
        return doc if isinstance(doc, dict) and doc.get("key") == key else None

    def _cache_put(self, key: str, doc: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is not None:
            sio.write_bytes_atomic(path, json.dumps({**doc, "key": key}, sort_keys=True).encode())

    # ------------------------------------------------------------------ measuring
    def build(self, settings: Mapping[str, Any]) -> onnx.ModelProto:
        """The candidate model of ``settings`` (deterministic: what ``apply`` rebuilds)."""
        from onnxsqueeze.recipe import build

        self.prepare()
        base, base_sha = self.base_model(settings)
        return build(
            base,
            self.steps(settings),
            calibration=self.calibration.inputs if self.calibration is not None else None,
            source_sha256=base_sha,
        )

    def build_cached(self, settings: Mapping[str, Any]) -> onnx.ModelProto:
        """:meth:`build`, keeping the bytes in the cache so a rerun does not rebuild (calibrate) it."""
        key = self.key_of(settings)
        path = self._cache_path(key)
        if path is not None and path.with_suffix(".onnx").is_file():
            model = onnx.ModelProto()
            try:
                model.ParseFromString(path.with_suffix(".onnx").read_bytes())
                return model
            except Exception:  # a damaged entry is rebuilt
                pass
        model = self.build(settings)
        if path is not None:
            sio.write_bytes_atomic(path.with_suffix(".onnx"), model.SerializeToString(deterministic=True))
        return model

    def recipe(self, settings: Mapping[str, Any], base_path: str | None = None) -> Recipe:
        """The recipe of ``settings``; a distilled candidate's student lives at ``base_path``."""
        from onnxsqueeze.recipe import BaseModel

        self.prepare()
        steps = tuple(self.steps(settings))
        needs = any(s.calibration for s in steps)
        base = None
        step = base_of(settings, self.knobs)
        if step is not None:
            spec = base_spec(step)
            sha = self.student(spec)[1]
            if spec.startswith(FT_PREFIX):  # provenance: the passes that were fine-tuned
                made = tuple(ft_steps(spec))
                base = BaseModel(base_path or "finetuned.onnx", sha, "finetune", steps=made)
            else:
                base = BaseModel(base_path or f"{spec}.onnx", sha, "distill", spec)
        return Recipe(steps, self.model_sha256, self.calibration_source if needs else None, base)

    # ------------------------------------------------------------------ measuring
    def steps(self, settings: Mapping[str, Any]) -> list[Step]:
        """The recipe steps of a candidate: its base model's normalization, then its passes."""
        base, base_sha = self.base_model(settings)
        return [*self._normalized(base, base_sha)[2], *steps_of(settings, self.knobs)[1:]]

    def _normalized(
        self, base: onnx.ModelProto, base_sha: str
    ) -> tuple[onnx.ModelProto, list[bool], tuple[Step, ...]]:
        """``base`` normalized as every candidate starts from it, once per base model.

        The front door's normalization (:mod:`onnxsqueeze.optimize.base`): the cleanup, then
        onnxslim where it removes more nodes and its outputs match the base model's on the first
        evaluation samples (``optimize.base.same_outputs``, the check ``normalize`` makes).
        Returned with the steps that made it (``cleanup`` and, when kept, ``onnxslim``), which
        recipes record, so ``apply`` rebuilds the same bytes.
        """
        with self._clean_lock:
            if base_sha not in self._clean:
                self._clean[base_sha] = self._normalize(base)
            return self._clean[base_sha]

    def _normalize(self, base: onnx.ModelProto) -> tuple[onnx.ModelProto, list[bool], tuple[Step, ...]]:
        from onnx_ir.serde import deserialize_model, serialize_model

        from onnxsqueeze.optimize.base import same_outputs
        from onnxsqueeze.recipe import make_passes
        from onnxsqueeze.verify import run

        work = deserialize_model(base)
        (cleanup,) = make_passes([CLEANUP], None)
        modified = bool(cleanup(work).modified)
        clean = serialize_model(work)
        (slim,) = make_passes([SLIM], None)
        result = slim(deserialize_model(clean))
        if result.modified:
            form = serialize_model(result.model)
            try:
                feeds = self._check_feeds(base)
                diff = same_outputs(run(base, feeds), form, feeds)
            except Exception:  # the base does not run on these arrays (a student's inputs): not slimmed
                diff = None
            if diff is not None and diff <= SLIM_RTOL:
                return form, [modified, True], (CLEANUP, SLIM)
            self.notes.append(
                "onnxslim's simplification not used: its outputs differ from the model's"
                + ("" if diff is None else f" (max error {diff:.2g} of the output scale)")
            )
        return clean, [modified], (CLEANUP,)

    def _check_feeds(self, model: onnx.ModelProto, samples: int = 8) -> dict[str, np.ndarray]:
        """The first evaluation samples, cast to ``model``'s input types (a static batch: its size)."""
        from onnxsqueeze.shapes import declared_shape, graph_inputs, input_dtype

        data = self.evaluator.dataset.inputs
        feeds = {}
        for vi in graph_inputs(model):
            declared = declared_shape(vi)
            n = declared[0] if declared and isinstance(declared[0], int) else samples
            feeds[vi.name] = np.asarray(data[vi.name])[:n].astype(input_dtype(vi), copy=False)
        return feeds

    def _build_measured(self, settings: Settings) -> tuple[onnx.ModelProto, list[str]]:
        """The candidate (the bytes :meth:`build` gives) from the normalized base, and the passes
        that had nothing to do."""
        from onnxsqueeze.recipe import build_traced

        base, base_sha = self.base_model(settings)
        clean, applied, norm = self._normalized(base, base_sha)
        steps = [*norm, *steps_of(settings, self.knobs)[1:]]
        model, modified = build_traced(
            clean,
            steps,
            calibration=self.calibration.inputs if self.calibration is not None else None,
            source_sha256=base_sha,
            applied=applied,
        )
        n = len(norm)
        return model, [s.pass_name for s, m in zip(steps[n:], modified[n:], strict=True) if not m]

    def _score(self, model: onnx.ModelProto, *, baseline: bool) -> tuple[float, int | None]:
        """The metric, scored on growing subsets while the candidate can still fit (successive
        halving); ``(metric, samples)`` with ``samples`` None when all were scored."""
        ev = self.evaluator
        if baseline:
            return ev.score_outputs(ev.reference_outputs()), None
        total = len(ev.dataset)
        rungs = [n for n in (total // 4, total // 2) if n >= MIN_RUNG] + [total]
        best_sample = SAMPLE_RANGE.get(ev.metric.name)
        # Subsets are taken on the first axis: an output laid out otherwise ([T, N, C]
        # sequences) is scored whole.
        per_sample = ev.class_axis is None and np.shape(ev.reference_outputs())[0] == total
        if len(rungs) == 1 or best_sample is None or self._baseline_metric is None or not per_sample:
            return ev.score(model), None
        score_prefix = ev.staged(model, self._order)
        for n in rungs:
            value = score_prefix(n)
            if n < total and not self.can_still_fit(value, n):
                return value, n
        return value, None

    def can_still_fit(self, value: float, n: int) -> bool:
        """Whether a candidate whose metric is ``value`` on ``n`` of the evaluation samples may fit
        the budget on all of them: see :func:`can_still_fit`."""
        assert self._baseline_metric is not None
        metric = self.evaluator.metric
        lo, hi = SAMPLE_RANGE[metric.name]
        return can_still_fit(
            value,
            n,
            len(self.evaluator.dataset),
            baseline=self._baseline_metric,
            budget=self.options.budget,
            best_per_sample=hi if metric.higher_is_better else lo,
            higher_is_better=metric.higher_is_better,
            scale=self._scale,
        )

    def shapes_of(self, model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
        """The shapes (batch 1) ``model``'s dynamic inputs run at: ``--input-shape``, else the
        evaluation data's (a candidate whose input a pass made static keeps its own)."""
        from onnxsqueeze.shapes import declared_shape, graph_inputs

        given = self.input_shapes or {}
        data = self.evaluator.dataset.inputs
        out: dict[str, tuple[int, ...]] = {}
        for vi in graph_inputs(model):
            declared = declared_shape(vi)
            if all(isinstance(d, int) for d in declared):
                continue
            if vi.name in given:
                out[vi.name] = tuple(given[vi.name])
            elif vi.name in data and np.ndim(data[vi.name]) == len(declared):
                out[vi.name] = (1, *np.shape(data[vi.name])[1:])
        return out

    def _feeds_one(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        from onnxsqueeze.evaluate import resize_inputs
        from onnxsqueeze.shapes import graph_inputs, input_dtype

        resized = resize_inputs(model, self.evaluator.dataset.take(0, 1).inputs)
        return {vi.name: np.asarray(resized[vi.name]).astype(input_dtype(vi)) for vi in graph_inputs(model)}

    def _time(self, model: onnx.ModelProto, *, baseline: bool) -> tuple[float, float]:
        """(median ms at batch 1, ratio to the original's), interleaved with the original's session."""
        from onnxsqueeze import runtime

        opts = self.options
        if self._reference_session is None:
            self._reference_session = (
                runtime.session(
                    self.model, provider=opts.provider, optimize=True, threads=opts.latency_threads
                ),
                self._feeds_one(self.model),
            )
        ref, ref_feeds = self._reference_session
        if baseline:
            return _time_sessions(ref, ref_feeds, None, None, min_seconds=opts.latency_seconds)
        sess = runtime.session(model, provider=opts.provider, optimize=True, threads=opts.latency_threads)
        return _time_sessions(ref, ref_feeds, sess, self._feeds_one(model), min_seconds=opts.latency_seconds)

    def _measure(self, settings: Settings) -> dict[str, Any]:
        from onnxsqueeze.summary import count_macs

        t0 = time.perf_counter()
        doc: dict[str, Any] = {}
        try:
            if settings:
                model, idle = self._build_measured(settings)
                doc["build_s"] = time.perf_counter() - t0
                if idle:
                    return doc | {"error": f"nothing to do for {', '.join(idle)}", "seconds": doc["build_s"]}
            else:
                model = self.model
            t1 = time.perf_counter()
            metric, samples = self._score(model, baseline=not settings)
            doc |= {"metric": metric, "samples": samples, "score_s": time.perf_counter() - t1}
            doc["size"] = len(model.SerializeToString(deterministic=True))
            try:
                # The baseline's MACs on its normalized form, like every candidate's (shape
                # inference follows more of a slimmed graph: counted on the raw export, the
                # baseline would seem cheaper than its own fp16 copy).
                counted = model if settings else self._normalized(model, self.model_sha256)[0]
                doc["macs"] = count_macs(counted, self.shapes_of(counted))[0]
            except Exception:  # MACs are informative; a model shape inference cannot follow has none
                doc["macs"] = None
            # Over budget: not timed (its latency would not change the outcome).
            if not settings or (samples is None and self._fits_metric(metric)):
                t2 = time.perf_counter()
                with timing_slot():  # one candidate timed at a time on this node (see .executor)
                    doc["latency_ms"], doc["latency_ratio"] = self._time(model, baseline=not settings)
                doc["time_s"] = time.perf_counter() - t2
        except SqueezeError as e:
            return doc | {"error": str(e), "seconds": time.perf_counter() - t0}
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # a candidate that crashes a pass or the runtime is a rejected point
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return doc | {
                "error": f"{type(e).__name__}: {first_line}"[:300],
                "seconds": time.perf_counter() - t0,
            }
        return doc | {"seconds": time.perf_counter() - t0}

    def _drop(self, metric: float) -> float | None:
        if self._baseline_metric is None:
            return None
        return self.options.budget.drop(
            self._baseline_metric,
            metric,
            higher_is_better=self.evaluator.metric.higher_is_better,
            scale=self._scale,
        )

    def _fits_metric(self, metric: float) -> bool:
        drop = self._drop(metric)
        return drop is not None and drop <= self.options.budget.max_drop + 1e-9

    def _stale(self, doc: Mapping[str, Any], settings: Settings) -> bool:
        """A cached entry measured under another budget: stopped early but it may fit now, or
        not timed (over budget then) but within budget now. Measured again."""
        if not settings or doc.get("error") or doc.get("metric") is None:
            return False
        if doc.get("samples") is not None:
            return self._baseline_metric is not None and self.can_still_fit(doc["metric"], doc["samples"])
        return doc.get("latency_ms") is None and self._fits_metric(doc["metric"])

    def _known_key(self, settings: Mapping[str, Any]) -> str | None:
        """:meth:`cache_key` of a candidate, or None when its student is not trained yet."""
        base = base_of(settings, self.knobs) if settings else None
        if base is None:
            return self.key_of(settings)
        known = self._known_student(base_spec(base))
        if known is None:
            return None
        norm = self._normalized(*known)[2]
        return self.cache_key([*norm, *steps_of(settings, self.knobs)[1:]], known[1])

    def worker_spec(self) -> WorkerSpec:
        """What a worker needs to measure candidates like this Squeezer (see :mod:`.executor`)."""
        self.prepare()
        ev, cal, train = self.evaluator, self.calibration, self.train
        return WorkerSpec(
            model=self.model.SerializeToString(deterministic=True),
            model_sha256=self.model_sha256,
            eval_inputs=dict(ev.dataset.inputs),
            eval_labels=ev.dataset.labels,
            metric=ev.metric.name,
            output=self.model.graph.output[ev.output_index].name,
            threshold=ev.threshold,
            class_axis=ev.class_axis,
            input_shapes=self.input_shapes,
            calibration_inputs=dict(cal.inputs) if cal is not None else None,
            calibration_labels=cal.labels if cal is not None else None,
            train_inputs=dict(train.inputs) if train is not None else None,
            train_labels=train.labels if train is not None else None,
            options=self.options,
            knob_names=tuple(k.name for k in self.knobs),
            plans=dict(self.plans),
        )

    def bind_plans(self, plans: Mapping[str, Any], knob_names: Sequence[str]) -> None:
        """A replica's knobs: the driver's (``knob_names``, in order) bound to the driver's plans."""
        by_name = {k.name: k for k in self.knobs}
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
            self.adopt_student(spec, data["bytes"], data["info"])
        baseline = request.get("baseline") or {}
        if baseline.get("metric") is not None:
            self._baseline_metric, self._scale = baseline["metric"], baseline["scale"]
        settings = dict(request["settings"])
        trained: dict[str, Any] = {}
        base = base_of(settings, self.knobs) if settings else None
        if base is not None:
            spec = base_spec(base)
            had = spec in self._student_models
            try:
                model, _ = self.student(spec)
            except SqueezeError as e:  # not cached: the student may train another time
                return {"doc": {"error": str(e), "seconds": 0.0}, "students": {}, "transient": True}
            if not had:
                trained[spec] = {
                    "bytes": model.SerializeToString(deterministic=True),
                    "info": {k: v for k, v in self.students[spec].items() if k != "sha256"},
                }
        return {"doc": self._measure(settings), "students": trained, "transient": False}

    def _request(self, settings: Settings) -> dict[str, Any]:
        students = {}
        base = base_of(settings, self.knobs) if settings else None
        if base is not None:
            spec = base_spec(base)
            known = self._known_student(spec)
            if known is not None:
                students[spec] = {
                    "bytes": known[0].SerializeToString(deterministic=True),
                    "info": {k: v for k, v in self.students[spec].items() if k != "sha256"},
                }
        # A replica decides early stopping and whether to time against the driver's baseline.
        return {
            "settings": dict(settings),
            "students": students,
            "baseline": {"metric": self._baseline_metric, "scale": self._scale},
        }

    def evaluate(self, settings: Settings) -> Point:
        """Measure one candidate, from the cache when it holds it, else through the executor.

        Thread-safe: the search calls it from several threads when the executor has several
        workers. Only this (driver) side writes the cache, as each result arrives.
        """
        try:
            key = self._known_key(settings)
        except SqueezeError as e:
            return Point(settings=dict(settings), phase="", error=str(e))
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # e.g. torch refusing a student for this input: a rejected point
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return Point(settings=dict(settings), phase="", error=f"{type(e).__name__}: {first_line}"[:300])
        doc = self._cache_get(key) if key is not None else None
        if doc is not None and self._stale(doc, settings):
            doc = None
        cached = doc is not None
        if doc is None:
            if not settings:
                # The original is measured here while the executor's workers start (.executor).
                reply = Executor().run(self, self._request(settings))
            else:
                with self._handle_lock:  # the search's threads may get here at once
                    if self._handle is None:
                        self._handle = self.executor.register(self)
                reply = self.executor.run(self._handle, self._request(settings))
            for spec, data in reply.get("students", {}).items():
                self.adopt_student(spec, data["bytes"], data["info"])
            doc = reply["doc"]
            if key is None and not reply.get("transient"):
                try:
                    key = self._known_key(settings)
                except Exception:  # the student is still unknown: the point is not cached
                    key = None
            if key is not None and not reply.get("transient"):
                self._cache_put(key, doc)
            with self._lock:
                self.evaluations += 1
        else:
            with self._lock:
                self.cache_hits += 1
        p = Point(
            settings=dict(settings),
            phase="",
            metric=doc.get("metric"),
            size=doc.get("size"),
            macs=doc.get("macs"),
            latency_ms=doc.get("latency_ms"),
            latency_ratio=doc.get("latency_ratio"),
            error=doc.get("error"),
            seconds=float(doc.get("seconds", 0.0)),
            build_s=doc.get("build_s"),
            score_s=doc.get("score_s"),
            time_s=doc.get("time_s"),
            samples=doc.get("samples"),
            cached=cached,
        )
        if not settings:
            self._baseline_latency = p.latency_ms
        elif p.latency_ratio is not None and self._baseline_latency is not None:
            # Comparable within the run: the interleaved ratio times the original's latency.
            p.latency_ms = self._baseline_latency * p.latency_ratio
        if p.latency_ms is not None and p.latency_ms > 0:
            from onnxsqueeze.bench.cost import usd_per_million

            p.cost = usd_per_million(self.price, 1e3 / p.latency_ms)  # one inference at a time
        if not settings and p.metric is not None:
            self._baseline_metric = p.metric
            self._scale = self.evaluator.relative_scale(p.metric)
        if p.metric is not None:
            p.drop = self._drop(p.metric)
        if p.samples is not None:
            p.note = (
                f"stopped after {p.samples} of {len(self.evaluator.dataset)} samples: "
                "cannot fit the budget even if every other sample scored best"
            )
        return p

    def fits(self, p: Point) -> bool:
        return p.drop is not None and p.drop <= self.options.budget.max_drop + 1e-9

    def prepare(self, on_plan: Callable[[str], None] | None = None) -> None:
        """Compute (or read from the cache) the plans of planned knobs and bind them. Idempotent."""
        bound = []
        for knob in self.knobs:
            if knob.plan is None:
                bound.append(knob)
                continue
            key = hashlib.sha256(
                json.dumps({**self._context, "plan": knob.name}, sort_keys=True, default=str).encode()
            ).hexdigest()
            doc = self._cache_get(key)
            if doc is None:
                if on_plan:
                    on_plan(knob.name)
                t0 = time.perf_counter()
                try:
                    ctx = PlanContext(
                        self.model, self.evaluator, self.calibration, self.shapes_of(self.model)
                    )
                    value = knob.plan(ctx)
                    doc = {"value": value, "seconds": time.perf_counter() - t0}
                except (MemoryError, KeyboardInterrupt):
                    raise
                except Exception as e:  # no analysis (module missing, unsupported model): plain steps
                    doc = {"value": None, "error": f"{type(e).__name__}: {str(e).strip()[:200]}"}
                self._cache_put(key, doc)
            if doc.get("error"):
                self.notes.append(f"{knob.name}: no plan ({doc['error']}); plain settings used")
            self.plans[knob.name] = doc.get("value")
            bound.append(knob.bind(doc.get("value")))
        self.knobs = bound

    def run(self, on_point: Callable[[Point], None] | None = None) -> SearchResult:
        deadline = (
            time.monotonic() + self.options.time_budget_s if self.options.time_budget_s is not None else None
        )
        t0 = time.perf_counter()
        self.prepare()
        self.timings["plan"] = self.timings.get("plan", 0.0) + time.perf_counter() - t0
        objectives = parse_objectives(self.options.objective)
        last = time.perf_counter()

        def timed(p: Point) -> None:
            # Wall time per phase: measuring, cache reads and the search's own work alike.
            nonlocal last
            now = time.perf_counter()
            self.timings[p.phase] = self.timings.get(p.phase, 0.0) + now - last
            last = now
            if on_point:
                on_point(p)

        return search(
            self.knobs,
            self.evaluate,
            self.fits,
            objective=objectives,
            budget=self.options.budget,
            deadline=deadline,
            on_point=timed,
            skipped=self.skipped,
            min_gain=LATENCY_MIN_GAIN if objectives[0] in NOISY else 0.0,
            noise={o: LATENCY_MIN_GAIN for o in NOISY},
            parallel=self.executor.workers,
        )


# --------------------------------------------------------------------------------- the API


def make_squeezer(
    model: str | Path,
    data: str | Path,
    *,
    options: SqueezeOptions,
    out_dir: str | Path,
    metric: str | None = None,
    calibration_data: str | Path | None = None,
    calibration_samples: int = 64,
    samples: int | None = None,
    output: str | None = None,
    threshold: float = 0.5,
    preprocess: Preprocess | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    on_image: Callable[[int, int], None] | None = None,
    train_data: str | Path | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    class_axis: int | None = None,
) -> Squeezer:
    """Load the model and data, split off calibration samples and set up the search.

    Args:
        model: the original ``.onnx`` file.
        data: an ``.npz`` (inputs and optional ``labels``) or an image folder (with ``preprocess``).
        options: budget, objective, provider...
        out_dir: the output folder (the default cache lives in ``out_dir/.cache``; image-folder
            calibration arrays are written to ``out_dir/calibration.npz`` for ``apply``).
        metric: a name in ``evaluate.METRICS`` (default: accuracy with labels, else agreement).
        calibration_data: an ``.npz`` to calibrate on; by default the first
            ``calibration_samples`` of ``train_data`` when given, else the first
            ``calibration_samples`` (at most a quarter) of ``data`` are held out for calibration
            and the rest is evaluated.
        samples: use at most this many samples of ``data``.
        output: the scored model output (default: the first).
        threshold: binarization threshold of ``iou``.
        preprocess: image preprocessing (default :class:`Preprocess`'s).
        cache_dir: evaluation cache (default ``out_dir/.cache``); ``use_cache=False`` for none.
        on_image: progress of image loading.
        train_data: an ``.npz`` of training inputs (and optional ``labels``): offers the
            ``distill`` knob (the model is the teacher) and is the default calibration data.
        input_shapes: ``--input-shape`` (``{name: dims}``): must fit the model and agree with the
            data's samples; an image folder is read at its H and W unless ``preprocess`` sets a
            size. Dynamic inputs are planned, counted and checked at these shapes.
        class_axis: the class axis of accuracy/agreement (default: 1, or 2 for a ``[T, N, C]``
            sequence output; see :mod:`onnxsqueeze.metrics`).

    Raises:
        ModelLoadError, InputError: bad model, data or options.
    """
    from onnxsqueeze import evaluate as E
    from onnxsqueeze import shapes

    t0 = time.perf_counter()
    model, data, out_dir = Path(model), Path(data), Path(out_dir)
    original = sio.load(model)
    given = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    if given:
        shapes.resolve_input_shapes(original, given)  # InputError: unknown input, wrong rank...
    if data.is_dir():
        first_input = shapes.graph_inputs(original)[0].name
        preprocess = preprocess or E.Preprocess()
        preprocess = _sized(preprocess, given.get(first_input))
        ds = E.load_image_folder(data, preprocess, input_name=first_input, limit=samples, on_image=on_image)
    else:
        ds = E.load_npz_dataset(data)
        if samples is not None and samples < len(ds):
            ds = ds.take(0, samples)
    _check_data_shapes(given, ds, data)
    metric = metric or ("accuracy" if ds.labels is not None else "agreement")
    train = E.load_npz_dataset(train_data) if train_data is not None else None
    if calibration_data is None and train_data is not None:
        calibration_data = train_data
    if calibration_data is not None:
        calibration_data = Path(calibration_data)
        cal = E.load_npz_dataset(calibration_data)
        cal = cal.take(0, min(calibration_samples, len(cal)))
        evalset = ds
        source = CalibrationSource(str(calibration_data.resolve()), 0, len(cal), cal.sha256())
    else:
        k = min(calibration_samples, len(ds) // 4)
        if k < 1:
            raise InputError(f"{data}: {len(ds)} samples are too few to hold out calibration data")
        cal, evalset = ds.take(0, k), ds.take(k, len(ds))
        if data.is_dir():
            # The images were preprocessed here: keep the calibration arrays beside the recipe so
            # that `apply` replays without the image folder or its preprocessing options.
            sio.save_npz(out_dir / "calibration.npz", cal.inputs, protect=[model])
            source = CalibrationSource("calibration.npz", 0, k, Dataset(cal.inputs).sha256())
        else:
            source = CalibrationSource(str(data.resolve()), 0, k, cal.sha256())
    # The original's outputs (teacher of label-free metrics) are computed on the first evaluation
    # that is not in the cache, so a rerun served from the cache runs no inference.
    evaluator = E.Evaluator(
        original,
        evalset,
        metric,
        output=output,
        threshold=threshold,
        class_axis=class_axis,
        provider=options.provider,
    )
    squeezer = Squeezer(
        original,
        evaluator,
        calibration=cal,
        calibration_source=source,
        options=options,
        cache_dir=(cache_dir or out_dir / ".cache") if use_cache else None,
        model_sha256=sio.sha256_file(model),
        train=train,
        model_path=model,
        input_shapes=given or None,
    )
    squeezer.timings["load"] = time.perf_counter() - t0
    return squeezer


def _sized(preprocess: Preprocess, dims: Sequence[int] | None) -> Preprocess:
    """An image folder read at the H and W of ``--input-shape`` when the preprocessing names none."""
    if dims is None or len(dims) != 4 or preprocess.size != Preprocess().size:
        return preprocess
    h, w = (dims[1], dims[2]) if preprocess.layout == "NHWC" else (dims[2], dims[3])
    return dataclasses.replace(preprocess, size=(int(h), int(w)))


def _check_data_shapes(given: Mapping[str, Sequence[int]], ds: Dataset, source: Path) -> None:
    """``--input-shape`` must agree with the samples the search runs on (batch aside)."""
    for name, dims in given.items():
        if name in ds.inputs and tuple(np.shape(ds.inputs[name])[1:]) != tuple(dims[1:]):
            raise InputError(
                f"--input-shape {name}:{','.join(map(str, dims))} disagrees with {source}, whose "
                f"'{name}' samples are {list(np.shape(ds.inputs[name])[1:])}"
            )


def squeeze(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    max_drop: float,
    relative: bool = False,
    objective: str = "latency",
    on_point: Callable[[Point], None] | None = None,
    **kwargs: Any,
) -> tuple[SearchResult, dict[str, Path]]:
    """The whole squeeze: search, then write the best model, recipe, report, results and plot.

    ``kwargs`` go to :func:`make_squeezer`, except the :class:`SqueezeOptions` fields
    (provider, time_budget_s, techniques, price_per_hour, instance, latency_seconds,
    distill_time_s).

    Raises:
        BudgetNotMetError: nothing fits (the report is written all the same).
    """
    fields = {f.name for f in dataclasses.fields(SqueezeOptions)}
    opts = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
    options = SqueezeOptions(budget=Budget(max_drop, relative), objective=objective, **opts)
    t0 = time.perf_counter()
    squeezer = make_squeezer(model, data, options=options, out_dir=out_dir, **kwargs)
    result = squeezer.run(on_point=on_point)
    files = write_outputs(
        squeezer,
        result,
        out_dir,
        protect=[model, data],
        model_name=Path(model).name.removesuffix(".onnx"),
        elapsed_s=time.perf_counter() - t0,
    )
    return result, files


# ------------------------------------------------------------------------------------ outputs


def write_candidate(
    squeezer: Squeezer,
    settings: Mapping[str, Any],
    folder: Path,
    stem: str,
    *,
    recipe_name: str,
    protect: Sequence[str | Path] = (),
) -> tuple[onnx.ModelProto, dict[str, Path]]:
    """Write a candidate's model as ``stem.squeezed.onnx``, its recipe and its base model (a
    distilled student ``stem.student.onnx`` or a fine-tuned pass output ``stem.finetuned.onnx``)."""
    from onnxsqueeze import recipe as rcp

    model = squeezer.build_cached(settings)
    written = {"model": sio.save(model, folder / f"{stem}.squeezed.onnx", protect=protect)}
    base_path = None
    base = base_of(settings, squeezer.knobs)
    if base is not None:
        # The recipe's base model: its exact bytes (their sha256 is in the recipe).
        student, _ = squeezer.base_model(settings)
        kind = "finetuned" if base_spec(base).startswith(FT_PREFIX) else "student"
        written[kind] = sio.write_bytes_atomic(
            folder / f"{stem}.{kind}.onnx", student.SerializeToString(deterministic=True), protect=protect
        )
        base_path = written[kind].name
    written["recipe"] = rcp.save(squeezer.recipe(settings, base_path), folder / recipe_name, protect=protect)
    return model, written


def write_outputs(
    squeezer: Squeezer,
    result: SearchResult,
    out_dir: str | Path,
    *,
    protect: Sequence[str | Path] = (),
    model_name: str = "model",
    elapsed_s: float | None = None,
) -> dict[str, Path]:
    """Write the best model, recipe.toml, report.md, results.json and pareto.png into ``out_dir``.

    When candidates fit the budget but none beats the original on the objective, the Pareto-front
    models within budget (:meth:`SearchResult.improvements`) are written under ``out_dir/pareto/``
    (``NN-<model>.squeezed.onnx`` and ``NN-recipe.toml``), the report says what each improves, and
    ObjectiveNotImprovedError is raised afterwards. When nothing fits, only the report, results
    and plot are written and BudgetNotMetError is raised afterwards, naming the closest candidates.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    best_model = None
    if result.best is not None:
        best_model, files = write_candidate(
            squeezer, result.best.settings, out, model_name, recipe_name="recipe.toml", protect=protect
        )
        written |= files
    alternatives: list[dict[str, Any]] = []
    if result.best is None:
        for i, p in enumerate(result.improvements(squeezer.evaluator.metric.higher_is_better), start=1):
            _, files = write_candidate(
                squeezer, p.settings, out / "pareto", f"{i:02d}-{model_name}",
                recipe_name=f"{i:02d}-recipe.toml", protect=protect,
            )  # fmt: skip
            written |= {f"pareto {i} {kind}": path for kind, path in files.items()}
            alternatives.append(
                {"label": describe_settings(p.settings, squeezer.knobs), "settings": p.settings}
                | {kind: str(path.relative_to(out)) for kind, path in files.items()}
                | {"sha256": sio.sha256_file(files["model"])}
                | improvement(result.baseline, p)
            )
    squeezer.timings["outputs"] = time.perf_counter() - t0
    results = results_dict(squeezer, result, elapsed_s=elapsed_s)
    results["not_improved"] = alternatives if result.best is None else None
    if best_model is not None:
        results["best"]["file"] = written["model"].name
        results["best"]["sha256"] = sio.sha256_file(written["model"])
        results["best"]["verify"] = verify_best(squeezer, best_model)
    written["results"] = sio.write_bytes_atomic(
        out / "results.json",
        (json.dumps(results, indent=2, default=_json_default) + "\n").encode(),
        protect=protect,
    )
    written["report"] = sio.write_bytes_atomic(
        out / "report.md", render_report(squeezer, result, results).encode(), protect=protect
    )
    plot = out / "pareto.png"
    if plot_pareto(squeezer, result, plot):
        written["plot"] = plot
    if result.best is None and alternatives:
        raise ObjectiveNotImprovedError(not_improved_message(result, alternatives, out / "pareto"))
    if result.best is None:
        raise BudgetNotMetError(nothing_fits_message(squeezer, result))
    return written


def verify_best(squeezer: Squeezer, model: onnx.ModelProto, samples: int = 8) -> dict[str, Any]:
    """The best model against the original on the first evaluation samples (onnxsqueeze.verify)."""
    from onnxsqueeze.verify import verify

    ds = squeezer.evaluator.dataset
    data = ds.take(0, min(samples, len(ds))).inputs
    try:
        report = verify(
            squeezer.model,
            model,
            data=data,
            data_label="evaluation samples",
            provider=squeezer.options.provider,
        )
    except SqueezeError as e:  # e.g. an output shape changed on purpose: say so, do not fail
        return {"error": str(e)}
    scored = squeezer.model.graph.output[squeezer.evaluator.output_index].name
    return report.to_dict() | {"min_cosine": report.min_cosine, "scored_output": scored}


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return str(v)
