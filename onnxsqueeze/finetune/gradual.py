"""Gradual pruning with recovery training between the steps.

**Sparsity** (Zhu and Gupta 2017, "To prune, or not to prune"): over ``n`` steps the sparsity rises
along the cubic schedule

    s_k = S * (1 - (1 - k / n)^3),   k = 1..n

(large steps first, while the network has redundancy to spare, small ones near the target). At
each step every weight of rank > 1 (Conv, Gemm, MatMul weights) is magnitude-pruned per layer to
``s_k`` on the PyTorch module (weights already zero stay zero: the masks only grow), then the module
trains against the original for an equal share of the time budget. No ONNX round trip between
steps; one export at the end.

**Channels**: ``n`` rounds of :func:`onnxsqueeze.prune.prune_channels`, each removing
``r = 1 - (1 - R)^(1/n)`` of the remaining channels (so ``R`` of the original after ``n`` rounds),
each followed by fine-tuning (:func:`onnxsqueeze.finetune.finetune`) for a share of the budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx

from onnxsqueeze.distill.train import EpochLog
from onnxsqueeze.errors import InputError
from onnxsqueeze.finetune import Data, FinetuneConfig, FinetuneResult, finetune, finish, prepare
from onnxsqueeze.finetune.train import clock


def cubic_schedule(sparsity: float, steps: int) -> list[float]:
    """``s_k = S * (1 - (1 - k/n)^3)`` for ``k = 1..n`` (the last is ``S``)."""
    return [sparsity * (1.0 - (1.0 - k / steps) ** 3) for k in range(1, steps + 1)]


def _keep_largest(values: Any, keep: int) -> Any:
    """A bool mask of the ``keep`` largest entries of ``values`` (ties broken by index order)."""
    import torch

    flat = values.flatten()
    order = torch.argsort(flat, descending=True, stable=True)[:keep]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order] = True
    return mask.view_as(values)


def _prune_masks(graph: Any, sparsity: float, scope: str = "layer") -> None:
    """Zero the smallest-magnitude ``sparsity`` of the weights of rank > 1 (masks only grow):
    per tensor (``layer``) or under one threshold over all of them (``global``)."""
    import torch

    named = {n: p for n, p in graph.module.named_parameters() if p.ndim >= 2 and p.numel() >= 2}
    with torch.no_grad():
        if scope == "global":
            sizes = [p.numel() for p in named.values()]
            flat = torch.cat([p.detach().abs().flatten() for p in named.values()])
            keep_all = _keep_largest(flat, flat.numel() - round(sparsity * flat.numel())).split(sizes)
            keeps = {n: k.view_as(p) for (n, p), k in zip(named.items(), keep_all, strict=True)}
        else:
            keeps = {
                n: _keep_largest(p.detach().abs(), p.numel() - round(sparsity * p.numel()))
                for n, p in named.items()
            }
        for name, keep in keeps.items():
            if bool(keep.all()):
                continue
            old = graph.masks.get(name)
            graph.masks[name] = keep if old is None else (keep & old)
    graph.apply_masks()


def gradual_sparsity(
    model: str | Path | onnx.ModelProto,
    teacher: str | Path,
    train_data: Path | Data,
    *,
    sparsity: float,
    steps: int = 5,
    scope: str = "layer",
    val: Path | Data | None = None,
    config: FinetuneConfig | None = None,
    cache_dir: Path | None = None,
    tolerance: float = 1e-4,
    on_step: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> FinetuneResult:
    """Prune ``model`` to ``sparsity`` along the cubic schedule, training between the steps.

    The report's ``before`` is the dense model; ``training`` is the last step's.
    """
    if not 0.0 < sparsity < 1.0:
        raise InputError(f"--sparsity {sparsity}: must be in (0, 1)")
    if steps < 1:
        raise InputError("steps must be >= 1")
    if scope not in ("layer", "global"):
        raise InputError(f"--scope '{scope}': use layer or global")
    config = config or FinetuneConfig()
    session = prepare(
        model, teacher, train_data, val=val, config=config, cache_dir=cache_dir, tolerance=tolerance
    )
    before = session.score(session.norm)
    zeros_before = session.graph.zeros()
    now = clock(config)
    spent = now() - session.start
    share = None if config.time_budget_s is None else max(1.0, (config.time_budget_s - spent) / steps)
    summary = None
    for k, s in enumerate(cubic_schedule(sparsity, steps), start=1):
        if on_step:
            on_step(k, s)
        _prune_masks(session.graph, s, scope)
        step_cfg = dataclasses.replace(config, time_budget_s=share, patience=max(2, config.patience // 2))
        summary = session.train(step_cfg, on_epoch=on_epoch, start_time=now())
    assert summary is not None
    return finish(session, summary, before, zeros_before, tolerance)


def gradual_channels(
    model: str | Path | onnx.ModelProto,
    teacher: str | Path,
    train_data: Path | Data,
    *,
    ratio: float,
    rounds: int = 3,
    val: Path | Data | None = None,
    config: FinetuneConfig | None = None,
    cache_dir: Path | None = None,
    tolerance: float = 1e-4,
    prune_options: Mapping[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> FinetuneResult:
    """Remove ``ratio`` of the channels in ``rounds`` rounds, fine-tuning after each.

    ``prune_options`` go to :func:`onnxsqueeze.prune.prune_channels` (criterion, round_to...).
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze import prune as api

    if not 0.0 < ratio < 1.0:
        raise InputError(f"--channels {ratio}: must be in (0, 1)")
    if rounds < 1:
        raise InputError("rounds must be >= 1")
    config = config or FinetuneConfig()
    now = clock(config)
    start = now()
    current = model if isinstance(model, onnx.ModelProto) else sio.load(Path(model))
    per_round = 1.0 - (1.0 - ratio) ** (1.0 / rounds)
    calib = sio.load_npz(Path(train_data)) if isinstance(train_data, (str, Path)) else dict(train_data)
    calib = api.limit(calib, 512)
    result: FinetuneResult | None = None
    for k in range(1, rounds + 1):
        if on_step:
            on_step(k, 1.0 - (1.0 - per_round) ** k)
        current, _ = api.prune_channels(
            current, ratio=per_round, calibration=calib, **dict(prune_options or {})
        )
        left = None
        if config.time_budget_s is not None:
            left = max(1.0, (config.time_budget_s - (now() - start)) / (rounds - k + 1))
        result = finetune(
            current,
            teacher,
            train_data,
            val=val,
            config=dataclasses.replace(config, time_budget_s=left),
            cache_dir=cache_dir,
            tolerance=tolerance,
            on_epoch=on_epoch,
        )
        current = result.model
    assert result is not None
    return result


def sparsity_of(model: onnx.ModelProto) -> float:
    """The fraction of zeros among the float weights of rank > 1."""
    from onnx import numpy_helper

    zeros = total = 0
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) > 1:
            a = numpy_helper.to_array(init)
            zeros += int((a == 0).sum())
            total += a.size
    return zeros / max(1, total)


__all__ = ["cubic_schedule", "gradual_channels", "gradual_sparsity", "sparsity_of"]


def prune_and_finetune(
    model: Path,
    data: Path,
    *,
    sparsity: float | None = None,
    channels: float | None = None,
    val: Path | None = None,
    config: FinetuneConfig | None = None,
    prune_options: Mapping[str, Any] | None = None,
    scope: str = "layer",
) -> FinetuneResult:
    """``prune --sparsity S --finetune`` / ``prune --channels R --finetune``: the original is the teacher."""
    if (sparsity is None) == (channels is None):
        raise InputError("choose one of --sparsity or --channels with --finetune")
    if sparsity is not None:
        return gradual_sparsity(model, model, data, sparsity=sparsity, scope=scope, val=val, config=config)
    assert channels is not None
    return gradual_channels(
        model, model, data, ratio=channels, val=val, config=config, prune_options=prune_options
    )
