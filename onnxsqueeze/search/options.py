"""What ``squeeze`` optimizes and how: :class:`SqueezeOptions`, and the default priced instance."""

from __future__ import annotations

import dataclasses

from onnxsqueeze.evaluate import Budget

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
    distill_students: tuple[str, ...] | None = None
    finetune_time_s: float = 30.0
