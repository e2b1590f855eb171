"""What ``squeeze`` optimizes and how: :class:`SqueezeOptions`, the default priced instance, and
the knobs a search with those options offers (:func:`offered_knobs`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from onnxsqueeze.errors import InputError
from onnxsqueeze.evaluate import Budget, Dataset
from onnxsqueeze.search.algorithm import parse_objectives
from onnxsqueeze.search.knobs import Knob, available_knobs

# The instance a cost is priced on when none is given (onnxsqueeze.bench.cost's table): a 2-vCPU
# CPU machine, a T4 for CUDA. At a fixed price the cost objective ranks candidates like latency;
# it is reported in dollars per million inferences at batch 1.
DEFAULT_INSTANCE = {"cpu": "aws/c7i.large", "cuda": "aws/g4dn.xlarge", "tensorrt": "aws/g4dn.xlarge"}


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
        train_epochs: train each distilled student and fine-tuned base this many epochs
            (early stopping aside) instead of the time budgets: reproducible byte for byte,
            whatever process trains it (``--workers``, Ray).
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
    train_epochs: int | None = None
    distill_students: tuple[str, ...] | None = None
    finetune_time_s: float = 30.0


def offered_knobs(
    knobs: Sequence[Knob], options: SqueezeOptions, *, train: Dataset | None, calibration: Dataset | None
) -> tuple[list[Knob], dict[str, str]]:
    """The knobs (and settings) a search with ``options`` offers, and why the others are not.

    A knob is offered when its passes are registered (:func:`available_knobs`), its data are
    given (training data for the knobs that train, calibration data for calibrated settings),
    and it is named in ``options.techniques`` or, when none are named, can lower the objective.

    Raises:
        InputError: ``options.techniques`` names an unknown knob.
    """
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
    return offered, skipped
