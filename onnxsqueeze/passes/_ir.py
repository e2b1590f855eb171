"""IR helpers shared by the passes: constant arrays, new initializers, in-place weight updates."""

# NOTE: this module imports nothing from onnxsqueeze; passes import it (never the reverse), so
# channels.py and reconstruct.py share these without importing each other.

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as ir_common


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The array of an initializer (or other value with a known constant), else None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def new_initializer(graph: ir.Graph, array: np.ndarray, base: str) -> ir.Value:
    """Register ``array`` as a new initializer named ``base`` (made unique) and return its value."""
    name, k = base, 0
    while name in graph.initializers:
        k += 1
        name = f"{base}_{k}"
    value = ir.Value(
        name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype))
    )
    value.const_value = ir.tensor(array, name=name)
    graph.register_initializer(value)
    return value


def set_const_input(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray) -> None:
    """Make input ``index`` of ``node`` hold ``array``: in place if only this node reads it."""
    old = node.inputs[index] if index < len(node.inputs) else None
    array = np.ascontiguousarray(array)
    if old is not None and old.is_initializer() and len(old.uses()) == 1 and not old.is_graph_input():
        old.const_value = ir.tensor(array, name=old.name)
        old.shape = ir.Shape(array.shape)
        return
    base = (old.name if old is not None and old.name else f"{node.name or node.op_type}_{index}") + "_pruned"
    value = new_initializer(graph, array, base)
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, value)
    if old is not None and old.is_initializer() and not old.uses() and not old.is_graph_output():
        graph.initializers.pop(old.name or "", None)


def lift_constant_weights(model: ir.Model) -> bool:
    """Make ``Constant`` node tensors initializers (paddle2onnx and older exporters store weights
    as Constant nodes; the analysis reads weights from initializers). True when any was lifted."""
    before = len(model.graph.initializers)
    ir_common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
    return len(model.graph.initializers) != before
