"""The provenance manifest: which sha256 covers which bytes, recipe, verification, lineage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze import manifest as mf
from onnxsqueeze.errors import InputError
from onnxsqueeze.passes import CleanupPass, FoldConstantsPass
from onnxsqueeze.pipeline import run_passes
from onnxsqueeze.verify import verify
from tests.export import models
from tests.helpers import model_from_text, rand


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return models.write(models.dynamic_fp32(), tmp_path, "src.onnx")


def squeezed(src: Path) -> onnx.ModelProto:
    """The source after a pipeline run, so its metadata carries a recipe."""
    model = sio.load_ir(src)
    run_passes(model, [FoldConstantsPass(), CleanupPass()], source_sha256=sio.sha256_file(src))
    return sio.to_proto(model)


def test_hashes_say_which_bytes_they_cover(src: Path, tmp_path: Path):
    out = tmp_path / "out" / "model.onnx"
    art = mf.save_artifact(squeezed(src), out, source_path=src)
    assert art.manifest_path == tmp_path / "out" / "model.onnx.manifest.json"
    side = json.loads(art.manifest_path.read_text())
    # file.sha256: the exact bytes on disk
    assert side["file"] == {"name": "model.onnx", "bytes": out.stat().st_size, "sha256": sio.sha256_file(out)}
    # output.model_sha256: the model's deterministic serialization, recomputable from the file (the
    # file carries no manifest, so here both hashes agree)
    saved = sio.load(out)
    assert side["output"]["model_sha256"] == mf.model_sha256(saved) == side["file"]["sha256"]
    # source: the file the command read
    assert side["source"] == {"path": str(src), "sha256": sio.sha256_file(src), "bytes": src.stat().st_size}
    assert side["origin_sha256"] == sio.sha256_file(src)
    assert mf.check(out) == []


def test_the_model_carries_only_the_stamp(src: Path, tmp_path: Path):
    out = tmp_path / "model.onnx"
    model = squeezed(src)
    model.metadata_props.add(key="author", value="someone")  # the user's own metadata stays
    model.metadata_props.add(key="onnxsqueeze.distill.config", value='{"epochs": 3}')
    art = mf.save_artifact(model, out, source_path=src)
    saved = sio.load(out)
    meta = {p.key: p.value for p in saved.metadata_props}
    assert set(meta) == {"author", mf.STAMP_KEY}
    assert json.loads(meta[mf.STAMP_KEY]) == {
        "origin_sha256": sio.sha256_file(src),
        "version": mf.tool_version(),
    }
    assert len(meta[mf.STAMP_KEY]) < 120
    # what left the model is in the sidecar
    assert [s["pass"] for s in art.manifest["recipe"]] == ["fold-constants", "cleanup"]
    assert art.manifest["training"] == {"distill": {"config": {"epochs": 3}}}
    # without the sidecar, the model still names its origin, and check() says the record is missing
    art.manifest_path.unlink()
    found = mf.read(out)
    assert found is not None and found["origin_sha256"] == sio.sha256_file(src) and found["stamp"]
    assert any("no sidecar manifest" in p for p in mf.check(out))


def test_value_info_is_not_stored_unless_an_op_has_no_standard_schema(tmp_path: Path):
    model = model_from_text(
        f"""{models.HEADER.replace('"" : 17', '"" : 17, "com.example" : 1')}
        g (float[N, 8] x) => (float[N, 8] y) {{
            a = Relu(x)
            b = com.example.Custom(a)
            y = Sigmoid(b)
        }}""",
        {},
    )
    for name in ("a", "b"):
        model.graph.value_info.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["N", 8])
        )
    out = mf.deployable(model)
    assert [vi.name for vi in out.graph.value_info] == ["b"]  # Relu's output dropped, Custom's kept
    assert len(model.graph.value_info) == 2  # the input is not modified
    assert [vi.name for vi in out.graph.input] == ["x"] and out.graph.output[0].type == model.graph.output[
        0
    ].type


def test_files_with_the_embedded_manifest_stay_readable(src: Path, tmp_path: Path):
    """A file written before the stamp layout: the whole manifest under onnxsqueeze.manifest."""
    model = squeezed(src)
    old_manifest = mf.build(model, source_path=src)
    old_manifest["output"]["model_sha256"] = mf.model_sha256(model)  # then: the model as it ran
    legacy = onnx.ModelProto()
    legacy.CopyFrom(model)
    legacy.metadata_props.add(key=mf.MANIFEST_KEY, value=json.dumps(old_manifest))
    old = tmp_path / "old.onnx"
    sio.save(legacy, old)
    assert mf.read(old) == old_manifest | {"where": "embedded"}
    assert mf.check(old) == []  # model_sha256 leaves the embedded entry out
    # the next command carries its history on, once
    new = mf.save_artifact(sio.load(old), tmp_path / "new.onnx", source_path=old)
    assert [s["pass"] for s in new.manifest["recipe"]] == ["fold-constants", "cleanup"]
    assert new.manifest["lineage"][-1]["source"]["sha256"] == sio.sha256_file(src)
    assert {p.key for p in sio.load(new.path).metadata_props} == {mf.STAMP_KEY}


def test_recipe_tools_and_verification_are_recorded(src: Path, tmp_path: Path):
    model = squeezed(src)
    report = verify(sio.load(src), model, seed=3)
    art = mf.save_artifact(
        model, tmp_path / "m.onnx", source_path=src, verify_report=report, bench_summary={"p50_ms": 1.5}
    )
    m = art.manifest
    assert [step["pass"] for step in m["recipe"]] == ["fold-constants", "cleanup"]
    assert all(step["source_sha256"] == sio.sha256_file(src) for step in m["recipe"])
    assert m["verification"] == json.loads(json.dumps(report.to_dict()))
    assert m["benchmark"] == {"p50_ms": 1.5}
    assert m["tool"]["name"] == "onnxsqueeze" and m["tool"]["version"]
    assert {"python", "onnx", "onnxruntime", "numpy", "onnx-ir"} <= set(m["libraries"])
    assert m["schema"] == mf.SCHEMA and m["lineage"] == []


def test_numpy_values_and_non_finite_numbers_become_plain_json(src: Path, tmp_path: Path):
    bench = {"p50_ms": np.float32(1.25), "runs": np.int64(3), "ratio": float("nan"), "per_batch": np.ones(2)}
    art = mf.save_artifact(squeezed(src), tmp_path / "m.onnx", source_path=src, bench_summary=bench)
    assert json.loads(art.manifest_path.read_text())["benchmark"] == {
        "p50_ms": 1.25,
        "runs": 3,
        "ratio": None,
        "per_batch": [1.0, 1.0],
    }


def test_lineage_keeps_the_earlier_manifest(src: Path, tmp_path: Path):
    first = mf.save_artifact(squeezed(src), tmp_path / "a.onnx", source_path=src, bench_summary={"x": 1})
    model = sio.load_ir(first.path)
    run_passes(model, [CleanupPass()], source_sha256=sio.sha256_file(first.path))
    second = mf.save_artifact(sio.to_proto(model), tmp_path / "b.onnx", source_path=first.path)
    assert second.manifest["source"]["sha256"] == first.manifest["file"]["sha256"]
    (parent,) = second.manifest["lineage"]
    assert parent["source"]["sha256"] == sio.sha256_file(src)
    assert parent["benchmark"] == {"x": 1}
    # the first command's passes come from its sidecar, then this command's
    assert [s["pass"] for s in second.manifest["recipe"]] == ["fold-constants", "cleanup", "cleanup"]
    assert second.manifest["origin_sha256"] == sio.sha256_file(src)
    # the model is unchanged, so the content hash carries over
    assert second.manifest["output"]["model_sha256"] == first.manifest["output"]["model_sha256"]
    # a sidecar that no longer describes its file's bytes is not taken as the source's history
    sio.save(squeezed(src), tmp_path / "c.onnx")  # another file under a's sidecar name
    (tmp_path / "c.onnx.manifest.json").write_bytes(first.manifest_path.read_bytes())
    third = mf.save_artifact(
        sio.load(tmp_path / "c.onnx"), tmp_path / "d.onnx", source_path=tmp_path / "c.onnx"
    )
    assert third.manifest["lineage"] == []


def test_same_input_gives_the_same_bytes(src: Path, tmp_path: Path):
    a = mf.save_artifact(squeezed(src), tmp_path / "a" / "m.onnx", source_path=src)
    b = mf.save_artifact(squeezed(src), tmp_path / "b" / "m.onnx", source_path=src)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.manifest_path.read_bytes() == b.manifest_path.read_bytes()


def test_tampering_is_detected(src: Path, tmp_path: Path):
    out = tmp_path / "m.onnx"
    mf.save_artifact(squeezed(src), out, source_path=src)
    model = sio.load(out)
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
    out.write_bytes(model.SerializeToString())
    problems = mf.check(out)
    assert any("sha256 differs from the sidecar" in p for p in problems)
    assert any("differs from the manifest's model_sha256" in p for p in problems)


def test_never_overwrites_the_source_and_replaces_a_stale_sidecar(src: Path, tmp_path: Path):
    with pytest.raises(InputError, match="refusing to overwrite the input"):
        mf.save_artifact(squeezed(src), src, source_path=src)
    out = tmp_path / "m.onnx"
    mf.sidecar_path(out).write_text('{"stale": true}')
    mf.save_artifact(squeezed(src), out, source_path=src)
    assert "stale" not in mf.read(out)
    with pytest.raises(InputError, match="does not exist"):
        mf.save_artifact(squeezed(src), tmp_path / "n.onnx", source_path=tmp_path / "missing.onnx")


def test_external_data_is_hashed(src: Path, tmp_path: Path):
    out = tmp_path / "m.onnx"
    model = model_from_text(
        f"{models.HEADER} g (float[N, 64] x) => (float[N, 32] y) {{ y = MatMul(x, W) }}",
        {"W": rand((64, 32))},
    )
    # force external data the way a >2 GB model would be saved
    proto = mf.deployable(model)
    sio.save(proto, out, external_data=True)
    _, side = mf.write(out, mf.build(model, source_path=src))
    assert side["file"]["data_files"] == {"m.onnx.data": sio.sha256_file(tmp_path / "m.onnx.data")}
    assert mf.check(out) == []
    (tmp_path / "m.onnx.data").write_bytes(b"\0" * (tmp_path / "m.onnx.data").stat().st_size)
    assert any("external data" in p for p in mf.check(out))


def test_folder_source_and_no_source(tmp_path: Path):
    saved_model = tmp_path / "saved"
    (saved_model / "variables").mkdir(parents=True)
    (saved_model / "saved_model.pb").write_bytes(b"graph")
    (saved_model / "variables" / "v.data").write_bytes(b"weights")
    m = mf.build(models.dynamic_fp32(), source_path=saved_model)
    assert len(m["source"]["sha256"]) == 64 and "bytes" not in m["source"]
    (saved_model / "variables" / "v.data").write_bytes(b"other")
    assert (
        mf.build(models.dynamic_fp32(), source_path=saved_model)["source"]["sha256"] != m["source"]["sha256"]
    )
    assert mf.build(models.dynamic_fp32(), source_path=None)["source"] is None


def test_read_refuses_a_broken_sidecar(src: Path, tmp_path: Path):
    out = tmp_path / "m.onnx"
    mf.save_artifact(squeezed(src), out, source_path=src)
    mf.sidecar_path(out).write_text("not json")
    with pytest.raises(InputError, match="not a JSON manifest"):
        mf.read(out)
    assert mf.read(src) is None


def test_attach_benchmark_updates_only_the_sidecar(src: Path, tmp_path: Path):
    out = tmp_path / "m.onnx"
    mf.save_artifact(squeezed(src), out, source_path=src)
    model_bytes = out.read_bytes()
    side = mf.attach_benchmark(out, {"latency_ratio": np.float64(0.61)})
    assert out.read_bytes() == model_bytes
    doc = json.loads(side.read_text())
    assert doc["benchmark"] == {"latency_ratio": 0.61} and doc["file"]["sha256"] == sio.sha256_file(out)
    assert mf.check(out) == []
    # without a sidecar, one is built from what the model carries
    side.unlink()
    mf.attach_benchmark(out, {"latency_ratio": 0.5})
    assert mf.read(out)["benchmark"] == {"latency_ratio": 0.5}
    # changed bytes are refused, and a model without a manifest too
    out.write_bytes(model_bytes + b"\0")
    with pytest.raises(InputError, match="refusing to attach"):
        mf.attach_benchmark(out, {"x": 1})
    with pytest.raises(InputError, match="no onnxsqueeze manifest"):
        mf.attach_benchmark(src, {"x": 1})


def _run_all_levels(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs with graph optimizations off and fully on (the deployment default)."""
    import onnxruntime as ort

    outs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs += sess.run(None, feeds)
    return outs


@pytest.mark.parametrize("technique", ["fp16", "int8", "int4"])
def test_the_written_form_runs_identically(technique: str):
    """Without value_info and provenance, onnxruntime loads and runs each technique's output bit
    for bit as the model the command verified: fp16 with nodes kept in float32 behind Casts,
    static int8 QDQ, int4 MatMulNBits (a contrib op: its outputs keep their value_info)."""
    from onnxsqueeze.recipe import Step, build
    from tests.graphs import cnn, cnn_inputs, resize_scales_case

    if technique == "fp16":
        model, feeds = resize_scales_case()
        step, calibration = Step.of("fp16", {}), None
    elif technique == "int8":
        model, feeds = cnn(), {"x": cnn_inputs(4)}
        step = Step.of("int8", {"mode": "static", "per_channel": True}, calibration=True)
        calibration = {"x": cnn_inputs(16, seed=3)}
    else:
        model = model_from_text(
            f"""{models.HEADER} g (float[N, 64] x) => (float[N, 32] y) {{
                h = MatMul(x, W)
                y = Relu(h)
            }}""",
            {"W": rand((64, 32), 1)},
        )
        feeds = {"x": rand((2, 64), 4)}
        step, calibration = Step.of("int4", {"block_size": 32}), None
    ran = build(model, [Step.of("cleanup", {}), step], calibration=calibration)
    custom = {o for n in ran.graph.node if n.domain not in ("", "ai.onnx") for o in n.output}
    if technique == "int4":  # the pass writes none: declare the contrib op's output as a runtime may need
        (h,) = custom
        ran.graph.value_info.append(onnx.helper.make_tensor_value_info(h, onnx.TensorProto.FLOAT, ["N", 32]))
    assert ran.graph.value_info  # the in-memory result has them: the test would be empty otherwise
    written = mf.deployable(ran)
    onnx.checker.check_model(written, full_check=True)
    assert {vi.name for vi in written.graph.value_info} == custom
    for got, want in zip(_run_all_levels(written, feeds), _run_all_levels(ran, feeds), strict=True):
        np.testing.assert_array_equal(got, want)


def test_attributes_at_their_default_are_not_written():
    """Schema defaults (Conv group/auto_pad, MaxPool ceil_mode/storage_order, Gemm alpha/beta) and
    the spec's worded ones (strides and dilations of ones, pads of zeros on Conv and pooling) go;
    a value that differs from the default, ConvTranspose's pads and a custom op's attributes stay."""
    model = model_from_text(
        f"""{models.HEADER.replace('"" : 17', '"" : 18, "com.example" : 1')}
        g (float[1, 2, 8, 8] x) => (float[1, 3] y, float[1, 2, 8, 8] z) {{
            c = Conv <group = 1, auto_pad = "NOTSET", strides = [1, 1], dilations = [1, 1],
                      pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (x, W, B)
            p = MaxPool <kernel_shape = [2, 2], strides = [2, 2], pads = [0, 0, 0, 0],
                         ceil_mode = 0, storage_order = 0, dilations = [1, 1]> (c)
            m = ReduceMean <keepdims = 0, noop_with_empty_axes = 0> (p, axes)
            y = Gemm <alpha = 1.0, beta = 0.5, transA = 0, transB = 1> (m, G, GB)
            t = ConvTranspose <pads = [0, 0, 0, 0], strides = [1, 1]> (c, T)
            z = com.example.Custom <group = 1> (t)
        }}""",
        {
            "W": rand((2, 2, 3, 3), 1),
            "B": rand((2,), 2),
            "axes": np.array([2, 3], dtype=np.int64),
            "G": rand((3, 2), 3),
            "GB": rand((3,), 4),
            "T": rand((2, 2, 1, 1), 5),
        },
    )
    written = mf.deployable(model)
    attrs = {
        n.op_type: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        for n in written.graph.node
    }
    assert attrs["Conv"] == {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    assert attrs["MaxPool"] == {"kernel_shape": [2, 2], "strides": [2, 2]}
    assert attrs["ReduceMean"] == {"keepdims": 0}  # not its default (1)
    assert attrs["Gemm"] == {"beta": 0.5, "transB": 1}
    assert attrs["ConvTranspose"] == {"pads": [0, 0, 0, 0], "strides": [1, 1]}  # pads may be computed
    assert attrs["Custom"] == {"group": 1}  # no schema: nothing is known of its defaults
    assert sum(len(n.attribute) for n in model.graph.node) == 21  # the input is not modified
    assert mf.deployable(written).SerializeToString() == written.SerializeToString()  # nothing left to drop
    runnable = onnx.ModelProto()
    runnable.CopyFrom(written)
    runnable.graph.node.pop()  # onnxruntime has no com.example.Custom: z is ConvTranspose's output
    runnable.graph.node[-1].output[0] = "z"
    original = onnx.ModelProto()
    original.CopyFrom(model)
    original.graph.node.pop()
    original.graph.node[-1].output[0] = "z"
    onnx.checker.check_model(runnable, full_check=True)
    feeds = {"x": rand((1, 2, 8, 8), 6)}
    for got, want in zip(_run_all_levels(runnable, feeds), _run_all_levels(original, feeds), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_model_with_every_attribute_needed_is_written_as_it_is():
    model = model_from_text(
        f"""{models.HEADER} g (float[1, 2, 8, 8] x) => (float[1, 2, 4, 4] y) {{
            y = Conv <strides = [2, 2], kernel_shape = [1, 1]> (x, W)
        }}""",
        {"W": rand((2, 2, 1, 1), 1)},
    )
    written = mf.deployable(model)
    assert written.graph.node[0].attribute == model.graph.node[0].attribute
