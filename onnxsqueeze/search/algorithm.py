"""The search: the cheapest point within the accuracy budget, and the Pareto front.

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
   its milder settings (one step milder first) before rejecting it. A base model (a student, a
   fine-tuned base) excluded by its rival, and a pass that ties its rival on the objective and
   beats it on the next (the file), are tried in the rival's place at the end. A step is taken when it
   lowers the cost beyond the timing noise, or, on a noisy objective (latency, cost), ties within
   the noise and shrinks the file by more than 10%.
4. **Best**: the cheapest evaluated point within budget; on a noisy objective, the smallest file
   among the points within the noise of the cheapest. Every point is kept (Pareto front, report).

**Parallel and speculative** (``parallel > 1``, an executor with several workers behind
``evaluate``): knobs are bisected concurrently (the training knobs, the long ones, start first),
and a worker that would otherwise idle evaluates ahead of the search's path: the candidates a
bisection needs next on either outcome of the point in flight (both halves), a categorical
knob's remaining settings, and in the combination the next trial on either outcome of the one in
flight (the greedy's next step if it is taken, the milder re-bisection's first point if not). The decisions are the serial run's: a speculative result counts only
when the serial path asks for it (it is then committed in order, as if measured then); one the
path never reaches is left out of the points (the evaluation cache keeps it).

The algorithm knows nothing about models: ``evaluate(settings) -> Point`` is given to it
(:class:`onnxsqueeze.search.squeezer.Squeezer` builds and measures real candidates; the tests
give synthetic metrics).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from onnxsqueeze.errors import InputError
from onnxsqueeze.evaluate import Budget
from onnxsqueeze.search.knobs import KNOBS, Knob, Settings, describe_settings

OBJECTIVES = ("latency", "size", "macs", "cost")
# Measured objectives: timing noise makes two values within a few percent a tie.
NOISY = ("latency", "cost")
# A latency (or cost) step must gain more than this to count: interleaved A/B timing on a shared
# machine still wobbles by a percent or two.
LATENCY_MIN_GAIN = 0.03


def parse_objectives(objective: str | Sequence[str]) -> tuple[str, ...]:
    """A priority list of objectives from ``"latency,size"`` (or a sequence of names).

    Raises:
        InputError: an unknown or repeated name, or an empty list.
    """
    names = [o.strip() for o in objective.split(",")] if isinstance(objective, str) else list(objective)
    names = [o for o in names if o]
    unknown = [o for o in names if o not in OBJECTIVES]
    if unknown or not names:
        what = f"unknown objective '{','.join(unknown)}'" if unknown else "no objective given"
        raise InputError(
            f"{what}; choose one or more (comma-separated, by priority) of {', '.join(OBJECTIVES)}"
        )
    if len(set(names)) < len(names):
        raise InputError(f"objective '{','.join(names)}' names one objective twice")
    return tuple(names)


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
    seconds: float = 0.0  # wall time of the whole measurement (the sum of the three below and more)
    build_s: float | None = None  # running the passes
    score_s: float | None = None  # evaluating the metric
    time_s: float | None = None  # timing the latency (None: not timed, e.g. over budget)
    samples: int | None = None  # scored on this many samples only (stopped early); None: all of them
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
    best: Point | None  # None: nothing within budget beats the baseline on the objectives
    objective: str  # the first of ``objectives``
    budget: Budget
    chosen: dict[str, Any]  # knob -> setting of the best point
    singles: dict[str, Point | None]  # knob -> its best single point within budget (None: none fits)
    rejected: list[tuple[str, str]]  # (what, why) in order
    skipped: dict[str, str]  # knob -> why not offered
    truncated: str | None = None  # why the search stopped early
    objectives: tuple[str, ...] = ()  # the priority list (ties on one are broken by the next)
    speculative: int = 0  # evaluated ahead of the path but never asked for (cached, not in points)

    def pareto(self, higher_is_better: bool = True) -> list[Point]:
        return pareto_front(self.points, self.objective, higher_is_better)

    def improvements(self, higher_is_better: bool = True) -> list[Point]:
        """The points within budget on the Pareto front of (metric, latency, size, MACs), the
        baseline left out: every trade-off found that improves on the baseline somewhere."""
        fitting = [p for p in self.points if p.fits or p is self.baseline]
        front = pareto_front(fitting, ("size", "latency", "macs"), higher_is_better)
        return [p for p in front if p is not self.baseline and p.settings]


def pareto_front(
    points: Sequence[Point], objective: str | Sequence[str], higher_is_better: bool = True
) -> list[Point]:
    """Points not dominated in (metric, each objective), sorted by the first objective.

    A point partially scored (stopped early, ``samples`` set) has no full metric: it is left out,
    as are points with an error or an unmeasured objective.
    """
    objs = (objective,) if isinstance(objective, str) else tuple(objective)
    valid = [
        p
        for p in points
        if p.error is None
        and p.metric is not None
        and p.samples is None
        and all(math.isfinite(p.value(o)) for o in objs)
    ]
    sign = 1.0 if higher_is_better else -1.0

    def key(p: Point) -> tuple[float, ...]:
        return (-sign * p.metric, *(p.value(o) for o in objs))  # type: ignore[operator]

    front: list[Point] = []
    for p in valid:
        kp = key(p)
        dominated = any(
            all(a <= b for a, b in zip(kq, kp, strict=True)) and kq != kp for kq in (key(q) for q in valid)
        )
        if not dominated and not any(f.settings == p.settings or key(f) == kp for f in front):
            front.append(p)
    return sorted(front, key=lambda p: (*key(p)[1:], key(p)[0]))


# ---------------------------------------------------------------------------------------- search


class _OutOfTime(Exception):
    pass


class _Speculator:
    """Evaluations ahead of the search's path, started only while a worker slot is free.

    ``wish(owner, candidates)`` replaces what ``owner`` (a knob's bisection) would like measured
    ahead; :meth:`dispatch` starts wishes (the owners in priority order) while fewer than
    ``slots`` evaluations are in flight; :meth:`claim` hands the path a started evaluation of
    the settings it needs. The caller holds ``lock`` around every method but :meth:`close`.
    """

    def __init__(
        self,
        evaluate: Callable[[Settings], Point],
        slots: int,
        lock: threading.Lock,
        done: Callable[[str], bool],
        late: Callable[[], bool],
    ) -> None:
        self.evaluate, self.slots, self.lock, self.done, self.late = evaluate, slots, lock, done, late
        self.busy = 0  # evaluations in flight: the path's and the speculative ones
        self.wishes: dict[str, list[tuple[str, Settings]]] = {}
        self.priority: dict[str, int] = {}
        self.started: dict[str, concurrent.futures.Future[Point]] = {}
        self.flags: dict[str, threading.Event] = {}  # set when the path claims it (``speculative``)
        self.claimed: set[str] = set()
        self.ran: set[str] = set()  # started ones that ran (close() cancels those still queued)
        self.stopped = False
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=slots, thread_name_prefix="speculate")

    def wish(self, owner: str, candidates: Sequence[tuple[str, Settings]], priority: int = 1) -> None:
        self.wishes[owner] = list(candidates)
        self.priority.setdefault(owner, priority)

    def dispatch(self) -> None:
        """Start wishes (not done, not started) while a slot is free and time is left."""
        if self.stopped or self.late():
            return
        for owner in sorted(self.wishes, key=lambda o: self.priority[o]):
            queue = self.wishes[owner]
            while queue and self.busy < self.slots:
                k, settings = queue.pop(0)
                if k in self.started or self.done(k):
                    continue
                self.busy += 1
                self.flags[k] = threading.Event()
                self.started[k] = self.pool.submit(self._run, k, settings, self.flags[k])

    def _run(self, k: str, settings: Settings, flag: threading.Event) -> Point:
        with self.lock:
            self.ran.add(k)
        token = speculative.set(flag)
        try:
            return self.evaluate(dict(settings))
        finally:
            speculative.reset(token)
            with self.lock:
                self.busy -= 1
                self.dispatch()

    def claim(self, k: str) -> concurrent.futures.Future[Point] | None:
        future = self.started.get(k)
        if future is not None:
            self.claimed.add(k)
            self.flags[k].set()  # on the path now: no longer behind the path's requests
        return future

    def unused(self) -> int:
        return len(self.ran - self.claimed)

    def close(self, abandon: Callable[[], None] | None = None) -> None:
        """No more evaluations ahead. Those still running when the search ends are results no
        one will use in this run: ``abandon`` (the executor's) stops them, else they finish and
        are cached. The search waits for what is left either way (their threads end)."""
        with self.lock:
            self.stopped = True
            self.wishes.clear()
            running = [k for k, f in self.started.items() if not f.done() and k not in self.claimed]
        if running and abandon is not None:
            abandon()
        self.pool.shutdown(wait=True, cancel_futures=True)


# Set while an evaluation runs ahead of the search's path (:class:`_Speculator`): an executor lets
# the path's own requests go to a free worker first. The Event is set once the path claims it.
speculative: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "speculative", default=None
)


def search(
    knobs: Sequence[Knob],
    evaluate: Callable[[Settings], Point],
    fits: Callable[[Point], bool],
    *,
    objective: str | Sequence[str],
    budget: Budget,
    deadline: float | None = None,
    on_point: Callable[[Point], None] | None = None,
    skipped: Mapping[str, str] | None = None,
    min_gain: float = 0.0,
    noise: Mapping[str, float] | None = None,
    parallel: int = 1,
    bind: Callable[[Knob], Knob | None] | None = None,
    abandon: Callable[[], None] | None = None,
) -> SearchResult:
    """Run the search (see the module docstring) over ``knobs``.

    Args:
        knobs: the offered knobs.
        evaluate: settings -> a measured Point (``metric`` and costs, or ``error``); may read a cache.
        fits: whether a point is within budget (its ``drop`` already set by ``evaluate``).
        objective: which cost to minimize, or a priority list (``"latency,size"``): two points
            that tie on the first objective (within its noise) are ranked by the next. The file
            size is always the last tie-breaker (exact, always measured); it counts as an
            improvement only when named.
        budget: recorded in the result.
        deadline: ``time.monotonic()`` after which no new point is started.
        on_point: called with every point as it is measured.
        skipped: knobs not offered and why (for the report).
        min_gain: a step must lower the first objective by more than this fraction to count
            (measured latency is noisy; sizes and MACs are exact).
        noise: per objective, the fraction within which two values are a tie (default: 0, the
            first objective ``min_gain``).
        parallel: bisect up to this many knobs at once (``evaluate`` is then called from
            several threads and must be thread-safe; an executor behind it runs the candidates
            in parallel). Each knob's bisection depends on its own points only, and its points
            and rejections are committed in knob order, so the result (points, best, rejected)
            is the same as the serial run's; the greedy combination stays sequential (each step
            depends on the one before). Free workers evaluate ahead of the path (see the module
            docstring); with ``parallel=1`` nothing is speculative.
        bind: called with a knob when the search reaches it, before its first candidate; returns
            the knob to search (its plan bound) or None to pass it by (the binder records why in
            ``skipped``). Lets a time-budgeted search make a plan only when it gets that far.
        abandon: called as the search ends while evaluations it started ahead of the path are
            still running (none of them needed: the path is done): the executor stops them, so
            the search does not wait for results it will not use (none is cached). None: they
            finish first.
    """
    wanted = parse_objectives(objective)
    primary = wanted[0]
    ranking = wanted if "size" in wanted else (*wanted, "size")
    tolerance = {o: float((noise or {}).get(o, 0.0)) for o in ranking}
    tolerance[primary] = max(tolerance[primary], min_gain)
    points: list[Point] = []
    seen: dict[str, Point] = {}
    rejected: list[tuple[str, str]] = []
    by_name = {k.name: k for k in knobs}
    lock = threading.Lock()

    def key(settings: Settings) -> str:
        return json.dumps(sorted(settings.items()), default=str)

    def late() -> bool:
        return deadline is not None and time.monotonic() > deadline

    ahead = _Speculator(evaluate, parallel, lock, seen.__contains__, late) if parallel > 1 else None

    def wish(owner: str, candidates: Sequence[Settings], priority: int = 1) -> None:
        """Evaluate ``candidates`` ahead of the path when a worker is free (no-op when serial);
        they start once the path's own next evaluation holds its slot (see ``ev``)."""
        if ahead is None:
            return
        with lock:
            ahead.wish(owner, [(key(c), c) for c in candidates], priority)

    def ev(settings: Settings, phase: str, sink: list[Point] | None = None) -> Point:
        k = key(settings)
        with lock:
            if k in seen:
                return seen[k]
            if late() and (points or sink):
                raise _OutOfTime
            started = ahead.claim(k) if ahead is not None else None
            if started is None and ahead is not None:
                ahead.busy += 1  # the path's evaluation takes its slot before any wish
                ahead.dispatch()
        if started is not None:
            p = started.result()
        else:
            try:
                p = evaluate(dict(settings))
            finally:
                if ahead is not None:
                    with lock:
                        ahead.busy -= 1
        p.phase = phase
        p.fits = p.error is None and fits(p)
        with lock:
            seen[k] = p
            (points if sink is None else sink).append(p)
            if ahead is not None:  # a slot may be free now: start what the bisections wish for
                ahead.dispatch()
            if on_point:
                on_point(p)
        return p

    def cost(p: Point) -> float:
        return p.value(primary)

    def compare(p: Point, than: Point, objectives: Sequence[str] = ranking) -> int:
        """-1 when ``p`` is better, 1 when worse, 0 when they tie on every objective.

        Objectives are compared in priority order; values within an objective's noise (a
        fraction, :data:`LATENCY_MIN_GAIN` for a timed one) are a tie, decided by the next.
        """
        for o in objectives:
            a, b, t = p.value(o), than.value(o), tolerance[o]
            if a < b * (1.0 - t):
                return -1
            if a > b * (1.0 + t):
                return 1
        return 0

    def better(p: Point, than: Point) -> bool:
        return compare(p, than) < 0

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
        return f"no gain ({primary} {format_value(cost(p))} vs {format_value(cost(reference))}" + (
            f", {tolerance[primary]:.0%} needed)" if tolerance[primary] else ")"
        )

    truncated = None
    baseline = ev({}, "baseline")
    if baseline.error:
        raise InputError(f"the original model cannot be evaluated: {baseline.error}")
    singles: dict[str, Point | None] = {}

    def single(knob: Knob, sink: list[Point], refused: list[tuple[str, str]]) -> Point | None:
        """Knob ``knob`` alone: its best setting within budget that lowers the cost (or None)."""
        if bind is not None:
            bound = bind(knob)  # past the deadline: a cached plan or None, nothing computed
            if bound is None:
                if late():  # dropped for time: the search is out of it
                    raise _OutOfTime
                return None
            with lock:
                knob = by_name[knob.name] = bound
        best: Point | None = None
        rank = 0 if knob.base else 1  # a training knob's candidates are the long ones: first
        if knob.monotone:
            lo, hi = -1, len(knob.settings)
            # A plan's likely setting is probed first (a bisection may start anywhere); when it
            # fits, its next more aggressive neighbour is probed next, so a right guess costs two
            # evaluations (the bisection's midpoint would probe a setting further out, which on
            # channels is a full build with re-fit that is likely to miss), a wrong one the guess,
            # its neighbour and a bisection of the rest. Same decisions: a monotone knob's largest
            # fitting setting is found whatever the probe order.
            first = knob.settings.index(knob.first) if knob.first in knob.settings else None
            neighbour: int | None = None
            while hi - lo > 1:
                planned = first is not None
                mid = first if first is not None else neighbour if neighbour is not None else (lo + hi) // 2
                first = neighbour = None
                after_fit, after_miss = _next_mids(lo, mid, hi, fit_step=1 if planned else None)
                wish(
                    knob.name,
                    [{knob.name: knob.settings[i]} for i in (after_fit, after_miss) if i is not None],
                    rank,
                )
                p = ev({knob.name: knob.settings[mid]}, "single", sink)
                if p.fits:
                    lo = mid
                    neighbour = after_fit if planned else None
                else:
                    hi = mid
                    if not p.error:
                        p.note = p.note or why_not(p, baseline)
            if lo >= 0:
                best = seen[key({knob.name: knob.settings[lo]})]
            if hi < len(knob.settings):
                p = seen[key({knob.name: knob.settings[hi]})]
                refused.append((describe_settings(p.settings, knobs), why_not(p, baseline)))
        else:
            for i, s in enumerate(knob.settings):
                wish(knob.name, [{knob.name: x} for x in knob.settings[i + 1 :]], rank)
                p = ev({knob.name: s}, "single", sink)
                if p.fits and (best is None or better(p, best)):
                    best = p
                elif not p.fits:
                    refused.append((describe_settings(p.settings, knobs), why_not(p, baseline)))
        if best is not None and not better(best, baseline):
            refused.append((describe_settings(best.settings, knobs), why_not(best, baseline)))
            best = None
        wish(knob.name, [])
        return best

    try:
        # 2. each knob alone (up to ``parallel`` knobs at once; committed in knob order)
        sinks: list[list[Point]] = [[] for _ in knobs]
        refusals: list[list[tuple[str, str]]] = [[] for _ in knobs]
        out_of_time = False
        if parallel > 1 and len(knobs) > 1:
            with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
                # The training knobs first: their candidates take longest (the critical path).
                jobs = sorted(zip(knobs, sinks, refusals, strict=True), key=lambda j: not j[0].base)
                started = {id(k): pool.submit(single, k, sink, refused) for k, sink, refused in jobs}
                futures = [started[id(k)] for k in knobs]
                for knob, future in zip(knobs, futures, strict=True):
                    try:
                        singles[knob.name] = future.result()
                    except _OutOfTime:
                        out_of_time = True
        else:
            for knob, sink, refused in zip(knobs, sinks, refusals, strict=True):
                try:
                    singles[knob.name] = single(knob, sink, refused)
                except _OutOfTime:
                    out_of_time = True
                    break
        for sink, refused in zip(sinks, refusals, strict=True):
            points.extend(sink)
            rejected.extend(refused)
        if out_of_time:
            raise _OutOfTime

        # 3. greedy combination: base models first (a student, a fine-tuned base: each replaces
        # the model every pass runs on, while the passes' single points were measured on the
        # original), then the most budget-efficient survivor first. Digits CNN: sparsity 80 %
        # costs the original nothing and its student 13 points; taken before the student, it
        # excluded the student (17.1 KiB best instead of the student's 5 KiB with int8 weights).
        def is_base(p: Point) -> bool:
            return any(by_name[n].base for n in p.settings)

        def is_late(p: Point) -> bool:  # Knob.late: after the other passes
            return any(by_name[n].late for n in p.settings)

        order = sorted(
            (p for p in singles.values() if p is not None),
            key=lambda p: (not is_base(p), is_late(p), -efficiency(p), cost(p)),
        )
        current: Settings = {}
        current_point = baseline

        def rival_in(knob: Knob, settings: Settings) -> str | None:
            return next((k for k in settings if knob.group and by_name[k].group == knob.group), None)

        def milder(settings: Settings, name: str) -> list[Settings]:
            """The first point of ``name``'s milder re-bisection, should ``settings`` break the budget:
            one step milder (see the re-bisection below)."""
            knob = by_name[name]
            idx = knob.settings.index(settings[name])
            return [settings | {name: knob.settings[idx - 1]}] if knob.monotone and idx > 0 else []

        def next_trial(at: int, settings: Settings) -> list[Settings]:
            """The greedy's next trial after survivor ``at`` if the current settings are
            ``settings``, then that trial's milder point (none when no survivor is left)."""
            for later in order[at + 1 :]:
                ((n, s),) = later.settings.items()
                if rival_in(by_name[n], settings) is None:
                    return [settings | {n: s}, *milder(settings | {n: s}, n)]
            return []

        def add(at: int, name: str, setting: Any, start: Settings) -> tuple[Point | None, Point]:
            """``start`` plus ``name``'s ``setting`` (or the largest milder one that fits) if
            that beats the current point: (the accepted point or None, the first trial)."""
            knob = by_name[name]
            idx = knob.settings.index(setting)
            # Ahead of the path: the milder re-bisection's first point (if the trial breaks the
            # budget) and the next trial (if it is taken), the likelier first; then the next
            # trial's own milder point.
            taken = start | {name: setting}
            on_miss, on_take = milder(taken, name), next_trial(at, taken)
            likely = (singles[name].drop or 0.0) + max(current_point.drop or 0.0, 0.0) <= budget.max_drop  # type: ignore[union-attr]
            wish("combine", on_take[:1] + on_miss + on_take[1:] if likely else on_miss + on_take)
            trial = ev(taken, "combine")
            accepted: Point | None = trial if trial.fits and better(trial, current_point) else None
            if accepted is None and knob.monotone and not trial.fits and not trial.error:
                # One step milder is probed first: a setting that fits alone and breaks the budget
                # in combination usually holds one step back (orientation: resolution x0.5 +
                # channels -40% lost 4 points, -30% 0.33), so a right guess costs one build with a
                # re-fit where the midpoint cost two; a wrong one costs one more than plain
                # bisection. Same decision: any probe order finds a monotone knob's largest fit.
                lo, hi = -1, idx
                first: int | None = idx - 1
                while hi - lo > 1:
                    mid = first if first is not None else (lo + hi) // 2
                    first = None
                    wish(
                        "combine",
                        [start | {name: knob.settings[i]} for i in _next_mids(lo, mid, hi) if i is not None],
                    )
                    p = ev(start | {name: knob.settings[mid]}, "combine")
                    lo, hi = (mid, hi) if p.fits else (lo, mid)
                if lo >= 0:
                    p = seen[key(start | {name: knob.settings[lo]})]
                    if better(p, current_point):
                        accepted = p
            return accepted, trial

        # A base model excluded by its group's rival (one fine-tuned base per candidate) is tried
        # in the rival's place once the greedy is done: the bases' single points were measured on
        # the original, and which one is best shows only with the passes on top (digits: the
        # student's sparsity 80 % +ft is smaller than its channels -40 % +ft, until both get int8
        # weights).
        # So is a pass whose single point ties its rival's on the first objective and beats it on
        # the next: which of two within the timing noise came first was the noise's choice
        # (orientation, latency: fp16 0.23x of the file or int8 weights 0.12x, both folded to the
        # float kernels, taken in either order by two runs of the same code).
        def ties_better(p: Point, rival: Point | None) -> bool:
            return rival is not None and compare(p, rival, (primary,)) == 0 and compare(p, rival) < 0

        excluded: list[tuple[int, str, Any]] = []
        for at, survivor in enumerate(order):
            ((name, setting),) = survivor.settings.items()
            knob = by_name[name]
            rival = rival_in(knob, current)
            if rival is not None:
                if knob.base or ties_better(survivor, singles[rival]):
                    excluded.append((at, name, setting))
                    continue
                rejected.append(
                    (knob.describe(setting), f"excluded by {by_name[rival].describe(current[rival])}")
                )
                continue
            accepted, trial = add(at, name, setting, current)
            if accepted is not None:
                current, current_point = dict(accepted.settings), accepted
            else:
                rejected.append((describe_settings(trial.settings, knobs), why_not(trial, current_point)))
        for at, name, setting in excluded:
            knob = by_name[name]
            rival = rival_in(knob, current)
            assert rival is not None  # the group's member stays once taken
            described = by_name[rival].describe(current[rival])
            accepted, trial = add(at, name, setting, {k: v for k, v in current.items() if k != rival})
            if accepted is not None:
                current, current_point = dict(accepted.settings), accepted
            else:
                why = why_not(trial, current_point)
                rejected.append((describe_settings(trial.settings, knobs), f"in place of {described}: {why}"))
    except _OutOfTime:
        truncated = "time budget reached"
    finally:
        if ahead is not None:
            ahead.close(abandon)

    # The best: among the points within budget that beat the baseline on the requested
    # objectives, the first objective's minimum; those within its noise are ranked by the next.
    improved = [p for p in points if p.fits and p.error is None and compare(p, baseline, wanted) < 0]
    for o in ranking:
        if improved:
            floor = min(p.value(o) for p in improved)
            improved = [p for p in improved if p.value(o) <= floor * (1.0 + tolerance[o])]
    best_point: Point | None = min(
        improved,
        key=lambda p: (*(p.value(o) for o in ranking), p.drop if p.drop is not None else 0.0),
        default=None,
    )
    return SearchResult(
        baseline=baseline,
        points=points,
        best=best_point,
        objective=primary,
        budget=budget,
        chosen=dict(best_point.settings) if best_point else {},
        singles=singles,
        rejected=rejected,
        skipped=dict(skipped or {}),
        truncated=truncated,
        objectives=wanted,
        speculative=ahead.unused() if ahead is not None else 0,
    )


def _next_mids(lo: int, mid: int, hi: int, *, fit_step: int | None = None) -> tuple[int | None, int | None]:
    """The points a bisection over ``(lo, hi)`` evaluates after ``mid``: on a fit, on a miss (None:
    it ends there). ``fit_step``: on a fit, probe ``mid + fit_step`` instead of the midpoint."""
    if hi - mid > 1:
        after_fit: int | None = (mid + hi) // 2 if fit_step is None else min(mid + fit_step, hi - 1)
    else:
        after_fit = None
    after_miss = (lo + mid) // 2 if mid - lo > 1 else None
    return after_fit, after_miss


def format_value(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{v:.4g}"
