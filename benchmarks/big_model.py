"""A model over protobuf's 2 GB limit, and the time and peak memory of each command on it.

Generates (seeded, never committed) a stack of MatMul layers whose float32 weights live in one
external-data file beside the model, written layer by layer so the generator itself holds one
layer at a time. Then runs ``inspect``, ``verify``, ``fp16``, ``prune --sparsity`` and ``squeeze``
on it as subprocesses and reports each one's wall time, peak RSS (``wait4``'s ``ru_maxrss``) and
exit code, as a markdown table (benchmarks/RESULTS.md, "Models over 2 GB").

    PYTHONPATH=. python benchmarks/big_model.py --out .cache/big --width 11600 --layers 4
    PYTHONPATH=. python benchmarks/big_model.py --out .cache/big --clean   # delete the big files
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper


def generate(out: Path, width: int, layers: int, seed: int = 0) -> Path:
    """Write ``big.onnx`` + ``big.onnx.data`` (``layers`` MatMul+Relu of ``width`` x ``width``)."""
    out.mkdir(parents=True, exist_ok=True)
    model_path, data_path = out / "big.onnx", out / "big.onnx.data"
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    offset = 0
    with open(data_path, "wb") as f:
        for i in range(layers):
            # 1/sqrt(width) keeps activations O(1) through the stack (fp16 stays in range)
            w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
            raw = w.tobytes()
            del w
            pad = (-offset) % 4096
            f.write(b"\0" * pad)
            offset += pad
            f.write(raw)
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[width, width])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_path.name), ("offset", str(offset)), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            offset += len(raw)
            del raw
            inits.append(t)
            src = "x" if i == 0 else f"r{i - 1}"
            nodes.append(helper.make_node("MatMul", [src, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
            last = i == layers - 1
            nodes.append(helper.make_node("Relu", [f"h{i}"], ["y" if last else f"r{i}"], name=f"relu{i}"))
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="big_model.py"
    )
    model.ir_version = 8
    model_path.write_bytes(model.SerializeToString())
    x = rng.standard_normal((8, width), dtype=np.float32)
    np.savez(out / "data.npz", x=x, labels=np.arange(8) % 4)
    return model_path


def _rss_gib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def measure(args: list[str], max_rss_gib: float) -> dict[str, object]:
    """Run ``python -m onnxsqueeze ARGS``: wall seconds, peak RSS (GiB), exit code, last stderr line.

    A run whose RSS passes ``max_rss_gib`` is stopped (SIGKILL) so a shared machine stays usable;
    it is reported as killed.
    """
    t0 = time.perf_counter()
    with open(os.devnull, "w") as devnull, tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "onnxsqueeze", *args], stdout=devnull, stderr=errf, text=True
        )
        killed = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if not killed and _rss_gib(proc.pid) > max_rss_gib:
                proc.kill()
                killed = True
            time.sleep(0.2)
        errf.seek(0)
        lines = [ln for ln in errf.read().splitlines() if ln.strip()]
    return {
        "command": "onnxsqueeze " + " ".join(args),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),  # ru_maxrss is KiB on Linux
        "exit": f"killed above {max_rss_gib:g} GiB" if killed else os.waitstatus_to_exitcode(status),
        "last_line": lines[-1][:200] if lines else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(".cache/big"))
    ap.add_argument("--width", type=int, default=11600)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--only", default="inspect,verify,fp16,prune,squeeze")
    ap.add_argument("--max-rss-gib", type=float, default=12.0, help="Stop a command above this RSS.")
    ap.add_argument("--clean", action="store_true", help="Delete the generated files and exit.")
    args = ap.parse_args()
    if args.clean:
        shutil.rmtree(args.out, ignore_errors=True)
        return
    model = args.out / "big.onnx"
    if not model.exists():
        t0 = time.perf_counter()
        generate(args.out, args.width, args.layers)
        print(f"generated {model} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    size = model.stat().st_size + (args.out / "big.onnx.data").stat().st_size
    print(f"model + external data: {size / 2**30:.2f} GiB", file=sys.stderr)
    data = args.out / "data.npz"
    runs = {
        "inspect": ["inspect", str(model)],
        "verify": ["verify", str(model), str(model), "--data", str(data), "--tolerance", "0"],
        "fp16": [
            "fp16",
            str(model),
            "-o",
            str(args.out / "big.fp16.onnx"),
            "--data",
            str(data),
            "--samples",
            "2",
        ],
        "prune": ["prune", str(model), "--sparsity", "0.5", "-o", str(args.out / "big.pruned.onnx")],
        "squeeze": [
            "squeeze",
            str(model),
            "--data",
            str(data),
            "-o",
            str(args.out / "squeeze"),
            "--techniques",
            "fp16,sparsity,int8-weights",
            "--max-drop",
            "100",
            "--no-cache",
            "--objective",
            "size",
        ],
    }
    rows = []
    for name in args.only.split(","):
        row = measure(runs[name], args.max_rss_gib)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print("| command | exit | wall s | peak RSS GiB | last line |\n|---|---|---|---|---|")
    for row in rows:
        line = row["last_line"]
        print(f"| `{row['command']}` | {row['exit']} | {row['seconds']} | {row['peak_rss_gib']} | {line} |")


if __name__ == "__main__":
    main()
