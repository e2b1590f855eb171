"""SimplifyWithOnnxslimPass: onnxslim, then the cleanup, the declared interface kept."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.passes import SimplifyWithOnnxslimPass
from tests.graphs import transposes_model
from tests.helpers import rand, run_ort


def test_removes_what_onnxslim_removes_and_keeps_the_interface() -> None:
    source = transposes_model()
    model = ir.serde.deserialize_model(source)
    result = SimplifyWithOnnxslimPass()(model)
    assert result.modified and result.model is model
    out = ir.serde.serialize_model(model)
    onnx.checker.check_model(out, full_check=True)
    assert [n.op_type for n in out.graph.node] == ["Conv", "Relu", "GlobalAveragePool", "Flatten"]
    assert out.graph.input[0].type == source.graph.input[0].type
    assert out.graph.output[0].type == source.graph.output[0].type
    x = rand((2, 3, 8, 8), 5)
    np.testing.assert_allclose(run_ort(out, {"x": x})[0], run_ort(source, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_nothing_to_remove_is_not_modified() -> None:
    once = ir.serde.deserialize_model(transposes_model())
    SimplifyWithOnnxslimPass()(once)
    again = SimplifyWithOnnxslimPass()(once)
    assert again.modified is False
