"""The distillation loss equals its documented formula, checked by hand on a tiny example."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from onnxsqueeze.distill.loss import distillation_loss  # noqa: E402

S = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])  # student logits, 2 samples x 3 classes
T_ = np.array([[3.0, 1.0, 0.0], [-1.0, 0.0, 2.0]])  # teacher logits
Y = np.array([0, 2])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _by_hand(temperature: float, alpha: float, labels: np.ndarray | None) -> float:
    """alpha * T^2 * mean_i KL(p_i || q_i) + (1 - alpha) * mean_i -log softmax(s_i)[y_i], in numpy."""
    p = _softmax(T_ / temperature)
    q = _softmax(S / temperature)
    kl = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))
    soft = temperature**2 * kl
    if labels is None:
        return soft
    ce = float(np.mean(-np.log(_softmax(S)[np.arange(len(labels)), labels])))
    return alpha * soft + (1 - alpha) * ce


def _loss(temperature: float, alpha: float, labels: np.ndarray | None) -> float:
    y = torch.from_numpy(labels) if labels is not None else None
    return float(
        distillation_loss(torch.from_numpy(S), torch.from_numpy(T_), y, temperature=temperature, alpha=alpha)
    )


@pytest.mark.parametrize(("temperature", "alpha"), [(4.0, 0.5), (1.0, 0.3), (2.5, 0.9)])
def test_loss_matches_the_documented_formula(temperature: float, alpha: float) -> None:
    assert _loss(temperature, alpha, Y) == pytest.approx(_by_hand(temperature, alpha, Y), rel=1e-12)


def test_alpha_weights_the_soft_term() -> None:
    # alpha = 1: the teacher term alone; alpha = 0: plain cross-entropy on the labels.
    assert _loss(4.0, 1.0, Y) == pytest.approx(_by_hand(4.0, 1.0, None), rel=1e-12)
    ce = float(np.mean(-np.log(_softmax(S)[np.arange(2), Y])))
    assert _loss(4.0, 0.0, Y) == pytest.approx(ce, rel=1e-12)


def test_without_labels_the_loss_is_pure_kl_whatever_alpha() -> None:
    expected = _by_hand(2.0, 0.5, None)
    assert _loss(2.0, 0.5, None) == pytest.approx(expected, rel=1e-12)
    assert _loss(2.0, 0.1, None) == pytest.approx(expected, rel=1e-12)


def test_loss_is_zero_when_the_student_is_the_teacher() -> None:
    t = torch.from_numpy(T_)
    assert float(distillation_loss(t, t, None, temperature=3.0)) == pytest.approx(0.0, abs=1e-12)


def test_hand_computed_value() -> None:
    # One sample, two classes, T = 1, alpha = 1: KL([0.5, 0.5] || softmax([ln 3, 0]) = [0.75, 0.25]).
    s = torch.tensor([[np.log(3.0), 0.0]])
    t = torch.tensor([[0.0, 0.0]])
    expected = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    assert float(distillation_loss(s, t, None, temperature=1.0)) == pytest.approx(expected, rel=1e-6)
