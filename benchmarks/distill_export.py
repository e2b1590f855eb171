"""Student export: ``convert.from_torch`` (dynamo first) vs the TorchScript exporter it replaced.

For each catalog student built for the digits input (``[N, 1, 32, 32]``, 10 classes, fresh
seeded weights), times the export plus verification on 64 samples, and the exported models'
onnxruntime CPU latency (batch 64, 1 thread, median of interleaved rounds, same process). The
TorchScript path is the former ``distill/export.py`` stand-in: ``torch.onnx.export(dynamo=False,
opset 17)`` with a dynamic batch, no cleanup.

Usage: ``PYTHONPATH=. python benchmarks/distill_export.py [STUDENT ...]``
"""

from __future__ import annotations

import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STUDENTS = ["mlp", "cnn4", "cnn16", "resnet8", "transformer", "mobilenet_v3_small", "sepconv:cnn16"]


def torchscript(module, x: np.ndarray):
    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.from_numpy(x),),
            buf,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    # the stand-in's check: PyTorch vs onnxruntime on all samples
    from onnxsqueeze import runtime
    from onnxsqueeze.verify import compare

    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = runtime.run_batched(runtime.session(model), {"input": x})
    compare({"logits": want}, got, samples=len(x), inputs={"input": x.shape}, source="PyTorch")
    return model


def latency_ms(models, x: np.ndarray, rounds: int = 15, runs: int = 5) -> list[float]:
    from onnxsqueeze import runtime

    sessions = [runtime.session(m, optimize=True, threads=1) for m in models]
    return runtime.time_sessions(sessions, [{"input": x}] * len(sessions), rounds=rounds, runs=runs)


def main(names: list[str]) -> None:
    import torch

    from onnxsqueeze.distill.export import export_student
    from onnxsqueeze.distill.student import build_student

    torch.set_num_threads(1)
    x = np.random.default_rng(0).standard_normal((64, 1, 32, 32)).astype(np.float32)
    print(
        "| student | TorchScript export+verify s | from_torch export+verify s | opset | nodes TS -> from_torch | ORT latency ratio from_torch / TS |"
    )
    print("|---|---|---|---|---|---|")
    for name in names:
        torch.manual_seed(0)
        module = build_student(name, (1, 32, 32), 10).module.eval()
        t0 = time.perf_counter()
        old = torchscript(module, x)
        t_old = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            new, _ = export_student(module, (x,), input_names=["input"], output_names=["logits"])
        t_new = time.perf_counter() - t0
        ms_old, ms_new = latency_ms([old, new], x)
        print(
            f"| {name} | {t_old:.2f} | {t_new:.2f} | opset {new.opset_import[0].version} | "
            f"{len(old.graph.node)} -> {len(new.graph.node)} | {ms_new / ms_old:.2f} ({ms_old:.2f} -> {ms_new:.2f} ms) |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:] or STUDENTS)
