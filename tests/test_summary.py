"""inspect's numbers on a graph whose MACs, params and sparsity are known by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze.errors import InputError
from onnxsqueeze.summary import compressed_size, count_macs, summarize
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 16, 16] x) => (float[N, 10] y, float[N, 4, 32, 32] up) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu (c1)
    c2 = Conv <strides = [2, 2], group = 2, kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (r1, w2)
    up = ConvTranspose <strides = [4, 4]> (c2, wt)
    p = GlobalAveragePool (c2)
    f = Flatten (p)
    h = Gemm <transB = 1> (f, wg, bg)
    y = MatMul (h, wm)
}
"""

# By hand, at N=2, x 3x16x16:
# c1: 8 x 16x16 out, 3x3x3 kernel   -> 2 * 8 * 256 * 27        = 110592
# c2: 8 x 8x8 out, group 2 (4 in/g) -> 2 * 8 * 64 * 4 * 9      =  36864
# up: in 8 x 8x8, out 4, k 4x4      -> 2 * 8 * 64 * 4 * 16     =  65536
# h:  M=2, K=8, N=16                -> 2 * 16 * 8              =    256
# y:  [2,16] x [16,10]              -> 2 * 10 * 16             =    320
MACS = 110592 + 36864 + 65536 + 256 + 320


def model():
    w1 = rand((8, 3, 3, 3), 1)
    w1[0] = 0  # one zeroed filter: 27 zeros
    return model_from_text(
        TEXT,
        {
            "w1": w1,
            "b1": rand((8,), 2),
            "w2": rand((8, 4, 3, 3), 3),
            "wt": rand((8, 4, 4, 4), 4),
            "wg": rand((16, 8), 5),
            "bg": rand((16,), 6),
            "wm": rand((16, 10), 7),
        },
    )


def test_count_macs_by_hand() -> None:
    total, per_node = count_macs(model(), {"x": (2, 3, 16, 16)})
    assert total == MACS
    assert sorted(per_node.values()) == sorted([110592, 36864, 65536, 256, 320])


def test_count_macs_default_batch_is_one() -> None:
    total, _ = count_macs(model())
    assert total * 2 == MACS


def test_summarize(tmp_path: Path) -> None:
    path = sio.save(model(), tmp_path / "m.onnx")
    s = summarize(path, {"x": (2, 3, 16, 16)})
    params = 8 * 27 + 8 + 8 * 36 + 8 * 64 + 16 * 8 + 16 + 160
    assert s["params"] == params
    assert s["weight_bytes"] == {"float32": params * 4}
    assert s["sparsity"] == pytest.approx(27 / params)
    assert s["macs"] == MACS and s["flops"] == 2 * MACS
    assert s["opset"] == 17
    assert s["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 3, 16, 16]}]
    assert [o["name"] for o in s["outputs"]] == ["y", "up"]
    assert s["ops"]["Conv"] == 2
    assert s["file_bytes"] == path.stat().st_size
    assert 0 < s["compressed_bytes"] < s["file_bytes"] + 200
    for key in (
        "inputs",
        "outputs",
        "opset",
        "params",
        "weight_bytes",
        "sparsity",
        "macs",
        "file_bytes",
        "compressed_bytes",
    ):
        assert key in s


def test_count_macs_dynamic_dim_needs_shape() -> None:
    m = model()
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(InputError, match="--input-shape x:N,3,N,16"):
        count_macs(m)
    assert count_macs(m, {"x": (2, 3, 16, 16)})[0] == MACS


def test_compressed_size_rewards_zeros() -> None:
    dense = rand((10000,), 1).tobytes()
    sparse = np.zeros(10000, np.float32).tobytes()
    assert compressed_size(sparse) * 20 < compressed_size(dense)
