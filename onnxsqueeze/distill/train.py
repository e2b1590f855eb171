"""The student's training loop: seeded, CPU-friendly, early-stopped, time-boxed.

- Deterministic: ``torch.manual_seed(seed)`` and a seeded generator for the batch order, on a
  fixed number of CPU threads (the same seed and data give the same weights).
- AdamW with a short linear warm-up then cosine decay to zero.
- Learning rate: ``lr`` if given, else a short range test (Smith 2017, "Cyclical learning rates";
  the fast.ai recipe): the loss is recorded while the rate grows exponentially from 1e-5 over at
  100 steps, and training uses a tenth of the rate at the smoothed loss's minimum. The module
  is restored afterwards, so the test only chooses a number.
- Length: with ``epochs`` given, cosine over that many epochs and ``patience`` epochs without
  improvement stop early (the fixed plan). Without (the default), the plan is as many epochs as
  the time budget holds; when validation has not improved for ``patience`` epochs the rest of the
  plan is dropped and the rate anneals from where it is to zero over ``patience`` epochs, then
  training stops ("converged"). A small student on a small set so trains to convergence in
  seconds, a large one uses the budget.
- Validation after every epoch: accuracy on the labels when there are labels, else top-1
  agreement with the teacher; ties go to the lower validation loss. The best epoch's weights are
  kept in memory and restored at the end.
- Feature hints (optional): forward hooks capture named student modules' outputs; a trained adapter
  per pair maps them onto the teacher's tensors (see :mod:`.loss`); hooks and adapters are removed
  after training, so the exported student is the plain architecture.
- Time budget: after the first epoch the plan shrinks to the epochs that fit, so the cosine
  schedule still reaches its end; an epoch that would overrun it is not started.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from onnxsqueeze.distill.loss import distillation_loss, feature_loss
from onnxsqueeze.errors import InputError


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """What :func:`run_epochs` and the losses read; :class:`TrainConfig` and fine-tuning's config
    set their own defaults."""

    temperature: float = 4.0
    alpha: float = 0.5
    # None: planned by the time budget and stopped by the student's progress (module docstring)
    epochs: int | None = None
    batch_size: int = 64
    # None: found by a learning-rate range test
    lr: float | None = None
    weight_decay: float = 5e-4
    patience: int = 20
    time_budget_s: float | None = 90.0
    seed: int = 0
    # NOTE: 1 thread, not 2: on the shared 2-core machine, small students trained 6-16x slower with
    # 2 intra-op threads than with 1 (OpenMP threads contending with other processes' load).
    threads: int = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(LoopConfig):
    """Hyper-parameters of the student's loop (the defaults suit small CNN students on CPU)."""

    feature_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class EpochLog:
    """One epoch, as the progress callback and the history see it."""

    epoch: int
    planned: int
    train_loss: float
    val_loss: float
    val_metric: float
    metric: str  # "accuracy" or "agreement"
    elapsed_s: float
    best: bool


@dataclasses.dataclass(frozen=True)
class TrainResult:
    history: tuple[EpochLog, ...]
    best_epoch: int
    best_metric: float
    metric: str
    stop_reason: str  # "epochs", "early stopping", "converged" or "time budget"
    seconds: float
    lr: float = 0.0  # the peak learning rate used (given or found)
    lr_found: bool = False  # found by the range test

    # the JSON names the best metric "best_val_<metric>" (True) or "best_val_metric" with "metric"
    NAMED_METRIC: ClassVar[bool] = True

    def to_dict(self) -> dict[str, Any]:
        best = (
            {"best_val_" + self.metric: self.best_metric}
            if self.NAMED_METRIC
            else {"best_val_metric": self.best_metric, "metric": self.metric}
        )
        return {
            "epochs_run": len(self.history),
            "best_epoch": self.best_epoch,
            **best,
            "stop_reason": self.stop_reason,
            "seconds": round(self.seconds, 2),
            "lr": self.lr,
            "lr_found": self.lr_found,
            "history": [dataclasses.asdict(h) for h in self.history],
        }


@dataclasses.dataclass(frozen=True)
class Split:
    """Arrays of one split: inputs (one per student input), teacher logits, labels, teacher features."""

    inputs: tuple[np.ndarray, ...]
    teacher: np.ndarray
    labels: np.ndarray | None
    features: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return len(self.teacher)


# Without --epochs and without a time budget, the plan stops here (progress usually stops it sooner).
MAX_AUTO_EPOCHS = 1000


class Schedule:
    """Linear warm-up over the first 5% of the plan, then cosine decay to zero at its end.

    :meth:`anneal` replaces the rest of the plan by a cosine from the current rate to zero over
    ``steps`` (the plateau rule of the module docstring).
    """

    def __init__(self, base: float, total_steps: int, warm_steps: int | None = None) -> None:
        self.base, self.total = base, max(1, total_steps)
        self.warm = max(1, self.total // 20 if warm_steps is None else min(warm_steps, self.total // 20))
        self.anneal_from: tuple[int, float, int] | None = None  # (step, rate, steps)

    def replan(self, total_steps: int) -> None:
        self.total = max(1, total_steps)

    def anneal(self, step: int, steps: int) -> None:
        self.anneal_from = (step, self(step), max(1, steps))

    def __call__(self, step: int) -> float:
        if self.anneal_from is not None:
            s0, rate, n = self.anneal_from
            return rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - s0) / n)))
        if step < self.warm:
            return self.base * (step + 1) / self.warm
        progress = min(1.0, (step - self.warm) / max(1, self.total - self.warm))
        return self.base * 0.5 * (1.0 + math.cos(math.pi * progress))


def _lr_at(step: int, total: int, base: float) -> float:
    return Schedule(base, total)(step)


def lr_range_test(
    module: Any,
    params: Sequence[Any],
    batch_loss: Callable[[Any], Any],
    n: int,
    *,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    start: float = 1e-5,
    end: float = 1.0,
    steps: int = 100,
    low: float = 1e-4,
    high: float = 0.1,
    on_step: Callable[[float, float], None] | None = None,
) -> float:
    """A peak learning rate for AdamW: a tenth of the rate at the smoothed loss's minimum.

    The rate grows exponentially from ``start`` to ``end`` over ``steps`` steps (batches drawn
    with ``seed``); it stops early when the smoothed loss exceeds 4x its minimum or is not finite.
    The step count is fixed, not timed, so the rate found depends only on the seed and the data. The module's state (weights, BatchNorm statistics) is
    restored afterwards. The result is clipped to ``[low, high]``.

    Args:
        module: the model (its ``state_dict`` is saved and restored).
        params: the parameters to optimize.
        batch_loss: the loss of a batch given its sample indices (a LongTensor).
        n: samples in the training set.
        on_step: called with (rate, smoothed loss) after every step (another rule can be applied
            to the curve, as fine-tuning does).
    """
    import torch

    saved = copy.deepcopy(module.state_dict())
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(params, lr=start, weight_decay=weight_decay)
    steps = max(10, steps)
    factor = (end / start) ** (1.0 / (steps - 1))
    rates, losses = [], []
    smooth, best = 0.0, math.inf
    module.train()
    perm = torch.randperm(n, generator=gen)
    pos = 0
    try:
        for i in range(steps):
            if pos + 2 > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos : pos + batch_size]
            pos += batch_size
            lr = start * factor**i
            for g in opt.param_groups:
                g["lr"] = lr
            loss = batch_loss(idx)
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            smooth = 0.9 * smooth + 0.1 * value
            corrected = smooth / (1 - 0.9 ** (i + 1))
            rates.append(lr)
            losses.append(corrected)
            if on_step is not None:
                on_step(lr, corrected)
            best = min(best, corrected)
            if i > 5 and corrected > 4 * best:
                break
    finally:
        module.load_state_dict(saved)
    if not losses:
        return low
    at_min = rates[int(np.argmin(losses))]
    return float(min(high, max(low, at_min / 10)))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on ``n`` intra-op torch threads, restoring the previous count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_epochs(
    module: Any,
    opt: Any,
    batch_loss: Callable[[Any], Any],
    validate: Callable[[], tuple[float, float]],
    *,
    config: LoopConfig,
    n: int,
    lr: float,
    metric: str,
    start: float,
    warm_epochs: int,
    anneal_epochs: int,
    clock: Callable[[], float] | None = None,
    baseline: tuple[float, float] | None = None,
    train_mode: Callable[[], None] | None = None,
    after_backward: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    result: type[TrainResult] = TrainResult,
) -> TrainResult:
    """The epoch loop shared by distillation and fine-tuning (the plan of the module docstring).

    Args:
        module: the torch module trained (its ``state_dict`` is kept for the best epoch and restored).
        opt: the optimizer; its groups' rates follow the :class:`Schedule` from ``lr``.
        batch_loss: the loss of a batch given its sample indices (a LongTensor).
        validate: ``(loss, metric)`` on the validation split, higher metric better.
        n: training samples.
        config: batch size, epochs (None: planned by the budget), patience, time budget, seed.
        metric: the name of ``validate``'s metric, for the history.
        warm_epochs: warm-up epochs when the plan is automatic (``epochs`` None).
        anneal_epochs: the least epochs of the plateau anneal (``max(anneal_epochs, patience // 2)``).
        baseline: ``validate()`` before training, as epoch 0 to beat (its weights stay when no epoch
            beats it); None: the first epoch is the first best.
        train_mode: puts the module in training mode before an epoch (default ``module.train()``).
        after_backward, after_step: called after every backward pass and optimizer step.
        start: ``clock()`` when the time budget started.
        clock: what the time budget counts (default ``time.perf_counter``; fine-tuning can count
            the process's CPU seconds).
        result: the result class (fine-tuning's names its metric apart in the JSON).

    Returns:
        The history, the best epoch (its weights restored), why training stopped, the seconds
        since ``start``, the peak rate (``lr_found`` when ``config.lr`` is None).
    """
    import torch

    clock = clock or time.perf_counter

    batch_size, epochs, patience, time_budget_s = (
        config.batch_size,
        config.epochs,
        config.patience,
        config.time_budget_s,
    )
    gen = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    auto = epochs is None
    planned = MAX_AUTO_EPOCHS if epochs is None else epochs
    schedule = Schedule(lr, planned * steps_per_epoch, warm_epochs * steps_per_epoch if auto else None)
    best_key: tuple[float, float] | None = None
    best_state: dict[str, Any] | None = None
    best_epoch, best_metric, since_best = 0, 0.0, 0
    if baseline is not None:
        best_key, best_metric = (baseline[1], -baseline[0]), baseline[1]
        best_state = copy.deepcopy(module.state_dict())
    history: list[EpochLog] = []
    stop = "epochs"
    annealing = False
    train_start = clock()
    step = 0
    epoch = 0
    while epoch < planned:
        elapsed = clock() - start
        if time_budget_s is not None and epoch > 0:
            per_epoch = max((clock() - train_start) / epoch, 1e-9)
            if epoch == 1 and not annealing:
                fit = max(1, int((time_budget_s - elapsed) / per_epoch) + 1)
                if fit < planned:
                    planned = fit
                    schedule.replan(planned * steps_per_epoch)
                if epoch >= planned:
                    stop = "time budget"
                    break
            if elapsed + per_epoch > time_budget_s:
                stop = "time budget"
                break
        if train_mode is not None:
            train_mode()
        else:
            module.train()
        perm = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for b in range(0, n, batch_size):
            idx = perm[b : b + batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single sample
                continue
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            opt.step()
            if after_step is not None:
                after_step()
            step += 1
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        epoch += 1
        val_loss, val_metric = validate()
        key = (val_metric, -val_loss)
        improved = best_key is None or key > best_key
        if improved:
            best_key, best_epoch, best_metric, since_best = key, epoch, val_metric, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            since_best += 1
        log = EpochLog(
            epoch=epoch,
            planned=planned,
            train_loss=total / max(1, seen),
            val_loss=val_loss,
            val_metric=val_metric,
            metric=metric,
            elapsed_s=clock() - start,
            best=improved,
        )
        history.append(log)
        if on_epoch:
            on_epoch(log)
        if since_best >= patience and not annealing:
            if not auto:
                stop = "early stopping"
                break
            # a plateau: drop the rest of the plan, anneal the rate to zero, then stop
            length = max(anneal_epochs, patience // 2)
            if epoch + length < planned:
                annealing = True
                planned = epoch + length
                schedule.anneal(step, length * steps_per_epoch)
    if annealing and stop == "epochs":
        stop = "converged"
    elif stop == "epochs" and auto and planned < MAX_AUTO_EPOCHS:
        stop = "time budget"  # the plan was sized to fit the budget
    elif stop == "epochs" and epochs is not None and planned < epochs:
        stop = "time budget"  # the plan was shortened to fit the budget
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return result(
        tuple(history),
        best_epoch,
        best_metric,
        metric,
        stop,
        clock() - start,
        lr=float(lr),
        lr_found=config.lr is None,
    )


def evaluate(module: Any, split: Split, config: TrainConfig, batch_size: int = 256) -> tuple[float, float]:
    """(loss, metric) of ``module`` on a split: accuracy with labels, agreement with the teacher without."""
    import torch

    module.eval()
    losses, hits = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            sl = slice(start, start + batch_size)
            xs = [torch.from_numpy(np.ascontiguousarray(x[sl])) for x in split.inputs]
            t = torch.from_numpy(split.teacher[sl])
            y = torch.from_numpy(split.labels[sl]) if split.labels is not None else None
            s = module(*xs)
            loss = distillation_loss(s, t, y, temperature=config.temperature, alpha=config.alpha)
            losses += float(loss) * len(t)
            target = y if y is not None else t.argmax(1)
            hits += int((s.argmax(1) == target).sum())
    return losses / len(split), hits / len(split)


def train_student(
    module: Any,
    train: Split,
    val: Split,
    config: TrainConfig,
    *,
    taps: Sequence[str] = (),
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainResult:
    """Train ``module`` in place on ``train``; select and restore the best epoch on ``val``.

    Args:
        module: the student.
        train, val: the splits (``train.features`` aligned with ``taps``).
        config: hyper-parameters.
        taps: student module names whose outputs are matched to ``train.features``.
        on_epoch: called after every epoch.

    Returns:
        The history, the best epoch and its validation metric, why training stopped, the seconds.
    """
    if len(taps) != len(train.features):
        raise InputError(f"{len(taps)} student taps for {len(train.features)} teacher features")
    with torch_threads(config.threads):
        hints = _Hints(module, taps, train, config.seed) if taps else None
        try:
            return _train(module, train, val, config, on_epoch, hints)
        finally:
            if hints is not None:
                hints.remove()


class _Hints:
    """Forward hooks on named student modules plus the adapters onto the teacher's tensors."""

    def __init__(self, module: Any, taps: Sequence[str], train: Split, seed: int) -> None:
        import torch
        from torch import nn

        modules = dict(module.named_modules())
        for name in taps:
            if name not in modules or not name:
                some = ", ".join(n for n in list(modules)[1:9])
                raise InputError(
                    f"--feature: the student has no module '{name}' (its modules include: {some})"
                )
        self.taps = list(taps)
        self.values: dict[str, Any] = {}
        self.hooks = [modules[n].register_forward_hook(self._store(n)) for n in self.taps]
        was_training = module.training
        module.eval()
        with torch.no_grad():
            module(*(torch.from_numpy(np.ascontiguousarray(x[:2])) for x in train.inputs))
        module.train(was_training)
        torch.manual_seed(seed)
        adapters: list[nn.Module] = []
        for name, teacher in zip(self.taps, train.features, strict=True):
            s = self.values[name]
            if not isinstance(s, torch.Tensor):
                raise InputError(f"--feature: student module '{name}' does not output a tensor")
            t_shape = tuple(teacher.shape[1:])
            if s.ndim == 4 and len(t_shape) == 3:
                adapters.append(nn.Conv2d(s.shape[1], t_shape[0], 1))
            else:
                adapters.append(
                    nn.Sequential(nn.Flatten(), nn.Linear(math.prod(s.shape[1:]), math.prod(t_shape)))
                )
        self.adapters = nn.ModuleList(adapters)
        self.values.clear()

    def _store(self, name: str) -> Callable[..., None]:
        def hook(mod: Any, args: Any, output: Any) -> None:
            self.values[name] = output

        return hook

    def loss(self, teacher_features: Sequence[Any]) -> Any:
        import torch.nn.functional as F

        total: Any = 0.0
        for name, adapter, t in zip(self.taps, self.adapters, teacher_features, strict=True):
            s = adapter(self.values[name])
            if s.ndim == 4 and s.shape[2:] != t.shape[2:]:
                s = (
                    F.adaptive_avg_pool2d(s, t.shape[2:])
                    if s.shape[2] >= t.shape[2]
                    else F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=False)
                )
            total = total + feature_loss(s.reshape(t.shape), t)
        return total

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.values.clear()


def _train(
    module: Any,
    train: Split,
    val: Split,
    config: TrainConfig,
    on_epoch: Callable[[EpochLog], None] | None,
    hints: _Hints | None,
) -> TrainResult:
    import torch

    torch.manual_seed(config.seed)
    xs = [torch.from_numpy(np.ascontiguousarray(x)) for x in train.inputs]
    t_all = torch.from_numpy(np.ascontiguousarray(train.teacher))
    y_all = torch.from_numpy(train.labels) if train.labels is not None else None
    f_all = [torch.from_numpy(np.ascontiguousarray(f)) for f in train.features]
    n = len(train)
    decay: list[Any] = []
    no_decay: list[Any] = []
    for p in [*module.parameters(), *(hints.adapters.parameters() if hints else ())]:
        (decay if p.ndim > 1 else no_decay).append(p)

    def batch_loss(idx: Any) -> Any:
        loss = distillation_loss(
            module(*(x[idx] for x in xs)),
            t_all[idx],
            y_all[idx] if y_all is not None else None,
            temperature=config.temperature,
            alpha=config.alpha,
        )
        if hints is not None:
            loss = loss + config.feature_weight * hints.loss([f[idx] for f in f_all])
        return loss

    start = time.perf_counter()
    lr = config.lr
    if lr is None:
        lr = lr_range_test(
            module,
            list(module.parameters()),
            batch_loss,
            n,
            batch_size=config.batch_size,
            seed=config.seed,
            weight_decay=config.weight_decay,
        )
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
    )
    return run_epochs(
        module,
        opt,
        batch_loss,
        lambda: evaluate(module, val, config),
        config=config,
        n=n,
        lr=lr,
        metric="accuracy" if val.labels is not None else "agreement",
        start=start,
        warm_epochs=3,
        anneal_epochs=3,
        on_epoch=on_epoch,
    )
