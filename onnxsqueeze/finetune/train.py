"""Recovery training of a converted candidate against the original's outputs.

Loss, summed over the model's outputs ``k`` (teacher outputs ``t_k``, student outputs ``s_k``):

- class scores (``[N, C]`` floats, ``C >= 2``): ``T^2 * KL(softmax(t/T) || softmax(s/T))`` with
  labels added as in :func:`onnxsqueeze.distill.loss.distillation_loss`
  (``alpha * soft + (1 - alpha) * CE``). An output that is already a probability distribution
  (a Softmax at the end) is compared through ``log(p)`` on both sides;
- any other tensor (boxes, masks, features): ``mean((s - t)^2) / var(t)``, the squared error
  relative to the teacher's spread, so outputs of different scales weigh alike.

The loop is :mod:`onnxsqueeze.distill.train`'s: AdamW, the learning rate from its range test (read by
the divergence rule, :func:`find_lr`) unless
given, cosine decay planned by the time budget, a plateau anneals then stops, the best epoch on
validation is restored. After every step the candidate's masks are re-applied (zeros stay zero).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import numpy as np

from onnxsqueeze.distill.train import (
    EpochLog,
    LoopConfig,
    TrainResult,
    lr_range_test,
    run_epochs,
    torch_threads,
)
from onnxsqueeze.errors import InputError
from onnxsqueeze.finetune.torch_graph import TorchGraph


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig(LoopConfig):
    """Hyper-parameters of recovery training (defaults: a few minutes on 2 CPU cores)."""

    time_budget_s: float | None = 300.0
    lr: float | None = None  # None: range test (:func:`find_lr`)
    # the range test's ceiling
    max_lr: float = 0.03
    batch_size: int = 32
    weight_decay: float = 0.0
    patience: int = 8
    # what the time budget counts: "wall" seconds, or the process's "cpu" seconds (a budget that
    # means the same work on a loaded machine as on a quiet one; with 1 thread, about the wall time
    # a quiet core would take)
    clock: str = "wall"
    # train image models (4-D inputs) in channels-last memory order: measured 2x less CPU per
    # image for the paddle orientation classifier at 224x224 (1 thread); the exported weights are
    # contiguous again
    channels_last: bool = True


def clock(config: FinetuneConfig) -> Callable[[], float]:
    """The time source of ``config``'s budget (:attr:`FinetuneConfig.clock`)."""
    if config.clock not in ("wall", "cpu"):
        raise InputError(f"clock {config.clock!r}: must be 'wall' or 'cpu'")
    return time.process_time if config.clock == "cpu" else time.perf_counter


@dataclasses.dataclass(frozen=True)
class OutputKind:
    """How an output is compared: ``scores`` (class scores; ``probs`` when already softmaxed) or ``tensor``."""

    name: str
    kind: str
    probs: bool = False
    scale: float = 1.0  # var(t) for tensors


def output_kinds(names: Sequence[str], teacher: dict[str, np.ndarray]) -> list[OutputKind]:
    kinds = []
    for n in names:
        t = teacher[n]
        if t.ndim == 2 and t.shape[1] >= 2 and np.issubdtype(t.dtype, np.floating):
            probs = bool(t.min() >= 0 and np.allclose(t.sum(axis=1), 1.0, atol=1e-3))
            kinds.append(OutputKind(n, "scores", probs))
        elif np.issubdtype(t.dtype, np.floating):
            kinds.append(OutputKind(n, "tensor", scale=float(max(t.astype(np.float64).var(), 1e-12))))
    return kinds


@dataclasses.dataclass(frozen=True)
class Batch:
    inputs: tuple[Any, ...]
    teacher: tuple[Any, ...]  # per kind, float32 (scores as logits)
    labels: Any | None


def _logits(kind: OutputKind, value: Any) -> Any:
    import torch

    return torch.log(value.clamp_min(1e-12)) if kind.probs else value


def loss_fn(kinds: Sequence[OutputKind], outputs: Sequence[Any], batch: Batch, config: FinetuneConfig) -> Any:
    from onnxsqueeze.distill.loss import distillation_loss

    total: Any = 0.0
    first_scores = True
    for kind, s, t in zip(kinds, outputs, batch.teacher, strict=True):
        if kind.kind == "scores":
            labels = batch.labels if first_scores else None
            first_scores = False
            total = total + distillation_loss(
                _logits(kind, s), t, labels, temperature=config.temperature, alpha=config.alpha
            )
        else:
            total = total + ((s - t) ** 2).mean() / kind.scale
    return total


def _outputs(graph: TorchGraph, kinds: Sequence[OutputKind], xs: Sequence[Any]) -> list[Any]:
    out = graph.module(*xs)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    by_name = dict(zip(graph.output_names, outs, strict=True))
    return [by_name[k.name] for k in kinds]


def evaluate(
    graph: TorchGraph,
    kinds: Sequence[OutputKind],
    inputs: Sequence[np.ndarray],
    teacher: Sequence[np.ndarray],
    labels: np.ndarray | None,
    config: FinetuneConfig,
    batch_size: int = 64,
) -> tuple[float, float, str]:
    """(loss, metric, metric name): accuracy or top-1 agreement on the first class-score output,
    else ``-sqrt(relative squared error)`` (higher is better either way)."""
    import torch

    graph.module.eval()
    n = len(inputs[0])
    loss_sum, hits, err = 0.0, 0, 0.0
    scores = next((i for i, k in enumerate(kinds) if k.kind == "scores"), None)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            xs = [torch.from_numpy(np.ascontiguousarray(x[sl])) for x in inputs]
            b = Batch(
                tuple(xs),
                tuple(torch.from_numpy(np.ascontiguousarray(t[sl])) for t in teacher),
                torch.from_numpy(labels[sl]) if labels is not None else None,
            )
            outs = _outputs(graph, kinds, xs)
            loss = float(loss_fn(kinds, outs, b, config))
            m = len(xs[0])
            loss_sum += loss * m
            if scores is not None:
                target = b.labels if b.labels is not None else b.teacher[scores].argmax(1)
                hits += int((outs[scores].argmax(1) == target).sum())
            else:
                err += (
                    sum(
                        float(((o - t) ** 2).mean()) / k.scale
                        for k, o, t in zip(kinds, outs, b.teacher, strict=True)
                    )
                    * m
                )
    if scores is not None:
        return loss_sum / n, hits / n, "accuracy" if labels is not None else "agreement"
    return loss_sum / n, -math.sqrt(err / n), "-relative error"


@dataclasses.dataclass(frozen=True)
class TrainSummary(TrainResult):
    """:class:`onnxsqueeze.distill.train.TrainResult`, its metric named apart in the JSON."""

    NAMED_METRIC: ClassVar[bool] = False


class _Diverged(Exception):
    """Raised from the range test's callback once the divergence rule has its rate."""


# the range test's divergence rule: the smoothed loss above this multiple of its minimum so far
DIVERGED = 1.5


def find_lr(
    graph: TorchGraph, params: Sequence[Any], batch_loss: Callable[[Any], Any], n: int, config: FinetuneConfig
) -> float:
    """A peak learning rate from the shared range test (:func:`onnxsqueeze.distill.train.lr_range_test`),
    read by the divergence rule: a tenth of the first rate at which the smoothed loss exceeds
    ``DIVERGED`` times its minimum so far, clipped to ``[1e-5, config.max_lr]``.

    Why not distillation's rule (a tenth of the rate at the loss minimum): a trained candidate's
    loss is flat and noisy until the rate is too high, so its minimum falls anywhere on the flat
    part (measured 1e-5 on the 95%-sparse digits CNN, which then barely trained). The masks are
    re-applied before every test batch, so pruned weights do not regrow during the test.
    """
    curve: list[tuple[float, float]] = []
    best = [math.inf]

    def masked_loss(idx: Any) -> Any:
        graph.apply_masks()
        return batch_loss(idx)

    def on_step(rate: float, loss: float) -> None:
        curve.append((rate, loss))
        if len(curve) > 6 and loss > DIVERGED * best[0]:
            raise _Diverged  # the rule has its answer: stop paying for test steps
        best[0] = min(best[0], loss)

    try:
        lr_range_test(
            graph.module,
            params,
            masked_loss,
            n,
            batch_size=config.batch_size,
            seed=config.seed,
            start=1e-5,
            steps=50,
            low=1e-6,
            high=1.0,
            on_step=on_step,
        )
        diverged = curve[-1][0] if curve else 1e-4  # no divergence seen: the test's last rate
    except _Diverged:
        diverged = curve[-1][0]
    graph.apply_masks()
    low, high = 1e-5, config.max_lr
    return float(min(high, max(low, diverged / 10)))


def train(
    graph: TorchGraph,
    kinds: Sequence[OutputKind],
    train_inputs: Sequence[np.ndarray],
    train_teacher: Sequence[np.ndarray],
    train_labels: np.ndarray | None,
    val_inputs: Sequence[np.ndarray],
    val_teacher: Sequence[np.ndarray],
    val_labels: np.ndarray | None,
    config: FinetuneConfig,
    *,
    on_epoch: Callable[[EpochLog], None] | None = None,
    start_time: float | None = None,
) -> TrainSummary:
    """Train ``graph.module`` in place; the best validation epoch's weights are kept.

    Epoch 0 is the candidate as converted: when no epoch beats it, the candidate's weights stay.
    ``start_time`` (on :func:`clock`'s scale) is when the budget started (default: now).
    """
    import torch

    now = clock(config)
    with torch_threads(config.threads):
        start = start_time if start_time is not None else now()
        torch.manual_seed(config.seed)
        xs = [torch.from_numpy(np.ascontiguousarray(x)) for x in train_inputs]
        ts = [torch.from_numpy(np.ascontiguousarray(t)) for t in train_teacher]
        ys = torch.from_numpy(train_labels) if train_labels is not None else None
        n = len(xs[0])
        params = graph.parameters()
        last = config.channels_last and all(x.ndim == 4 for x in xs)
        fmt = torch.channels_last if last else torch.contiguous_format

        def batch_loss(idx: Any) -> Any:
            graph.set_mode()
            b = Batch(
                tuple(x[idx].contiguous(memory_format=fmt) for x in xs),
                tuple(t[idx] for t in ts),
                ys[idx] if ys is not None else None,
            )
            return loss_fn(kinds, _outputs(graph, kinds, b.inputs), b, config)

        def validate() -> tuple[float, float]:
            loss, metric, _ = evaluate(graph, kinds, val_inputs, val_teacher, val_labels, config)
            return loss, metric

        if last:
            graph.module.to(memory_format=torch.channels_last)
        try:
            lr = config.lr
            if lr is None:
                lr = find_lr(graph, params, batch_loss, n, config)
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
            val_loss, val_metric, metric = evaluate(graph, kinds, val_inputs, val_teacher, val_labels, config)
            run = run_epochs(
                graph.module,
                opt,
                batch_loss,
                validate,
                config=config,
                n=n,
                lr=lr,
                metric=metric,
                start=start,
                clock=now,
                warm_epochs=1,
                anneal_epochs=2,
                baseline=(val_loss, val_metric),
                train_mode=graph.set_mode,
                after_backward=graph.mask_gradients,
                after_step=graph.apply_masks,
                on_epoch=on_epoch,
                result=TrainSummary,
            )
        finally:
            if last:
                graph.module.to(memory_format=torch.contiguous_format)
        graph.apply_masks()
    return cast(TrainSummary, run)
