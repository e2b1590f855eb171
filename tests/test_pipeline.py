from __future__ import annotations

import json

import onnx_ir as ir

from onnxsqueeze import __version__
from onnxsqueeze.passes import CleanupPass, FoldBatchNormPass
from onnxsqueeze.pipeline import PASSES_KEY, SOURCE_KEY, VERSION_KEY, history, run_passes
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 3] x) => (float[1, 3] y) {
    i = Identity (x)
    y = Add (i, b)
}
"""


def test_provenance_is_recorded_and_appended() -> None:
    model = ir.serde.deserialize_model(model_from_text(TEXT, {"b": rand((3,), 1)}))
    result = run_passes(model, [CleanupPass()], source_sha256="aa")
    assert result.modified
    meta = model.metadata_props
    assert meta[VERSION_KEY] == __version__ and meta[SOURCE_KEY] == "aa"
    assert json.loads(meta[PASSES_KEY]) == [
        {
            "pass": "cleanup",
            "options": {"fold_constants": True, "fold_batchnorm": True},
            "source_sha256": "aa",
        }
    ]
    again = run_passes(model, [FoldBatchNormPass()], source_sha256="bb")
    assert again.modified is False
    assert [h["pass"] for h in history(model)] == ["cleanup", "fold-bn"]
    assert meta[SOURCE_KEY] == "aa"  # the first source is kept
