"""What ``onnxsqueeze inspect`` reports: interface, size, parameters, sparsity and MACs.

MACs (multiply-accumulates) are counted at concrete input shapes for the ops that dominate cost:

- Conv: ``N * C_out * prod(out_spatial) * (C_in / group) * prod(kernel)``
- ConvTranspose: ``N * C_in * prod(in_spatial) * (C_out / group) * prod(kernel)``
- Gemm: ``M * N * K``; MatMul: ``prod(batch) * M * N * K``
- the integer forms (ConvInteger, QLinearConv, MatMulInteger, QLinearMatMul) count like their
  float op
- LSTM / GRU / RNN: ``directions * T * N * gates * (input + hidden)`` (``gates`` = W's rows:
  4H, 3H or H)

Shapes come from onnx's shape inference; where it cannot follow (a Reshape whose target is
computed from ``Shape`` ops, as torch exports of LSTM OCR models do), the missing ones are read
from one onnxruntime run at the same input shapes, so that a model and its normalized (folded)
form are counted alike.

FLOPs are reported as ``2 * MACs``. Other ops are not counted (they are memory-bound).
"""

from __future__ import annotations

import collections
import io as _io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze import manifest, shapes

SCHEMA_VERSION = 1


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def count_macs(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> tuple[int, dict[str, int]]:
    """Total MACs and MACs per node (by node name, or ``op_type#index``) at the given shapes.

    Nodes whose shapes cannot be inferred count as 0; the per-node dict lists only counted ones.
    """
    resolved = shapes.resolve_input_shapes(model, input_shapes)
    inferred = shapes.with_static_inputs(model, resolved)
    known = shapes.value_shapes(inferred)
    per_node: dict[str, int] = {}

    def dims(name: str) -> tuple[int, ...] | None:
        s = known.get(name)
        if s is None or any(d is None for d in s):
            return None
        return tuple(int(d) for d in s)  # type: ignore[arg-type]

    missing = [n for n in _mac_values(inferred) if dims(n) is None]
    if missing:
        known.update(_run_shapes(model, resolved, missing))

    for i, node in enumerate(inferred.graph.node):
        key = node.name or f"{node.op_type}#{i}"
        macs = 0
        if node.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv") and len(node.input) >= 2:
            # Quantized convs do the same MACs; QLinearConv's weight is input 3 (after x, scale, zp).
            w = dims(node.input[3 if node.op_type == "QLinearConv" else 1])
            x = dims(node.input[0])
            y = dims(node.output[0])
            group = int(_attr(node, "group", 1))
            if w is not None and x is not None and y is not None:
                kernel = int(np.prod(w[2:])) if len(w) > 2 else 1
                if node.op_type != "ConvTranspose":
                    macs = y[0] * y[1] * int(np.prod(y[2:])) * (x[1] // group) * kernel
                else:
                    macs = x[0] * x[1] * int(np.prod(x[2:])) * (y[1] // group) * kernel
        elif node.op_type == "Gemm" and len(node.input) >= 2:
            a, b = dims(node.input[0]), dims(node.input[1])
            if a is not None and b is not None and len(a) == 2 and len(b) == 2:
                m = a[1] if _attr(node, "transA", 0) else a[0]
                k = a[0] if _attr(node, "transA", 0) else a[1]
                n = b[0] if _attr(node, "transB", 0) else b[1]
                macs = m * n * k
        elif node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            a = dims(node.input[0])
            b = dims(node.input[3 if node.op_type == "QLinearMatMul" else 1])
            y = dims(node.output[0])
            if a is not None and b is not None and y is not None:
                k = a[-1]
                macs = int(np.prod(y)) * k
        elif node.op_type in ("LSTM", "GRU", "RNN") and len(node.input) >= 3:
            x, w, r = dims(node.input[0]), dims(node.input[1]), dims(node.input[2])
            if x is not None and w is not None and r is not None and len(x) == 3:
                steps, batch = (x[1], x[0]) if _attr(node, "layout", 0) else (x[0], x[1])
                macs = w[0] * steps * batch * w[1] * (w[2] + r[2])
        if macs:
            per_node[key] = int(macs)
    return sum(per_node.values()), per_node


_MAC_INPUTS = {
    "QLinearConv": (0, 3),
    "QLinearMatMul": (0, 3),
    "LSTM": (0, 1, 2),
    "GRU": (0, 1, 2),
    "RNN": (0, 1, 2),
}
_MAC_OPS = {"Conv", "ConvTranspose", "ConvInteger", "Gemm", "MatMul", "MatMulInteger", *_MAC_INPUTS}


def _mac_values(model: onnx.ModelProto) -> list[str]:
    """The tensors whose shapes count_macs reads."""
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type in _MAC_OPS:
            idx = _MAC_INPUTS.get(node.op_type, (0, 1))
            names += [node.input[i] for i in idx if i < len(node.input) and node.input[i]]
            if node.op_type not in ("LSTM", "GRU", "RNN", "Gemm"):
                names.append(node.output[0])
    return list(dict.fromkeys(names))


def _run_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]], names: Sequence[str]
) -> dict[str, tuple[int | None, ...]]:
    """Shapes of ``names`` from one onnxruntime run on seeded inputs; {} when it cannot run."""
    from onnxsqueeze import runtime

    if any(
        t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data for t in sio.iter_tensors(model.graph)
    ):
        return {}  # weights not in memory: no run
    try:
        feeds = shapes.make_inputs(model, input_shapes)
        probe = runtime.with_outputs(model, names)
        sess = runtime.session(probe)
        wanted = [o.name for o in sess.get_outputs() if o.name in set(names)]
        got = sess.run(wanted, feeds)
    except Exception:  # best effort: the static count stands
        return {}
    return {n: tuple(int(d) for d in np.shape(v)) for n, v in zip(wanted, got, strict=True)}


def weight_stats(model: onnx.ModelProto) -> dict[str, Any]:
    """Parameter count, bytes by dtype and the fraction of exactly-zero weights (floats only)."""
    params = 0
    by_dtype: dict[str, int] = collections.Counter()
    zeros = 0
    float_params = 0
    # Sparse-stored weights counted as the dense tensors they stand for (values and indices are storage).
    for tensor in sio.iter_tensors(sio.densified(model).graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.raw_data:
            continue
        array = onnx.numpy_helper.to_array(tensor)
        params += int(array.size)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        by_dtype[np.dtype(dtype).name] += int(array.size) * np.dtype(dtype).itemsize
        if np.issubdtype(array.dtype, np.floating) and array.size > 1:
            float_params += int(array.size)
            zeros += int(np.count_nonzero(array == 0))
    return {
        "params": params,
        "weight_bytes": dict(sorted(by_dtype.items())),
        "sparsity": zeros / float_params if float_params else 0.0,
    }


def compressed_size(data: bytes) -> int:
    """Size of ``data`` in a deflate-compressed zip (level 9), the saving sparsity buys on disk."""
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("model.onnx", data)
    return len(buf.getvalue())


def _io_entry(vi: onnx.ValueInfoProto) -> dict[str, Any]:
    elem = vi.type.tensor_type.elem_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "unknown"
    return {"name": vi.name, "dtype": dtype, "shape": shapes.declared_shape(vi)}


def summarize(path: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Everything ``inspect`` shows, as a JSON-able dict (schema in the README).

    Raises:
        ModelLoadError: the model cannot be loaded.
        InputError: a dynamic dim needs ``input_shapes`` for MACs.
    """
    path = Path(path)
    model = sio.load(path)
    ops = collections.Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node
    )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    try:
        macs, _ = count_macs(model, input_shapes)
        mac_shapes = {k: list(v) for k, v in shapes.resolve_input_shapes(model, input_shapes).items()}
        macs_note = None
    except Exception as e:  # a dynamic non-batch dim: report the rest, say why MACs are missing
        macs, mac_shapes, macs_note = None, None, str(e)
    file_bytes = path.stat().st_size
    data = path.read_bytes()
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "path": str(path),
        "inputs": [_io_entry(vi) for vi in shapes.graph_inputs(model)],
        "outputs": [_io_entry(vi) for vi in model.graph.output],
        "opset": opset,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": len(model.graph.node),
        "ops": dict(ops.most_common()),
        **weight_stats(model),
        "macs": macs,
        "flops": 2 * macs if macs is not None else None,
        "macs_input_shapes": mac_shapes,
        "file_bytes": file_bytes,
        "compressed_bytes": compressed_size(data),
        "metadata": {p.key: p.value for p in model.metadata_props if p.key != manifest.MANIFEST_KEY},
        "manifest": manifest.inspect(path, model),
    }
    if macs_note:
        out["macs_note"] = macs_note
    return out
