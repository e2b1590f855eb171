"""Export a torchvision architecture from ``models/zoo.py`` at a smaller input resolution.

The resized variant is the cheap candidate of the CPU benchmark demonstration (``bench`` of
ResNet-18 at 224x224 against the same weights at 160x160). Same seeded weights as ``models.zoo``;
only the exported input size differs (the network ends in adaptive average pooling).

Usage: ``python benchmarks/export_resized.py [--name resnet18] [--size 160] [--out .cache/models]``
writes ``OUT/<name>_<size>.onnx`` (input ``input`` [N, 3, size, size], output ``logits`` [N, 1000]).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def export(name: str, size: int, out: Path, seed: int = 0) -> Path:
    import torch

    from models import zoo
    from models.export import export_torchscript

    return export_torchscript(
        zoo.build(name, seed),
        (torch.zeros(1, 3, size, size),),
        out / f"{name}_{size}.onnx",
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="resnet18")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--out", type=Path, default=Path(".cache/models"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(export(args.name, args.size, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
