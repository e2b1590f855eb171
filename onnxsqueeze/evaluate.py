"""Datasets and metrics: how good is a candidate model, in the units a budget is written in.

Datasets:

- an ``.npz`` of input arrays keyed by model input name (first axis = samples), with an optional
  ``labels`` array of class indices;
- a folder of images in the ImageFolder layout (``root/<class>/<image>``; classes are the sorted
  folder names and give the labels) or a flat folder of images (no labels), turned into an array
  by a :class:`Preprocess` spec (size, resize mode, mean/std, NCHW/NHWC, RGB/BGR).

Metrics and budgets live in :mod:`onnxsqueeze.metrics` (one copy for every command); they are
re-exported here. :class:`Evaluator` scores one output of a model on a dataset with one metric.
"""

# NOTE: this module imports nothing from passes/, search or cli/.

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze import runtime, shapes
from onnxsqueeze.errors import InputError
from onnxsqueeze.metrics import (
    METRICS,
    Budget,
    Metric,
    accuracy,
    agreement,
    cosine,
    iou,
    mae,
    sequence,
)
from onnxsqueeze.metrics import score as metric_score

LABELS_KEY = "labels"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------------------- datasets


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Model inputs (name -> array, first axis = samples) and optional integer labels."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = "data"

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InputError(f"{self.source}: no input arrays")
        counts = {k: (len(v) if np.ndim(v) else 0) for k, v in self.inputs.items()}
        if len(set(counts.values())) != 1:
            raise InputError(f"{self.source}: input arrays differ in sample count: {counts}")
        if self.labels is not None and len(self.labels) != len(self):
            raise InputError(
                f"{self.source}: {len(self.labels)} labels for {len(self)} samples; they must match"
            )
        if len(self) == 0:
            raise InputError(f"{self.source}: no samples")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, start: int, stop: int) -> Dataset:
        """Samples ``start:stop`` (a view)."""
        labels = None if self.labels is None else self.labels[start:stop]
        return Dataset(
            {k: v[start:stop] for k, v in self.inputs.items()}, labels, f"{self.source}[{start}:{stop}]"
        )

    def sha256(self) -> str:
        """A content hash of the arrays (names, dtypes, shapes and bytes), for cache keys."""
        import hashlib

        h = hashlib.sha256()
        items = [
            *sorted(self.inputs.items()),
            *([(LABELS_KEY, self.labels)] if self.labels is not None else []),
        ]
        for name, array in items:
            a = np.ascontiguousarray(array)
            h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        return h.hexdigest()


def load_npz_dataset(path: str | Path, *, labels_key: str = LABELS_KEY) -> Dataset:
    """An ``.npz`` of inputs keyed by input name, with optional ``labels``.

    Raises:
        InputError: the file is missing, unreadable or inconsistent.
    """
    arrays = sio.load_npz(path)
    labels = arrays.pop(labels_key, None)
    if labels is not None and not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{path}: '{labels_key}' must hold integer class indices, not {labels.dtype}")
    if not arrays:
        raise InputError(f"{path}: holds no input arrays (only '{labels_key}')")
    if labels is not None and labels.ndim != 1:
        raise InputError(
            f"{path}: '{labels_key}' has shape {list(labels.shape)}; expected one class index per sample"
        )
    return Dataset(arrays, labels, str(path))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preprocess:
    """How an image becomes a model input.

    Attributes:
        size: (height, width) of the model input.
        resize: ``crop``: resize the shorter side to ``size / crop_fraction`` then center-crop
            (torchvision's eval transform); ``stretch``: resize to ``size`` ignoring the aspect;
            ``pad``: fit inside ``size`` keeping the aspect and pad with zeros (letterbox).
        crop_fraction: see ``crop`` (0.875 gives torchvision's 256 -> 224).
        mean, std: per-channel normalization applied after ``scale``.
        scale: multiplies the 0..255 pixel values first (1/255 gives 0..1).
        layout: ``NCHW`` or ``NHWC``.
        channels: ``RGB``, ``BGR`` or ``GRAY`` (one channel).
    """

    size: tuple[int, int] = (224, 224)
    resize: Literal["crop", "stretch", "pad"] = "crop"
    crop_fraction: float = 0.875
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    scale: float = 1.0 / 255.0
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channels: Literal["RGB", "BGR", "GRAY"] = "RGB"

    def __post_init__(self) -> None:
        if self.resize not in ("crop", "stretch", "pad"):
            raise InputError(f"resize mode '{self.resize}': expected crop, stretch or pad")
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"layout '{self.layout}': expected NCHW or NHWC")
        if self.channels not in ("RGB", "BGR", "GRAY"):
            raise InputError(f"channels '{self.channels}': expected RGB, BGR or GRAY")
        n = 1 if self.channels == "GRAY" else 3
        if len(self.mean) not in (1, n) or len(self.std) not in (1, n):
            raise InputError(f"mean/std need 1 or {n} values for {self.channels}")
        if any(s == 0 for s in self.std) or min(self.size) <= 0 or not 0 < self.crop_fraction <= 1:
            raise InputError("preprocessing: std must be nonzero, size positive, crop_fraction in (0, 1]")

    def __call__(self, image: Any) -> np.ndarray:
        """A PIL image to one float32 sample (``[C, H, W]`` or ``[H, W, C]``)."""
        from PIL import Image

        image = image.convert("L" if self.channels == "GRAY" else "RGB")
        h, w = self.size
        if self.resize == "stretch":
            image = image.resize((w, h), Image.Resampling.BILINEAR)
        elif self.resize == "crop":
            sh, sw = round(h / self.crop_fraction), round(w / self.crop_fraction)
            ratio = max(sh / image.height, sw / image.width)
            nw, nh = max(sw, round(image.width * ratio)), max(sh, round(image.height * ratio))
            image = image.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - w) // 2, (nh - h) // 2
            image = image.crop((left, top, left + w, top + h))
        else:
            ratio = min(h / image.height, w / image.width)
            nw, nh = max(1, round(image.width * ratio)), max(1, round(image.height * ratio))
            canvas = Image.new(image.mode, (w, h))
            canvas.paste(image.resize((nw, nh), Image.Resampling.BILINEAR), ((w - nw) // 2, (h - nh) // 2))
            image = canvas
        x = np.asarray(image, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        if self.channels == "BGR":
            x = x[:, :, ::-1]
        x = (
            (x * np.float32(self.scale) - np.asarray(self.mean, np.float32))
            / np.asarray(self.std, np.float32)
        ).astype(np.float32)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)


def load_image_folder(
    root: str | Path,
    spec: Preprocess,
    *,
    input_name: str = "input",
    limit: int | None = None,
    on_image: Progress | None = None,
) -> Dataset:
    """Images under ``root`` as a dataset: ImageFolder layout with labels, or a flat folder without.

    Args:
        root: the folder.
        spec: the preprocessing.
        input_name: the model input the images feed.
        limit: keep at most this many images (the first ones in sorted order, per class in turn).
        on_image: progress callback ``(done, total)``.

    Raises:
        InputError: the folder is missing, holds no images, or an image cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of images")

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and images(p))
    files: list[tuple[Path, int]]
    if classes:
        files = [(p, i) for i, c in enumerate(classes) for p in images(root / c)]
    else:
        files = [(p, -1) for p in images(root)]
    if not files:
        raise InputError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or in class subfolders")
    if limit is not None:
        files = files[:limit]
    samples = []
    for k, (path, _) in enumerate(files):
        try:
            with Image.open(path) as im:
                samples.append(spec(im))
        except (OSError, UnidentifiedImageError) as e:
            raise InputError(f"{path}: cannot read the image ({e})") from e
        if on_image:
            on_image(k + 1, len(files))
    labels = np.asarray([label for _, label in files], dtype=np.int64) if classes else None
    return Dataset({input_name: np.stack(samples)}, labels, str(root))


# ---------------------------------------------------------------------------------------- metrics
# One copy in metrics.py; imported above and re-exported (see __all__).


# ------------------------------------------------------------------------------------- evaluation


def resize_inputs(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Bilinearly resize 4-D NCHW inputs whose spatial size differs from the model's static one.

    A candidate whose input resolution was rewritten expects smaller images; the evaluation feeds
    it the same data resized (half-pixel centers, as ONNX Resize ``linear``), as a deployment
    would. Other inputs pass through unchanged.
    """
    out = dict(inputs)
    for vi in shapes.graph_inputs(model):
        x = out.get(vi.name)
        dims = shapes.declared_shape(vi)
        if x is None or x.ndim != 4 or len(dims) != 4:
            continue
        h, w = dims[2], dims[3]
        if isinstance(h, int) and isinstance(w, int) and (h, w) != tuple(x.shape[2:]):
            out[vi.name] = _bilinear(x, h, w)
    return out


def _bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = axis(x.shape[2], h)
    x0, x1, fx = axis(x.shape[3], w)
    rows = x[:, :, y0] * (1 - fy)[:, None] + x[:, :, y1] * fy[:, None]
    return np.ascontiguousarray(rows[..., x0] * (1 - fx) + rows[..., x1] * fx, dtype=x.dtype)


class Evaluator:
    """Scores models on one dataset with one metric; the original's outputs are computed once.

    Args:
        reference: the original model (the teacher for label-free metrics).
        dataset: the evaluation data.
        metric: a name in ``METRICS``.
        output: the output to score (default: the first).
        threshold: the binarization threshold of ``iou``.
        class_axis: the class axis of ``accuracy``/``agreement`` (default: see ``metrics``).
        provider: execution provider.
        batch_size: samples per run (models with a static batch use theirs).
        on_batch: progress callback ``(done, total)`` for every evaluation.

    Raises:
        InputError: unknown metric or output, ``accuracy`` without labels.
    """

    def __init__(
        self,
        reference: onnx.ModelProto,
        dataset: Dataset,
        metric: str = "accuracy",
        *,
        output: str | None = None,
        threshold: float = 0.5,
        class_axis: int | None = None,
        provider: str = "cpu",
        batch_size: int = 64,
        on_batch: Progress | None = None,
    ) -> None:
        from onnxsqueeze.metrics import get

        self.metric = get(metric)
        if self.metric.needs_labels and dataset.labels is None:
            raise InputError(
                f"{dataset.source}: metric 'accuracy' needs '{LABELS_KEY}'; "
                "without labels use --metric agreement, iou, cosine or mae"
            )
        names = [o.name for o in reference.graph.output]
        if output is not None and output not in names:
            raise InputError(f"output '{output}' is not an output of the model; it has {names}")
        self.output_index = names.index(output) if output is not None else 0
        self.reference = reference
        self.dataset = dataset
        self.threshold = threshold
        self.class_axis = class_axis
        self.provider = provider
        self.batch_size = batch_size
        self.on_batch = on_batch
        self._reference_out: np.ndarray | None = None

    def _feeds(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        feeds = resize_inputs(model, self.dataset.inputs)
        cast = {}
        for vi in shapes.graph_inputs(model):
            if vi.name not in feeds:
                raise InputError(
                    f"{self.dataset.source}: no array for model input '{vi.name}'; it has {sorted(feeds)}"
                )
            cast[vi.name] = np.asarray(feeds[vi.name]).astype(shapes.input_dtype(vi), copy=False)
        return cast

    def _open(self, model: onnx.ModelProto | Path) -> tuple[Any, dict[str, np.ndarray]]:
        """An optimized session (as deployed) and the dataset's feeds for a model or a model file
        (onnxruntime reads a file's weights from beside it; only its graph is parsed here)."""
        sess = runtime.session(model, provider=self.provider, optimize=True)
        return sess, self._feeds(model if isinstance(model, onnx.ModelProto) else sio.load_interface(model))

    def outputs(self, model: onnx.ModelProto | Path, on_batch: Progress | None = None) -> np.ndarray:
        """The scored output of ``model`` (or a model file) over the dataset (optimized session, as deployed)."""
        sess, feeds = self._open(model)
        out = runtime.run_batched(sess, feeds, batch_size=self.batch_size, on_batch=on_batch or self.on_batch)
        return list(out.values())[self.output_index]

    def staged(self, model: onnx.ModelProto | Path, order: np.ndarray) -> Callable[[int], float]:
        """Score ``model`` on growing prefixes of ``order`` (a permutation of the samples).

        ``f(n)`` is the metric on the samples ``order[:n]``; each call runs only the samples not
        run yet, in one session. ``f(len(dataset))`` is :meth:`score` (same samples, same order
        of the metric's sum). A model with a fixed batch size runs whole batches: ``n`` is then
        rounded up to a multiple of it.
        """
        sess, feeds = self._open(model)
        total = len(order)
        step = runtime.fixed_batch(sess) or 1
        parts: list[np.ndarray] = []
        done = 0

        def score_prefix(n: int) -> float:
            nonlocal done
            n = min(total, -(-n // step) * step)
            if n > done:
                idx = order[done:n]
                out = runtime.run_batched(
                    sess, {k: v[idx] for k, v in feeds.items()}, batch_size=self.batch_size
                )
                parts.append(list(out.values())[self.output_index])
                done = n
            y = np.concatenate(parts)[:n]
            if n == total:
                full = np.empty_like(y)
                full[order] = y
                return self.score_outputs(full)
            return self.score_outputs(y, indices=order[:n])

        return score_prefix

    def reference_outputs(self) -> np.ndarray:
        if self._reference_out is None:
            self._reference_out = self.outputs(self.reference)
        return self._reference_out

    def score_outputs(self, y: np.ndarray, indices: np.ndarray | None = None) -> float:
        """The metric of an output array (shaped like the original's), or of the samples
        ``indices`` when ``y`` holds only theirs (samples on the first axis)."""
        ref = None if self.metric.needs_labels else self.reference_outputs()
        labels = self.dataset.labels
        if indices is not None:
            ref = ref[indices] if ref is not None else None
            labels = labels[indices] if labels is not None else None
        return metric_score(
            self.metric.name,
            y,
            ref if ref is not None else y,
            labels=labels,
            threshold=self.threshold,
            class_axis=self.class_axis,
            samples=len(self.dataset) if indices is None else len(indices),
        )

    def score(self, model: onnx.ModelProto | Path, on_batch: Progress | None = None) -> float:
        """Evaluate ``model`` on the dataset with the metric."""
        return self.score_outputs(self.outputs(model, on_batch))

    def relative_scale(self, baseline: float) -> float:
        """What a relative budget is a percentage of: the baseline, or for ``mae`` the outputs' size."""
        if self.metric.name == "mae":
            return float(np.mean(np.abs(self.reference_outputs())))
        return abs(baseline)


__all__ = [
    "METRICS",
    "Budget",
    "Dataset",
    "Evaluator",
    "Metric",
    "Preprocess",
    "accuracy",
    "agreement",
    "cosine",
    "iou",
    "load_image_folder",
    "load_npz_dataset",
    "mae",
    "resize_inputs",
    "sequence",
]
