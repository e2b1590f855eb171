"""The Squeezer: real candidates (built, scored, timed, cached) for the search.

A candidate costs a build (the passes, on the base model normalized once per base), a score and
a timing, so the Squeezer spends as little as it can on each:

- **Successive halving**: the candidate is scored on a seeded quarter of the evaluation samples,
  then half, then all, and stops as soon as it cannot fit the budget even if every unseen sample
  scored its best (:mod:`.halving`). A stopped point keeps its partial metric (``samples``) and is
  over budget.
- **Timing only within budget**: latency is measured (interleaved with the original's session,
  created once, :mod:`.latency`) only for a candidate that fits; the others have no latency.
- Every point records ``build_s``, ``score_s`` and ``time_s``; :attr:`Squeezer.timings` holds
  the seconds per phase (load, plan, baseline, single, combine, distill, outputs).

Every evaluation is cached on disk (:mod:`.cache`), so an interrupted run (Ctrl-C, time budget)
resumes where it stopped and a repeated run is instant. Distilled students and fine-tuned bases
(:mod:`.students`) are trained once and cached; their sha256 enters the keys of the evaluations
built on them.

:func:`onnxsqueeze.search.run.squeeze` is the whole run; :mod:`.outputs` writes its files.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import multiprocessing.util
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze.errors import SqueezeError
from onnxsqueeze.evaluate import Dataset, Evaluator
from onnxsqueeze.recipe import CalibrationSource, Recipe, Step
from onnxsqueeze.search.algorithm import (
    LATENCY_MIN_GAIN,
    NOISY,
    Point,
    SearchResult,
    parse_objectives,
    search,
)
from onnxsqueeze.search.cache import CACHE_FORMAT, EvalCache, digest
from onnxsqueeze.search.executor import Executor, WorkerSpec, timing_slot
from onnxsqueeze.search.halving import MIN_RUNG, SAMPLE_RANGE, can_still_fit
from onnxsqueeze.search.knobs import (
    CLEANUP,
    FT_PREFIX,
    KNOBS,
    Knob,
    PlanContext,
    Settings,
    base_of,
    base_spec,
    describe_settings,
    ft_steps,
    ft_student,
    steps_of,
)
from onnxsqueeze.search.latency import time_sessions
from onnxsqueeze.search.options import DEFAULT_INSTANCE, SqueezeOptions, offered_knobs
from onnxsqueeze.search.remote import Remote
from onnxsqueeze.search.students import Students

# onnxslim's form of a base model is used when its outputs are within this fraction of the
# outputs' scale of the base model's (optimize.base.normalize's default).
SLIM_RTOL = 1e-4
SLIM = Step.of("onnxslim", {})
# Part-built candidates kept in memory (serialized, least recently used first out) up to this many
# bytes: a candidate whose steps extend a kept build resumes from it. The combination adds one knob
# to the best so far (``resolution x0.5 + channels -30%`` then ``... + fp16``) and the outputs
# write the best again, so a channels re-fit is not redone for a candidate that only extends it.
PREFIX_BYTES = 256 << 20
# Only a step that took this long is kept (a cheap one is run again rather than copied).
PREFIX_MIN_S = 0.25


class Squeezer(Remote):
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
        # The time budget counts from here (make_squeezer moves it to when loading began): the
        # plans and the original's own measurement are inside it, not on top of it.
        self.started = time.monotonic()
        self.wall_started = time.time()  # the same moment on the wall clock (``trace``)
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
        offered, skipped = offered_knobs(knobs, options, train=train, calibration=calibration, model=model)
        self.knobs = offered
        self._offered = list(offered)  # unbound: a replica binds the driver's plans to them
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
        self._prefixes = _Prefixes(PREFIX_BYTES)
        self._reference_session: tuple[Any, dict[str, np.ndarray]] | None = None
        # Successive halving scores subsets in this seeded order (a class-sorted dataset would
        # otherwise give a first rung of one class).
        self._order = np.random.default_rng(0).permutation(len(evaluator.dataset))
        self.timings: dict[str, float] = {}  # phase -> seconds in this run (see results_dict)
        # phase -> CPU seconds of this process (all its threads; ``plan:<knob>`` per plan): on a
        # shared machine the wall times above mostly measure the neighbours.
        self.cpu_timings: dict[str, float] = {}
        self._context = self._context_key()
        self._lock = threading.Lock()
        self.cache = EvalCache(self.cache_dir)
        self.bases = Students(
            model,
            self.model_sha256,
            model_path=self.model_path,
            train=train,
            calibration=calibration,
            options=options,
            cache_dir=self.cache_dir,
            timings=self.timings,
        )
        self.students = self.bases.info  # spec -> what its training measured (results.json)
        # Where candidates are measured (see .executor); the CLI sets a pool or Ray here.
        self.executor: Executor = Executor()
        self._handle: Any = None
        self._handle_lock = threading.Lock()
        # Students sent to the workers as the run starts (train_ahead): spec -> its training.
        self._training: dict[str, concurrent.futures.Future[None]] = {}
        # When and where each request ran: {"task", "worker", "sent", "start", "end", "back"},
        # seconds from the start of the run (results.json).
        self.trace: list[dict[str, Any]] = []

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
        return digest(doc)

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

    def student(self, spec: str) -> tuple[onnx.ModelProto, str]:
        """The trained base ``spec`` (a distilled student or a fine-tuned base) and its sha256:
        see :meth:`.students.Students.get`.

        Raises:
            SqueezeError: the base cannot be built, trained or exported for this model.
        """
        return self.bases.get(spec)

    def adopt_student(self, spec: str, data: bytes, info: dict[str, Any]) -> None:
        """Take a student trained elsewhere (a worker): memory and cache."""
        self.bases.adopt(spec, data, info)

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
        """:meth:`build`'s bytes, kept in the cache so a rerun does not rebuild (calibrate) it; made
        as the search made the candidate (from the normalized base, resuming a kept prefix)."""
        key = self.key_of(settings)
        model = self.cache.get_model(key)
        if model is None:
            model = self._build_measured(dict(settings))[0] if settings else self.build(settings)
            self.cache.put_model(key, model)
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
                student = ft_student(spec) or ""  # the passes ran on this student
                base = BaseModel(base_path or "finetuned.onnx", sha, "finetune", student, steps=made)
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
        n = len(norm)
        start: onnx.ModelProto = clean
        described: Sequence[dict[str, Any]] = ()
        done: Sequence[bool] = applied
        kept = self._prefixes.longest(base_sha, steps, n)
        if kept is not None:
            start = onnx.ModelProto()
            start.ParseFromString(kept[0])
            done, described = kept[1], kept[2]
        last = time.perf_counter()

        def keep(i: int, work: Any, modified: list[bool], record: list[dict[str, Any]]) -> None:
            nonlocal last
            now = time.perf_counter()
            # A model whose weights alone exceed the limit is not serialized only to be dropped.
            if now - last >= PREFIX_MIN_S and _weight_bytes(work) <= self._prefixes.limit:
                from onnx_ir.serde import serialize_model

                data = serialize_model(work).SerializeToString()
                self._prefixes.put(base_sha, steps[: i + 1], data, tuple(modified), tuple(record))
            last = time.perf_counter()

        model, modified = build_traced(
            start,
            steps,
            calibration=self.calibration.inputs if self.calibration is not None else None,
            source_sha256=base_sha,
            applied=done,
            described=described,
            on_step=keep,
        )
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
                    self.model, provider=opts.provider, optimize=True, threads=opts.latency_threads or 0
                ),
                self._feeds_one(self.model),
            )
        ref, ref_feeds = self._reference_session
        if baseline:
            return time_sessions(ref, ref_feeds, None, None, min_seconds=opts.latency_seconds)
        sess = runtime.session(
            model, provider=opts.provider, optimize=True, threads=opts.latency_threads or 0
        )
        return time_sessions(ref, ref_feeds, sess, self._feeds_one(model), min_seconds=opts.latency_seconds)

    def _measure(self, settings: Settings) -> dict[str, Any]:
        from onnxsqueeze.manifest import deployable
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
            # The bytes the file will have: provenance goes to the sidecar (manifest.deployable),
            # weights are stored sparse where that is smaller (written_form).
            doc["size"] = (
                len(deployable(written_form(model)).SerializeToString(deterministic=True))
                if settings
                else (len(model.SerializeToString(deterministic=True)))
            )
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
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # a refused or crashing candidate is a rejected point
            return rejected(doc, e, t0)
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
        known = self.bases.known(base_spec(base))
        if known is None:
            return None
        norm = self._normalized(*known)[2]
        return self.cache_key([*norm, *steps_of(settings, self.knobs)[1:]], known[1])

    def worker_spec(self) -> WorkerSpec:
        """What a worker needs to measure candidates like this Squeezer (see :mod:`.executor`);
        the plans are not in it (they travel with each request), so it is shipped before them."""
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
            build=build_replica,
        )

    def evaluate(self, settings: Settings) -> Point:
        """Measure one candidate, from the cache when it holds it, else through the executor.

        Thread-safe: the search calls it from several threads when the executor has several
        workers. Only this (driver) side writes the cache, as each result arrives.
        """
        try:
            self._await_training(settings)
            key = self._known_key(settings)
        except SqueezeError as e:
            return Point(settings=dict(settings), phase="", error=str(e))
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # e.g. torch refusing a student for this input: a rejected point
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return Point(settings=dict(settings), phase="", error=f"{type(e).__name__}: {first_line}"[:300])
        doc = self.cache.get(key) if key is not None else None
        if doc is not None and self._stale(doc, settings):
            doc = None
        cached = doc is not None
        if doc is None:
            if not settings:
                # The original is measured here while the executor's workers start (.executor).
                t = time.time()
                reply = Executor().run(self, self._request(settings))
                self.trace.append(
                    {"task": "baseline", "worker": "driver", "start": round(t - self.wall_started, 3),
                     "end": round(time.time() - self.wall_started, 3)}
                )  # fmt: skip
            else:
                reply = self._run_remote(
                    self._register(), self._request(settings), describe_settings(settings, self.knobs)
                )
            for spec, data in reply.get("students", {}).items():
                self._adopt(spec, data)
            doc = reply["doc"]
            if key is None and not reply.get("transient"):
                try:
                    key = self._known_key(settings)
                except Exception:  # the student is still unknown: the point is not cached
                    key = None
            if key is not None and not reply.get("transient"):
                self.cache.put(key, doc)
            with self._lock:
                self.evaluations += 0 if reply.get("abandoned") else 1
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

    def deadline(self) -> float | None:
        """``time.monotonic()`` when the time budget (counted from :attr:`started`) runs out."""
        budget = self.options.time_budget_s
        return None if budget is None else self.started + budget

    def prepare(self, on_plan: Callable[[str], None] | None = None) -> None:
        """Compute (or read from the cache) the plans of planned knobs and bind them. Idempotent.

        A plan not in the cache is not started once the time budget has run out: its knob is
        dropped and the note says so.
        """
        bound = [b for b in (self._bind(knob, on_plan) for knob in self.knobs) if b is not None]
        self.knobs = bound

    def _bind(self, knob: Knob, on_plan: Callable[[str], None] | None = None) -> Knob | None:
        """``knob`` with its plan bound (computed or cached), or None when the time budget is spent."""
        if knob.plan is None:
            return knob
        deadline = self.deadline()
        key = digest({**self._context, "plan": knob.name})
        doc = self.cache.get(key)
        if doc is None and deadline is not None and time.monotonic() > deadline:
            self.notes.append(f"{knob.name}: not planned (time budget reached)")
            self.skipped[knob.name] = "time budget reached before its plan"
            return None
        if doc is None:
            if on_plan:
                on_plan(knob.name)
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                ctx = PlanContext(
                    self.model,
                    self.evaluator,
                    self.calibration,
                    self.shapes_of(self.model),
                    normalized=self._normalized(self.model, self.model_sha256)[0],
                )
                value = knob.plan(ctx)
                doc = {"value": value, "seconds": time.perf_counter() - t0}
                self.cpu_timings[f"plan:{knob.name}"] = time.process_time() - c0
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as e:  # no analysis (module missing, unsupported model): plain steps
                doc = {"value": None, "error": f"{type(e).__name__}: {str(e).strip()[:200]}"}
            self.cache.put(key, doc)
        if doc.get("error"):
            self.notes.append(f"{knob.name}: no plan ({doc['error']}); plain settings used")
        self.plans[knob.name] = doc.get("value")
        return knob.bind(doc.get("value"))

    def _bind_lazily(self, knob: Knob) -> Knob | None:
        """Bind one knob's plan when the search reaches it (a time-budgeted serial search)."""
        t0 = time.perf_counter()
        bound = self._bind(knob)
        self.timings["plan"] = self.timings.get("plan", 0.0) + time.perf_counter() - t0
        others = [k for k in self.knobs if k.name != knob.name]
        self.knobs = others if bound is None else [bound if k.name == knob.name else k for k in self.knobs]
        return bound

    def run(self, on_point: Callable[[Point], None] | None = None) -> SearchResult:
        deadline = self.deadline()
        self.train_ahead()
        # With a time budget (and one evaluation at a time) the budget goes to the cheapest knobs
        # first, and a knob's plan is made only when the search reaches it: a 1-minute budget
        # on a loaded machine found nothing when the plans (channel sensitivity, int8 layer
        # ranking: several evaluations each) ran before any candidate.
        lazy = deadline is not None and self.executor.workers <= 1
        t0, c0 = time.perf_counter(), time.process_time()
        t = time.time()
        if not lazy:
            self.prepare()
        self.timings["plan"] = self.timings.get("plan", 0.0) + time.perf_counter() - t0
        self.cpu_timings["plan"] = self.cpu_timings.get("plan", 0.0) + time.process_time() - c0
        self.trace.append(
            {"task": "plan", "worker": "driver", "start": round(t - self.wall_started, 3),
             "end": round(time.time() - self.wall_started, 3)}
        )  # fmt: skip
        knobs = sorted(self.knobs, key=evaluation_cost_rank) if lazy else self.knobs
        objectives = parse_objectives(self.options.objective)
        last, last_cpu = time.perf_counter(), time.process_time()

        def timed(p: Point) -> None:
            # Wall time per phase: measuring, cache reads and the search's own work alike.
            nonlocal last, last_cpu
            now, cpu = time.perf_counter(), time.process_time()
            self.timings[p.phase] = self.timings.get(p.phase, 0.0) + now - last
            self.cpu_timings[p.phase] = self.cpu_timings.get(p.phase, 0.0) + cpu - last_cpu
            last, last_cpu = now, cpu
            if on_point:
                on_point(p)

        from onnxsqueeze.passes.reconstruct import reuse_original_outputs

        # Every channels candidate re-fits against the same original: its outputs are captured once.
        with reuse_original_outputs():
            result = search(
                knobs,
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
                bind=self._bind_lazily if lazy else None,
                abandon=self.executor.abandon,
            )
        if lazy:  # knobs the search did not reach: planned from the cache, or dropped and said
            self.prepare()
            result.skipped.update(self.skipped)
        # A student the search did not ask for (time budget) finishes, as a speculative
        # evaluation does, and is cached; the students are complete before the report.
        concurrent.futures.wait(list(self._training.values()))
        return result


def _weight_bytes(model: Any) -> int:
    """The bytes of an ``onnx_ir`` model's initializers (what its serialized form mostly is)."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


class _Prefixes:
    """Part-built candidates by (base model, steps so far): serialized model, whether each step
    modified it, and each step's provenance. Least recently used first out past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.OrderedDict[str, tuple[bytes, tuple[bool, ...], tuple[dict[str, Any], ...]]]
        self.items = collections.OrderedDict()
        self.size = 0
        self.lock = threading.Lock()

    @staticmethod
    def key(base_sha: str, steps: Sequence[Step]) -> str:
        return digest({"base": base_sha, "steps": [s.to_dict() for s in steps]})

    def longest(
        self, base_sha: str, steps: Sequence[Step], at_least: int
    ) -> tuple[bytes, tuple[bool, ...], tuple[dict[str, Any], ...]] | None:
        """The longest kept build of a prefix of ``steps`` beyond its first ``at_least`` steps."""
        with self.lock:
            for n in range(len(steps), at_least, -1):
                k = self.key(base_sha, steps[:n])
                if k in self.items:
                    self.items.move_to_end(k)
                    return self.items[k]
        return None

    def put(
        self,
        base_sha: str,
        steps: Sequence[Step],
        data: bytes,
        modified: tuple[bool, ...],
        described: tuple[dict[str, Any], ...],
    ) -> None:
        if len(data) > self.limit:
            return
        k = self.key(base_sha, steps)
        with self.lock:
            if k in self.items:
                return
            while self.items and self.size + len(data) > self.limit:
                _, (old, _, _) = self.items.popitem(last=False)
                self.size -= len(old)
            self.items[k] = (data, modified, described)
            self.size += len(data)


def written_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """The candidate as its file stores it: weights as ``sparse_initializer`` where a tensor is
    smaller so and onnxruntime's outputs stay identical (:func:`onnxsqueeze.prune.store_sparse`).
    What a squeeze writes, what its size is measured on and what ``apply`` writes: the search
    scores and times the dense model, which onnxruntime's session holds either way."""
    from onnxsqueeze.prune import store_sparse

    return store_sparse(model)[0]


def evaluation_cost_rank(knob: Knob) -> int:
    """How costly a knob's candidates are to make, cheapest first (a time-budgeted search's order).

    0: one precision pass, no plan (fp16, int8 weights, int4, dynamic int8); 1: other plain passes
    (resolution, sparsity with its re-fits); 2: knobs with a plan (its evaluations come first);
    3: knobs that train (students, fine-tuning).
    """
    if knob.base:
        return 3
    if knob.plan is not None:
        return 2
    return 0 if knob.group == "precision" else 1


# --------------------------------------------------------------------------------- the API


def rejected(doc: dict[str, Any], e: Exception, t0: float) -> dict[str, Any]:
    """The evaluation ``doc`` of a candidate that failed with ``e``, started at ``t0``.

    A ``SqueezeError`` keeps its user-facing message; any other exception (a pass or the runtime
    crashing on this candidate) is named by its class and the first line of its message.
    """
    if isinstance(e, SqueezeError):
        error = str(e)
    else:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        error = f"{type(e).__name__}: {first_line}"[:300]
    return doc | {"error": error, "seconds": time.perf_counter() - t0}


def build_replica(spec: WorkerSpec) -> Squeezer:
    """A worker's Squeezer, equal to the driver's for measuring (its cache is node-local scratch)."""
    model = onnx.ModelProto()
    model.ParseFromString(spec.model)
    evalset = Dataset(dict(spec.eval_inputs), spec.eval_labels, "evaluation data")
    evaluator = Evaluator(
        model,
        evalset,
        spec.metric,
        output=spec.output,
        threshold=spec.threshold,
        class_axis=spec.class_axis,
        provider=spec.options.provider,
        batch_size=spec.options.batch_size,
    )
    cal = (
        Dataset(dict(spec.calibration_inputs), spec.calibration_labels, "calibration data")
        if spec.calibration_inputs is not None
        else None
    )
    train = (
        Dataset(dict(spec.train_inputs), spec.train_labels, "training data")
        if spec.train_inputs is not None
        else None
    )
    from onnxsqueeze import scratch as worker_scratch

    worker_scratch.sweep()  # what workers killed earlier on this node left behind
    scratch = worker_scratch.make()
    # A worker's scratch (students, soft labels) goes with the worker process: a pool worker
    # ends with os._exit (no atexit), after multiprocessing's own finalizers, so one is set there.
    # A killed worker's is removed by whoever killed it, or by the next worker (scratch.sweep).
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    multiprocessing.util.Finalize(
        None, shutil.rmtree, args=(scratch,), kwargs={"ignore_errors": True}, exitpriority=0
    )
    replica = Squeezer(
        model,
        evaluator,
        calibration=cal,
        calibration_source=None,
        options=spec.options,
        cache_dir=scratch,
        model_sha256=spec.model_sha256,
        train=train,
        input_shapes=spec.input_shapes,
    )
    return replica
