"""ONNX vs ONNX Runtime format: file size, session start-up time and output agreement.

The ORT format exists so that a mobile or edge app starts fast with a small runtime: the graph is
optimized once at conversion instead of at every session creation. This script measures that on
the sample models, in one run (the machine is noisy, so figures are ratios to the ONNX baseline):

- size: ``.ort`` bytes / ``.onnx`` bytes;
- start-up: median wall time of ``InferenceSession(...)`` over ``--repeat`` loads, ONNX at the
  same optimization level (what the app would otherwise pay) vs the ``.ort`` file;
- agreement: max relative difference (``onnxsqueeze.verify``'s ``max_rel``) of the ``.ort``
  outputs vs the ONNX model run without optimizations, on seeded inputs (batch 4).

Usage: ``PYTHONPATH=. python benchmarks/export_ort.py [--models digits_cnn resnet18 ...] [--repeat 7]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from onnxsqueeze.export import ort as ort_export
from onnxsqueeze.shapes import graph_inputs, input_dtype

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"


def load_time(path: Path, level: str, fmt: str, repeat: int) -> float:
    import onnxruntime as ort
    from onnxruntime.tools.onnx_model_utils import get_optimization_level

    times = []
    for _ in range(repeat):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        if fmt == "ort":
            opts.add_session_config_entry("session.load_model_format", "ORT")
        else:
            opts.graph_optimization_level = get_optimization_level(level)
        start = time.perf_counter()
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["digits_cnn", "mobilenet_v3_small", "resnet18", "resnet50"]
    )
    parser.add_argument("--levels", nargs="+", default=["basic", "all"])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    cols = [
        "model",
        "level",
        ".onnx",
        ".ort",
        "size ratio",
        "start-up ONNX",
        "start-up .ort",
        "ratio",
        "max rel",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for name in args.models:
        src = CACHE / f"{name}.onnx"
        import onnx

        model = onnx.load(str(src))
        feeds = {}
        rng = np.random.default_rng(0)
        for vi in graph_inputs(model):
            dims = [4 if not d.dim_value else d.dim_value for d in vi.type.tensor_type.shape.dim]
            feeds[vi.name] = rng.standard_normal(dims).astype(input_dtype(vi))
        for level in args.levels:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / f"{name}.ort"
                result = ort_export.export_ort(src, out, optimization_level=level, data=feeds)
                t_onnx = load_time(src, level, "onnx", args.repeat)
                t_ort = load_time(out, level, "ort", args.repeat)
                worst_rel = max(o.max_rel for o in result.report.outputs)
                row = [
                    name,
                    level,
                    f"{result.onnx_bytes / 1e6:.2f} MB",
                    f"{result.ort_bytes / 1e6:.2f} MB",
                    f"{result.ort_bytes / result.onnx_bytes:.3f}",
                    f"{t_onnx * 1e3:.1f} ms",
                    f"{t_ort * 1e3:.1f} ms",
                    f"{t_ort / t_onnx:.2f}",
                    f"{worst_rel:.2g}",
                ]
                print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
