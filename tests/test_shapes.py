from __future__ import annotations

import numpy as np
import pytest

from onnxsqueeze.errors import InputError
from onnxsqueeze.shapes import make_inputs, parse_input_shapes, resolve_input_shapes
from tests.helpers import model_from_text

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[batch, 3, H, 8] x, int64[batch, S] ids, int64[batch, S] attention_mask) => (float[batch, 3, H, 8] y) {
    y = Identity (x)
}
"""


def test_parse() -> None:
    assert parse_input_shapes(["x:1,3,224,224", "a:b:2x3"]) == {"x": (1, 3, 224, 224), "a:b": (2, 3)}
    assert parse_input_shapes(None) == {}


@pytest.mark.parametrize("spec", ["x", "x:", ":1,2", "x:1,a", "x:0,3", "x:-1"])
def test_parse_errors(spec: str) -> None:
    with pytest.raises(InputError, match="--input-shape"):
        parse_input_shapes([spec])


def test_resolve_dynamic_dims() -> None:
    model = model_from_text(TEXT)
    with pytest.raises(InputError, match="dynamic dimension 2 .'H'"):
        resolve_input_shapes(model)
    shapes = resolve_input_shapes(model, {"x": (2, 3, 5, 8), "ids": (2, 7), "attention_mask": (2, 7)})
    assert shapes["x"] == (2, 3, 5, 8)
    with pytest.raises(InputError, match="model's inputs are"):
        resolve_input_shapes(model, {"nope": (1,)})
    with pytest.raises(InputError, match="rank 2 given"):
        resolve_input_shapes(model, {"x": (1, 3)})


def test_make_inputs_is_seeded_and_typed() -> None:
    model = model_from_text(TEXT)
    shapes = {"x": (2, 3, 4, 8), "ids": (2, 5), "attention_mask": (2, 5)}
    a, b = make_inputs(model, shapes, seed=1), make_inputs(model, shapes, seed=1)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["x"].dtype == np.float32 and a["ids"].dtype == np.int64
    assert (a["attention_mask"] == 1).all()
    assert not np.array_equal(a["x"], make_inputs(model, shapes, seed=2)["x"])


def test_select_inputs_drops_extras_casts_and_names_missing_inputs() -> None:
    import onnx

    from onnxsqueeze.shapes import select_inputs

    model = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[N, 2] x, int64[N] ids) => (float[N, 2] y) { y = Identity (x) }'
    )
    data = {"x": np.ones((3, 2)), "ids": np.arange(3, dtype=np.int32), "labels": np.zeros(3)}
    feeds = select_inputs(model, data)
    assert list(feeds) == ["x", "ids"] and feeds["x"].dtype == np.float32 and feeds["ids"].dtype == np.int64
    with pytest.raises(InputError, match=r"calib has no array for model input\(s\) \['ids'\]"):
        select_inputs(model, {"x": data["x"]}, label="calib")
