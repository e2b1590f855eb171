"""Triton model repository: configs parsed back with Triton's schema, layout, versions, refusals."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxsqueeze import io as sio
from onnxsqueeze import manifest as mf
from onnxsqueeze.errors import InputError, UnsupportedModelError
from onnxsqueeze.export import triton
from onnxsqueeze.export.triton import TritonOptions
from tests.export import models
from tests.helpers import model_from_text, run_ort

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def parse(text: str):
    """Parse config text with Triton's own schema (what the server does on load)."""
    return text_format.Parse(text, pb2.ModelConfig())


def generated(model: onnx.ModelProto, options: TritonOptions | None = None, name: str = "m"):
    return parse(triton.render(triton.build_config(model, name, options or TritonOptions())))


def io_of(config) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (pb2.DataType.Name(t.data_type), list(t.dims)) for t in [*config.input, *config.output]}


# --- config generation -------------------------------------------------------------------------


def test_dynamic_batch_is_folded_into_max_batch_size():
    c = generated(models.dynamic_fp32())
    assert c.backend == "onnxruntime"
    assert c.max_batch_size == triton.DEFAULT_MAX_BATCH
    assert io_of(c) == {"x": ("TYPE_FP32", [4]), "y": ("TYPE_FP32", [3])}
    assert [w.batch_size for w in c.model_warmup] == [1, 4]
    assert all(w.inputs["x"].random_data and list(w.inputs["x"].dims) == [4] for w in c.model_warmup)


def test_no_batching_keeps_the_dynamic_batch_dim_as_minus_one():
    c = generated(models.dynamic_fp32(), TritonOptions(max_batch_size=0))
    assert c.max_batch_size == 0
    assert io_of(c) == {"x": ("TYPE_FP32", [-1, 4]), "y": ("TYPE_FP32", [-1, 3])}
    # warmup sends one sample for an unbatched model's dynamic first dim
    assert [(w.batch_size, list(w.inputs["x"].dims)) for w in c.model_warmup] == [(1, [1, 4])]


def test_static_fp16_model_has_no_batching_and_full_dims():
    c = generated(models.static_fp16())
    assert c.max_batch_size == 0
    assert io_of(c) == {"x": ("TYPE_FP16", [2, 4]), "y": ("TYPE_FP16", [2, 3])}
    assert not c.HasField("dynamic_batching")


def test_static_model_refuses_batching_naming_the_tensor():
    with pytest.raises(InputError, match=r"input 'x' has a static first dimension 2"):
        triton.build_config(models.static_fp16(), "m", TritonOptions(max_batch_size=8))


def test_mixed_dtypes_batch_only_output_and_dynamic_non_batch_dims():
    c = generated(models.mixed())
    assert io_of(c) == {
        "ids": ("TYPE_INT64", [-1]),
        "w": ("TYPE_FP16", [-1]),
        "s": ("TYPE_FP16", [1]),  # [N] alone: dims [1] reshaped to []
        "c": ("TYPE_INT32", [-1]),
    }
    s = next(o for o in c.output if o.name == "s")
    assert s.HasField("reshape") and list(s.reshape.shape) == []
    assert not c.model_warmup  # L is dynamic and not given


def test_warmup_dims_come_from_input_shapes_and_integers_are_zeros():
    options = TritonOptions(input_shapes={"ids": (1, 7), "w": (1, 7)})
    c = generated(models.mixed(), options)
    assert [w.batch_size for w in c.model_warmup] == [1, 4]
    for w in c.model_warmup:
        assert list(w.inputs["ids"].dims) == [7] and w.inputs["ids"].zero_data
        assert list(w.inputs["w"].dims) == [7] and w.inputs["w"].random_data
        assert pb2.DataType.Name(w.inputs["w"].data_type) == "TYPE_FP16"


def test_dynamic_batching_instances_and_tensorrt_fp16():
    options = TritonOptions(
        dynamic_batching=True,
        preferred_batch_sizes=(8, 4),
        max_queue_delay_us=250,
        instances=2,
        kind="gpu",
        tensorrt=True,
        fp16=True,
    )
    c = generated(models.dynamic_fp32(), options)
    assert c.max_batch_size == 8  # the largest preferred size
    assert list(c.dynamic_batching.preferred_batch_size) == [4, 8]
    assert c.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in c.instance_group] == [
        (2, "KIND_GPU")
    ]
    (trt,) = c.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt"
    assert dict(trt.parameters) == {"precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 30)}


def test_tensorrt_default_precision_is_fp32_and_cpu_kind():
    c = generated(models.dynamic_fp32(), TritonOptions(tensorrt=True))
    (trt,) = c.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.parameters["precision_mode"] == "FP32"
    c = generated(models.dynamic_fp32(), TritonOptions(kind="cpu", instances=3))
    assert pb2.ModelInstanceGroup.Kind.Name(c.instance_group[0].kind) == "KIND_CPU"
    assert not c.optimization.execution_accelerators.gpu_execution_accelerator


def test_dynamic_batching_with_empty_options_is_still_present():
    c = generated(models.dynamic_fp32(), TritonOptions(dynamic_batching=True))
    assert c.HasField("dynamic_batching")
    assert "dynamic_batching {" in triton.render(c)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (TritonOptions(fp16=True), "needs --tensorrt"),
        (TritonOptions(tensorrt=True, kind="cpu"), "cannot be combined with --kind cpu"),
        (TritonOptions(kind="tpu"), "--kind 'tpu'"),
        (TritonOptions(instances=0), "--instances 0"),
        (TritonOptions(preferred_batch_sizes=(4,)), "need --dynamic-batching"),
        (TritonOptions(dynamic_batching=True, max_batch_size=0), "needs batching"),
        (
            TritonOptions(dynamic_batching=True, preferred_batch_sizes=(16,), max_batch_size=8),
            r"\[16\] exceed",
        ),
        (TritonOptions(max_batch_size=-1), "--max-batch-size -1"),
    ],
)
def test_contradictory_options_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        triton.build_config(models.dynamic_fp32(), "m", options)


def test_unsupported_dtype_names_the_tensor():
    with pytest.raises(UnsupportedModelError, match=r"input 'x' has FLOAT8E4M3FN"):
        triton.build_config(models.float8(), "m")


def test_output_shape_is_inferred_when_missing_and_refused_when_unknowable():
    model = models.dynamic_fp32()
    model.graph.output[0].type.tensor_type.ClearField("shape")
    c = generated(model)
    assert io_of(c)["y"] == ("TYPE_FP32", [3])
    # a Reshape to a runtime shape: not even the rank is known
    opaque = model_from_text(
        f"{models.HEADER} g (float[N, 4] x, int64[K] s) => (float y) {{ y = Reshape(x, s) }}"
    )
    opaque.graph.output[0].type.tensor_type.ClearField("shape")
    with pytest.raises(UnsupportedModelError, match=r"output 'y' has no known shape"):
        triton.build_config(opaque, "m", TritonOptions(max_batch_size=0))


def test_bad_names_are_refused():
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(InputError, match="Triton model name"):
            triton.build_config(models.dynamic_fp32(), bad)
    assert triton.default_name("my model.v2.onnx") == "my_model.v2"


def test_missing_tritonclient_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.model_config_pb2", None)
    with pytest.raises(InputError, match=r"pip install 'onnxsqueeze\[triton\]'"):
        triton.model_config_pb2()


# --- repository layout and versions ------------------------------------------------------------


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return models.write(models.dynamic_fp32(), tmp_path, "tiny.onnx")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_manifest(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    r = triton.export_triton(src, repo)
    assert r.version == 1 and r.config_written
    assert sorted(tree(repo)) == ["tiny/1/model.onnx", "tiny/1/model.onnx.manifest.json", "tiny/config.pbtxt"]
    config = parse((repo / "tiny" / "config.pbtxt").read_text())
    assert config.name == "tiny"
    # the served model is the source in its written form (the stamp, no value_info): same graph, same outputs
    served = sio.load(r.model_path)
    onnx.checker.check_model(served, full_check=True)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_ort(served, {"x": x})[0], run_ort(sio.load(src), {"x": x})[0])
    side = json.loads(r.manifest_path.read_text())
    assert side["file"]["sha256"] == sio.sha256_file(r.model_path)
    assert side["source"]["sha256"] == sio.sha256_file(src)
    assert (
        side["output"]["model_sha256"]
        == mf.model_sha256(served)
        == sio.sha256_model(mf.deployable(sio.load(src)))
    )
    assert side["export"]["version"] == 1
    assert (
        side["export"]["config_sha256"]
        == hashlib.sha256((repo / "tiny/config.pbtxt").read_bytes()).hexdigest()
    )
    assert mf.check(r.model_path) == []
    assert not [p for p in repo.rglob(".onnxsqueeze-*")]


def test_adding_versions_keeps_config_and_earlier_versions(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    options = TritonOptions(dynamic_batching=True, preferred_batch_sizes=(4, 8))
    triton.export_triton(src, repo, options=options)
    before = tree(repo)
    r2 = triton.export_triton(src, repo, options=options)
    assert (r2.version, r2.config_written) == (2, False)
    after = tree(repo)
    assert {k: after[k] for k in before} == before  # nothing existing changed
    assert "tiny/2/model.onnx" in after
    r5 = triton.export_triton(src, repo, version=5, options=options)
    assert r5.version == 5
    assert triton.export_triton(src, repo, options=options).version == 6


def test_default_max_batch_size_follows_the_existing_config(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    triton.export_triton(src, repo, options=TritonOptions(max_batch_size=16))
    r = triton.export_triton(src, repo)  # no --max-batch-size: the repository's 16, not 4
    assert r.version == 2 and parse(r.config_text).max_batch_size == 16


def test_existing_version_is_never_overwritten(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    triton.export_triton(src, repo)
    before = tree(repo)
    with pytest.raises(InputError, match=r"version 1 exists and is never overwritten"):
        triton.export_triton(src, repo, version=1)
    assert tree(repo) == before


def test_inconsistent_config_is_refused_and_nothing_written(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    triton.export_triton(src, repo, options=TritonOptions(instances=1))
    before = tree(repo)
    with pytest.raises(InputError, match=r"differs in .*instance_group"):
        triton.export_triton(src, repo, options=TritonOptions(instances=2))
    with pytest.raises(InputError, match=r"max_batch_size \(4 there, 0 now\)"):
        triton.export_triton(src, repo, options=TritonOptions(max_batch_size=0))
    other = models.write(models.static_fp16(), tmp_path, "other.onnx")
    with pytest.raises(InputError, match=r"differs in .*input; output"):
        triton.export_triton(other, repo, name="tiny")
    assert tree(repo) == before
    assert not [p for p in repo.rglob(".onnxsqueeze-*")]


def test_another_models_folder_is_never_clobbered(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    other = models.write(models.static_fp16(), tmp_path, "other.onnx")
    triton.export_triton(other, repo, name="other")
    theirs = tree(repo / "other")
    triton.export_triton(src, repo)
    assert tree(repo / "other") == theirs
    assert sorted(p.name for p in repo.iterdir()) == ["other", "tiny"]


def test_hand_edits_of_the_operator_are_kept(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    triton.export_triton(src, repo)
    config_path = repo / "tiny" / "config.pbtxt"
    edited = (
        config_path.read_text()
        + 'version_policy { all { } }\nparameters { key: "k" value { string_value: "v" } }\n'
    )
    config_path.write_text(edited)
    r = triton.export_triton(src, repo)
    assert r.version == 2 and not r.config_written
    assert config_path.read_text() == edited
    assert (
        json.loads(r.manifest_path.read_text())["export"]["config_sha256"]
        == hashlib.sha256(edited.encode()).hexdigest()
    )


def test_folder_without_config_or_with_a_broken_one_is_refused(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / "tiny" / "1").mkdir(parents=True)
    with pytest.raises(InputError, match=r"exists without config.pbtxt"):
        triton.export_triton(src, repo)
    (repo / "tiny" / "config.pbtxt").write_text("max_batch_size: lots\n")
    with pytest.raises(InputError, match=r"not a valid Triton model config"):
        triton.export_triton(src, repo)
    (repo / "file").write_text("x")
    with pytest.raises(InputError, match=r"exists and is not a folder"):
        triton.export_triton(src, repo, name="file")


def test_empty_model_folder_gets_config_and_version(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / "tiny").mkdir(parents=True)
    r = triton.export_triton(src, repo)
    assert r.config_written and r.version == 1
    assert sorted(tree(repo)) == ["tiny/1/model.onnx", "tiny/1/model.onnx.manifest.json", "tiny/config.pbtxt"]


def test_a_model_that_cannot_be_served_leaves_nothing_behind(tmp_path: Path):
    bad = models.write(models.float8(), tmp_path, "f8.onnx")
    with pytest.raises(UnsupportedModelError):
        triton.export_triton(bad, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_digits_model_repository(digits, tmp_path: Path):
    model, val, _ = digits
    repo = tmp_path / "repo"
    r = triton.export_triton(
        model,
        repo,
        name="digits",
        options=TritonOptions(dynamic_batching=True, preferred_batch_sizes=(8, 32), max_queue_delay_us=100),
    )
    c = parse((repo / "digits" / "config.pbtxt").read_text())
    assert c.max_batch_size == 32
    assert io_of(c) == {"input": ("TYPE_FP32", [1, 32, 32]), "logits": ("TYPE_FP32", [10])}
    assert [w.batch_size for w in c.model_warmup] == [1, 32]
    # the served file gives the source's predictions on real digits
    x = sio.load_npz(val)["input"][:64]
    served = run_ort(sio.load(r.model_path), {"input": x})[0]
    reference = run_ort(sio.load(model), {"input": x})[0]
    np.testing.assert_array_equal(served, reference)
    assert mf.check(r.model_path) == []


# --- property: every generated config parses back with Triton's schema and follows the dim rules -----

_DTYPES = [t for t in triton._TRITON_TYPES if t != onnx.TensorProto.BFLOAT16]  # no BF16 Identity in opset 13
_dim = st.one_of(st.integers(1, 64), st.sampled_from(["N", "S", "T"]))


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(_DTYPES),
    shape=st.lists(_dim, min_size=0, max_size=4),
    no_batching=st.booleans(),
    dynamic_batching=st.booleans(),
    tensorrt=st.booleans(),
)
def test_generated_configs_parse_and_follow_the_dim_rules(
    dtype, shape, no_batching, dynamic_batching, tensorrt
):
    vi_in = onnx.helper.make_tensor_value_info("x", dtype, shape)
    vi_out = onnx.helper.make_tensor_value_info("y", dtype, shape)
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [vi_in], [vi_out])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    batchable = bool(shape) and isinstance(shape[0], str)
    options = TritonOptions(
        max_batch_size=0 if no_batching else None,
        dynamic_batching=dynamic_batching and batchable and not no_batching,
        tensorrt=tensorrt,
    )
    c = generated(model, options)
    batched = batchable and not no_batching
    assert c.max_batch_size == (triton.DEFAULT_MAX_BATCH if batched else 0)
    rest = shape[1:] if batched else shape
    want = [d if isinstance(d, int) else -1 for d in rest] or [1]
    for t in [*c.input, *c.output]:
        assert pb2.DataType.Name(t.data_type) == triton._TRITON_TYPES[dtype]
        assert list(t.dims) == want
        assert t.HasField("reshape") == (not rest)
    assert c.HasField("dynamic_batching") == options.dynamic_batching
    assert bool(c.optimization.execution_accelerators.gpu_execution_accelerator) == tensorrt
    # warmup exists exactly when every non-batch dim is known
    known = all(isinstance(d, int) for d in rest) or (
        not batched and all(isinstance(d, int) for d in shape[1:])
    )
    assert bool(c.model_warmup) == known


def test_a_concurrent_writer_of_the_same_version_cannot_clobber_it(src: Path, tmp_path: Path, monkeypatch):
    repo = tmp_path / "repo"
    triton.export_triton(src, repo)
    before = tree(repo)
    # another process picked version 1 too: it sees no versions, stages, and its rename must fail
    monkeypatch.setattr(triton, "_versions", lambda model_dir: [])
    with pytest.raises(InputError, match="cannot write the version folder"):
        triton.export_triton(src, repo)
    assert tree(repo) == before
    assert not [p for p in repo.rglob(".onnxsqueeze-*")]
