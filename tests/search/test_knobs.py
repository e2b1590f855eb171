"""The knob table's steps as the passes take them."""

from __future__ import annotations

import onnx_ir as ir

from onnxsqueeze.passes import PASSES
from onnxsqueeze.search.knobs import KNOBS, available_knobs
from tests.graphs import cnn


def test_int8_weights_knob_writes_the_cast_form_the_session_folds():
    """The search's weight-only int8 is rebuilt by Cast and Mul (folded to float weights when the
    session is created), not by DequantizeLinear (run on every call, and a Conv behind it loses
    its pre-packed kernels): the knob is offered with that option and its step writes no
    DequantizeLinear."""
    offered, skipped = available_knobs(KNOBS)
    (knob,) = [k for k in offered if k.name == "int8-weights"]
    assert "int8-weights" not in skipped
    step = knob.step_of(True)
    assert dict(step.options) == {"form": "cast"}
    model = ir.serde.deserialize_model(cnn())
    assert PASSES[step.pass_name](**dict(step.options))(model).modified
    ops = [n.op_type for n in model.graph]
    assert "DequantizeLinear" not in ops and ops.count("Cast") == 3
