"""Train a small CNN on scikit-learn's digits (1,797 real 8x8 handwritten digits) and export it.

The images are upsampled to 32x32 (bilinear) and normalized, so the network has spatial extent
worth squeezing (resolution, channels) while training in well under a minute on 2 CPU cores.

Writes into ``--out`` (default ``.cache/models``):

- ``digits_cnn.onnx``: input ``input`` float32 [N, 1, 32, 32], output ``logits`` [N, 10];
- ``digits_val.npz``: the held-out split, ``input`` and ``labels`` (360 samples);
- ``digits_train.npz``: the training split, same keys (for distillation and calibration).

Usage: ``python -m models.digits [--out DIR] [--epochs N] [--seed S] [--force]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESOLUTION = 32
MEAN, STD = 0.30, 0.40  # of the 0..1 pixel values of the upsampled training images


def load_digits_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val), x float32 [N, 1, 32, 32] normalized, a fixed 80/20 split."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    xt = torch.from_numpy(x)[:, None]
    xt = F.interpolate(xt, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    x = ((xt.numpy() - MEAN) / STD).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = 360
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def build_model(width: int = 16):
    import torch.nn as nn

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    w = width
    return nn.Sequential(
        *block(1, w),
        *block(w, 2 * w),
        nn.MaxPool2d(2),
        *block(2 * w, 4 * w),
        nn.MaxPool2d(2),
        *block(4 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, 10),
    )


def train(epochs: int = 12, seed: int = 0, width: int = 16, verbose: bool = True):
    """Train the CNN; returns (model, val_accuracy, arrays)."""
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    xtr, ytr, xva, yva = load_digits_arrays(seed)
    model = build_model(width)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(xtr) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        # light augmentation: random shifts of up to 2 pixels
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            xb = xt[idx]
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            opt.zero_grad()
            loss = loss_fn(model(xb), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xva, yva)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, val accuracy {acc:.2%}", flush=True)
    return model, evaluate(model, xva, yva), (xtr, ytr, xva, yva)


def evaluate(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float(np.mean(pred == y))


def export(model, path: Path) -> None:
    """Export with a dynamic batch axis (torch.onnx, TorchScript-based exporter: small and fast)."""
    import torch

    model.eval()
    example = torch.zeros(1, 1, RESOLUTION, RESOLUTION)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/models"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even if the files exist")
    args = parser.parse_args(argv)
    files = [args.out / n for n in ("digits_cnn.onnx", "digits_val.npz", "digits_train.npz")]
    if not args.force and all(f.exists() for f in files):
        print(f"{args.out}/digits_cnn.onnx exists (use --force to retrain)")
        return 0
    import torch

    from onnxsqueeze import io as sio

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, acc, (xtr, ytr, xva, yva) = train(args.epochs, args.seed)
    elapsed = time.perf_counter() - start
    tmp = args.out / ".digits_cnn.export.onnx"
    export(model, tmp)
    # Re-save through onnxsqueeze: checked, atomic and byte-deterministic.
    sio.save(sio.load(tmp), args.out / "digits_cnn.onnx")
    tmp.unlink()
    sio.save_npz(args.out / "digits_val.npz", {"input": xva, "labels": yva})
    sio.save_npz(args.out / "digits_train.npz", {"input": xtr, "labels": ytr})
    info = {"val_accuracy": acc, "train_seconds": round(elapsed, 1), "torch": torch.__version__}
    print(json.dumps(info))
    return 0 if acc >= 0.97 else 1


if __name__ == "__main__":
    raise SystemExit(main())
