"""The distillation loss (Hinton, Vinyals and Dean, 2015).

With student logits ``s``, teacher logits ``t``, temperature ``T``, hard labels ``y`` and mixing
weight ``alpha`` in [0, 1]:

    L = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

- ``KL(p || q) = sum_c p_c * (log p_c - log q_c)``, averaged over the batch (``batchmean``);
- ``CE(s, y) = -log softmax(s)_y`` at temperature 1, averaged over the batch;
- ``T^2`` keeps the soft term's gradients on the same scale as the hard term's when ``T`` changes
  (the soft gradients shrink as ``1/T^2``).

With ``--feature TEACHER_TENSOR:STUDENT_MODULE`` pairs (FitNets-style hints, Romero et al. 2015)
the loss gains ``beta * sum_f MSE(adapter_f(h_s), h_t)``: the student module's output ``h_s``,
mapped by a small trained adapter (1x1 conv or linear, resized to the teacher's spatial size), is
pulled towards the teacher tensor ``h_t``. Adapters are discarded after training.

So ``alpha`` weights the teacher (soft) term: ``alpha = 1`` is pure teacher-student, ``alpha = 0``
plain supervised training. Without labels the loss is the soft term alone, ``T^2 * KL``, whatever
``alpha`` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """The loss in the module docstring, a scalar tensor (differentiable in ``student_logits``)."""
    import torch.nn.functional as F

    t = float(temperature)
    log_q = F.log_softmax(student_logits / t, dim=-1)
    log_p = F.log_softmax(teacher_logits / t, dim=-1)
    soft = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * (t * t)
    if labels is None:
        return soft
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


def feature_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """The hint term for one pair: mean squared error of the adapted student feature to the teacher's."""
    import torch.nn.functional as F

    return F.mse_loss(student_feature, teacher_feature)
