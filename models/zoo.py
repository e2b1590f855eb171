"""Export torchvision architectures with deterministic random weights at 224x224, for benchmarks.

Architectures only: no weights are downloaded. BatchNorm statistics are perturbed deterministically
so that folding and pruning see realistic, non-trivial normalization parameters.

Usage: ``python -m models.zoo [--out DIR] [NAME ...]`` (default: all of ARCHITECTURES).
Writes ``DIR/<name>.onnx`` with input ``input`` [N, 3, 224, 224] and output ``logits`` [N, 1000].
"""

from __future__ import annotations

import argparse
from pathlib import Path

ARCHITECTURES = ("resnet18", "resnet50", "mobilenet_v3_large", "mobilenet_v3_small")


def build(name: str, seed: int = 0):
    import torch
    import torchvision

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}'; choose from {', '.join(ARCHITECTURES)}")
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    return model.eval()


def export(name: str, path: Path, seed: int = 0) -> Path:
    import torch

    from models.export import export_torchscript

    return export_torchscript(
        build(name, seed),
        (torch.zeros(1, 3, 224, 224),),
        path,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def ensure(name: str, out: Path = Path(".cache/models")) -> Path:
    """The exported model's path, exporting it first if it is not cached."""
    path = out / f"{name}.onnx"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        export(name, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(ARCHITECTURES))
    parser.add_argument("--out", type=Path, default=Path(".cache/models"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        print(export(name, args.out / f"{name}.onnx"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
