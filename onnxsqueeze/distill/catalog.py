"""The student catalog for ``onnxsqueeze distill --student NAME``: small architectures, fresh weights.

Every builder takes the teacher's interface, ``input_shape`` (one sample, without the batch axis)
and ``num_outputs`` (the teacher's class count), and returns an ``nn.Module`` mapping
``[N, *input_shape]`` to ``[N, num_outputs]``:

- ``cnn4``, ``cnn8``, ``cnn16``, ``cnn32``: a plain VGG-style CNN of that base width (4 convs,
  widths w, 2w, 4w, 4w, two max-pools, global average pool, linear head); inputs larger than
  64 pixels get a strided stem so feature maps stay CPU-sized.
- ``mobilenet_v3_small``: torchvision's MobileNetV3-Small (architecture only, no weights); stem
  adapted to the input's channels and, below 96 pixels, to stride 1 (else a 32x32 input would be
  reduced to 1x1); the head sized to ``num_outputs``.
- ``resnet8``: a CIFAR-style ResNet (3x3 stem, one BasicBlock per stage at 16/32/64 channels).
- ``resnet18``: torchvision's ResNet-18 (architecture only); below 96 pixels, the CIFAR stem
  (3x3 stride 1, no max-pool).
- ``mlp``: flatten, two hidden layers of 128 (any input).
- ``transformer``: a 2-layer, 64-wide pre-norm encoder with mean pooling, for sequences
  ``[L, D]``; images ``[C, H, W]`` are cut into patches first (a tiny ViT).

The catalog is data (``STUDENTS``); ``build(name, input_shape, num_outputs)`` looks a name up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Builder = Callable[[tuple[int, ...], int], Any]


def _image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"student '{name}' needs image inputs [N, C, H, W]; the teacher's input is "
            f"[N, {', '.join(map(str, input_shape))}] (try 'mlp' or 'transformer')"
        )
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


def cnn(width: int) -> Builder:
    """A VGG-style CNN of base width ``width`` (the digits teacher is this recipe at width 16)."""

    def build(input_shape: tuple[int, ...], num_outputs: int) -> Any:
        from torch import nn

        c, h, w_ = _image_shape(f"cnn{width}", input_shape)
        w = width

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        # Reduce large inputs to at most 64 pixels on the short side before the body.
        downs = max(0, math.ceil(math.log2(min(h, w_) / 64))) if min(h, w_) > 64 else 0
        layers: list[nn.Module] = block(c, w, stride=2 if downs else 1)
        layers += [nn.MaxPool2d(2) for _ in range(max(0, downs - 1))]
        layers += [
            *block(w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            nn.MaxPool2d(2),
            *block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * w, num_outputs),
        ]
        return nn.Sequential(*layers)

    return build


def mobilenet_v3_small(input_shape: tuple[int, ...], num_outputs: int) -> Any:
    import torchvision
    from torch import nn

    c, h, w = _image_shape("mobilenet_v3_small", input_shape)
    model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_outputs)
    stem: nn.Conv2d = model.features[0][0]
    stride = 1 if min(h, w) < 96 else 2
    if c != stem.in_channels or stride != 2:
        model.features[0][0] = nn.Conv2d(c, stem.out_channels, 3, stride=stride, padding=1, bias=False)
    return model


def _basic_block(cin: int, cout: int, stride: int) -> Any:
    """A ResNet BasicBlock (two 3x3 convs, identity or 1x1 projection shortcut)."""
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.shortcut: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: Any) -> Any:
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + self.shortcut(x))

    return BasicBlock()


def resnet8(input_shape: tuple[int, ...], num_outputs: int) -> Any:
    from torch import nn

    c, h, w = _image_shape("resnet8", input_shape)
    stem_stride = 1 if min(h, w) <= 64 else 4
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, stride=stem_stride, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        _basic_block(16, 16, 1),
        _basic_block(16, 32, 2),
        _basic_block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_outputs),
    )


def resnet18(input_shape: tuple[int, ...], num_outputs: int) -> Any:
    import torchvision
    from torch import nn

    c, h, w = _image_shape("resnet18", input_shape)
    model = torchvision.models.resnet18(weights=None, num_classes=num_outputs)
    if min(h, w) < 96:
        model.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif c != 3:
        model.conv1 = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
    return model


def mlp(input_shape: tuple[int, ...], num_outputs: int) -> Any:
    from torch import nn

    features = math.prod(int(d) for d in input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_outputs),
    )


def transformer(input_shape: tuple[int, ...], num_outputs: int, *, dim: int = 64, depth: int = 2) -> Any:
    """A tiny pre-norm encoder; plain ops only (no fused attention) so it exports to any opset."""
    import torch
    from torch import nn

    if len(input_shape) == 2:
        tokens, features = int(input_shape[0]), int(input_shape[1])
        embed: nn.Module = nn.Linear(features, dim)
    elif len(input_shape) == 3:
        c, h, w = (int(d) for d in input_shape)
        patch = max(1, min(h, w) // 8)
        tokens = (h // patch) * (w // patch)
        embed = nn.Sequential(nn.Conv2d(c, dim, patch, stride=patch), nn.Flatten(2))
    else:
        raise ValueError(
            f"student 'transformer' needs sequences [N, L, D] or images [N, C, H, W]; the teacher's "
            f"input is [N, {', '.join(map(str, input_shape))}] (try 'mlp')"
        )
    image = len(input_shape) == 3

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = 4
            self.norm1 = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, t, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, dim // self.heads).unbind(2)
            q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # [N, heads, T, d]
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads), dim=-1)
            x = x + self.proj((att @ v).transpose(1, 2).reshape(n, t, dim))
            return x + self.mlp(self.norm2(x))

    class TinyTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = embed
            self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
            nn.init.trunc_normal_(self.pos, std=0.02)
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, num_outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.embed(x)
            if image:
                x = x.transpose(1, 2)  # [N, dim, T] -> [N, T, dim]
            x = self.blocks(x + self.pos)
            return self.head(self.norm(x).mean(dim=1))

    return TinyTransformer()


STUDENTS: dict[str, Builder] = {
    "cnn4": cnn(4),
    "cnn8": cnn(8),
    "cnn16": cnn(16),
    "cnn32": cnn(32),
    "mobilenet_v3_small": mobilenet_v3_small,
    "resnet8": resnet8,
    "resnet18": resnet18,
    "mlp": mlp,
    "transformer": transformer,
}


def build(name: str, input_shape: Sequence[int], num_outputs: int) -> Any:
    """The catalog student ``name`` for one sample of ``input_shape`` and ``num_outputs`` classes.

    Raises:
        KeyError: ``name`` is not in the catalog.
        ValueError: the architecture does not take inputs of that rank.
    """
    return STUDENTS[name](tuple(int(d) for d in input_shape), int(num_outputs))
