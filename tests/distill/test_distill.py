"""The distill API end to end on a tiny teacher, including feature hints (--feature)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from onnxsqueeze import io as sio
from onnxsqueeze.distill import TrainConfig, distill
from onnxsqueeze.distill.teacher import with_outputs
from onnxsqueeze.errors import InputError
from onnxsqueeze.summary import weight_stats
from tests.distill.tiny import teacher_model, write_assets
from tests.helpers import run_ort

FAST = TrainConfig(epochs=3, batch_size=16)


def test_without_labels_it_is_pure_teacher_student(tmp_path: Path) -> None:
    teacher, train, _ = write_assets(tmp_path)
    arrays = {"input": sio.load_npz(train)["input"]}  # no labels at all
    result = distill(teacher, "mlp", arrays, config=FAST, cache_dir=tmp_path / "c", measure_latency=False)
    r = result.report
    assert r.training.metric == "agreement"
    assert r.teacher.accuracy is None and r.student.accuracy is None
    assert r.samples == {"train": 87, "val": 9, "report": 9}  # 10% held out for early stopping
    assert r.cache_hits == {"train": False}


def test_feature_hints_train_cache_and_leave_no_adapter_in_the_export(tmp_path: Path) -> None:
    teacher, train, val = write_assets(tmp_path)
    kwargs = dict(val=val, config=FAST, cache_dir=tmp_path / "c", measure_latency=False)
    plain = distill(teacher, "mlp", train, **kwargs)
    hinted = distill(teacher, "mlp", train, features=[("flat", "1")], **kwargs)
    assert hinted.report.cache_hits == {"train": False, "val": True}  # the key includes the features
    entry = next(p for p in (tmp_path / "c").iterdir() if "-f" in p.name)
    cached = sio.load_npz(entry)
    assert cached["feature:flat"].shape == (96, 64)
    # the hint changes training, and the exported student is still the plain architecture
    assert weight_stats(hinted.model)["params"] == weight_stats(plain.model)["params"]
    x = np.zeros((2, 1, 8, 8), np.float32) + 0.5
    assert not np.allclose(run_ort(hinted.model, {"input": x})[0], run_ort(plain.model, {"input": x})[0])
    again = distill(teacher, "mlp", train, features=[("flat", "1")], **kwargs)
    assert again.report.cache_hits == {"train": True, "val": True}


def test_bad_feature_names_are_one_line_errors(tmp_path: Path) -> None:
    teacher, train, _ = write_assets(tmp_path)
    with pytest.raises(InputError, match=r"the teacher has no tensor 'nope' \(node outputs include: flat"):
        distill(teacher, "mlp", train, features=[("nope", "1")], config=FAST, use_cache=False)
    with pytest.raises(InputError, match=r"the student has no module 'fc9' \(its modules include: 0, 1"):
        distill(teacher, "mlp", train, features=[("flat", "fc9")], config=FAST, use_cache=False)


def test_with_outputs_exposes_an_intermediate_tensor() -> None:
    model = with_outputs(teacher_model(), ["flat"])
    assert [o.name for o in model.graph.output] == ["logits", "flat"]
    assert run_ort(model, {"input": np.ones((3, 1, 8, 8), np.float32)})[1].shape == (3, 64)
