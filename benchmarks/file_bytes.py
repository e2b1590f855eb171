"""Where the bytes of an ONNX file go: weights, nodes, value_info, metadata (per key), the rest.

    PYTHONPATH=. python benchmarks/file_bytes.py MODEL.onnx [MODEL2.onnx ...] [--json]

Sizes are protobuf field sizes (each with its tag and length prefix), so the parts add up to the
file's size (a model with external data: its .onnx part only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import onnx


def _field(msg: Any) -> int:
    """Bytes of one embedded message in its parent: tag (1 byte for fields < 16) + length + body."""
    n = msg.ByteSize()
    return 1 + _varint_len(n) + n


def _varint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def breakdown(model: onnx.ModelProto) -> dict[str, Any]:
    g = model.graph
    weights = sum(_field(t) for t in g.initializer) + sum(_field(t) for t in g.sparse_initializer)
    const_nodes = [n for n in g.node if n.op_type == "Constant"]
    nodes = sum(_field(n) for n in g.node if n.op_type != "Constant")
    weights += sum(_field(n) for n in const_nodes)
    vi = sum(_field(v) for v in g.value_info)
    io = sum(_field(v) for v in (*g.input, *g.output))
    meta = {p.key: _field(p) for p in model.metadata_props}
    functions = sum(_field(f) for f in model.functions)
    graph_total = _field(g)
    graph_rest = graph_total - weights - nodes - vi - io
    total = model.ByteSize()
    rest = total - graph_total - sum(meta.values()) - functions
    return {
        "bytes": total,
        "weights": weights,
        "nodes": nodes,
        "n_nodes": len(g.node) - len(const_nodes),
        "value_info": vi,
        "n_value_info": len(g.value_info),
        "inputs_outputs": io,
        "metadata": sum(meta.values()),
        "metadata_keys": meta,
        "functions": functions,
        "other": graph_rest + rest,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = {str(p): breakdown(onnx.load(str(p), load_external_data=False)) for p in args.models}
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return
    for path, b in rows.items():
        print(
            f"{path}: {b['bytes']:,} B = weights {b['weights']:,} + nodes {b['nodes']:,} ({b['n_nodes']})"
            f" + value_info {b['value_info']:,} ({b['n_value_info']}) + inputs/outputs {b['inputs_outputs']:,}"
            f" + metadata {b['metadata']:,} + functions {b['functions']:,} + other {b['other']:,}"
        )
        for k, v in b["metadata_keys"].items():
            print(f"    metadata {k}: {v:,} B")


if __name__ == "__main__":
    main()
