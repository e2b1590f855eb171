"""export_student: the student goes through convert.from_torch (dynamic batch, cleanup, verified)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from onnxsqueeze.distill.export import export_student  # noqa: E402
from onnxsqueeze.errors import VerificationError  # noqa: E402
from onnxsqueeze.pipeline import PASSES_KEY  # noqa: E402
from tests.convert.factories import noisy  # noqa: E402
from tests.helpers import rand, run_ort  # noqa: E402


def student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    )


def test_exports_the_teachers_interface_with_a_dynamic_batch_verified_on_all_samples() -> None:
    module = student().train()
    x = rand((10, 1, 8, 8), 1)
    model, report = export_student(module, (x,), input_names=["input"], output_names=["logits"])
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == [
        "logits"
    ]
    assert report.samples == 10 and report.max_abs <= 1e-4  # all samples, not just the traced two
    assert module.training  # its mode is restored
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}  # cleaned up (folded)
    assert "cleanup" in {p.key: p.value for p in model.metadata_props}[PASSES_KEY]
    with torch.no_grad():
        want = module.eval()(torch.from_numpy(rand((5, 1, 8, 8), 2))).numpy()
    np.testing.assert_allclose(run_ort(model, {"input": rand((5, 1, 8, 8), 2)})[0], want, atol=1e-5, rtol=0)


def test_beyond_tolerance_raises_unless_tolerance_is_none() -> None:
    x = rand((4, 4), 3)
    with pytest.raises(VerificationError, match="max abs"):
        export_student(noisy(), (x,), input_names=["x"], output_names=["y"], tolerance=1e-4)
    _, report = export_student(noisy(), (x,), input_names=["x"], output_names=["y"], tolerance=None)
    assert report.max_abs > 1e-4
