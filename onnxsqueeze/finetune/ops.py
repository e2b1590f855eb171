"""Converters onnx2torch lacks, registered into its registry (filled here rather than in a fork).

- ``LSTM`` (opset 7, 14): ``nn.LSTM`` with the ONNX weights re-ordered. ONNX stacks the gates as
  ``i, o, f, c`` (input, output, forget, cell) in ``W [dirs, 4H, I]``, ``R [dirs, 4H, H]`` and
  ``B [dirs, 8H]`` (``Wb`` then ``Rb``); PyTorch as ``i, f, g, o``. Supported: the default
  activations (sigmoid, tanh, tanh), forward or bidirectional, ``layout`` 0, no ``sequence_lens``
  (all sequences full length), no peepholes, no clipping; other forms are refused with the reason.
  Outputs: ``Y [T, dirs, N, H]``, ``Y_h`` and ``Y_c`` ``[dirs, N, H]``.
- newer opsets (:func:`alias_newer`): an op whose schema at the model's opset is newer than
  onnx2torch's newest converter for it (``Constant``-19, ``Resize``-19 in an opset-20 model) uses
  that converter; the versions added attributes whose defaults keep the old behaviour, and the
  conversion is checked against onnxruntime before training (``finetune._conversion_error``), so
  a model that relies on a new attribute is refused, not trained wrong.
- the reductions of opset 18 but ``ReduceSum`` (``ReduceMean``-18 ...: torch's exporter writes
  them): their axes moved from an attribute to an input, so opset 13's converter must not answer
  for them (:func:`alias_newer` would); an initializer ``axes`` input is read into onnx2torch's
  static-axes module, another form is refused.
- ``Reshape`` with ``allowzero=1`` (torch's exporter writes it), which onnx2torch refuses: where
  the shape is an initializer with no 0 the attribute changes nothing (it only says what a 0 in
  the shape means), so :func:`clear_allowzero` drops it before conversion.
"""

from __future__ import annotations

from typing import Any

_REGISTERED = False


def register() -> None:
    """Add the converters once (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    for version in (7, 14):
        key = OperationDescription(domain="", operation_type="LSTM", version=version)
        if key not in _CONVERTER_REGISTRY:
            _CONVERTER_REGISTRY[key] = _lstm
    for op in _REDUCE_18:
        key = OperationDescription(domain="", operation_type=op, version=18)
        if key not in _CONVERTER_REGISTRY:
            _CONVERTER_REGISTRY[key] = _reduce_18
    _REGISTERED = True


_REDUCE_18 = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)


def _reduce_18(node: Any, graph: Any) -> Any:
    """A reduction of opset 18: axes from an initializer input (or none: all axes)."""
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    ins = list(node.input_values)
    axes = None
    if len(ins) > 1 and ins[1]:
        if ins[1] not in graph.initializers:
            raise NotImplementedError(f"{node.operation_type} whose axes are not an initializer")
        axes = [int(a) for a in graph.initializers[ins[1]].to_torch().tolist()]
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        raise NotImplementedError(f"{node.operation_type} with noop_with_empty_axes")
    module = OnnxReduceStaticAxes(
        operation_type=node.operation_type, axes=axes or None, keepdims=node.attributes.get("keepdims", 1)
    )
    return OperationConverterResult(
        torch_module=module, onnx_mapping=OnnxMapping(inputs=(ins[0],), outputs=tuple(node.output_values))
    )


def clear_allowzero(model: Any) -> Any:
    """``model`` (an ``onnx.ModelProto``) with ``allowzero=1`` removed from each Reshape whose
    shape is an initializer without a 0 (the same function); a copy when anything changed."""
    import numpy as np
    import onnx

    shapes = {i.name: i for i in model.graph.initializer}
    redundant = [
        (k, j)
        for k, n in enumerate(model.graph.node)
        if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] in shapes
        for j, a in enumerate(n.attribute)
        if a.name == "allowzero"
        and a.i == 1
        and not np.any(onnx.numpy_helper.to_array(shapes[n.input[1]]) == 0)
    ]
    if not redundant:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for k, j in redundant:
        del out.graph.node[k].attribute[j]
    return out


def alias_newer(domain: str, op_type: str, version: int) -> bool:
    """Register onnx2torch's newest converter for ``op_type`` below ``version`` under ``version``.

    Returns:
        Whether a converter now answers for ``(domain, op_type, version)``.
    """
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    older = [
        d.version
        for d in _CONVERTER_REGISTRY
        if d.domain == domain and d.operation_type == op_type and d.version < version
    ]
    if not older:
        return False
    source = OperationDescription(domain=domain, operation_type=op_type, version=max(older))
    _CONVERTER_REGISTRY[OperationDescription(domain=domain, operation_type=op_type, version=version)] = (
        _CONVERTER_REGISTRY[source]
    )
    return True


def _lstm(node: Any, graph: Any) -> Any:
    import torch
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
    from torch import nn

    a = node.attributes
    direction = a.get("direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    acts = [x.decode() if isinstance(x, bytes) else x for x in a.get("activations", [])]
    if direction not in ("forward", "bidirectional"):
        raise NotImplementedError(f"LSTM direction '{direction}'")
    if acts and [s.lower() for s in acts] != ["sigmoid", "tanh", "tanh"] * len(acts[::3]):
        raise NotImplementedError(f"LSTM activations {acts}")
    if a.get("layout", 0) != 0 or a.get("clip") is not None or a.get("input_forget", 0):
        raise NotImplementedError("LSTM with layout, clip or input_forget")
    ins = list(node.input_values) + [""] * 8
    x_name, w_name, r_name, b_name, seq_name, h0_name, c0_name, p_name = ins[:8]
    if seq_name or p_name:
        raise NotImplementedError("LSTM with sequence_lens or peepholes")
    for name in (w_name, r_name, b_name):
        if name and name not in graph.initializers:
            raise NotImplementedError("LSTM whose weights are not initializers")
    w = graph.initializers[w_name].to_torch()
    r = graph.initializers[r_name].to_torch()
    dirs, four_h, input_size = w.shape
    hidden = four_h // 4
    b = graph.initializers[b_name].to_torch() if b_name else torch.zeros(dirs, 8 * hidden, dtype=w.dtype)
    lstm = nn.LSTM(input_size, hidden, bidirectional=dirs == 2)

    def reorder(t: Any) -> Any:  # i, o, f, c -> i, f, g(c), o along axis 0
        i, o, f, c = t.split(hidden, dim=0)
        return torch.cat([i, f, c, o], dim=0)

    with torch.no_grad():
        for d in range(dirs):
            sfx = "_reverse" if d == 1 else ""
            getattr(lstm, f"weight_ih_l0{sfx}").copy_(reorder(w[d]))
            getattr(lstm, f"weight_hh_l0{sfx}").copy_(reorder(r[d]))
            getattr(lstm, f"bias_ih_l0{sfx}").copy_(reorder(b[d, : 4 * hidden]))
            getattr(lstm, f"bias_hh_l0{sfx}").copy_(reorder(b[d, 4 * hidden :]))
    if c0_name and not h0_name:
        raise NotImplementedError("LSTM with initial_c but no initial_h")
    module = _OnnxLSTM(lstm, dirs, hidden, [i for i, name in enumerate(node.output_values) if name])
    inputs = tuple(n for n in (x_name, h0_name, c0_name) if n)
    return OperationConverterResult(
        torch_module=module, onnx_mapping=OnnxMapping(inputs=inputs, outputs=tuple(node.output_values))
    )


def _module_base() -> Any:
    from torch import nn

    return nn.Module


class _OnnxLSTM(_module_base()):  # type: ignore[misc]
    """``nn.LSTM`` with ONNX's input and output layout (``Y [T, dirs, N, H]``)."""

    def __init__(self, lstm: Any, dirs: int, hidden: int, outputs: list[int]) -> None:
        super().__init__()
        self.lstm, self.dirs, self.hidden = lstm, dirs, hidden
        self.outputs = outputs  # which of Y, Y_h, Y_c the node produces, in order

    def forward(self, x: Any, h0: Any = None, c0: Any = None) -> Any:
        import torch

        if h0 is not None:
            if c0 is None:
                c0 = torch.zeros_like(h0)
            y, (h, c) = self.lstm(x, (h0, c0))
        else:
            y, (h, c) = self.lstm(x)
        t, n = y.shape[0], y.shape[1]
        y = y.reshape(t, n, self.dirs, self.hidden).permute(0, 2, 1, 3)
        values = [(y, h, c)[i] for i in self.outputs]
        return values[0] if len(values) == 1 else tuple(values)
