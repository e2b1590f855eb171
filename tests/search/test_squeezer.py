"""The Squeezer's shortcuts change nothing: a candidate built from the base normalized once has
the bytes of a full build (what ``apply`` replays), and per-candidate and per-phase timings are
recorded."""

from __future__ import annotations

import pytest

from onnxsqueeze import evaluate as E
from onnxsqueeze.search import SqueezeOptions, Squeezer
from tests.graphs import cnn
from tests.helpers import apply_recipe, rand, self_labelled_squeezer, squeeze_small_cnn


@pytest.fixture
def squeezer() -> Squeezer:
    return self_labelled_squeezer(
        cnn(), rand((80, 3, 8, 8), 5), 16, techniques=("fp16", "int8-dynamic", "int8", "sparsity")
    )


@pytest.mark.parametrize(
    "settings", [{"fp16": True}, {"int8-dynamic": True}, {"sparsity": 0.5}, {"int8": 1, "sparsity": 0.3}]
)
def test_a_candidate_from_the_normalized_base_has_the_bytes_of_a_full_build(squeezer, settings):
    squeezer.prepare()
    fast, idle = squeezer._build_measured(settings)
    assert idle == []
    full = squeezer.build(settings)
    assert fast.SerializeToString(deterministic=True) == full.SerializeToString(deterministic=True)
    assert len(squeezer._clean) == 1  # normalized once, reused
    squeezer._build_measured({"fp16": True})
    assert len(squeezer._clean) == 1


def test_points_and_phases_carry_their_timings(squeezer):
    squeezer.options = SqueezeOptions(
        budget=E.Budget(5.0), objective="size", latency_seconds=0.01, techniques=("fp16", "int8-dynamic")
    )
    squeezer.knobs = [k for k in squeezer.knobs if k.name in ("fp16", "int8-dynamic")]
    result = squeezer.run()
    assert {"plan", "baseline", "single"} <= set(squeezer.timings)
    assert all(v >= 0 for v in squeezer.timings.values())
    assert {"plan", "baseline", "single"} <= set(squeezer.cpu_timings)  # CPU seconds, same phases
    assert all(v >= 0 for v in squeezer.cpu_timings.values())
    base = result.baseline
    assert base.build_s is None and base.score_s is not None and base.time_s is not None
    for p in result.points[1:]:
        assert p.build_s is not None and p.score_s is not None
        assert (p.time_s is not None) == p.fits
        assert p.seconds >= p.build_s + p.score_s


def test_a_knob_that_cannot_lower_the_objective_is_offered_only_by_name(squeezer):
    def make(**kw):
        return Squeezer(
            squeezer.model,
            squeezer.evaluator,
            calibration=squeezer.calibration,
            calibration_source=squeezer.calibration_source,
            options=SqueezeOptions(budget=E.Budget(5.0), latency_seconds=0.01, **kw),
            cache_dir=None,
        )

    by_size = make(objective="size")
    assert "resolution" not in {k.name for k in by_size.knobs}  # the interface keeps its weights
    assert "cannot lower size" in by_size.skipped["resolution"]
    # sparsity lowers the size (stored sparse where smaller) but is offered only by name
    assert "sparsity" not in {k.name for k in by_size.knobs}
    assert "name it in --techniques" in by_size.skipped["sparsity"]
    by_macs = make(objective="macs")  # precision changes no MAC count
    assert {k.name for k in by_macs.knobs} >= {"channels"} and "fp16" in by_macs.skipped
    assert "fp16" in {k.name for k in make(objective="macs,size").knobs}  # size is requested too
    assert "cannot lower latency" in make(objective="latency").skipped["sparsity"]
    named = make(objective="latency", techniques=("sparsity",))
    assert [k.name for k in named.knobs] == ["sparsity"]


def test_dynamic_int8_is_not_offered_for_latency_on_a_conv_model(squeezer, monkeypatch, tmp_path):
    """ConvInteger (dynamic int8 of a Conv) is slower than float in onnxruntime: not offered for
    latency unless named; still offered for size, and for latency on a MatMul model with VNNI."""
    import onnx

    from onnxsqueeze.search import options as opts
    from onnxsqueeze.search.knobs import KNOBS
    from tests.graphs import tiny_mlp

    mlp = onnx.load(str(tiny_mlp(tmp_path / "mlp.onnx", 32)))

    def offered(objective, model=squeezer.model, **kw):
        options = SqueezeOptions(budget=E.Budget(5.0), objective=objective, **kw)
        knobs, skipped = opts.offered_knobs(
            KNOBS, options, train=None, calibration=squeezer.calibration, model=model
        )
        return {k.name for k in knobs}, skipped

    monkeypatch.setattr(opts, "cpu_int8_dot", lambda: "avx512_vnni")
    names, skipped = offered("latency")
    assert "int8-dynamic" not in names and "ConvInteger" in skipped["int8-dynamic"]
    assert "int8" in names  # static QDQ is another path
    assert "int8-dynamic" in offered("size")[0] and "int8-dynamic" in offered("latency,size")[0]
    assert "int8-dynamic" in offered("latency", techniques=("int8-dynamic",))[0]
    assert "int8-dynamic" in offered("latency", model=mlp)[0]  # MatMul weights: DynamicQuantizeMatMul
    monkeypatch.setattr(opts, "cpu_int8_dot", lambda: "none")
    names, skipped = offered("latency", model=mlp)
    assert "int8-dynamic" not in names and "no VNNI" in skipped["int8-dynamic"]


def test_the_int8_plan_names_the_layers_the_candidates_keep_float(squeezer):
    """The plan is measured on the normalized base (the graph the int8 step quantizes), so the
    layers it orders are the candidates' nodes, and a setting keeps exactly its first k float."""
    from onnxsqueeze.optimize.quantize import _named
    from onnxsqueeze.passes.quantize import FLOAT_OPS

    squeezer.prepare()
    plan = squeezer.plans["int8"]
    clean = _named(squeezer._normalized(squeezer.model, squeezer.model_sha256)[0])  # as the pass names them
    weighted = {n.name for n in clean.graph.node if n.op_type in FLOAT_OPS}
    assert plan["order"] and set(plan["order"]) <= weighted
    assert plan["ranking"] in ("estimate", "measured") and plan["tried"]
    int8 = next(k for k in squeezer.knobs if k.name == "int8")
    for k in int8.settings:
        model, idle = squeezer._build_measured({"int8": k})
        assert idle == []
        dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
        quantized = {n.name for n in model.graph.node if n.op_type in FLOAT_OPS and n.input[1] in dequantized}
        assert weighted - quantized == set(plan["order"][:k])


def test_int4_is_not_offered_where_matmul_weights_are_a_sliver(squeezer, tmp_path):
    import onnx

    from onnxsqueeze.search import options as opts
    from onnxsqueeze.search.knobs import KNOBS
    from tests.graphs import as_constant_nodes, tiny_mlp

    def offered(model):
        options = SqueezeOptions(budget=E.Budget(5.0), objective="size")
        knobs, skipped = opts.offered_knobs(KNOBS, options, train=None, calibration=None, model=model)
        return {k.name for k in knobs}, skipped

    names, skipped = offered(squeezer.model)  # convolutions and a Gemm: no MatMul
    assert "int4" not in names and "MatMul weights are 0.0%" in skipped["int4"]
    mlp = onnx.load(str(tiny_mlp(tmp_path / "mlp.onnx", 32)))
    assert "int4" in offered(mlp)[0] and "int4" in offered(as_constant_nodes(mlp))[0]


def test_a_latency_search_keeps_channel_counts_the_fast_kernels_take(squeezer):
    """Latency and cost: kept channel counts rounded to knobs.CHANNEL_ALIGN (a pruned paddle
    classifier off the 8-channel block ran 2.62x slower than the original); size: any count."""
    from onnxsqueeze.search import options as opts
    from onnxsqueeze.search.knobs import CHANNEL_ALIGN, KNOBS

    def channels_step(objective):
        options = SqueezeOptions(budget=E.Budget(5.0), objective=objective)
        knobs, _ = opts.offered_knobs(KNOBS, options, train=None, calibration=squeezer.calibration)
        (knob,) = [k for k in knobs if k.name == "channels"]
        bound = knob.bind({"conv": 0.1})  # a plan's value (per-group drops) goes through as well
        return dict(knob.step_of(0.5).options), dict(bound.step(0.5).options)

    for objective in ("latency", "cost", "latency,size"):
        for options in channels_step(objective):
            assert options["round_to"] == CHANNEL_ALIGN and options["ratio"] == 0.5
    for options in channels_step("size"):
        assert "round_to" not in options


@pytest.mark.parametrize(
    "first, then",
    [
        ({"sparsity": 0.5}, {"sparsity": 0.5, "fp16": True}),
        ({"sparsity": 0.3}, {"int8": 1, "sparsity": 0.3}),
        ({"sparsity": 0.5}, {"sparsity": 0.5}),
    ],
)
def test_a_candidate_extending_a_kept_build_resumes_it_with_the_bytes_of_a_full_build(
    squeezer, monkeypatch, first, then
):
    """The combination adds a knob to a built candidate and the outputs write the best again: the
    build resumes from the kept prefix (the calibrated re-fit is not run again), and its bytes (the
    provenance of a calibrated int8 step included) are those of a full build, what ``apply`` replays."""
    from onnxsqueeze import recipe
    from onnxsqueeze.search import squeezer as sq_module

    monkeypatch.setattr(sq_module, "PREFIX_MIN_S", 0.0)  # keep every step of these tiny builds
    squeezer.prepare()
    squeezer._build_measured(first)
    made: list[str] = []
    plain = recipe._make_pass

    def spy(step, calibration, model):
        if model is not None:  # a step about to run (make_passes only checks options, model None)
            made.append(step.pass_name)
        return plain(step, calibration, model)

    monkeypatch.setattr(recipe, "_make_pass", spy)
    resumed, idle = squeezer._build_measured(then)
    assert idle == []
    assert "sparsity" not in made  # resumed after the re-fit
    made.clear()
    monkeypatch.setattr(sq_module, "PREFIX_BYTES", 0)
    full = squeezer.build(then)
    assert "sparsity" in made
    assert resumed.SerializeToString(deterministic=True) == full.SerializeToString(deterministic=True)
    assert squeezer.build_cached(then).SerializeToString(deterministic=True) == full.SerializeToString(
        deterministic=True
    )


def test_kept_builds_stay_within_their_byte_limit():
    from onnxsqueeze.recipe import Step
    from onnxsqueeze.search.squeezer import _Prefixes

    kept = _Prefixes(10)
    steps = [Step.of("fp16", {}), Step.of("sparsity", {"sparsity": 0.5})]
    kept.put("a", steps[:1], b"12345", (True,), ({},))
    kept.put("a", steps, b"123456", (True, True), ({}, {}))
    assert kept.size <= 10 and len(kept.items) == 1
    assert kept.longest("a", steps, 0) == (b"123456", (True, True), ({}, {}))
    assert kept.longest("a", steps[:1], 0) is None  # evicted first
    assert kept.longest("b", steps, 0) is None  # another base model
    kept.put("a", steps, b"x" * 11, (True,), ({},))  # larger than the limit: not kept
    assert kept.size <= 10


def test_the_written_best_resumed_from_kept_builds_is_what_apply_replays(tmp_path, monkeypatch):
    """End to end: a search whose candidates resume kept builds (channels with its least-squares
    re-fit, then + fp16 on top) writes a best model that ``apply`` rebuilds byte for byte."""
    from onnxsqueeze import recipe
    from onnxsqueeze.search import squeezer as sq_module

    monkeypatch.setattr(sq_module, "PREFIX_MIN_S", 0.0)  # keep every step of these tiny builds
    refits: list[dict] = []
    plain = recipe._make_pass

    def spy(step, calibration, model):
        if model is not None and step.pass_name == "channels":
            refits.append(dict(step.options))
        return plain(step, calibration, model)

    monkeypatch.setattr(recipe, "_make_pass", spy)
    src, out, results = squeeze_small_cnn(tmp_path, "channels,fp16")
    best = results["best"]
    assert set(best["settings"]) == {"channels", "fp16"}, best["label"]  # resumed on top of channels
    # One re-fit per channels setting measured: neither '+ fp16' nor writing the best re-fitted.
    ratios = {p["settings"]["channels"] for p in results["points"] if "channels" in p["settings"]}
    assert sorted(o["ratio"] for o in refits) == sorted(ratios)
    monkeypatch.setattr(recipe, "_make_pass", plain)
    assert apply_recipe(out, src) == (out / best["file"]).read_bytes()


def test_without_labels_an_embedding_model_is_searched_by_cosine(tmp_path) -> None:
    """No --metric and no labels: top-1 agreement for class scores, the cosine for L2-normalized
    rows (an embedding's argmax means nothing), as every other command judges them."""
    import numpy as np

    from onnxsqueeze import io as sio
    from onnxsqueeze import search as S
    from tests.helpers import model_from_text

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 32] x) => (float[N, 24] y) {
        h = MatMul (x, w)
        y = LpNormalization <axis = 1, p = 2> (h)
    }
    """
    w = rand((32, 24), 11)
    embedding = sio.save(model_from_text(text, {"w": w}), tmp_path / "emb.onnx")
    scores = sio.save(
        model_from_text(text.replace("y = LpNormalization <axis = 1, p = 2> (h)", "y = Relu (h)"), {"w": w}),
        tmp_path / "scores.onnx",
    )
    data = tmp_path / "x.npz"
    np.savez(data, x=rand((40, 32), 12))
    options = SqueezeOptions(budget=E.Budget(1.0), techniques=("fp16",))
    for path, expected in ((embedding, "cosine"), (scores, "agreement")):
        squeezer = S.make_squeezer(path, data, options=options, out_dir=tmp_path / path.stem, use_cache=False)
        assert squeezer.evaluator.metric.name == expected
    named = S.make_squeezer(
        embedding, data, options=options, out_dir=tmp_path / "named", use_cache=False, metric="agreement"
    )
    assert named.evaluator.metric.name == "agreement"  # a named metric is kept
