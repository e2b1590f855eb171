"""The training loop: deterministic, best epoch restored, early stopping and time budget honoured."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from onnxsqueeze.distill.train import Split, TrainConfig, evaluate, train_student  # noqa: E402


def _data(n: int, seed: int, labels: bool = True) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    w = np.random.default_rng(99).standard_normal((6, 3)).astype(np.float32)
    t = (x @ w).astype(np.float32)
    return Split((x,), t, t.argmax(1).astype(np.int64) if labels else None)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_same_seed_same_weights() -> None:
    cfg = TrainConfig(epochs=3, batch_size=16, seed=7)
    a, b = _model(), _model()
    train_student(a, _data(64, 0), _data(32, 1), cfg)
    train_student(b, _data(64, 0), _data(32, 1), cfg)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_learns_and_restores_the_best_epoch() -> None:
    val = _data(64, 1)
    cfg = TrainConfig(epochs=15, batch_size=16, lr=1e-2)
    model = _model()
    logs = []
    result = train_student(model, _data(256, 0), val, cfg, on_epoch=logs.append)
    assert len(logs) == len(result.history) and logs[0].metric == "accuracy"
    assert result.best_metric == max(h.val_metric for h in result.history)
    assert result.best_metric > 0.8  # a linear teacher is easy to learn
    # the weights left in the module are the best epoch's, not the last one's
    assert evaluate(model, val, cfg)[1] == pytest.approx(result.best_metric)


def test_without_labels_validation_is_agreement() -> None:
    result = train_student(
        _model(), _data(64, 0, labels=False), _data(32, 1, labels=False), TrainConfig(epochs=2)
    )
    assert result.metric == "agreement"


def test_early_stopping() -> None:
    cfg = TrainConfig(epochs=50, batch_size=16, lr=0.0, patience=2)  # lr 0: never improves after epoch 1
    result = train_student(_model(), _data(64, 0), _data(32, 1), cfg)
    assert result.stop_reason == "early stopping"
    assert len(result.history) == 3 and result.best_epoch == 1


def test_time_budget_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock that advances 0.1 s per reading: the budget logic is tested, not this machine's speed.
    from types import SimpleNamespace

    from onnxsqueeze.distill import train as train_mod

    ticks = iter(range(1_000_000))
    monkeypatch.setattr(train_mod, "time", SimpleNamespace(perf_counter=lambda: next(ticks) / 10))
    cfg = TrainConfig(epochs=1000, batch_size=8, time_budget_s=1.0, patience=10_000)
    result = train_student(_model(), _data(64, 0), _data(32, 1), cfg)
    assert result.stop_reason == "time budget"
    assert 2 <= len(result.history) < 1000
    # no epoch was started that the measured pace said would overrun the budget
    assert result.history[-1].elapsed_s <= cfg.time_budget_s


def test_default_plan_finds_a_rate_and_stops_at_convergence() -> None:
    # defaults: no --epochs, no --lr: the range test picks the rate, a plateau anneals and stops
    cfg = TrainConfig(batch_size=16, patience=4, time_budget_s=None)
    model = _model()
    val = _data(64, 1)
    result = train_student(model, _data(256, 0), val, cfg)
    assert result.lr_found and 1e-4 <= result.lr <= 0.1
    assert result.stop_reason == "converged"
    assert len(result.history) < 1000
    assert result.best_metric > 0.8
    # the range test leaves no trace: same seed, same result
    again = train_student(_model(), _data(256, 0), val, cfg)
    assert again.lr == result.lr and len(again.history) == len(result.history)


def test_lr_range_test_restores_the_module() -> None:
    from onnxsqueeze.distill.train import lr_range_test

    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 6)
    y = torch.randint(0, 3, (64,))
    lr = lr_range_test(
        model,
        list(model.parameters()),
        lambda idx: nn.functional.cross_entropy(model(x[idx]), y[idx]),
        64,
        batch_size=16,
        seed=0,
    )
    assert 1e-4 <= lr <= 0.1
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
