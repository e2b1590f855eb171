"""ONNX Runtime format: the .ort file loads in onnxruntime and gives the ONNX model's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze import manifest as mf
from onnxsqueeze.errors import InputError, VerificationError
from onnxsqueeze.export import ort as ort_export
from onnxsqueeze.verify import compare
from tests.export import models
from tests.helpers import run_ort, zoo_model


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return models.write(models.dynamic_fp32(), tmp_path, "tiny.onnx")


def ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of an .ort file, loaded independently of the code under test."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("level", ort_export.LEVELS)
def test_ort_file_loads_and_matches_at_every_level(src: Path, tmp_path: Path, level: str):
    out = tmp_path / f"tiny_{level}.ort"
    result = ort_export.export_ort(src, out, optimization_level=level)
    assert out.read_bytes()[4:8] == b"ORTM"  # the ORT format's flatbuffer file identifier
    x = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    (got,) = ort_outputs(out, {"x": x})
    (want,) = run_ort(sio.load(src), {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # fp32 MatMul, same kernel
    assert result.passed and result.criterion == "max rel <= 0.001"


def test_mixed_dtypes_convert_and_match(tmp_path: Path):
    src = models.write(models.mixed(), tmp_path, "mixed.onnx")
    out = tmp_path / "mixed.ort"
    result = ort_export.export_ort(src, out, input_shapes={"ids": (3, 6), "w": (3, 6)})
    assert [o.name for o in result.report.outputs] == ["s", "c"]
    feeds = {
        "ids": np.arange(18, dtype=np.int64).reshape(3, 6),
        "w": np.linspace(-1, 1, 18, dtype=np.float16).reshape(3, 6),
    }
    for got, want in zip(ort_outputs(out, feeds), run_ort(sio.load(src), feeds), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_manifest_is_embedded_in_the_ort_file_and_beside_it(src: Path, tmp_path: Path):
    out = tmp_path / "tiny.ort"
    result = ort_export.export_ort(src, out, optimization_level="basic")
    side = json.loads(result.manifest_path.read_text())
    assert result.manifest_path == tmp_path / "tiny.ort.manifest.json"
    assert side["file"]["sha256"] == sio.sha256_file(out)
    assert side["file"]["verification"]["passed"] is True
    assert side["output"] == {"format": "ort", "model_sha256": mf.model_sha256(mf.deployable(sio.load(src)))}
    assert side["export"] == {"kind": "ort", "optimization_level": "basic", "optimization_style": "fixed"}
    assert side["source"]["sha256"] == sio.sha256_file(src)
    # the .ort keeps metadata_props: the stamp survives the format change
    result.manifest_path.unlink()
    inside = mf.read(out)
    assert inside is not None and inside["where"] == "embedded" and inside["stamp"]
    assert inside["origin_sha256"] == side["origin_sha256"]
    assert "file" not in inside


def test_real_data_check_on_digits(digits, tmp_path: Path):
    model, val, _ = digits
    data = {"input": sio.load_npz(val)["input"][:128]}
    out = tmp_path / "digits.ort"
    result = ort_export.export_ort(model, out, data=data, data_label=str(val))
    assert result.report.samples == 128
    assert result.report.max_abs <= 1e-4
    assert result.report.outputs[0].top1_agreement == 1.0
    (got,) = ort_outputs(out, data)
    (want,) = run_ort(sio.load(model), data)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert mf.check(out) == []


def test_check_is_relative_to_the_output_scale_unless_an_absolute_tolerance_is_given():
    # ResNet-50's logits reach ~800: fused fp32 arithmetic moves them by ~4e-4 (measured at level all)
    ref = {"logits": np.array([[841.5, -12.0, 0.25]], np.float32)}
    cand = {"logits": np.array([[841.5004, -12.0, 0.25]], np.float32)}
    report = compare(ref, cand)
    assert ort_export.check_passes(report, None) == (True, "max rel <= 0.001")
    assert ort_export.check_passes(report, 1e-4) == (False, "max abs <= 0.0001")
    assert ort_export.check_passes(report, 1e-3)[0]
    bad = compare(ref, {"logits": np.array([[841.5, -12.0, np.nan]], np.float32)})
    assert not ort_export.check_passes(bad, None)[0] and not ort_export.check_passes(bad, 1.0)[0]


def test_outputs_that_differ_are_not_written_unless_forced(src: Path, tmp_path: Path, monkeypatch):
    real_convert = ort_export._convert

    def wrong_convert(onnx_path: Path, out_dir: Path, level: str) -> Path:
        """Convert a model with different weights: what a broken converter would produce."""
        model = sio.load(onnx_path)
        model.graph.initializer[0].raw_data = (
            np.frombuffer(model.graph.initializer[0].raw_data, np.float32) + 1
        ).tobytes()
        sio.save(model, onnx_path.with_name("wrong.onnx"))
        return real_convert(onnx_path.with_name("wrong.onnx"), out_dir, level)

    monkeypatch.setattr(ort_export, "_convert", wrong_convert)
    out = tmp_path / "tiny.ort"
    with pytest.raises(
        VerificationError, match=r"differ from the ONNX model's .*max rel <= 0.001\); not written"
    ):
        ort_export.export_ort(src, out)
    assert not out.exists() and not mf.sidecar_path(out).exists()
    result = ort_export.export_ort(src, out, force=True)
    assert out.exists()
    assert json.loads(result.manifest_path.read_text())["file"]["verification"]["passed"] is False


def test_bad_arguments(src: Path, tmp_path: Path):
    with pytest.raises(InputError, match="--optimization-level 'max'"):
        ort_export.export_ort(src, tmp_path / "a.ort", optimization_level="max")
    with pytest.raises(InputError, match=r"must end in \.ort"):
        ort_export.export_ort(src, tmp_path / "a.onnx")
    with pytest.raises(InputError, match="dynamic dimension 1"):
        ort_export.export_ort(models.write(models.mixed(), tmp_path, "m.onnx"), tmp_path / "m.ort")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "resnet18"])
def test_real_models_at_level_all(name: str, tmp_path: Path):
    src = zoo_model(name)  # exported once on a fresh machine
    out = tmp_path / f"{name}.ort"
    result = ort_export.export_ort(src, out, input_shapes={"input": (2, 3, 224, 224)})
    assert result.passed
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    (got,) = ort_outputs(out, {"input": x})
    (want,) = run_ort(sio.load(src), {"input": x})
    # fused fp32 kernels: differences relative to the logits' scale stay around 1e-6
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).all()
