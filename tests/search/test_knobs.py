"""The knob table's steps as the passes take them."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from onnxsqueeze.passes import PASSES
from onnxsqueeze.search.knobs import KNOBS, available_knobs
from tests.graphs import cnn


def test_int8_weights_knob_writes_the_cast_form_the_session_folds():
    """The search's weight-only int8 is rebuilt by Cast and Mul (folded to float weights when the
    session is created), not by DequantizeLinear (run on every call, and a Conv behind it loses
    its pre-packed kernels): the knob is offered with that option and its step writes no
    DequantizeLinear."""
    offered, skipped = available_knobs(KNOBS)
    (knob,) = [k for k in offered if k.name == "int8-weights"]
    assert "int8-weights" not in skipped
    step = knob.step_of(True)
    assert dict(step.options) == {"form": "cast"}
    model = ir.serde.deserialize_model(cnn())
    assert PASSES[step.pass_name](**dict(step.options))(model).modified
    ops = [n.op_type for n in model.graph]
    assert "DequantizeLinear" not in ops and ops.count("Cast") == 3


def test_int8_weights_is_offered_where_it_keeps_the_objective_and_only_then():
    """Weight-only int8 lowers the size and keeps latency (float compute): offered for size,
    latency and cost (the size breaks their ties), not for MACs (unless named)."""
    from onnxsqueeze.evaluate import Budget
    from onnxsqueeze.search.options import SqueezeOptions, offered_knobs

    def offered(objective: str, **kw) -> tuple[set[str], dict[str, str]]:  # type: ignore[no-untyped-def]
        options = SqueezeOptions(budget=Budget(1.0), objective=objective, **kw)
        knobs, skipped = offered_knobs(KNOBS, options, train=None, calibration=None, model=cnn())
        return {k.name for k in knobs}, skipped

    for objective in ("size", "latency", "cost", "latency,size"):
        assert "int8-weights" in offered(objective)[0], objective
    names, skipped = offered("macs")
    assert "int8-weights" not in names and "cannot lower macs" in skipped["int8-weights"]
    assert "int8-weights" in offered("macs", techniques=("int8-weights",))[0]
    names, skipped = offered("latency")  # a knob that neither lowers nor keeps latency: not offered
    assert "sparsity" not in names and "cannot lower latency" in skipped["sparsity"]


def test_a_latency_search_takes_a_latency_neutral_size_gain_on_top_of_its_fastest_point():
    """The fastest point (resolution) and weight-only int8 (same latency within the noise, a
    quarter of the bytes) combine: the best point is both, as fast and four times smaller."""
    from onnxsqueeze.evaluate import Budget
    from onnxsqueeze.recipe import Step
    from onnxsqueeze.search import Knob, Point, search

    res = Knob("resolution", (0.5,), True, lambda s: Step.of("resolution", {"scale": s}), 0)
    w8 = next(k for k in KNOBS if k.name == "int8-weights")
    budget = Budget(1.0)

    def evaluate(settings: dict) -> Point:  # type: ignore[type-arg]
        latency = (
            10.0 * (0.3 if "resolution" in settings else 1.0) * (1.01 if "int8-weights" in settings else 1.0)
        )
        size = 1000 * (0.26 if "int8-weights" in settings else 1.0)
        p = Point(settings=settings, phase="", metric=100.0, size=int(size), latency_ms=latency)
        p.drop = 0.0
        return p

    result = search(
        [res, w8], evaluate, lambda p: True, objective="latency", budget=budget, noise={"latency": 0.03}
    )
    assert result.best is not None and result.best.settings == {"resolution": 0.5, "int8-weights": True}
    assert result.best.size == 260 and result.best.latency_ms == pytest.approx(3.03)


HEAD_HEAVY = """
<ir_version: 8, opset_import: ["" : 17]>
head (float[1, 3, 32, 32] x) => (float[1, 1024] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    p = GlobalAveragePool (c)
    f = Flatten (p)
    y = Gemm (f, g)
}
"""


def test_dynamic_int8_for_latency_is_judged_by_conv_macs_not_conv_weights(monkeypatch):
    """A small convolution over the image and a large classifier head (MobileNetV3-small's shape:
    36% of the weights, 97% of the MACs in Conv): dynamic int8 runs the Conv as ConvInteger
    (10.6x slower than float there), so it is not offered for latency even with VNNI."""
    from onnxsqueeze.evaluate import Budget
    from onnxsqueeze.search import options as opts
    from tests.helpers import model_from_text, rand

    model = model_from_text(HEAD_HEAVY, {"w": rand((16, 3, 3, 3), 1), "g": rand((16, 1024), 2)})
    assert opts.conv_share(model) < 0.05 and opts.conv_mac_share(model) > 0.9
    monkeypatch.setattr(opts, "cpu_int8_dot", lambda: "avx512_vnni")
    options = opts.SqueezeOptions(budget=Budget(1.0), objective="latency")
    knobs, skipped = opts.offered_knobs(KNOBS, options, train=None, calibration=None, model=model)
    assert "int8-dynamic" not in {k.name for k in knobs} and "Conv MACs" in skipped["int8-dynamic"]
