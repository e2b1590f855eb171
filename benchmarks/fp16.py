"""Compare onnxsqueeze's measured fp16 conversion with onnxconverter-common on real models, offline.

For each model: the float32 original, ``onnxconverter_common.float16.convert_float_to_float16``
(``keep_io_types=True``, its defaults otherwise) and ``onnxsqueeze.precision.convert_fp16`` (cleanup,
measurement on the same inputs, conversion, verification). Reported per converter: whether
onnxruntime loads the result, max abs error, normalized error (``max abs / max |fp32|``), worst
cosine, top-1 agreement (class-score outputs), accuracy on labels where the data has them, size
ratio, conversion time (ours includes measuring and verifying) and CPU latency ratio against the
float32 model, measured in the same process with interleaved runs (onnxruntime all optimizations,
one thread, median of ``--repeats``).

Models (all offline; recipes export missing ones into .cache/models):
digits CNN (real sklearn digits, accuracy on 360 validation images), torchvision resnet18 and
mobilenet_v3_small (architectures, deterministic random weights), all-MiniLM-L6-v2 (pretrained,
tokenized sentences), facenet-pytorch MTCNN PNet/RNet/ONet (pretrained, random images in [-1, 1]).

Usage: ``PYTHONPATH=. python benchmarks/fp16.py [--models a,b] [--repeats N] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".cache" / "models"
MODELS = (
    "digits",
    "resnet18",
    "mobilenet_v3_small",
    "minilm",
    "facenet_pnet",
    "facenet_rnet",
    "facenet_onet",
)


def _rand(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)


def load_case(name: str) -> tuple[Path, dict[str, np.ndarray], np.ndarray | None, dict[str, np.ndarray]]:
    """(model path, evaluation feeds, labels or None, one-sample latency feeds)."""
    from onnxsqueeze import io as sio

    if name == "digits":
        from tests.helpers import digits_assets

        path, val, _ = digits_assets()
        data = sio.load_npz(val)
        return path, {"input": data["input"]}, data["labels"], {"input": data["input"][:1]}
    if name in ("resnet18", "mobilenet_v3_small"):
        from models import zoo

        path = zoo.ensure(name, CACHE)
        x = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
        return path, {"input": x}, None, {"input": x[:1]}
    if name == "minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from models import minilm

        path = minilm.ensure(CACHE)
        feeds = sio.load_npz(CACHE / "minilm_inputs.npz")
        return path, feeds, None, {k: v[:1] for k, v in feeds.items()}
    if name.startswith("facenet_"):
        from models import facenet

        net = name.removeprefix("facenet_")
        path = facenet.ensure(net, CACHE)
        shape = {"pnet": (4, 3, 120, 160), "rnet": (16, 3, 24, 24), "onet": (16, 3, 48, 48)}[net]
        x = _rand(shape, seed=1)
        return path, {"input": x}, None, {"input": x[:1]}
    raise SystemExit(f"unknown model '{name}'; choose from {', '.join(MODELS)}")


def theirs(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_float_to_float16(model, keep_io_types=True)


def metrics(
    ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, Any]:
    from onnxsqueeze.verify import compare

    report = compare(ref, cand)
    worst_norm = 0.0
    for name, r in ref.items():
        c = cand[name] if name in cand else list(cand.values())[list(ref).index(name)]
        r64, c64 = r.astype(np.float64), np.asarray(c).astype(np.float64)
        if np.any(np.isfinite(r64) & ~np.isfinite(c64)):
            worst_norm = float("inf")
            continue
        worst_norm = max(worst_norm, float(np.max(np.abs(r64 - c64)) / max(np.max(np.abs(r64)), 1e-30)))
    top1 = [o.top1_agreement for o in report.outputs if o.top1_agreement is not None]
    out: dict[str, Any] = {
        "max_abs": report.max_abs,
        "normalized": worst_norm,
        "cosine": report.min_cosine,
        "top1_agreement": min(top1) if top1 else None,
        "nonfinite": sum(o.nonfinite for o in report.outputs),
    }
    if labels is not None:
        first = next(iter(cand.values()))
        out["accuracy"] = float(np.mean(np.argmax(first, axis=1) == labels))
    return out


def latency(
    models: dict[str, onnx.ModelProto], feeds: dict[str, np.ndarray], repeats: int
) -> dict[str, float]:
    """Median seconds per run of each model, runs interleaved so machine noise hits all alike.

    Denormals are flushed to zero in every session: models with random weights (the torchvision
    architectures here) decay into float32 subnormals, which makes float32 artificially slow on CPU
    (mobilenet_v3_small: ~6x) and would credit fp16, which flushes them, with a fake speed-up. The
    flag lives in the thread state, which other sessions of a long process can leave changed, so
    the timing runs in a fresh subprocess that creates only these sessions.
    """
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for k, m in models.items():
            paths[k] = str(Path(tmp) / f"{k}.onnx")
            Path(paths[k]).write_bytes(m.SerializeToString())
        np.savez(Path(tmp) / "feeds.npz", **feeds)
        job = {"paths": paths, "feeds": str(Path(tmp) / "feeds.npz"), "repeats": repeats}
        done = subprocess.run(
            [sys.executable, __file__, "--latency-worker", json.dumps(job)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _latency_worker(job: dict[str, Any]) -> dict[str, float]:
    import onnxruntime as ort

    with np.load(job["feeds"]) as npz:
        feeds = {k: npz[k] for k in npz.files}
    sessions = {}
    for k, path in job["paths"].items():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        sessions[k] = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(3):
        for s in sessions.values():
            s.run(None, feeds)
    for _ in range(job["repeats"]):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(name: str, repeats: int) -> dict[str, Any]:
    from onnxsqueeze import io as sio
    from onnxsqueeze.precision import convert_fp16
    from onnxsqueeze.verify import run

    path, feeds, labels, one = load_case(name)
    model = sio.load(path)
    size32 = len(model.SerializeToString())
    ref = run(model, feeds)
    row: dict[str, Any] = {"model": name, "fp32_bytes": size32}
    if labels is not None:
        row["fp32_accuracy"] = float(np.mean(np.argmax(next(iter(ref.values())), axis=1) == labels))
    candidates: dict[str, onnx.ModelProto] = {"fp32": model}

    t = time.perf_counter()
    try:
        theirs_model = theirs(model)
        row["theirs"] = {"convert_s": time.perf_counter() - t}
        try:
            out = run(theirs_model, feeds)
            row["theirs"] |= {"loads": True} | metrics(ref, out, labels)
            candidates["theirs"] = theirs_model
        except Exception as e:
            row["theirs"] |= {"loads": False, "error": str(e).strip().splitlines()[0][:200]}
        row["theirs"]["size_ratio"] = len(theirs_model.SerializeToString()) / size32
    except Exception as e:
        row["theirs"] = {"loads": False, "error": f"conversion failed: {str(e).splitlines()[0][:200]}"}

    t = time.perf_counter()
    result = convert_fp16(model, feeds)
    ours_s = time.perf_counter() - t
    out = run(result.model, feeds)
    row["ours"] = {
        "convert_s": ours_s,
        "loads": True,
        "passed": result.passed,
        "fp32_nodes": len(result.fp32_nodes),
        "converted_nodes": result.converted_nodes,
        "size_ratio": len(result.model.SerializeToString()) / size32,
        "kept": dict(list(result.fp32_nodes.items())[:8]),
    } | metrics(ref, out, labels)
    candidates["ours"] = result.model

    lat = latency(candidates, one, repeats)
    row["fp32_latency_ms"] = lat["fp32"] * 1e3
    for k in ("theirs", "ours"):
        if k in lat:
            row[k]["latency_ratio"] = lat[k] / lat["fp32"]
    return row


def _fmt(side: dict[str, Any], labels: bool) -> list[str]:
    if not side.get("loads"):
        return ["**no**: " + side.get("error", "")[:90].replace("|", "/"), "-", "-", "-", "-", "-", "-"]
    agree = side.get("top1_agreement")
    acc = f" / acc {side['accuracy']:.1%}" if labels and "accuracy" in side else ""
    return [
        "yes",
        f"{side['max_abs']:.3g}",
        f"{side['normalized']:.2e}",
        f"{side['cosine']:.6f}" + ("" if agree is None else f" / top-1 {agree:.1%}") + acc,
        f"{side['size_ratio']:.2f}",
        f"{side['convert_s']:.2f}",
        f"{side.get('latency_ratio', float('nan')):.2f}",
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | converter | loads | max abs | normalized | cosine / agreement | size | convert s "
        "| CPU latency vs fp32 |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        labels = "fp32_accuracy" in row
        name = (
            row["model"]
            + f" (fp32 {row['fp32_latency_ms']:.2f} ms"
            + (f", acc {row['fp32_accuracy']:.1%})" if labels else ")")
        )
        for k, label in (("theirs", "onnxconverter-common"), ("ours", "onnxsqueeze")):
            cells = _fmt(row[k], labels)
            if k == "ours":
                cells[0] = f"yes ({row[k]['fp32_nodes']} fp32 nodes)"
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--latency-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.latency_worker:
        print(json.dumps(_latency_worker(json.loads(args.latency_worker))))
        return 0
    rows = []
    for name in args.models.split(","):
        print(f"... {name}", file=sys.stderr, flush=True)
        rows.append(bench(name.strip(), args.repeats))
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
