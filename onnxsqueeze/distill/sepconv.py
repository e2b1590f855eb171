"""Depthwise-separable rewrite of PyTorch modules (MobileNet's factorization), with its cost report.

Every ``nn.Conv2d`` with a kernel larger than 1x1 and ``groups == 1`` is replaced by

    depthwise k x k conv (C_in -> C_in, groups = C_in, same stride/padding/dilation, no bias)
    -> BatchNorm2d(C_in) -> ReLU                                      (as MobileNet v1 does)
    -> pointwise 1 x 1 conv (C_in -> C_out, the original conv's bias)

so every tensor keeps its shape and the module drops in where the conv was. For a k x k conv with
``C_in`` inputs and ``N = C_out`` outputs, weights and MACs shrink to

    (C_in * k^2 + C_in * N) / (C_in * N * k^2) = 1/N + 1/k^2

of the original (about 1/9 + 1/N for 3x3). The rewritten module has fresh weights: it is meant to
be trained, typically by distillation from the original (``onnxsqueeze distill --student
sepconv:SPEC``).

torch is imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from onnxsqueeze.errors import UnsupportedModelError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclasses.dataclass(frozen=True)
class ConvRewrite:
    """One replaced conv: its name, shape and cost before and after (MACs at the example input)."""

    name: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclasses.dataclass(frozen=True)
class SepconvReport:
    """What the rewrite did: the convs replaced and the whole model's parameters and MACs."""

    convs: tuple[ConvRewrite, ...]
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None

    @property
    def param_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def mac_ratio(self) -> float | None:
        if not self.macs_before or self.macs_after is None:
            return None
        return self.macs_after / self.macs_before

    def to_dict(self) -> dict[str, Any]:
        return {
            "replaced": len(self.convs),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "param_ratio": self.param_ratio,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "mac_ratio": self.mac_ratio,
            "convs": [dataclasses.asdict(c) for c in self.convs],
        }


def count_params(module: nn.Module) -> int:
    """Trainable and frozen parameters (buffers such as BN running stats are not parameters)."""
    return sum(p.numel() for p in module.parameters())


def conv_macs(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple[int, dict[str, int]]:
    """MACs of every Conv2d and Linear at ``example_inputs`` (batch included), total and by name.

    Conv2d: ``N * C_out * H_out * W_out * (C_in / groups) * kh * kw``; Linear: ``rows * in * out``.
    These are the ops the ONNX-side :func:`onnxsqueeze.summary.count_macs` counts too.
    """
    import torch
    from torch import nn

    per: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def fn(mod: nn.Module, args: Any, output: torch.Tensor) -> None:
            if isinstance(mod, nn.Conv2d):
                kh, kw = mod.kernel_size
                per[name] = per.get(name, 0) + int(output.numel()) * (mod.in_channels // mod.groups) * kh * kw
            elif isinstance(mod, nn.Linear):
                per[name] = per.get(name, 0) + int(output.numel()) * mod.in_features

        return fn

    for name, mod in module.named_modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):
            hooks.append(mod.register_forward_hook(hook(name)))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    return sum(per.values()), per


def _separable(conv: nn.Conv2d, *, norm: bool, activation: bool) -> nn.Sequential:
    from torch import nn

    cin, cout = conv.in_channels, conv.out_channels
    layers: list[nn.Module] = [
        nn.Conv2d(
            cin,
            cin,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=conv.padding,  # type: ignore[arg-type]
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=cin,
            bias=not norm,
            padding_mode=conv.padding_mode,
        )
    ]
    if norm:
        layers.append(nn.BatchNorm2d(cin))
    if activation:
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Conv2d(cin, cout, 1, bias=conv.bias is not None))
    seq = nn.Sequential(*layers)
    return seq.to(device=conv.weight.device, dtype=conv.weight.dtype)


def rewritable(conv: nn.Module) -> bool:
    """A Conv2d with a kernel larger than 1x1 and no grouping (depthwise convs are left alone)."""
    from torch import nn

    return isinstance(conv, nn.Conv2d) and conv.groups == 1 and max(conv.kernel_size) > 1


def separate_convs(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...] | None = None,
    *,
    norm: bool = True,
    activation: bool = True,
) -> SepconvReport:
    """Rewrite ``module`` in place: each k x k conv becomes depthwise + pointwise (see module doc).

    Args:
        module: the PyTorch module (an architecture; its conv weights are not carried over).
        example_inputs: inputs for the MAC count (and a shape check); without them MACs are None.
        norm: a BatchNorm2d after the depthwise conv.
        activation: a ReLU after the depthwise conv (after the norm).

    Returns:
        The report: each replaced conv, parameters and MACs of the whole module before and after.

    Raises:
        UnsupportedModelError: there is no conv to rewrite, or an output shape changed (a bug).
    """
    import torch

    targets: list[tuple[str, Any]] = [(name, m) for name, m in module.named_modules() if rewritable(m)]
    if not targets:
        raise UnsupportedModelError(
            f"{type(module).__name__}: no Conv2d with a kernel > 1x1 and groups=1 to make separable"
        )
    params_before = count_params(module)
    macs_before = per_before = None
    outputs_before = None
    if example_inputs is not None:
        macs_before, per_before = conv_macs(module, example_inputs)
        module_was_training = module.training
        module.eval()
        with torch.no_grad():
            outputs_before = _shapes(module(*example_inputs))
        module.train(module_was_training)

    replaced: dict[str, nn.Sequential] = {}
    for name, conv in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        new = _separable(conv, norm=norm, activation=activation)
        setattr(parent, attr, new)
        replaced[name] = new

    macs_after = per_after = None
    if example_inputs is not None:
        macs_after, per_after = conv_macs(module, example_inputs)
        module_was_training = module.training
        module.eval()
        with torch.no_grad():
            outputs_after = _shapes(module(*example_inputs))
        module.train(module_was_training)
        if outputs_after != outputs_before:
            raise UnsupportedModelError(
                f"{type(module).__name__}: the separable rewrite changed the output shapes "
                f"{outputs_before} -> {outputs_after}"
            )

    convs = []
    for name, conv in targets:
        new = replaced[name]
        kh, kw = conv.kernel_size
        convs.append(
            ConvRewrite(
                name=name,
                in_channels=int(conv.in_channels),
                out_channels=int(conv.out_channels),
                kernel=(int(kh), int(kw)),
                params_before=count_params(conv),
                params_after=count_params(new),
                macs_before=(per_before or {}).get(name, 0),
                macs_after=sum(v for k, v in (per_after or {}).items() if k.startswith(name + ".")),
            )
        )
    return SepconvReport(tuple(convs), params_before, count_params(module), macs_before, macs_after)


def _shapes(value: Any) -> Any:
    if hasattr(value, "shape"):
        return tuple(value.shape)
    if isinstance(value, tuple | list):
        return tuple(_shapes(v) for v in value)
    if isinstance(value, dict):
        return {k: _shapes(v) for k, v in value.items()}
    return None
