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

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from onnxsqueeze.distill.train import EpochLog, Schedule, lr_range_test
from onnxsqueeze.errors import InputError
from onnxsqueeze.finetune.torch_graph import TorchGraph


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Hyper-parameters of recovery training (defaults: a few minutes on 2 CPU cores)."""

    time_budget_s: float | None = 300.0
    epochs: int | None = None  # None: planned by the budget, stopped by progress
    lr: float | None = None  # None: range test (:func:`find_lr`)
    # the range test's ceiling
    max_lr: float = 0.03
    batch_size: int = 32
    weight_decay: float = 0.0
    temperature: float = 4.0
    alpha: float = 0.5
    patience: int = 8
    seed: int = 0
    # NOTE: 1 thread: on the shared 2-core machine 2 intra-op threads trained slower (distill.train)
    threads: int = 1
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
class TrainSummary:
    history: tuple[EpochLog, ...]
    best_epoch: int
    best_metric: float
    metric: str
    stop_reason: str
    seconds: float
    lr: float
    lr_found: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs_run": len(self.history),
            "best_epoch": self.best_epoch,
            "best_val_metric": self.best_metric,
            "metric": self.metric,
            "stop_reason": self.stop_reason,
            "seconds": round(self.seconds, 2),
            "lr": self.lr,
            "lr_found": self.lr_found,
            "history": [dataclasses.asdict(h) for h in self.history],
        }


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

    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(
            graph,
            kinds,
            train_inputs,
            train_teacher,
            train_labels,
            val_inputs,
            val_teacher,
            val_labels,
            config,
            on_epoch,
            start_time,
        )
    finally:
        torch.set_num_threads(threads_before)


def _train(
    graph: TorchGraph,
    kinds: Sequence[OutputKind],
    train_inputs: Sequence[np.ndarray],
    train_teacher: Sequence[np.ndarray],
    train_labels: np.ndarray | None,
    val_inputs: Sequence[np.ndarray],
    val_teacher: Sequence[np.ndarray],
    val_labels: np.ndarray | None,
    config: FinetuneConfig,
    on_epoch: Callable[[EpochLog], None] | None,
    start_time: float | None,
) -> TrainSummary:
    import torch

    torch.manual_seed(config.seed)
    xs = [torch.from_numpy(np.ascontiguousarray(x)) for x in train_inputs]
    ts = [torch.from_numpy(np.ascontiguousarray(t)) for t in train_teacher]
    ys = torch.from_numpy(train_labels) if train_labels is not None else None
    last = config.channels_last and all(x.ndim == 4 for x in xs)
    if last:
        graph.module.to(memory_format=torch.channels_last)
    try:
        return _loop(
            graph, kinds, xs, ts, ys, val_inputs, val_teacher, val_labels, config, on_epoch, start_time, last
        )
    finally:
        if last:
            graph.module.to(memory_format=torch.contiguous_format)


def _loop(
    graph: TorchGraph,
    kinds: Sequence[OutputKind],
    xs: list[Any],
    ts: list[Any],
    ys: Any,
    val_inputs: Sequence[np.ndarray],
    val_teacher: Sequence[np.ndarray],
    val_labels: np.ndarray | None,
    config: FinetuneConfig,
    on_epoch: Callable[[EpochLog], None] | None,
    start_time: float | None,
    last: bool,
) -> TrainSummary:
    import torch

    now = clock(config)
    start = start_time if start_time is not None else now()
    gen = torch.Generator().manual_seed(config.seed)
    n = len(xs[0])
    params = graph.parameters()
    fmt = torch.channels_last if last else torch.contiguous_format

    def batch_loss(idx: Any) -> Any:
        graph.set_mode()
        b = Batch(
            tuple(x[idx].contiguous(memory_format=fmt) for x in xs),
            tuple(t[idx] for t in ts),
            ys[idx] if ys is not None else None,
        )
        return loss_fn(kinds, _outputs(graph, kinds, b.inputs), b, config)

    lr = config.lr
    if lr is None:
        lr = find_lr(graph, params, batch_loss, n, config)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    auto = config.epochs is None
    planned = 1000 if config.epochs is None else config.epochs
    schedule = Schedule(lr, planned * steps_per_epoch, steps_per_epoch if auto else None)

    val_loss, val_metric, metric_name = evaluate(graph, kinds, val_inputs, val_teacher, val_labels, config)
    best_key = (val_metric, -val_loss)
    best_state = copy.deepcopy(graph.module.state_dict())
    best_epoch, best_metric, since_best = 0, val_metric, 0
    history: list[EpochLog] = []
    stop, annealing = "epochs", False
    train_start = now()
    step = epoch = 0
    while epoch < planned:
        elapsed = now() - start
        if config.time_budget_s is not None:
            per_epoch = (now() - train_start) / epoch if epoch else 0.0
            if epoch == 1 and not annealing:
                fit = max(1, int((config.time_budget_s - elapsed) / max(per_epoch, 1e-9)) + 1)
                if fit < planned:
                    planned = fit
                    schedule.replan(planned * steps_per_epoch)
            if epoch and elapsed + per_epoch > config.time_budget_s:
                stop = "time budget"
                break
        graph.set_mode()
        perm = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for b0 in range(0, n, config.batch_size):
            idx = perm[b0 : b0 + config.batch_size]
            if len(idx) < 2:
                continue
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            graph.mask_gradients()
            opt.step()
            graph.apply_masks()
            step += 1
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        epoch += 1
        val_loss, val_metric, _ = evaluate(graph, kinds, val_inputs, val_teacher, val_labels, config)
        key = (val_metric, -val_loss)
        improved = key > best_key
        if improved:
            best_key, best_epoch, best_metric, since_best = key, epoch, val_metric, 0
            best_state = copy.deepcopy(graph.module.state_dict())
        else:
            since_best += 1
        log = EpochLog(
            epoch=epoch,
            planned=planned,
            train_loss=total / max(1, seen),
            val_loss=val_loss,
            val_metric=val_metric,
            metric=metric_name,
            elapsed_s=now() - start,
            best=improved,
        )
        history.append(log)
        if on_epoch:
            on_epoch(log)
        if since_best >= config.patience and not annealing:
            if not auto:
                stop = "early stopping"
                break
            length = max(2, config.patience // 2)
            if epoch + length < planned:
                annealing = True
                planned = epoch + length
                schedule.anneal(step, length * steps_per_epoch)
    if annealing and stop == "epochs":
        stop = "converged"
    elif stop == "epochs" and (auto or planned < (config.epochs or 0)):
        stop = "time budget" if config.time_budget_s is not None else "epochs"
    graph.module.load_state_dict(best_state)
    graph.apply_masks()
    graph.module.eval()
    return TrainSummary(
        tuple(history),
        best_epoch,
        best_metric,
        metric_name,
        stop,
        now() - start,
        float(lr),
        config.lr is None,
    )
