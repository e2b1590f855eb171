"""The accuracy-budgeted squeeze: the cheapest model within N points of the baseline.

Not blind enumeration. With ``cost`` the chosen objective (latency, file size, MACs or dollars):

1. **Baseline**: score the original model and measure its cost.
2. **Each knob alone**: a monotone knob (more aggressive never helps accuracy: sparsity level,
   channel ratio, resolution) is bisected over its ordered settings for the most aggressive one
   within budget, ``O(log n)`` evaluations (the fraction of layers quantized to int8 is one); a
   categorical knob evaluates each setting and keeps the cheapest that fits. A knob whose best
   setting does not lower the cost is dropped.
3. **Greedy combination**: add the survivors one by one, the most budget-efficient first (cost
   gain per point of drop, so a free step precedes one that spends the budget for the same gain;
   one knob per group: fp16, int8 and int8-dynamic exclude each other), re-verifying the budget
   after each step; when a monotone knob breaks the budget in combination, bisect it again over
   its milder settings before rejecting it. A step is taken when it lowers the cost beyond the
   timing noise, or, on a noisy objective (latency, cost), ties within the noise and shrinks the
   file by more than 10%.
4. **Best**: the cheapest evaluated point within budget; on a noisy objective, the smallest file
   among the points within the noise of the cheapest. Every point is kept (Pareto front, report).

Every evaluation is cached on disk under a key of (model hash, data hash, metric, provider,
candidate steps, tool version); a result file is written atomically as soon as it is measured,
so an interrupted run (Ctrl-C, time budget) resumes where it stopped and a repeated run is
instant.

**Distillation** (the ``distill`` knob, offered only with training data): a setting names a
catalog student (``models/students.py``); the original teaches it on the training data
(:func:`onnxsqueeze.distill.distill`, seeded, a time budget per student, early stopping on a
seeded 10% of the training data) and the student replaces the model the other knobs' passes run
on, so ``distill -> cnn4 + int8 static`` is int8 of the student. A student is trained once and
cached (ONNX bytes, keyed by the original's hash, the training data's hash, the spec and the time
budget); its sha256 enters the keys of the evaluations built on it. Training is not replayed by
``apply`` (a time budget and torch's kernels make it irreproducible byte for byte): the recipe
records the student as its base model (path beside the recipe and sha256) and ``apply`` replays
the passes on it.

The knob table :data:`KNOBS` is the one place that maps techniques to passes. A knob whose pass is
not registered in :data:`onnxsqueeze.passes.PASSES` (or whose options the pass does not take) is
not offered; the report says so.
"""

# NOTE: imports flow cli -> search -> passes; this module never imports typer or rich.

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze.errors import BudgetNotMetError, InputError, SqueezeError
from onnxsqueeze.evaluate import Budget, Dataset, Evaluator, Preprocess
from onnxsqueeze.recipe import CalibrationSource, Recipe, Step
from onnxsqueeze.units import human_bytes

OBJECTIVES = ("latency", "size", "macs", "cost")
# The instance a cost is priced on when none is given (onnxsqueeze.bench.cost's table): a 2-vCPU
# CPU machine, a T4 for CUDA. At a fixed price the cost objective ranks candidates like latency;
# it is reported in dollars per million inferences at batch 1.
DEFAULT_INSTANCE = {"cpu": "aws/c7i.large", "cuda": "aws/g4dn.xlarge", "tensorrt": "aws/g4dn.xlarge"}
CACHE_FORMAT = 1
# A latency (or cost) step must gain more than this to count: interleaved A/B timing on a shared
# machine still wobbles by a percent or two.
LATENCY_MIN_GAIN = 0.03


# ------------------------------------------------------------------------------------ the knobs


@dataclasses.dataclass(frozen=True)
class Knob:
    """A technique the search can turn.

    Attributes:
        name: the knob's name in reports and ``--techniques``.
        settings: candidate settings; for a monotone knob ordered from mildest to most
            aggressive.
        monotone: more aggressive settings never raise the metric (bisection is valid).
        step: the recipe step (registry pass name, options) of a setting.
        stage: order of application in a combination (structure first, precision last).
        group: knobs of one group exclude each other in a combination (fp16 vs int8).
        label: how a setting reads in reports (default ``"<name> <setting>"``).
        plan: model- and data-dependent preparation, computed once per search (and cached):
            ``plan(context) -> value``; a knob with a plan has ``step(setting, value)``, and
            ``value`` is None when the plan could not be made.
        base: the setting replaces the model the passes run on (distillation into a student)
            instead of adding a pass; its ``step`` only names it (cache keys, reports) and the
            recipe records the new model as its base (:class:`onnxsqueeze.recipe.BaseModel`).
    """

    name: str
    settings: tuple[Any, ...]
    monotone: bool
    step: Callable[..., Step]
    stage: int
    group: str | None = None
    label: Callable[[Any], str] | None = None
    help: str = ""
    plan: Callable[[PlanContext], Any] | None = None
    base: bool = False

    def describe(self, setting: Any) -> str:
        return self.label(setting) if self.label is not None else f"{self.name} {setting}"

    def step_of(self, setting: Any) -> Step:
        """The step of a setting (a planned knob not yet bound gets its plan-less step)."""
        return self.step(setting, None) if self.plan is not None else self.step(setting)

    def bind(self, value: Any) -> Knob:
        """This knob with its plan's value fixed in its steps."""
        unbound = self.step
        return dataclasses.replace(self, step=lambda s: unbound(s, value), plan=None)


@dataclasses.dataclass(frozen=True)
class PlanContext:
    """What a knob's plan may look at: the original model and the search's data."""

    model: onnx.ModelProto
    evaluator: Evaluator
    calibration: Dataset | None


def _channels_plan(ctx: PlanContext, *, ratio: float = 0.75, samples: int = 128) -> dict[str, float]:
    """Per-group sensitivity: the metric drop when each prunable group alone loses ``ratio``.

    Uses :func:`onnxsqueeze.prune.sensitivity` (the pruning issue's analysis) on up to
    ``samples`` evaluation samples, with least-squares reconstruction on the calibration data.
    """
    from onnxsqueeze.prune import sensitivity  # type: ignore[import-not-found, unused-ignore]

    ds = ctx.evaluator.dataset.take(0, min(samples, len(ctx.evaluator.dataset)))
    data = dict(ds.inputs)
    if ds.labels is not None and ctx.evaluator.metric.name == "accuracy":
        data["labels"] = ds.labels
    rows = sensitivity(
        ctx.model,
        data,
        ratios=(ratio,),
        calibration=ctx.calibration.inputs if ctx.calibration is not None else None,
        reconstruction="lsq" if ctx.calibration is not None else "none",
    )
    return {
        str(r["group"]): max(float(r["drop"]), 0.0)
        for r in rows
        if r.get("drop") is not None and r.get("ratio") == ratio
    }


def allocate_ratios(drops: Mapping[str, float], target: float, *, cap: float = 0.9) -> dict[str, float]:
    """Per-group channel ratios around ``target``, larger for groups whose drop is smaller.

    With ``d_g`` the drop of group ``g`` pruned alone (from :func:`_channels_plan`), the weight
    ``w_g = (d_g + eps)^(-1/2)`` (``eps = 0.1 + 0.1 mean(d)`` points keeps insensitive groups
    from taking everything) gives ``r_g = min(cap, target * w_g / mean(w))``: the mean ratio is
    ``target`` until the cap binds, and every ``r_g`` grows with ``target`` (bisection stays valid).
    """
    if not drops:
        return {}
    values = list(drops.values())
    eps = 0.1 + 0.1 * float(np.mean(values))
    weights = {g: (d + eps) ** -0.5 for g, d in drops.items()}
    mean_w = float(np.mean(list(weights.values())))
    return {g: round(min(cap, target * w / mean_w), 3) for g, w in sorted(weights.items())}


def _channels_step(ratio: float, drops: Mapping[str, float] | None) -> Step:
    options: dict[str, Any] = {"ratio": ratio}
    if drops:
        options["ratios"] = allocate_ratios(drops, ratio)
    return Step.of("channels", options, calibration=True)


# NOTE for the lead: when a technique lands, check that its registry name and option names match
# the step below (the search checks the options against the pass's dataclass fields and reports
# a mismatch as "not offered").
KNOBS: tuple[Knob, ...] = (
    Knob(
        "resolution",
        settings=(0.875, 0.75, 0.625, 0.5),
        monotone=True,
        step=lambda s: Step.of("resolution", {"scale": s, "keep_interface": True}),
        stage=0,
        label=lambda s: f"resolution x{s:g}",
        help="input resolution scale (RewriteInputResolutionPass)",
    ),
    Knob(
        "channels",
        settings=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
        monotone=True,
        # Per-group ratios from the pruning sensitivity analysis (the plan), least-squares
        # reconstruction on the calibration data; uniform ratios if the analysis cannot run.
        step=_channels_step,
        plan=_channels_plan,
        stage=1,
        label=lambda r: f"channels -{r:.0%}",
        help="structured channel pruning ratio (PruneChannelsPass)",
    ),
    Knob(
        "sparsity",
        settings=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9),
        monotone=True,
        # With least-squares reconstruction on the calibration data (the pass's default).
        step=lambda s: Step.of("sparsity", {"sparsity": s}, calibration=True),
        stage=2,
        label=lambda s: f"sparsity {s:.0%}",
        help="zero-weight magnitude pruning (PruneWeightsPass)",
    ),
    Knob(
        "int8",
        # The fraction of Conv/Gemm/MatMul layers quantized, least sensitive first (the others stay
        # float): more layers, more noise, so the metric falls (roughly) monotonically.
        settings=(0.5, 0.75, 1.0),
        monotone=True,
        step=lambda f: Step.of(
            "int8", {"mode": "static", "per_channel": True, "fraction": f}, calibration=True
        ),
        stage=3,
        group="precision",
        label=lambda f: "int8 static" if f == 1.0 else f"int8 static {f:.0%} of layers",
        help="int8 QDQ with calibration (QuantizeInt8Pass)",
    ),
    Knob(
        "int8-dynamic",
        settings=(True,),
        monotone=False,
        step=lambda _: Step.of("int8", {"mode": "dynamic", "per_channel": True}),
        stage=3,
        group="precision",
        label=lambda _: "int8 dynamic",
        help="int8 weights, activations quantized at run time (QuantizeInt8Pass)",
    ),
    Knob(
        "fp16",
        settings=(True,),
        monotone=False,
        step=lambda _: Step.of("fp16", {}),
        stage=3,
        group="precision",
        label=lambda _: "fp16",
        help="half precision (ConvertToFloat16Pass)",
    ),
    Knob(
        "distill",
        # Catalog students (models/students.py), larger to smaller: a smaller student learns less
        # (roughly monotone, as the int8 fraction). Offered only with training data.
        settings=("cnn8", "cnn4"),
        monotone=True,
        step=lambda s: Step.of("distill", {"student": s}),
        stage=-1,
        base=True,
        label=lambda s: f"distill -> {s}",
        help="knowledge distillation into a smaller catalog student (needs --train-data)",
    ),
)

CLEANUP = Step.of("cleanup", {})


def available_knobs(knobs: Sequence[Knob] = KNOBS) -> tuple[list[Knob], dict[str, str]]:
    """The knobs (and settings) whose passes are registered, and why the others are not offered."""
    from onnxsqueeze.passes import PASSES

    offered: list[Knob] = []
    skipped: dict[str, str] = {}
    for knob in knobs:
        if knob.base:  # not a pass: offered when its data are (see Squeezer)
            offered.append(knob)
            continue
        ok, why = [], []
        for s in knob.settings:
            step = knob.step_of(s)
            cls = PASSES.get(step.pass_name)
            if cls is None:
                why.append(f"pass '{step.pass_name}' is not registered")
                continue
            fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            missing = sorted({k for k, _ in step.options} - fields)
            if missing or (step.calibration and not fields & {"calibration", "ranges"}):
                why.append(f"pass '{step.pass_name}' takes no option(s) {missing or ['calibration']}")
                continue
            ok.append(s)
        if ok:
            offered.append(dataclasses.replace(knob, settings=tuple(ok)))
        if why:
            skipped[knob.name] = "; ".join(dict.fromkeys(why))
    return offered, skipped


Settings = dict[str, Any]


def steps_of(settings: Mapping[str, Any], knobs: Sequence[Knob]) -> list[Step]:
    """The recipe steps of a candidate: cleanup, then each pass knob's step by stage."""
    by_name = {k.name: k for k in knobs}
    chosen = sorted(settings.items(), key=lambda kv: (by_name[kv[0]].stage, kv[0]))
    return [CLEANUP, *(by_name[name].step_of(value) for name, value in chosen if not by_name[name].base)]


def base_of(settings: Mapping[str, Any], knobs: Sequence[Knob]) -> Step | None:
    """The step naming the candidate's base model (distillation), None for the original."""
    by_name = {k.name: k for k in knobs}
    bases = [by_name[n].step_of(v) for n, v in sorted(settings.items()) if by_name[n].base]
    return bases[0] if bases else None


def describe_settings(settings: Mapping[str, Any], knobs: Sequence[Knob]) -> str:
    if not settings:
        return "baseline"
    by_name = {k.name: k for k in knobs}
    parts = sorted(settings.items(), key=lambda kv: (by_name[kv[0]].stage, kv[0]))
    return " + ".join(by_name[n].describe(v) for n, v in parts)


# ---------------------------------------------------------------------------------------- points


@dataclasses.dataclass
class Point:
    """One evaluated candidate."""

    settings: Settings
    phase: str  # baseline | single | combine
    metric: float | None = None
    size: int | None = None  # serialized model bytes
    macs: int | None = None  # per sample
    latency_ms: float | None = None  # batch 1: the original's median x latency_ratio
    latency_ratio: float | None = None  # median vs the original's, timed interleaved
    cost: float | None = None  # USD per million inferences
    error: str | None = None
    seconds: float = 0.0
    cached: bool = False
    drop: float | None = None
    fits: bool = False
    note: str = ""

    def value(self, objective: str) -> float:
        v = {"latency": self.latency_ms, "size": self.size, "macs": self.macs, "cost": self.cost}[objective]
        return math.inf if v is None or self.error else float(v)

    def to_dict(self, knobs: Sequence[Knob] = KNOBS) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["label"] = describe_settings(self.settings, knobs)
        return d


@dataclasses.dataclass
class SearchResult:
    baseline: Point
    points: list[Point]
    best: Point | None
    objective: str
    budget: Budget
    chosen: dict[str, Any]  # knob -> setting of the best point
    singles: dict[str, Point | None]  # knob -> its best single point within budget (None: none fits)
    rejected: list[tuple[str, str]]  # (what, why) in order
    skipped: dict[str, str]  # knob -> why not offered
    truncated: str | None = None  # why the search stopped early

    def pareto(self, higher_is_better: bool = True) -> list[Point]:
        return pareto_front(self.points, self.objective, higher_is_better)


def pareto_front(points: Sequence[Point], objective: str, higher_is_better: bool = True) -> list[Point]:
    """Points not dominated in (metric, objective cost), sorted by cost."""
    valid = [
        p for p in points if p.error is None and p.metric is not None and math.isfinite(p.value(objective))
    ]
    sign = 1.0 if higher_is_better else -1.0
    front: list[Point] = []
    for p in valid:
        pm, pc = sign * p.metric, p.value(objective)  # type: ignore[operator]
        dominated = any(
            (sign * q.metric >= pm and q.value(objective) <= pc)  # type: ignore[operator]
            and (sign * q.metric > pm or q.value(objective) < pc)  # type: ignore[operator]
            for q in valid
        )
        if not dominated and not any(
            f.settings == p.settings or (f.metric == p.metric and f.value(objective) == pc) for f in front
        ):
            front.append(p)
    return sorted(front, key=lambda p: (p.value(objective), -sign * p.metric))  # type: ignore[operator]


# ---------------------------------------------------------------------------------------- search


class _OutOfTime(Exception):
    pass


def search(
    knobs: Sequence[Knob],
    evaluate: Callable[[Settings], Point],
    fits: Callable[[Point], bool],
    *,
    objective: str,
    budget: Budget,
    deadline: float | None = None,
    on_point: Callable[[Point], None] | None = None,
    skipped: Mapping[str, str] | None = None,
    min_gain: float = 0.0,
) -> SearchResult:
    """Run the search (see the module docstring) over ``knobs``.

    Args:
        knobs: the offered knobs.
        evaluate: settings -> a measured Point (``metric`` and costs, or ``error``); may read a cache.
        fits: whether a point is within budget (its ``drop`` already set by ``evaluate``).
        objective: which cost to minimize.
        budget: recorded in the result.
        deadline: ``time.monotonic()`` after which no new point is started.
        on_point: called with every point as it is measured.
        skipped: knobs not offered and why (for the report).
        min_gain: a step must lower the cost by more than this fraction to count (measured
            latency is noisy; sizes and MACs are exact).
    """
    points: list[Point] = []
    seen: dict[str, Point] = {}
    rejected: list[tuple[str, str]] = []
    by_name = {k.name: k for k in knobs}

    def key(settings: Settings) -> str:
        return json.dumps(sorted(settings.items()), default=str)

    def ev(settings: Settings, phase: str) -> Point:
        k = key(settings)
        if k in seen:
            return seen[k]
        if deadline is not None and time.monotonic() > deadline and points:
            raise _OutOfTime
        p = evaluate(dict(settings))
        p.phase = phase
        p.fits = p.error is None and fits(p)
        seen[k] = p
        points.append(p)
        if on_point:
            on_point(p)
        return p

    def cost(p: Point) -> float:
        return p.value(objective)

    def cheaper(p: Point, than: Point) -> bool:
        """Lower cost by more than ``min_gain`` (a fraction), so timing noise is not a gain."""
        return cost(p) < cost(than) * (1.0 - min_gain)

    def tie_smaller(p: Point, than: Point) -> bool:
        """A noisy cost within ``min_gain`` of ``than`` (a tie) with a file smaller by > 10%.

        Measured latency cannot rank two candidates closer than its noise; the exact file size
        breaks the tie, so a step that shrinks the model without slowing it is still taken.
        """
        if not min_gain or p.size is None or than.size is None:
            return False
        return cost(p) <= cost(than) * (1.0 + min_gain) and p.size < 0.9 * than.size

    def better(p: Point, than: Point) -> bool:
        return cheaper(p, than) or tie_smaller(p, than)

    def efficiency(p: Point) -> float:
        """Cost gain per point of drop: ``log(cost_base / cost_p) / (max(drop, 0) + eps)``.

        Spending the budget where it buys the most (a knapsack's value/weight order): a free
        step (int8 at no accuracy cost) goes before an equal gain that costs 1.5 points.
        ``eps = 10%`` of the budget keeps free steps finite and ordered by their gain.
        """
        gain = math.log(cost(baseline) / cost(p)) if 0 < cost(p) < math.inf else 0.0
        return gain / (max(p.drop or 0.0, 0.0) + 0.1 * max(budget.max_drop, 1e-6))

    def why_not(p: Point, reference: Point) -> str:
        if p.error:
            return p.error
        if not p.fits:
            return f"over budget (drop {p.drop:.3g} > {budget.max_drop:g})"
        return f"no gain ({objective} {_fmt(cost(p))} vs {_fmt(cost(reference))}" + (
            f", {min_gain:.0%} needed)" if min_gain else ")"
        )

    truncated = None
    baseline = ev({}, "baseline")
    if baseline.error:
        raise InputError(f"the original model cannot be evaluated: {baseline.error}")
    singles: dict[str, Point | None] = {}
    try:
        # 2. each knob alone
        for knob in knobs:
            best: Point | None = None
            if knob.monotone:
                lo, hi = -1, len(knob.settings)
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    p = ev({knob.name: knob.settings[mid]}, "single")
                    if p.fits:
                        lo = mid
                    else:
                        hi = mid
                        if not p.error:
                            p.note = p.note or why_not(p, baseline)
                if lo >= 0:
                    best = seen[key({knob.name: knob.settings[lo]})]
                if hi < len(knob.settings):
                    p = seen[key({knob.name: knob.settings[hi]})]
                    rejected.append((describe_settings(p.settings, knobs), why_not(p, baseline)))
            else:
                for s in knob.settings:
                    p = ev({knob.name: s}, "single")
                    if p.fits and (best is None or cost(p) < cost(best)):
                        best = p
                    elif not p.fits:
                        rejected.append((describe_settings(p.settings, knobs), why_not(p, baseline)))
            if best is not None and not cheaper(best, baseline):
                rejected.append((describe_settings(best.settings, knobs), why_not(best, baseline)))
                best = None
            singles[knob.name] = best

        # 3. greedy combination, the most budget-efficient survivor first
        order = sorted(
            (p for p in singles.values() if p is not None), key=lambda p: (-efficiency(p), cost(p))
        )
        current: Settings = {}
        current_point = baseline
        for single in order:
            ((name, setting),) = single.settings.items()
            knob = by_name[name]
            rival = next((k for k in current if knob.group and by_name[k].group == knob.group), None)
            if rival is not None:
                rejected.append(
                    (knob.describe(setting), f"excluded by {by_name[rival].describe(current[rival])}")
                )
                continue
            trial = ev(current | {name: setting}, "combine")
            accepted: Point | None = trial if trial.fits and better(trial, current_point) else None
            if accepted is None and knob.monotone and not trial.fits and not trial.error:
                idx = knob.settings.index(setting)
                lo, hi = -1, idx
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    p = ev(current | {name: knob.settings[mid]}, "combine")
                    lo, hi = (mid, hi) if p.fits else (lo, mid)
                if lo >= 0:
                    p = seen[key(current | {name: knob.settings[lo]})]
                    if better(p, current_point):
                        accepted = p
            if accepted is not None:
                current, current_point = dict(accepted.settings), accepted
            else:
                rejected.append((describe_settings(trial.settings, knobs), why_not(trial, current_point)))
    except _OutOfTime:
        truncated = "time budget reached"

    within = [p for p in points if p.fits and p.error is None]
    best_point: Point | None = min(within, key=lambda p: (cost(p), p.drop if p.drop is not None else 0.0))
    if best_point is not None and min_gain:
        # Points within the timing noise of the fastest are ties: the smallest file wins.
        ties = [p for p in within if cost(p) <= cost(best_point) * (1.0 + min_gain)]
        best_point = min(ties, key=lambda p: (p.size if p.size is not None else math.inf, cost(p)))
    if best_point is baseline or (best_point is not None and not cheaper(best_point, baseline)):
        best_point = None
    return SearchResult(
        baseline=baseline,
        points=points,
        best=best_point,
        objective=objective,
        budget=budget,
        chosen=dict(best_point.settings) if best_point else {},
        singles=singles,
        rejected=rejected,
        skipped=dict(skipped or {}),
        truncated=truncated,
    )


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{v:.4g}"


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
    """Median batch latency in ms over a fixed loop (after warm-up), optimized session.

    A simple, honest loop: run until both ``min_iterations`` and ``min_seconds`` are met.
    """
    from onnxsqueeze import runtime

    sess = runtime.session(model, provider=provider, optimize=True, threads=threads)
    for _ in range(warmup):
        sess.run(None, dict(feeds))
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iterations or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        sess.run(None, dict(feeds))
        times.append(time.perf_counter() - t)
        if len(times) >= 10 * min_iterations and time.perf_counter() - start >= min_seconds:
            break
    return float(np.median(times)) * 1e3


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

    Bursts of ``burst`` runs alternate between the two sessions until each has ``min_iterations``
    runs and ``min_seconds`` have passed, so load from other processes hits both alike; the ratio
    is what the search compares (the machine is shared and noisy; absolute times drift).

    ``threads=1`` by default: with onnxruntime's default intra-op pool, one session's worker
    threads keep spinning after its run and steal the cores from the other session's next burst.
    On the shared 2-core machine, the same graph timed against itself gave ratios of 0.77-1.29
    with the default pool and 0.998-1.002 with one thread (digits CNN, six runs each).
    """
    from onnxsqueeze import runtime

    sa = runtime.session(reference, provider=provider, optimize=True, threads=threads)
    sb = runtime.session(candidate, provider=provider, optimize=True, threads=threads)
    fa, fb = dict(reference_feeds), dict(candidate_feeds)
    for _ in range(warmup):
        sa.run(None, fa)
        sb.run(None, fb)
    ta: list[float] = []
    tb: list[float] = []
    start = time.perf_counter()
    while len(tb) < min_iterations or time.perf_counter() - start < min_seconds:
        for sess, feeds, times in ((sa, fa, ta), (sb, fb, tb)):
            for _ in range(burst):
                t = time.perf_counter()
                sess.run(None, feeds)
                times.append(time.perf_counter() - t)
        if len(tb) >= 20 * min_iterations:
            break
    a, b = float(np.median(ta)), float(np.median(tb))
    return b * 1e3, b / a


@dataclasses.dataclass(frozen=True, kw_only=True)
class SqueezeOptions:
    """What ``squeeze`` optimizes and how.

    Attributes:
        budget: the accuracy budget.
        objective: latency, size, macs or cost.
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
        distill_students: the catalog students the ``distill`` knob tries, larger to smaller
            (None: the knob's own list).
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
    distill_students: tuple[str, ...] | None = None


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
    ) -> None:
        if options.objective not in OBJECTIVES:
            raise InputError(
                f"unknown objective '{options.objective}'; choose one of {', '.join(OBJECTIVES)}"
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
            elif options.distill_students:
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
        self._context = self._context_key()

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
        }

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
        return self.cache_key(steps_of(settings, self.knobs), base_sha)

    # ------------------------------------------------------------------ base models
    def base_model(self, settings: Mapping[str, Any]) -> tuple[onnx.ModelProto, str]:
        """The model a candidate's passes run on and its sha256: the original or a student."""
        base = base_of(settings, self.knobs)
        if base is None:
            return self.model, self.model_sha256
        return self.student(str(dict(base.options)["student"]))

    def _student_key(self, spec: str) -> str:
        from onnxsqueeze import __version__

        assert self.train is not None
        doc = {
            "format": CACHE_FORMAT,
            "version": __version__,
            "teacher": self.model_sha256,
            "train": self.train.sha256(),
            "labels": self.train.labels is not None,
            "student": spec,
            "time_s": self.options.distill_time_s,
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
        if spec in self._student_models:
            return self._student_models[spec]
        key = self._student_key(spec)
        path = self.cache_dir / "students" / f"{key}.onnx" if self.cache_dir is not None else None
        if path is not None and path.is_file() and path.with_suffix(".json").is_file():
            data = path.read_bytes()
            model = onnx.ModelProto()
            model.ParseFromString(data)
            info = json.loads(path.with_suffix(".json").read_text())
        else:
            model, info = self._distill(spec)
            data = model.SerializeToString(deterministic=True)
            if path is not None:
                sio.write_bytes_atomic(path.with_suffix(".json"), json.dumps(info, sort_keys=True).encode())
                sio.write_bytes_atomic(path, data)
        sha = hashlib.sha256(data).hexdigest()
        self.students[spec] = info | {"sha256": sha}
        self._student_models[spec] = (model, sha)
        return model, sha

    def _distill(self, spec: str) -> tuple[onnx.ModelProto, dict[str, Any]]:
        from onnxsqueeze.distill import TrainConfig, distill

        assert self.train is not None
        teacher = self.model_path
        if teacher is None:  # distill() reads the teacher from a file
            if self.cache_dir is None:
                raise InputError("distillation needs the model's file or a cache folder")
            teacher = sio.save(self.model, self.cache_dir / "students" / f"teacher-{self.model_sha256}.onnx")
        data = dict(self.train.inputs)
        if self.train.labels is not None:
            data["labels"] = self.train.labels
        t0 = time.perf_counter()
        result = distill(
            teacher,
            spec,
            data,
            config=TrainConfig(time_budget_s=self.options.distill_time_s, seed=0),
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
            steps_of(settings, self.knobs),
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
        steps = tuple(steps_of(settings, self.knobs))
        needs = any(s.calibration for s in steps)
        base = None
        step = base_of(settings, self.knobs)
        if step is not None:
            spec = str(dict(step.options)["student"])
            base = BaseModel(base_path or f"{spec}.onnx", self.student(spec)[1], "distill", spec)
        return Recipe(steps, self.model_sha256, self.calibration_source if needs else None, base)

    def _measure(self, settings: Settings) -> dict[str, Any]:
        from onnxsqueeze.recipe import build_traced
        from onnxsqueeze.summary import count_macs

        t0 = time.perf_counter()
        try:
            if settings:
                steps = steps_of(settings, self.knobs)
                base, base_sha = self.base_model(settings)
                model, modified = build_traced(
                    base,
                    steps,
                    calibration=self.calibration.inputs if self.calibration is not None else None,
                    source_sha256=base_sha,
                )
                idle = [s.pass_name for s, m in zip(steps[1:], modified[1:], strict=True) if not m]
                if idle:
                    return {
                        "error": f"nothing to do for {', '.join(idle)}",
                        "seconds": time.perf_counter() - t0,
                    }
            else:
                model = self.model
            metric = self.evaluator.score(model)
            size = len(model.SerializeToString(deterministic=True))
            try:
                macs: int | None = count_macs(model)[0]
            except Exception:  # MACs are informative; a model shape inference cannot follow has none
                macs = None
            from onnxsqueeze.evaluate import resize_inputs
            from onnxsqueeze.shapes import graph_inputs, input_dtype

            first = self.evaluator.dataset.take(0, 1).inputs

            def feeds_for(m: onnx.ModelProto) -> dict[str, np.ndarray]:
                resized = resize_inputs(m, first)
                return {
                    vi.name: np.asarray(resized[vi.name]).astype(input_dtype(vi)) for vi in graph_inputs(m)
                }

            seconds = self.options.latency_seconds
            if settings:
                latency, ratio = compare_latency(
                    self.model, model, feeds_for(self.model), feeds_for(model),
                    provider=self.options.provider, min_seconds=seconds,
                    threads=self.options.latency_threads,
                )  # fmt: skip
            else:
                latency = measure_latency(
                    model, feeds_for(model), provider=self.options.provider, min_seconds=seconds,
                    threads=self.options.latency_threads,
                )  # fmt: skip
                ratio = 1.0
        except SqueezeError as e:
            return {"error": str(e), "seconds": time.perf_counter() - t0}
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # a candidate that crashes a pass or the runtime is a rejected point
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return {"error": f"{type(e).__name__}: {first_line}"[:300], "seconds": time.perf_counter() - t0}
        return {
            "metric": metric,
            "size": size,
            "macs": macs,
            "latency_ms": latency,
            "latency_ratio": ratio,
            "seconds": time.perf_counter() - t0,
        }

    def evaluate(self, settings: Settings) -> Point:
        """Measure one candidate, from the cache when it holds it."""
        try:
            key = self.key_of(settings)
        except SqueezeError as e:  # the base model could not be made (a student did not train)
            return Point(settings=dict(settings), phase="", error=str(e))
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # e.g. torch refusing a student for this input: a rejected point
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return Point(settings=dict(settings), phase="", error=f"{type(e).__name__}: {first_line}"[:300])
        doc = self._cache_get(key)
        cached = doc is not None
        if doc is None:
            doc = self._measure(settings)
            self._cache_put(key, doc)
            self.evaluations += 1
        else:
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
        if p.metric is not None and self._baseline_metric is not None:
            p.drop = self.options.budget.drop(
                self._baseline_metric,
                p.metric,
                higher_is_better=self.evaluator.metric.higher_is_better,
                scale=self._scale,
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
                    value = knob.plan(PlanContext(self.model, self.evaluator, self.calibration))
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
        self.prepare()
        return search(
            self.knobs,
            self.evaluate,
            self.fits,
            objective=self.options.objective,
            budget=self.options.budget,
            deadline=deadline,
            on_point=on_point,
            skipped=self.skipped,
            min_gain=LATENCY_MIN_GAIN if self.options.objective in ("latency", "cost") else 0.0,
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

    Raises:
        ModelLoadError, InputError: bad model, data or options.
    """
    from onnxsqueeze import evaluate as E
    from onnxsqueeze import shapes

    model, data, out_dir = Path(model), Path(data), Path(out_dir)
    original = sio.load(model)
    if data.is_dir():
        first_input = shapes.graph_inputs(original)[0].name
        ds = E.load_image_folder(
            data, preprocess or E.Preprocess(), input_name=first_input, limit=samples, on_image=on_image
        )
    else:
        ds = E.load_npz_dataset(data)
        if samples is not None and samples < len(ds):
            ds = ds.take(0, samples)
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
        original, evalset, metric, output=output, threshold=threshold, provider=options.provider
    )
    return Squeezer(
        original,
        evaluator,
        calibration=cal,
        calibration_source=source,
        options=options,
        cache_dir=(cache_dir or out_dir / ".cache") if use_cache else None,
        model_sha256=sio.sha256_file(model),
        train=train,
        model_path=model,
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

    When nothing fits, only the report, results and plot are written and BudgetNotMetError is
    raised afterwards, naming the closest candidates.
    """
    from onnxsqueeze import recipe as rcp

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if result.best is not None:
        best_model = squeezer.build_cached(result.best.settings)
        written["model"] = sio.save(best_model, out / f"{model_name}.squeezed.onnx", protect=protect)
        base_path = None
        if base_of(result.best.settings, squeezer.knobs) is not None:
            # The recipe's base model: the student's exact bytes (their sha256 is in the recipe).
            student, _ = squeezer.base_model(result.best.settings)
            written["student"] = sio.write_bytes_atomic(
                out / f"{model_name}.student.onnx",
                student.SerializeToString(deterministic=True),
                protect=protect,
            )
            base_path = written["student"].name
        written["recipe"] = rcp.save(
            squeezer.recipe(result.best.settings, base_path), out / "recipe.toml", protect=protect
        )
    results = results_dict(squeezer, result, elapsed_s=elapsed_s)
    if "model" in written:
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


def closest(result: SearchResult, n: int = 3) -> list[Point]:
    """The candidates nearest to the budget (smallest drop), for the nothing-fits message."""
    cands = [p for p in result.points if p.settings and p.error is None and p.drop is not None]
    return sorted(cands, key=lambda p: (p.drop or 0.0, p.value(result.objective)))[:n]


def nothing_fits_message(squeezer: Squeezer, result: SearchResult) -> str:
    m = squeezer.evaluator.metric
    near = closest(result)
    tail = "; ".join(
        f"{describe_settings(p.settings, squeezer.knobs)}: drop {p.drop:.3g}, "
        f"{result.objective} {_fmt(p.value(result.objective))}"
        for p in near
    )
    what = "no candidate" if not any(p.fits for p in result.points if p.settings) else "no cheaper candidate"
    if result.truncated:
        what = f"{result.truncated} before a cheaper candidate was found; {what}"
    return (
        f"{what} fits the budget ({result.budget.describe(m)}; baseline {m.name} "
        f"{result.baseline.metric:.4g}); closest: {tail or 'none evaluated'}"
    )


def results_dict(
    squeezer: Squeezer, result: SearchResult, *, elapsed_s: float | None = None
) -> dict[str, Any]:
    ev = squeezer.evaluator
    knobs = squeezer.knobs
    higher = ev.metric.higher_is_better
    return {
        "schema_version": 1,
        "model_sha256": squeezer.model_sha256,
        "data": ev.dataset.source,
        "samples": len(ev.dataset),
        "calibration": dataclasses.asdict(squeezer.calibration_source)
        if squeezer.calibration_source
        else None,
        "metric": ev.metric.name,
        "higher_is_better": higher,
        "objective": result.objective,
        "provider": squeezer.options.provider,
        "price": {"usd_per_hour": squeezer.price, "source": squeezer.price_source},
        "budget": {"max_drop": result.budget.max_drop, "relative": result.budget.relative},
        "elapsed_s": elapsed_s,
        "evaluations": squeezer.evaluations,
        "cache_hits": squeezer.cache_hits,
        "truncated": result.truncated,
        "baseline": result.baseline.to_dict(knobs),
        "best": result.best.to_dict(knobs) if result.best else None,
        "knobs": {k.name: {"settings": [str(s) for s in k.settings], "monotone": k.monotone} for k in knobs},
        "not_offered": result.skipped,
        "notes": squeezer.notes,
        "plans": squeezer.plans,
        "students": squeezer.students,
        "train_data": squeezer.train.source if squeezer.train is not None else None,
        "rejected": [{"candidate": a, "why": b} for a, b in result.rejected],
        "pareto": [p.to_dict(knobs) for p in result.pareto(higher)],
        "points": [p.to_dict(knobs) for p in result.points],
    }


def _cell(p: Point, objective: str) -> list[str]:
    return [
        f"{p.metric:.4g}" if p.metric is not None else "-",
        f"{p.drop:+.3g}" if p.drop is not None else "-",
        human_bytes(p.size),
        f"{p.macs / 1e6:.3g} M" if p.macs is not None else "-",
        f"{p.latency_ms:.3g}" if p.latency_ms is not None else "-",
        f"{p.cost:.3g}" if p.cost is not None else "-",
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_report(squeezer: Squeezer, result: SearchResult, results: Mapping[str, Any]) -> str:
    ev = squeezer.evaluator
    knobs = squeezer.knobs
    m = ev.metric
    obj = result.objective
    base = result.baseline
    cols = [m.name, "drop", "size", "MACs", "latency ms", "$/1M inf"]
    lines = [
        "# onnxsqueeze squeeze report",
        "",
        f"- data: `{ev.dataset.source}` ({len(ev.dataset)} samples), metric **{m.name}**"
        f"{' (higher is better)' if m.higher_is_better else ' (lower is better)'}",
        f"- budget: {result.budget.describe(m)}; objective: **{obj}**; provider: {squeezer.options.provider}",
        f"- evaluations: {squeezer.evaluations} measured, {squeezer.cache_hits} from cache"
        + (f"; {results['elapsed_s']:.1f} s" if results.get("elapsed_s") is not None else ""),
    ]
    if squeezer.calibration_source is not None:
        c = squeezer.calibration_source
        lines.append(f"- calibration: samples {c.start}:{c.stop} of `{c.data}` (not used for evaluation)")
    if result.truncated:
        lines.append(f"- **search stopped early: {result.truncated}**; rerun to continue from the cache")
    lines.append("")
    if result.best is not None:
        b = result.best
        lines += [
            "## Baseline vs best",
            "",
            f"Best: **{describe_settings(b.settings, knobs)}**",
            "",
            _table(["", *cols], [["baseline", *_cell(base, obj)], ["best", *_cell(b, obj)]]),
            "",
            f"Ratios (baseline / best): size {_ratio(base.size, b.size)}, latency "
            f"{_ratio(base.latency_ms, b.latency_ms)}, MACs {_ratio(base.macs, b.macs)}.",
            "",
            *_verify_lines(results.get("best", {}).get("verify")),
        ]
    else:
        lines += ["## Nothing fits the budget", "", nothing_fits_message(squeezer, result), ""]
        near = closest(result)
        if near:
            lines += [
                _table(
                    ["closest candidates", *cols],
                    [[describe_settings(p.settings, knobs), *_cell(p, obj)] for p in near],
                ),
                "",
            ]
    lines += [
        "## Pareto front",
        "",
        f"{m.name} vs {obj}: no other evaluated point is both better and cheaper.",
        "",
        _table(
            ["candidate", *cols, "fits"],
            [
                [describe_settings(p.settings, knobs), *_cell(p, obj), "yes" if p.fits else "no"]
                for p in result.pareto(m.higher_is_better)
            ],
        ),
        "",
        "## What each technique contributed",
        "",
        f"Each knob alone at its best setting within budget, against the baseline ({obj}).",
        "",
    ]
    rows = []
    for k in knobs:
        p = result.singles.get(k.name)
        if p is None:
            rows.append([k.name, "-", "no setting fits or helps", "-", "-"])
        else:
            ((_, setting),) = p.settings.items()
            rows.append(
                [
                    k.name,
                    describe_settings(p.settings, knobs),
                    f"{p.drop:+.3g}" if p.drop is not None else "-",
                    _ratio(base.value(obj), p.value(obj)),
                    "yes"
                    if result.best is not None and result.best.settings.get(k.name) == setting
                    else "no",
                ]
            )
    lines += [_table(["knob", "setting", "drop", f"{obj} gain", "in best"], rows), ""]
    if result.skipped:
        lines += ["Not offered:", ""] + [f"- {k}: {v}" for k, v in result.skipped.items()] + [""]
    if squeezer.students:
        lines += [
            f"Distilled students (trained on `{squeezer.train.source if squeezer.train else '?'}`, "
            "early stopping on a seeded 10% of it; the evaluation data stay unseen):",
            "",
            _table(
                ["student", "params", "vs original", "epochs", "train s", "sha256"],
                [
                    [
                        spec,
                        str(i.get("params", "-")),
                        f"{i['param_reduction']:.1f}x fewer" if i.get("param_reduction") else "-",
                        str(i.get("epochs", "-")),
                        f"{i['seconds']:.0f}" if i.get("seconds") is not None else "-",
                        str(i.get("sha256", ""))[:12],
                    ]
                    for spec, i in squeezer.students.items()
                ],
            ),
            "",
        ]
    if squeezer.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in squeezer.notes] + [""]
    lines += ["## Tried and rejected", ""]
    if result.rejected:
        lines += [f"- {a}: {b}" for a, b in result.rejected]
    else:
        lines.append("- nothing")
    lines += [
        "",
        "## Every evaluated point",
        "",
        _table(
            ["#", "phase", "candidate", *cols, "fits", "cached", "note"],
            [
                [
                    str(i),
                    p.phase,
                    describe_settings(p.settings, knobs),
                    *_cell(p, obj),
                    "yes" if p.fits else "no",
                    "yes" if p.cached else "",
                    (p.error or p.note or "")[:120],
                ]
                for i, p in enumerate(result.points)
            ],
        ),
        "",
        "Latency: median of a fixed timing loop at batch 1 (optimized onnxruntime session); "
        f"cost: {squeezer.price_source}.",
        "",
    ]
    return "\n".join(lines)


def _verify_lines(v: Mapping[str, Any] | None) -> list[str]:
    if not v:
        return []
    if "error" in v:
        return [f"Verification against the original: {v['error']}", ""]
    outs = v.get("outputs") or [{}]
    # The top-1 of the scored output (--output-name), not of whichever output comes first: on a
    # multi-head model (boxes, landmarks, class probabilities) the first may be a regression head.
    scored = next((o for o in outs if o.get("name") == v.get("scored_output")), outs[0])
    top1 = scored.get("top1_agreement")
    per_output = ""
    if len(outs) > 1:
        per_output = " (per output: " + ", ".join(f"'{o['name']}' {o['cosine']:.6f}" for o in outs) + ")"
    return [
        f"Verification against the original ({v['samples']} evaluation samples, onnxsqueeze.verify): "
        f"max abs {v['max_abs']:.3g}, min cosine {v['min_cosine']:.6f}{per_output}"
        + (f", top-1 agreement of '{scored['name']}' {top1:.1%}" if top1 is not None else "")
        + ".",
        "",
    ]


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or not math.isfinite(float(a)) or not math.isfinite(float(b)):
        return "-"
    return f"{float(a) / float(b):.2f}x"


def plot_pareto(squeezer: Squeezer, result: SearchResult, path: Path) -> bool:
    """Metric vs objective for every point, the front joined, the best starred. False if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    obj = result.objective
    m = squeezer.evaluator.metric
    pts = [
        p for p in result.points if p.error is None and p.metric is not None and math.isfinite(p.value(obj))
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter(
        [p.value(obj) for p in pts],
        [float(p.metric or 0.0) for p in pts],
        c=["tab:green" if p.fits else "tab:gray" for p in pts],
        s=22,
        label="evaluated (green: within budget)",
    )
    front = result.pareto(m.higher_is_better)
    ax.plot(
        [p.value(obj) for p in front],
        [float(p.metric or 0.0) for p in front],
        "-",
        color="tab:blue",
        lw=1,
        label="Pareto front",
    )
    base = result.baseline
    ax.scatter(
        [base.value(obj)],
        [float(base.metric or 0.0)],
        marker="s",
        color="black",
        s=40,
        label="baseline",
        zorder=3,
    )
    if result.best is not None:
        ax.scatter(
            [result.best.value(obj)],
            [float(result.best.metric or 0.0)],
            marker="*",
            color="tab:red",
            s=140,
            label="best",
            zorder=4,
        )
    if base.metric is not None and not result.budget.relative:
        limit = (
            base.metric - result.budget.max_drop
            if m.higher_is_better
            else base.metric + result.budget.max_drop
        )
        ax.axhline(limit, color="tab:red", ls="--", lw=0.8, label="budget")
    units = {
        "latency": "latency (ms, batch 1)",
        "size": "model size (bytes)",
        "macs": "MACs per sample",
        "cost": "USD per 1M inferences",
    }
    xs = [p.value(obj) for p in pts if p.value(obj) > 0]
    if xs and max(xs) / min(xs) > 10:  # one slow outlier (int8 dynamic on CPU) would squash the rest
        ax.set_xscale("log")
    ax.set_xlabel(units[obj])
    ax.set_ylabel(m.name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    sio.write_bytes_atomic(path, buf.getvalue())
    return True
