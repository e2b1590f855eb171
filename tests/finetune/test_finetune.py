"""Recovery fine-tuning: ONNX -> PyTorch -> ONNX round trips, masks, refusal, cache, the CLI."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx2torch")

import itertools

from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app
from onnxsqueeze.errors import UnsupportedModelError
from onnxsqueeze.finetune import FinetuneConfig, finetune, normalize, to_onnx, to_torch
from tests.helpers import model_from_text, rand, run_ort

CNN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4] y) {
    a = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (x, w0, b0)
    ar = Relu (a)
    d = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1], group = 8> (ar, wd, bd)
    dr = Relu (d)
    s = Add (dr, ar)
    c = Concat <axis = 1> (s, ar)
    u = Resize <mode = "nearest"> (c, roi, scales)
    p = GlobalAveragePool (u)
    f = Flatten (p)
    h = MatMul (f, w2)
    y = Gemm <transB = 1> (h, w3, b3)
}
"""


def _cnn() -> onnx.ModelProto:
    return model_from_text(
        CNN,
        {
            "w0": rand((8, 3, 3, 3), 1, 0.3),
            "b0": rand((8,), 2, 0.1),
            "wd": rand((8, 1, 3, 3), 3, 0.3),
            "bd": rand((8,), 4, 0.1),
            "roi": np.zeros((0,), np.float32),
            "scales": np.array([1, 1, 2, 2], np.float32),
            "w2": rand((16, 12), 5, 0.3),
            "w3": rand((4, 12), 6, 0.3),
            "b3": rand((4,), 7, 0.1),
        },
    )


def _data(n: int, seed: int) -> dict[str, np.ndarray]:
    return {"x": rand((n, 3, 8, 8), seed)}


def _sparse(model: onnx.ModelProto, fraction: float = 0.5) -> onnx.ModelProto:
    """Zero the smallest ``fraction`` of every weight of rank > 1 (magnitude pruning)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        w = onnx.numpy_helper.to_array(init)
        if w.ndim > 1:
            cut = np.quantile(np.abs(w), fraction)
            init.CopyFrom(
                onnx.numpy_helper.from_array(np.where(np.abs(w) <= cut, 0, w).astype(w.dtype), init.name)
            )
    return out


def test_round_trip_conv_depthwise_gemm_add_concat_resize() -> None:
    model = normalize(_cnn())
    graph = to_torch(model)
    data = _data(16, 0)
    out, report = to_onnx(graph, model, data, tolerance=1e-5)
    assert report.max_abs <= 1e-5
    ref = run_ort(model, data)[0]
    got = run_ort(out, data)[0]
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # the interface is the candidate's, dimension names included
    assert out.graph.input[0].type == model.graph.input[0].type
    assert out.graph.output[0].type == model.graph.output[0].type
    onnx.checker.check_model(out, full_check=True)
    # the candidate's value and weight names come back (the exporter's /<module>/<Op>_output_0 go)
    kept = {"a", "ar", "d", "dr", "s", "c", "u", "p", "f", "h", "y"}
    assert kept <= {v for n in out.graph.node for v in n.output}
    assert {t.name for t in out.graph.initializer} >= {"w0", "b0", "wd", "bd", "w2", "w3", "b3"}
    # MatMul's initializer weight trains too (promoted from a buffer), Resize scales do not
    shapes_ = sorted(tuple(p.shape) for p in graph.parameters())
    assert (16, 12) in shapes_ and (4,) in shapes_ and (8, 1, 3, 3) in shapes_


def test_zeros_stay_exact_after_training(tmp_path) -> None:
    teacher = _cnn()
    sio.save(teacher, tmp_path / "t.onnx")
    cand = _sparse(teacher)
    zeros = {i.name: onnx.numpy_helper.to_array(i) == 0 for i in cand.graph.initializer if len(i.dims) > 1}
    cfg = FinetuneConfig(epochs=3, batch_size=16, lr=1e-2, time_budget_s=None)
    r = finetune(cand, tmp_path / "t.onnx", _data(64, 1), val=_data(32, 2), config=cfg, cache_dir=tmp_path)
    rep = r.report
    assert rep.zeros["candidate"] == sum(int(z.sum()) for z in zeros.values()) > 0
    assert rep.zeros["result"] >= rep.zeros["candidate"]
    # the weights moved (training happened) and the agreement with the teacher did not get worse
    before = {i.name: onnx.numpy_helper.to_array(i) for i in normalize(cand).graph.initializer}
    after = [onnx.numpy_helper.to_array(i) for i in r.model.graph.initializer]
    moved = [
        a
        for a in after
        if a.ndim > 1 and not any(a.shape == b.shape and np.array_equal(a, b) for b in before.values())
    ]
    assert moved
    for a in after:
        if a.ndim > 1:
            # each sparse weight's zero pattern survives (matched by shape)
            pats = [z for n, z in zeros.items() if z.shape == a.shape]
            if pats:
                assert any(np.all(a[z] == 0) for z in pats)
    assert rep.after["agreement"] >= rep.before["agreement"]
    assert rep.training.history and rep.export_max_abs <= 1e-4


def test_same_seed_same_weights(tmp_path) -> None:
    teacher = _cnn()
    sio.save(teacher, tmp_path / "t.onnx")
    cand = _sparse(teacher)
    cfg = FinetuneConfig(epochs=2, batch_size=16, time_budget_s=None, seed=3)
    a = finetune(cand, tmp_path / "t.onnx", _data(48, 1), config=cfg, cache_dir=tmp_path)
    b = finetune(cand, tmp_path / "t.onnx", _data(48, 1), config=cfg, cache_dir=tmp_path)
    for x, y in zip(a.model.graph.initializer, b.model.graph.initializer, strict=True):
        assert np.array_equal(onnx.numpy_helper.to_array(x), onnx.numpy_helper.to_array(y))
    # the second run read the teacher's outputs from the cache
    assert a.report.cache_hits == {"train": False} and b.report.cache_hits == {"train": True}


def test_refuses_an_op_without_converter(tmp_path) -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y) {
        a = MatMul (x, w)
        y = Hardmax (a)
    }
    """
    model = model_from_text(text, {"w": rand((4, 4), 0)})
    sio.save(model, tmp_path / "m.onnx")
    sio.save_npz(tmp_path / "d.npz", {"x": rand((8, 4), 1)})
    with pytest.raises(UnsupportedModelError, match="Hardmax"):
        to_torch(normalize(model))
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tmp_path / "m.onnx"),
            "--teacher",
            str(tmp_path / "m.onnx"),
            "--data",
            str(tmp_path / "d.npz"),
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 2
    assert "Hardmax" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_cli_writes_a_verified_model_with_a_manifest(tmp_path) -> None:
    teacher = _cnn()
    sio.save(teacher, tmp_path / "t.onnx")
    sio.save(_sparse(teacher), tmp_path / "c.onnx")
    sio.save_npz(tmp_path / "d.npz", _data(64, 1))
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tmp_path / "c.onnx"),
            "--teacher",
            str(tmp_path / "t.onnx"),
            "--data",
            str(tmp_path / "d.npz"),
            "-o",
            str(out),
            "--epochs",
            "2",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert out.exists() and (tmp_path / "o.onnx.manifest.json").exists()
    model = sio.load(out)
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["y"]


def test_lstm_converter_matches_onnxruntime() -> None:
    # onnx2torch has no LSTM; the project's converter (finetune/ops.py) fills it
    import torch

    text = """
    <ir_version: 8, opset_import: ["" : 14]>
    g (float[T, N, 3] x) => (float[T, 2, N, 4] y, float[2, N, 4] h) {
        y, h = LSTM <hidden_size = 4, direction = "bidirectional"> (x, w, r, b)
    }
    """
    model = model_from_text(
        text, {"w": rand((2, 16, 3), 1, 0.5), "r": rand((2, 16, 4), 2, 0.5), "b": rand((2, 32), 3, 0.2)}
    )
    graph = to_torch(model)
    x = rand((5, 2, 3), 4)
    ref = run_ort(model, {"x": x})
    with torch.no_grad():
        got = graph.module(torch.from_numpy(x))
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-5, rtol=0)
    # its weights train
    assert sum(p.numel() for p in graph.parameters()) == 2 * (16 * 3 + 16 * 4 + 32)


def test_gradual_sparsity_reaches_the_target_and_keeps_it(tmp_path) -> None:
    from onnxsqueeze.finetune.gradual import cubic_schedule, gradual_sparsity, sparsity_of

    sched = cubic_schedule(0.8, 4)
    assert sched[-1] == pytest.approx(0.8) and all(a < b for a, b in itertools.pairwise(sched))
    # big steps first (Zhu & Gupta): the first step is more than a quarter of the target
    assert sched[0] > 0.8 / 4
    teacher = _cnn()
    sio.save(teacher, tmp_path / "t.onnx")
    cfg = FinetuneConfig(epochs=2, batch_size=16, time_budget_s=None)
    r = gradual_sparsity(
        teacher,
        tmp_path / "t.onnx",
        _data(64, 1),
        sparsity=0.8,
        steps=3,
        val=_data(32, 2),
        config=cfg,
        cache_dir=tmp_path,
    )
    # every weight of rank > 1 is 80% zeros (up to rounding per layer)
    for init in r.model.graph.initializer:
        a = onnx.numpy_helper.to_array(init)
        if a.ndim > 1 and a.size >= 16 and a.dtype == np.float32:
            assert (a == 0).mean() == pytest.approx(0.8, abs=0.05)
    assert sparsity_of(r.model) >= 0.75


def test_prune_cli_finetune_flag(tmp_path) -> None:
    sio.save(_cnn(), tmp_path / "t.onnx")
    sio.save_npz(tmp_path / "d.npz", _data(48, 1))
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(
        app,
        [
            "prune",
            str(tmp_path / "t.onnx"),
            "--sparsity",
            "0.5",
            "--finetune",
            "--data",
            str(tmp_path / "d.npz"),
            "-o",
            str(out),
            "--json",
        ],
        env={"XDG_CACHE_HOME": str(tmp_path / "xdg")},
    )
    assert res.exit_code == 0, res.output
    from onnxsqueeze.finetune.gradual import sparsity_of

    assert sparsity_of(sio.load(out)) >= 0.45
    # without training data: one line, exit 2
    res = CliRunner().invoke(
        app,
        [
            "prune",
            str(tmp_path / "t.onnx"),
            "--sparsity",
            "0.5",
            "--finetune",
            "-o",
            str(tmp_path / "x.onnx"),
        ],
    )
    assert res.exit_code == 2 and "--data" in res.output


SEG = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 16, 16] x) => (float[N, 1, 16, 16] y) {
    a = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (x, w0, b0)
    ar = Relu (a)
    y = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (ar, w1, b1)
}
"""


def test_output_downsampling_is_trained_against_full_resolution(tmp_path) -> None:
    # resize --keep-interface on an image-to-image model: the fine-tuned low-resolution model gets
    # closer to the original's full-resolution maps (relative RMS error falls)
    from onnxsqueeze.passes.resolution import rewrite_resolution

    teacher = model_from_text(
        SEG,
        {
            "w0": rand((8, 1, 3, 3), 1, 0.5),
            "b0": rand((8,), 2, 0.1),
            "w1": rand((1, 8, 3, 3), 3, 0.5),
            "b1": rand((1,), 4, 0.1),
        },
    )
    sio.save(teacher, tmp_path / "t.onnx")
    small, _, _ = rewrite_resolution(teacher, resolution=(8, 8), keep_interface=True)
    data = {"x": rand((64, 1, 16, 16), 5)}
    cfg = FinetuneConfig(epochs=15, batch_size=16, lr=1e-2, time_budget_s=None)
    r = finetune(
        small, tmp_path / "t.onnx", data, val={"x": rand((32, 1, 16, 16), 6)}, config=cfg, cache_dir=tmp_path
    )
    key = "rel_rmse:y"
    assert r.report.after[key] < r.report.before[key]
    assert [d.dim_value for d in r.model.graph.output[0].type.tensor_type.shape.dim][1:] == [1, 16, 16]
    assert any(n.op_type == "Resize" for n in r.model.graph.node)


def test_gradual_channels_rounds_remove_channels_and_train(tmp_path) -> None:
    # the channel pass writes opset 20 (Constant-19, Resize-19): converted with onnx2torch's newest
    # converters for those ops, guarded by the conversion check
    from onnxsqueeze.finetune.gradual import gradual_channels

    teacher = _cnn()
    sio.save(teacher, tmp_path / "t.onnx")
    cfg = FinetuneConfig(epochs=2, batch_size=16, time_budget_s=None)
    r = gradual_channels(
        tmp_path / "t.onnx",
        tmp_path / "t.onnx",
        _data(64, 1),
        ratio=0.5,
        rounds=2,
        config=cfg,
        cache_dir=tmp_path,
    )

    def params(m: onnx.ModelProto) -> int:
        return sum(int(np.prod(i.dims)) for i in m.graph.initializer)

    assert params(r.model) < params(teacher)
    assert r.report.conversion_max_abs <= 1e-4
    assert [d.dim_value for d in r.model.graph.output[0].type.tensor_type.shape.dim][1:] == [4]


def test_gradual_global_scope_reaches_the_overall_target(tmp_path) -> None:
    from onnxsqueeze.finetune.gradual import gradual_sparsity, sparsity_of

    teacher = _cnn()
    sio.save(teacher, tmp_path / "t.onnx")
    r = gradual_sparsity(
        teacher,
        tmp_path / "t.onnx",
        _data(64, 1),
        sparsity=0.8,
        steps=2,
        scope="global",
        val=_data(32, 2),
        config=FinetuneConfig(epochs=1, batch_size=16, time_budget_s=None),
        cache_dir=tmp_path,
    )
    # one threshold over all weights: the overall fraction is the target, layers differ
    assert sparsity_of(r.model) == pytest.approx(0.8, abs=0.01)
    per_layer = [
        float((onnx.numpy_helper.to_array(i) == 0).mean())
        for i in r.model.graph.initializer
        if len(i.dims) > 1 and onnx.numpy_helper.to_array(i).size >= 16
    ]
    assert max(per_layer) - min(per_layer) > 0.05


def test_range_test_keeps_masks_and_picks_a_rate_below_divergence(tmp_path) -> None:
    """The learning rate found on a sparse candidate: within bounds, zeros exact, weights restored."""
    import torch

    from onnxsqueeze.finetune import prepare
    from onnxsqueeze.finetune.train import Batch, _outputs, find_lr, loss_fn

    teacher = _cnn()
    sio.save(teacher, tmp_path / "t.onnx")
    cfg = FinetuneConfig(batch_size=16, time_budget_s=None, max_lr=0.03)
    s = prepare(
        _sparse(teacher), tmp_path / "t.onnx", _data(96, 1), val=_data(32, 2), config=cfg, cache_dir=tmp_path
    )
    g = s.graph
    before = {k: v.clone() for k, v in g.module.state_dict().items()}
    xs = [torch.from_numpy(s.x_tr[n]) for n in g.input_names]
    ts = [torch.from_numpy(t) for t in s.t_tr]
    seen_zeros: list[bool] = []

    def batch_loss(idx):
        # the masks are in force at every forward of the test
        named = dict(g.module.named_parameters())
        seen_zeros.append(all(bool((named[n][~m] == 0).all()) for n, m in g.masks.items()))
        g.set_mode()
        b = Batch(tuple(x[idx] for x in xs), tuple(t[idx] for t in ts), None)
        return loss_fn(s.kinds, _outputs(g, s.kinds, b.inputs), b, cfg)

    lr = find_lr(g, g.parameters(), batch_loss, len(xs[0]), cfg)
    assert 1e-5 <= lr <= 0.03
    assert seen_zeros and all(seen_zeros)
    after = g.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cpu_clock_budget(tmp_path) -> None:
    from onnxsqueeze.errors import InputError
    from onnxsqueeze.finetune.train import clock

    assert clock(FinetuneConfig(clock="cpu")) is __import__("time").process_time
    with pytest.raises(InputError, match="clock"):
        clock(FinetuneConfig(clock="gpu"))
    teacher = _cnn()
    sio.save(teacher, tmp_path / "t.onnx")
    r = finetune(
        _sparse(teacher),
        tmp_path / "t.onnx",
        _data(64, 1),
        val=_data(32, 2),
        config=FinetuneConfig(time_budget_s=30, clock="cpu", batch_size=16, lr=1e-3),
        cache_dir=tmp_path,
    )
    assert r.report.training.lr == 1e-3 and not r.report.training.lr_found
    assert r.report.training.history
