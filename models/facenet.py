"""Export facenet-pytorch's pretrained MTCNN face-detection nets (PNet, RNet, ONet) to ONNX.

The weights ship inside the ``facenet_pytorch`` package (``data/{pnet,rnet,onet}.pt``), so this runs
offline. Each export is checked against the torch module on seeded inputs (max abs error < 1e-4).

Writes into ``DIR`` (default ``.cache/models``), all with input ``input`` float32 [N, 3, H, W]:

- ``facenet_pnet.onnx``: fully convolutional, dynamic N, H, W (>= 12); outputs ``offsets``
  [N, 4, h, w] and ``probs`` [N, 2, h, w];
- ``facenet_rnet.onnx``: 24x24 crops; outputs ``offsets`` [N, 4], ``probs`` [N, 2];
- ``facenet_onet.onnx``: 48x48 crops; outputs ``offsets`` [N, 4], ``landmarks`` [N, 10], ``probs`` [N, 2].

Usage: ``python -m models.facenet [--out DIR] [pnet rnet onet]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

NETS = {
    "pnet": ((1, 3, 48, 64), ("offsets", "probs")),
    "rnet": ((1, 3, 24, 24), ("offsets", "probs")),
    "onet": ((1, 3, 48, 48), ("offsets", "landmarks", "probs")),
}


def build(name: str):
    import facenet_pytorch

    cls = {"pnet": facenet_pytorch.PNet, "rnet": facenet_pytorch.RNet, "onet": facenet_pytorch.ONet}[name]
    return cls(pretrained=True).eval()


def export(name: str, path: Path) -> Path:
    import torch

    from models.export import export_torchscript
    from onnxsqueeze import io as sio
    from onnxsqueeze.verify import run

    shape, outputs = NETS[name]
    module = build(name)
    dynamic = {"input": {0: "batch"}} | {o: {0: "batch"} for o in outputs}
    if name == "pnet":
        dynamic = {"input": {0: "batch", 2: "height", 3: "width"}} | {
            o: {0: "batch", 2: "out_height", 3: "out_width"} for o in outputs
        }
    with torch.no_grad():
        export_torchscript(
            module,
            (torch.zeros(shape),),
            path,
            input_names=["input"],
            output_names=outputs,
            dynamic_axes=dynamic,
        )
    proto = sio.load(path)
    # Check on a batch of 4 at another spatial size for the fully convolutional PNet.
    check_shape = (4, 3, 60, 80) if name == "pnet" else (4, *shape[1:])
    x = np.random.default_rng(0).uniform(-1, 1, size=check_shape).astype(np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in module(torch.from_numpy(x))]
    got = run(proto, {"input": x})
    err = max(float(np.abs(got[o] - e).max()) for o, e in zip(outputs, expected, strict=True))
    print(f"{path}: max abs error vs torch {err:.2e}")
    if err > 1e-4:
        raise SystemExit(f"{path}: export disagrees with torch ({err:.2e})")
    return path


def ensure(name: str, out: Path = Path(".cache/models")) -> Path:
    path = out / f"facenet_{name}.onnx"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        export(name, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(NETS))
    parser.add_argument("--out", type=Path, default=Path(".cache/models"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        print(export(name, args.out / f"facenet_{name}.onnx"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
