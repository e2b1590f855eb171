"""Resolution sweep of torchvision architectures: MACs and measured CPU latency per input size.

For each architecture (exported by ``models/zoo.py`` at 224x224, deterministic random weights),
the model is rewritten to each resolution with ``RewriteInputResolutionPass`` and timed at batch 1
in onnxruntime (all graph optimizations) in interleaved rounds, so that machine noise hits every
resolution alike. Figures are ratios against the 224x224 model measured in the same run. Accuracy
is not reported: the weights are random (see the segmenter results for a trained model).

Usage: ``python benchmarks/resolution.py [--models resnet18,...] [--sizes 224,192,160,128]
[--threads 1] [--rounds 5] [--runs 10] [--json]``

``--interface MODEL.onnx --resolution HxW`` instead times the deployed artifact of
``resize --keep-interface`` (its two interface Resizes included) against the original and against
the plain model at that resolution, all at batch 1 on the model's own input size.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50,mobilenet_v3_large,mobilenet_v3_small")
    parser.add_argument("--sizes", default="224,192,160,128")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--interface", type=Path, help="time keep-interface vs plain for this model")
    parser.add_argument("--resolution", default="64x64", help="with --interface: the inner resolution")
    args = parser.parse_args(argv)
    if args.interface is not None:
        return interface(args)

    from models import zoo
    from onnxsqueeze import io as sio
    from onnxsqueeze.resolution_sweep import parse_sweep, sweep_resolutions

    sizes = [s for s in parse_sweep(args.sizes) if s != (224, 224)]
    results = {}
    start = time.time()
    for name in args.models.split(","):
        model = sio.load(zoo.ensure(name, REPO / ".cache" / "models"), check=False)
        points = sweep_resolutions(
            model, sizes, evaluate=False, threads=args.threads, rounds=args.rounds, runs=args.runs
        )
        results[name] = [p.to_dict() for p in points]
        print(f"{name}: done ({time.time() - start:.0f} s)", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"onnxruntime CPU, batch 1, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    print()
    print("| model | resolution | MACs (G) | MACs ratio | latency (ms) | latency ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for name, points in results.items():
        for p in points:
            res = "x".join(map(str, p["resolution"]))
            if p["error"]:
                print(f"| {name} | {res} | error: {p['error']} | | | |")
                continue
            print(
                f"| {name} | {res} | {p['macs'] / 1e9:.3f} | {p['macs_ratio']:.3f} | "
                f"{p['latency_ms']:.2f} | {p['latency_ratio']:.3f} |"
            )
    return 0


def interface(args: argparse.Namespace) -> int:
    """Latency of original, keep-interface artifact and plain model (ratios to the original)."""
    from onnxsqueeze import io as sio
    from onnxsqueeze import runtime, shapes
    from onnxsqueeze.passes.resolution import parse_resolution, rewrite_resolution
    from onnxsqueeze.runtime import time_sessions

    model = sio.load(args.interface)
    size = parse_resolution(args.resolution)
    kept, info, _ = rewrite_resolution(model, resolution=size, keep_interface=True)
    plain, _, _ = rewrite_resolution(model, resolution=size)
    feeds = shapes.make_inputs(model, shapes.resolve_input_shapes(model), seed=0)
    small = shapes.make_inputs(plain, shapes.resolve_input_shapes(plain), seed=0)
    sessions = [runtime.session(m, optimize=True, threads=args.threads) for m in (model, kept, plain)]
    ms = time_sessions(sessions, [feeds, feeds, small], rounds=args.rounds, runs=args.runs)
    rows = [
        ("original", ms[0]),
        (f"keep-interface {args.resolution}", ms[1]),
        (f"plain {args.resolution}", ms[2]),
    ]
    if args.json:
        print(json.dumps({name: {"ms": v, "ratio": v / ms[0]} for name, v in rows}, indent=2))
        return 0
    print(
        f"{args.interface}: onnxruntime CPU, batch 1, {args.threads} thread(s); outputs resized back: "
        f"{', '.join(info.resized_outputs) or '-'}"
    )
    print()
    print("| model | latency (ms) | ratio |")
    print("|---|---:|---:|")
    for name, v in rows:
        print(f"| {name} | {v:.3f} | {v / ms[0]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
