"""Teacher outputs: computed once, cached by teacher hash + data hash, hit on a rerun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze import runtime
from onnxsqueeze.distill.teacher import as_logits, teacher_logits
from onnxsqueeze.errors import InputError, UnsupportedModelError
from tests.distill.tiny import teacher_model
from tests.helpers import rand, run_ort


def test_cache_is_hit_on_a_rerun_and_the_teacher_is_not_run(tmp_path: Path, monkeypatch) -> None:
    model = teacher_model()
    sha = sio.sha256_model(model)
    data = {"input": rand((10, 1, 8, 8), 3), "labels": np.arange(10)}
    first = teacher_logits(model, sha, data, cache_dir=tmp_path)
    assert not first.cache_hit
    assert first.path is not None and first.path.is_file()
    np.testing.assert_allclose(
        first.logits, run_ort(model, {"input": data["input"]})[0], rtol=1e-5, atol=1e-5
    )

    def no_session(*args, **kwargs):
        raise AssertionError("the teacher ran although its outputs are cached")

    monkeypatch.setattr(runtime, "session", no_session)
    second = teacher_logits(model, sha, data, cache_dir=tmp_path)
    assert second.cache_hit
    assert second.path == first.path
    np.testing.assert_array_equal(second.logits, first.logits)


def test_other_data_or_other_teacher_is_a_miss(tmp_path: Path) -> None:
    model = teacher_model()
    data = {"input": rand((6, 1, 8, 8), 3)}
    a = teacher_logits(model, "a" * 64, data, cache_dir=tmp_path)
    b = teacher_logits(model, "a" * 64, {"input": data["input"] + 1.0}, cache_dir=tmp_path)
    c = teacher_logits(model, "b" * 64, data, cache_dir=tmp_path)
    assert not (a.cache_hit or b.cache_hit or c.cache_hit)
    assert len({a.path, b.path, c.path}) == 3
    # labels are not part of the key: only what the teacher reads is
    d = teacher_logits(model, "a" * 64, {**data, "labels": np.zeros(6)}, cache_dir=tmp_path)
    assert d.cache_hit


def test_no_cache_dir_writes_nothing(tmp_path: Path) -> None:
    out = teacher_logits(teacher_model(), "c" * 64, {"input": rand((4, 1, 8, 8))}, cache_dir=None)
    assert not out.cache_hit and out.path is None
    assert list(tmp_path.iterdir()) == []


def test_missing_input_is_one_line_error() -> None:
    with pytest.raises(InputError, match=r"no array for teacher input\(s\) \['input'\]"):
        teacher_logits(teacher_model(), "d" * 64, {"x": rand((4, 1, 8, 8))}, cache_dir=None)


def test_probabilities_become_log_probabilities_and_non_scores_are_refused() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(as_logits(p, "t"), np.log(p), rtol=1e-6)
    logits = np.array([[2.0, -1.0], [0.5, 0.3]], dtype=np.float32)
    np.testing.assert_array_equal(as_logits(logits, "t"), logits)
    with pytest.raises(UnsupportedModelError, match=r"class scores \[N, C\]"):
        as_logits(np.zeros((4, 3, 2), np.float32), "teacher output 'y'")
