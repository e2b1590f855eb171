"""Train a small U-Net to segment dark structure (ink, edges, shadows) in real photographs.

Data: scikit-image's bundled sample images (real photographs and scans, no download). The target
is a classical segmentation, a Gaussian-weighted local threshold (``threshold_local``, block 31):
a pixel is foreground when the smoothed image is darker than its neighbourhood by more than an
offset. This is what document binarization does; the network has to learn local contrast over a
receptive field of ~30 pixels, so lowering the resolution costs it something measurable.

Training images and validation images are disjoint (validation: coins, page, text, clock, cell).

Writes into ``--out`` (default ``.cache/models``):

- ``segmenter.onnx``: input ``image`` float32 [N, 1, 128, 128] (grey, normalized), output
  ``mask`` [N, 1, 128, 128] (logits; foreground where > 0); the batch is dynamic;
- ``segmenter_val.npz``: ``image`` [48, 1, 128, 128] crops of the validation images and
  ``labels`` [48, 1, 128, 128] (uint8 masks).

The decoder upsamples with ``F.interpolate(size=skip.shape[-2:])``: exported at a static size,
those sizes become constants derived from the input size, which the resolution rewrite recomputes.

Usage: ``python -m models.segmenter [--out DIR] [--steps N] [--seed S]``: about 135 s of CPU time
(roughly a minute on 2 idle cores; measured 7.5 minutes on the loaded shared dev machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SIZE = 128
TRAIN_IMAGES = (
    "camera",
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "moon",
    "brick",
    "grass",
    "gravel",
    "horse",
)
VAL_IMAGES = ("coins", "page", "text", "clock", "cell")
MEAN, STD = 0.45, 0.25
BLOCK, OFFSET = 31, 0.03


def load_image(name: str) -> np.ndarray:
    """A scikit-image sample as grey float32 in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb

    img = getattr(skimage.data, name)()
    if img.dtype == bool:
        img = img.astype(np.float32)
    if img.ndim == 3:
        img = rgb2gray(rgba2rgb(img) if img.shape[2] == 4 else img)
    img = img.astype(np.float32)
    return img / 255.0 if img.max() > 1.0 else img


def target(img: np.ndarray) -> np.ndarray:
    """The classical segmentation: darker than the local Gaussian-weighted mean by ``OFFSET``."""
    from skimage.filters import gaussian, threshold_local

    smooth = gaussian(img, sigma=1.0)
    return (smooth < threshold_local(smooth, BLOCK, method="gaussian", offset=OFFSET)).astype(np.uint8)


def normalize(img: np.ndarray) -> np.ndarray:
    return ((img - MEAN) / STD).astype(np.float32)


def crops(img: np.ndarray, mask: np.ndarray, size: int, n: int, rng: np.random.Generator):
    h, w = img.shape
    if h < size or w < size:  # pad small images by reflection
        ph, pw = max(0, size - h), max(0, size - w)
        img = np.pad(img, ((0, ph), (0, pw)), mode="reflect")
        mask = np.pad(mask, ((0, ph), (0, pw)), mode="reflect")
        h, w = img.shape
    ys = rng.integers(0, h - size + 1, n)
    xs = rng.integers(0, w - size + 1, n)
    return (
        np.stack([img[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)]),
        np.stack([mask[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)]),
    )


def validation_set(seed: int = 0, per_image: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(images [N,1,128,128] normalized, masks [N,1,128,128] uint8) from the held-out images."""
    rng = np.random.default_rng(seed + 1)
    xs, ys = [], []
    for name in VAL_IMAGES:
        img = load_image(name)
        x, y = crops(img, target(img), SIZE, per_image, rng)
        xs.append(x)
        ys.append(y)
    x = normalize(np.concatenate(xs))[:48, None]
    y = np.concatenate(ys)[:48, None].astype(np.uint8)
    return x, y


def build_model(width: int = 8):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self, w: int) -> None:
            super().__init__()
            self.enc1, self.enc2, self.enc3 = block(1, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.dec2, self.dec1 = block(6 * w, 2 * w), block(3 * w, w)
            self.head = nn.Conv2d(w, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e1 = self.enc1(x)
            e2 = self.enc2(F.max_pool2d(e1, 2))
            e3 = self.enc3(F.max_pool2d(e2, 2))
            u2 = F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False)
            d2 = self.dec2(torch.cat([u2, e2], 1))
            u1 = F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False)
            d1 = self.dec1(torch.cat([u1, e1], 1))
            return self.head(d1)

    return UNet(width)


def iou(logits: np.ndarray, masks: np.ndarray) -> float:
    pred = logits > 0
    gt = masks > 0
    union = np.count_nonzero(pred | gt)
    return float(np.count_nonzero(pred & gt) / union) if union else 1.0


def train(
    steps: int = 250, seed: int = 0, width: int = 8, crop: int = 64, batch: int = 12, verbose: bool = True
):
    """Train the U-Net on random crops; returns (model, val_iou, (x_val, y_val))."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pool = []
    for name in TRAIN_IMAGES:
        img = load_image(name)
        pool.append((normalize(img), target(img)))
    x_val, y_val = validation_set(seed)
    model = build_model(width)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    start = time.time()
    model.train()
    for step in range(steps):
        picks = rng.integers(0, len(pool), batch)
        xb, yb = [], []
        for p in picks:
            x, y = crops(*pool[p], crop, 1, rng)
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, :, ::-1]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            xb.append(x)
            yb.append(y)
        xt = torch.from_numpy(np.ascontiguousarray(np.concatenate(xb))[:, None])
        yt = torch.from_numpy(np.ascontiguousarray(np.concatenate(yb))[:, None].astype(np.float32))
        logits = model(xt)
        loss = F.binary_cross_entropy_with_logits(logits, yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if verbose and (step + 1) % 50 == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    model.eval()
    with torch.no_grad():
        val_logits = model(torch.from_numpy(x_val)).numpy()
    return model, iou(val_logits, y_val), (x_val, y_val)


def export(model, path: Path) -> Path:
    import torch

    from models.export import export_torchscript

    return export_torchscript(
        model,
        (torch.zeros(1, 1, SIZE, SIZE),),
        path,
        input_names=["image"],
        output_names=["mask"],
        dynamic_axes={"image": {0: "batch"}, "mask": {0: "batch"}},
    )


def ensure(out: Path = Path(".cache/models")) -> tuple[Path, Path]:
    """(segmenter.onnx, segmenter_val.npz), training them first if they are not cached."""
    model, val = out / "segmenter.onnx", out / "segmenter_val.npz"
    if not (model.exists() and val.exists()):
        assert main(["--out", str(out), "--quiet"]) == 0
    return model, val


def main(argv: list[str] | None = None) -> int:
    import torch

    from onnxsqueeze import io as sio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/models"))
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start = time.time()
    model, val_iou, (x_val, y_val) = train(args.steps, args.seed, verbose=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    path = export(model, args.out / "segmenter.onnx")
    sio.save_npz(args.out / "segmenter_val.npz", {"image": x_val, "labels": y_val})
    print(
        json.dumps(
            {
                "model": str(path),
                "val_iou": round(val_iou, 4),
                "val_foreground": round(float(y_val.mean()), 4),
                "train_seconds": round(time.time() - start, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
