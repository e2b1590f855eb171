"""The harness: statistics on known samples, ratios, names, and small real runs on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxsqueeze.bench import harness
from onnxsqueeze.bench.cost import Price, usd_per_million
from onnxsqueeze.bench.harness import benchmark, display_names, latency_stats, ratio_with_spread
from onnxsqueeze.errors import InputError

# ------------------------------------------------------------------------------------ statistics


def test_latency_stats_on_1_to_100() -> None:
    s = latency_stats(np.arange(1, 101))
    assert s["count"] == 100
    assert s["mean"] == pytest.approx(50.5)
    assert s["std"] == pytest.approx(29.011491975882016)  # sample std (n - 1)
    assert (s["min"], s["max"]) == (1.0, 100.0)
    # linear interpolation between order statistics: rank = 1 + p/100 * (n - 1)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)


def test_latency_stats_unsorted_with_outlier() -> None:
    s = latency_stats([5.0, 1.0, 3.0, 2.0, 4.0, 1000.0])
    assert s["p50"] == pytest.approx(3.5)
    assert s["max"] == 1000.0
    assert s["p90"] == pytest.approx(502.5)  # rank 0.9 * 5 = 4.5: halfway from 5 to 1000
    assert s["mean"] == pytest.approx(1015 / 6)


def test_latency_stats_one_sample_and_none() -> None:
    s = latency_stats([2.5])
    assert s["std"] == 0.0 and s["p99"] == 2.5 and s["count"] == 1
    with pytest.raises(ValueError):
        latency_stats([])


def test_ratio_pooled_and_per_round_spread() -> None:
    base = [np.full(10, 10.0), np.full(10, 10.0)]
    cand = [np.full(10, 5.0), np.full(10, 6.0)]
    p50 = ratio_with_spread(cand, base, "p50")
    assert p50["ratio"] == pytest.approx(0.55)  # pooled median of five 5s-and-6s halves
    assert (p50["low"], p50["high"]) == (pytest.approx(0.5), pytest.approx(0.6))
    # 10 samples a round are enough for p90's range, not for p99's
    assert ratio_with_spread(cand, base, "p90")["low"] is not None
    p99 = ratio_with_spread(cand, base, "p99")
    assert p99["ratio"] == pytest.approx(0.6) and p99["low"] is None and p99["high"] is None
    thr = ratio_with_spread(cand, base, "mean", inverse=True)
    assert thr["ratio"] == pytest.approx(10 / 5.5)
    assert (thr["low"], thr["high"]) == (pytest.approx(10 / 6), pytest.approx(2.0))


def test_display_names_disambiguate() -> None:
    assert display_names([Path("/x/main/model.onnx"), Path("/x/pr/model.onnx")]) == [
        "main/model.onnx",
        "pr/model.onnx",
    ]
    assert display_names([Path("/a/m.onnx"), Path("/a/m.onnx")]) == ["m.onnx", "m.onnx#2"]
    assert display_names([Path("/a/r18.onnx"), Path("/b/r50.onnx")]) == ["r18.onnx", "r50.onnx"]


def test_provider_options_for_tensorrt_chain(tmp_path: Path) -> None:
    chain = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = harness.provider_options("tensorrt", chain, trt_fp16=True, device_id=1)
    assert opts == [{"device_id": 1, "trt_fp16_enable": True}, {"device_id": 1}, {}]
    profile = {"input": ((1, 3, 8, 8), (16, 3, 8, 8), (16, 3, 8, 8)), "mask": ((1, 4), (16, 4), (16, 4))}
    trt = harness.provider_options(
        "tensorrt", chain, trt_fp16=False, device_id=0, trt_profile=profile, trt_cache=tmp_path
    )[0]
    assert trt["trt_profile_min_shapes"] == "input:1x3x8x8,mask:1x4"
    assert trt["trt_profile_opt_shapes"] == trt["trt_profile_max_shapes"] == "input:16x3x8x8,mask:16x4"
    assert trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"] == str(tmp_path)
    assert harness.provider_options("cuda", chain[1:], trt_fp16=True, device_id=0) == [{"device_id": 0}, {}]


def test_trt_profile_spans_the_batches() -> None:
    import onnx

    vi = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 3, 224, 224])
    profile = harness._trt_profile("m", [vi], [8, 1, 32], {}, None)
    assert profile == {"input": ((1, 3, 224, 224), (32, 3, 224, 224), (32, 3, 224, 224))}
    from_data = harness._trt_profile("m", [vi], [2, 4], {}, {"input": np.zeros((5, 3, 160, 160))})
    assert from_data == {"input": ((2, 3, 160, 160), (4, 3, 160, 160), (4, 3, 160, 160))}


# ------------------------------------------------------------------------------------ real runs


def test_small_real_run_on_cpu(small_and_large: tuple[Path, Path]) -> None:
    large, small = small_and_large
    price = Price(0.5, "test", "test price")
    seen: list[tuple[str, int, int, int]] = []
    result = benchmark(
        [large, small],
        batches=[1, 4],
        warmup=2,
        iterations=20,
        duration=0.0,
        rounds=2,
        threads=1,
        price=price,
        gates=["size>1x", "p50>50ms"],
        on_progress=lambda *a: seen.append(a),
    )
    doc = result.to_dict()
    assert doc["schema"] == "onnxsqueeze.bench/1"
    assert [m["name"] for m in doc["models"]] == ["large.onnx", "small.onnx"]
    assert doc["models"][1]["file_bytes"] < doc["models"][0]["file_bytes"]
    assert all(
        m["providers"] == ["CPUExecutionProvider"] and m["session_create_s"] > 0 for m in doc["models"]
    )
    assert len(doc["results"]) == 4
    for row in doc["results"]:
        lat = row["latency_ms"]
        assert row["iterations"] == lat["count"] >= 20
        assert len(row["round_p50_ms"]) == 2
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert row["throughput_per_s"] == pytest.approx(row["batch"] * 1e3 / lat["mean"])
        assert row["usd_per_million"] == pytest.approx(usd_per_million(0.5, row["throughput_per_s"]))
        assert row["input_shapes"] == {"x": [row["batch"], 16]}
        assert row["peak_rss_bytes"] > 0 and row["device_ms"] is None
    # progress: announces each warm-up and round of every model and batch before it runs, then the end
    assert len(seen) == 2 * 2 * (1 + 2) + 1 and seen[0][2:] == (0, 12) and seen[-1][2:] == (12, 12)
    assert [s[2] for s in seen] == sorted(s[2] for s in seen)
    assert {(s[0], s[1]) for s in seen} == {(n, b) for n in ("large.onnx", "small.onnx") for b in (1, 4)}
    comps = doc["comparisons"]
    assert [(c["model"], c["batch"]) for c in comps] == [("small.onnx", 1), ("small.onnx", 4)]
    for c in comps:
        r = c["ratios"]
        assert r["size"]["ratio"] < 1
        assert r["p50"]["low"] <= r["p50"]["high"]
        assert r["cost"]["ratio"] == pytest.approx(r["mean"]["ratio"])
    gates = {(g["expr"], g["batch"]): g for g in doc["gates"]}
    assert not gates[("size>1x", 1)]["failed"] and gates[("size>1x", 1)]["relative"]
    assert all(g["model"] == "small.onnx" for g in doc["gates"])
    assert result.failed_gates == [] or all(g["expr"] == "p50>50ms" for g in result.failed_gates)


def test_min_duration_is_met_as_well_as_count(small_and_large: tuple[Path, Path]) -> None:
    result = benchmark([small_and_large[1]], warmup=1, iterations=2, duration=0.2, rounds=2)
    row = result.result(0, 1)
    assert row["duration_s"] >= 0.2 and row["usd_per_million"] is None
    assert row["iterations"] > 2  # a sub-millisecond model runs far more than 2 times in 0.2 s


def test_inputs_from_data_are_cycled(small_and_large: tuple[Path, Path]) -> None:
    data = {"x": np.random.default_rng(0).standard_normal((3, 16))}  # float64: cast to the model's
    result = benchmark(
        [small_and_large[1]], batches=[4], data=data, warmup=1, iterations=3, duration=0, rounds=1
    )
    assert result.result("small.onnx", 4)["input_shapes"] == {"x": [4, 16]}
    with pytest.raises(InputError, match="no array for input 'x'"):
        benchmark([small_and_large[1]], data={"y": data["x"]}, warmup=1, iterations=1, duration=0, rounds=1)


def test_io_binding_path_with_host_memory(small_and_large: tuple[Path, Path]) -> None:
    """The CUDA runner's calls (bind, update_inplace, run_with_iobinding, copy back) on CPU memory."""
    model = harness._open_model(
        small_and_large[1], "small", provider="cpu", threads=1, optimize=True, trt_fp16=False, device_id=0
    )
    feeds = {"x": np.ones((2, 16), np.float32)}
    runner = harness._IoBindingRunner(model, feeds, 0, device="cpu")
    steps = runner.segment(5, 0)
    assert steps.shape == (5, 3) and (steps > 0).all()
    out = runner._binding.copy_outputs_to_cpu()[0]
    np.testing.assert_allclose(out, model.session.run(None, feeds)[0], rtol=1e-6)


def test_fixed_batch_model_refuses_other_batch(fixed_model: Path) -> None:
    with pytest.raises(InputError, match="fixed batch of 1"):
        benchmark([fixed_model], batches=[4], warmup=1, iterations=1, duration=0, rounds=1)


def test_unavailable_provider_lists_available(small_and_large: tuple[Path, Path]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(InputError, match=r"provider 'cuda' is not available; available: .*cpu"):
        benchmark([small_and_large[0]], provider="cuda")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batches": [0]}, "positive"),
        ({"rounds": 0}, "rounds"),
        ({"threads": 0}, "threads"),
        ({"io_binding": True}, "IO binding is for device providers"),
        ({"gates": ["p90>1.05x"]}, "needs a baseline"),
        ({"gates": ["cost>1"]}, "need --price-per-hour"),
        ({"input_shapes": {"nope": (1, 16)}}, "names"),
    ],
)
def test_bad_arguments(small_and_large: tuple[Path, Path], kwargs: dict, message: str) -> None:
    args = {"warmup": 1, "iterations": 1, "duration": 0, "rounds": 1} | kwargs
    with pytest.raises(InputError, match=message):
        benchmark([small_and_large[1]], **args)


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such model file"):
        benchmark([tmp_path / "nope.onnx"])


def test_count_is_split_over_rounds(small_and_large: tuple[Path, Path]) -> None:
    # at least ceil(iterations / rounds) per round: 5 in 2 rounds is 2 x 3
    result = benchmark([small_and_large[1]], warmup=1, iterations=5, duration=0, rounds=2, price="c7i.xlarge")
    assert result.result(0, 1)["iterations"] == 6
    assert result.to_dict()["cost"]["label"] == "aws/c7i.xlarge"
    assert (
        benchmark([small_and_large[1]], warmup=1, iterations=1, duration=0, rounds=1, price=0.5).to_dict()[
            "cost"
        ]["usd_per_hour"]
        == 0.5
    )


def test_dynamic_non_batch_dim_needs_input_shape(tmp_path: Path) -> None:
    from onnxsqueeze import io as sio
    from tests.helpers import model_from_text

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    seq (float[N, T] x) => (float[N, T] y) {
        y = Relu(x)
    }
    """
    path = sio.save(model_from_text(text), tmp_path / "seq.onnx")
    with pytest.raises(InputError, match=r"dynamic dimension 1; give it with --input-shape x:N,N"):
        benchmark([path], warmup=1, iterations=1, duration=0, rounds=1)
    result = benchmark(
        [path], batches=[2], input_shapes={"x": (1, 7)}, warmup=1, iterations=1, duration=0, rounds=1
    )
    assert result.result(0, 2)["input_shapes"] == {"x": [2, 7]}  # the batch comes from --batch


class _AsCuda:
    """A CPU session that reports the CUDA provider chain, for the device path without a GPU."""

    def __init__(self, sess: object) -> None:
        self._sess = sess

    def __getattr__(self, name: str) -> object:
        return getattr(self._sess, name)

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_path_end_to_end_with_host_memory(
    small_and_large: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmark(provider='cuda'): IO binding, H2D/compute/D2H split, GPU memory and name, on fakes.

    Only the device is faked (host memory, a CPU session, canned nvidia-smi answers); the harness's
    code for CUDA runs as it would on a GPU.
    """
    import os

    import onnxruntime as ort

    from onnxsqueeze import runtime

    chain = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtime, "resolve_providers", lambda provider="cpu": list(chain))
    monkeypatch.setattr(
        runtime,
        "session",
        lambda model, **kw: _AsCuda(ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])),
    )
    monkeypatch.setattr(harness, "BINDING_DEVICE", "cpu")

    def fake_smi(*query: str) -> list[list[str]]:
        if "--query-compute-apps=pid,used_memory" in query:
            return [["1", "100"], [str(os.getpid()), "512"]]
        return [["NVIDIA Fake 80GB", "550.54", "81559"]]

    monkeypatch.setattr(harness, "_nvidia_smi", fake_smi)
    result = benchmark(
        list(small_and_large), provider="cuda", batches=[2], warmup=1, iterations=6, duration=0, rounds=2
    )
    doc = result.to_dict()
    assert doc["settings"]["io_binding"] is True and doc["environment"]["gpu"]["name"] == "NVIDIA Fake 80GB"
    for row in doc["results"]:
        dev = row["device_ms"]
        assert set(dev) == {"h2d", "compute", "d2h"} and dev["compute"]["count"] == row["iterations"]
        # the latency of a call is the sum of its three steps
        assert row["latency_ms"]["mean"] == pytest.approx(sum(dev[k]["mean"] for k in dev), rel=1e-9)
        assert (row["device_memory_bytes"], row["device_memory_scope"]) == (512 * 2**20, "process")

    from onnxsqueeze.bench.report import JSON_SCHEMA, render_markdown

    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, JSON_SCHEMA)
    md = render_markdown(doc)
    assert "GPU memory" in md and "512.0 MiB" in md and "compute p50 ms" in md and "NVIDIA Fake 80GB" in md
    assert "IO binding" in md
