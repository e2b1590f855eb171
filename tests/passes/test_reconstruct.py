"""The validated least-squares solve of ``passes.reconstruct`` on synthetic regressions (seeded).

``Y = X W + b + noise``: the fit must recover ``W`` when rows are plentiful, keep the current
weights when the held-out rows say a re-fit does not generalize, and keep a sparsity pattern
(exactly, or projected when the per-output solves exceed the cost bound).
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxsqueeze.passes import reconstruct
from onnxsqueeze.passes.reconstruct import _budget_rows, _holdout, _solve, _Split


def _accumulate(
    x: np.ndarray, y: np.ndarray, w_cur: np.ndarray, b_cur: np.ndarray, held: np.ndarray
) -> _Split:
    acc = _Split(x.shape[1] + 1, y.shape[1])
    p = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    acc.add(p, y, x @ w_cur + b_cur, held)
    return acc


def test_plenty_of_rows_recovers_the_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 6))
    w, b = rng.standard_normal((6, 3)), rng.standard_normal(3)
    y = x @ w + b + 0.01 * rng.standard_normal((2000, 3))
    held = _holdout(np.arange(2000), 2000, rng)
    w_new, b_new, info = _solve(
        _accumulate(x, y, np.zeros((6, 3)), np.zeros(3), held), np.zeros((6, 3)), np.zeros(3), "lsq", None
    )
    assert info["refit"] and info["held_out_rows"] == 500
    assert info["error_after"] < 1e-3 < info["error_before"]
    np.testing.assert_allclose(w_new, w, atol=0.01)
    np.testing.assert_allclose(b_new, b, atol=0.01)


def test_no_generalization_keeps_the_current_weights() -> None:
    # The target is noise unrelated to x: any fit only memorizes the fit rows.
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 30)), rng.standard_normal((40, 2))
    w_cur, b_cur = np.zeros((30, 2)), np.zeros(2)
    held = _holdout(np.arange(40), 40, rng)
    w_new, b_new, info = _solve(_accumulate(x, y, w_cur, b_cur, held), w_cur, b_cur, "lsq", 1e-8)
    assert not info["refit"] and info["error_after"] == info["error_before"]
    assert np.array_equal(w_new, w_cur) and np.array_equal(b_new, b_cur)


@pytest.mark.parametrize("budget", [1e12, 1.0])
def test_masked_fit_keeps_the_zeros(budget: float) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3000, 8))
    w = rng.standard_normal((8, 4)) * (rng.random((8, 4)) < 0.5)
    y = x @ w + 0.5
    w_cur = w * 0.5  # same pattern, wrong values
    held = _holdout(np.arange(3000), 3000, rng)
    w_new, _, info = _solve(
        _accumulate(x, y, w_cur, np.zeros(4), held),
        w_cur,
        np.zeros(4),
        "lsq",
        None,
        masked=True,
        max_flops=budget,
    )
    assert info["refit"] and info.get("projected", False) == (budget == 1.0)
    assert np.all(w_new[w == 0] == 0)
    assert info["error_after"] < 0.1 * info["error_before"]


def test_row_budget() -> None:
    assert _budget_rows(10**6, 100, 20000, 4e10) == 20000
    assert _budget_rows(10**6, 2305, 20000, 4e10) == 7528  # 4e10 / 2305^2
    assert _budget_rows(10**6, 5000, 20000, 4e10) == 10000  # never fewer than 2 D
    assert _budget_rows(300, 100, 20000, 4e10) == 300
    assert reconstruct.HOLDOUT == 4


def test_wave_inputs_from_the_changed_subgraph_equal_a_full_run() -> None:
    """``_Activations`` reruns only what re-fitted layers changed; the values must equal a full run.

    Residual graph: the inner conv ``b`` and the Add's conv ``c`` are re-fitted in turn; after
    ``b``'s weights change, ``c``'s input comes from kept values (``ar`` feeds both ``b`` and the
    Add), and then the head's input too, and each must equal a fresh run of the whole model.
    """
    import onnx_ir as ir

    from tests.graphs import residual_model

    model = ir.serde.deserialize_model(residual_model(zero=False))
    nodes = {n.outputs[0].name: n for n in model.graph}
    b, c, y = nodes["b"], nodes["c"], nodes["y"]
    data = {"x": np.random.default_rng(3).standard_normal((10, 3, 8, 8)).astype(np.float64)}
    acts = reconstruct._Activations(model, data, batch_size=4)
    assert acts.incremental
    first = acts.get(["ar"], {b, c, y})
    np.testing.assert_allclose(first["ar"], reconstruct.capture(model, data, ["ar"])["ar"], rtol=1e-6)
    assert "ar" in acts.store  # read by the pending conv b and the Add downstream of it
    w = b.inputs[1].const_value.numpy() * 0.5  # the "re-fit" of b
    b.inputs[1].const_value = ir.tensor(w.astype(np.float32))
    for name, pending in (("br", {c, y}), ("f", {y})):
        got = acts.get([name], pending)[name]
        np.testing.assert_allclose(got, reconstruct.capture(model, data, [name])[name], rtol=1e-5, atol=1e-6)
    assert set(acts.store) <= {"f"}  # nothing upstream of the last pending layer is kept


class _ChannelCandidates:
    """Channels candidates of the small CNN against one original and calibration set, counting
    the captures (onnxruntime runs of a model's layer outputs) they make."""

    def __init__(self, monkeypatch) -> None:
        from tests.graphs import cnn, cnn_inputs

        self.calib = {"x": cnn_inputs(16, seed=3)}
        self.original = cnn()
        self.runs: list[int] = []
        plain_capture = reconstruct.capture

        def counting(model, data, names, **kw):
            self.runs.append(len(names))
            return plain_capture(model, data, names, **kw)

        monkeypatch.setattr(reconstruct, "capture", counting)

    def weights(self, ratio: float) -> dict[str, np.ndarray]:
        import onnx_ir as ir

        from onnxsqueeze.passes.channels import PruneChannelsPass

        m = ir.serde.deserialize_model(self.original)
        assert PruneChannelsPass(ratio=ratio, calibration=self.calib)(m).modified
        return {v.name: v.const_value.numpy() for v in m.graph.initializers.values()}

    def captures(self, *ratios: float) -> int:
        """The captures building candidates at ``ratios`` made."""
        before = len(self.runs)
        for r in ratios:
            self.weights(r)
        return len(self.runs) - before


def test_channel_candidates_of_one_search_capture_the_original_once_with_the_same_weights(
    monkeypatch,
) -> None:
    """Inside ``reuse_original_outputs`` a second re-fit against the same original and calibration
    data runs the original no more, and every candidate's weights equal a re-fit without reuse."""
    c = _ChannelCandidates(monkeypatch)
    expected = {r: c.weights(r) for r in (0.25, 0.5)}
    alone = len(c.runs)  # the original's layer outputs (+ any full run of the pruned model), twice
    c.runs.clear()
    with reconstruct.reuse_original_outputs():
        got = {r: c.weights(r) for r in (0.25, 0.5)}
    assert reconstruct._reuse is None  # nothing kept after the block
    assert len(c.runs) == alone - 1  # the second candidate did not run the original
    for r in (0.25, 0.5):
        assert got[r].keys() == expected[r].keys()
        for name in expected[r]:
            np.testing.assert_array_equal(got[r][name], expected[r][name])


def test_a_worker_keeps_the_originals_outputs_between_candidates(monkeypatch) -> None:
    """keep_original_outputs() (a search worker's set-up) opens the store for the process: of two
    channels candidates built one after the other, outside any block, the second runs the
    original no more, and a search's block inside it does not close the store."""
    c = _ChannelCandidates(monkeypatch)
    monkeypatch.setattr(reconstruct, "_reuse", None)  # this process's store, put back after
    alone = c.captures(0.25, 0.5)
    reconstruct.keep_original_outputs()
    reconstruct.keep_original_outputs()  # idempotent
    assert c.captures(0.25) == alone // 2  # the first fills the store
    assert c.captures(0.5) == alone // 2 - 1  # the original is not run again
    with reconstruct.reuse_original_outputs():
        c.captures(0.5)
    assert reconstruct._reuse is not None  # the block did not close the process's store


@pytest.mark.parametrize("rows", [60, 120, 400])
def test_the_ridge_walk_picks_the_full_grids_ridge_with_fewer_solves(rows: int) -> None:
    """Fewer solves, same choice: the walk from the grid's middle ends where the full grid's
    minimum of the held-out error is (few rows for 40 columns: a large ridge wins)."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 40)) @ rng.standard_normal((40, 40))  # correlated columns
    w = rng.standard_normal((40, 5))
    y = x @ w + 2.0 * rng.standard_normal((rows, 5))
    held = _holdout(np.arange(rows), rows, rng)
    acc = _accumulate(x, y, np.zeros((40, 5)), np.zeros(5), held)
    _, _, info = _solve(acc, np.zeros((40, 5)), np.zeros(5), "lsq", None)
    errors = [acc.val.error(acc.fit.solve(lam, intercept=True)) for lam in reconstruct.RIDGES]
    assert info["ridge"] == reconstruct.RIDGES[int(np.argmin(errors))]
    assert info["error_after"] == pytest.approx(min(errors))
    assert info["ridges_tried"] < len(reconstruct.RIDGES)


def test_a_2d_matmul_head_keeps_the_incremental_wave_runs(monkeypatch) -> None:
    """A classifier's MatMul head after Flatten (``[N, C]``, the paddle orientation classifier's
    form) rows by sample like a Conv: the waves run the changed sub-graph, not the whole pruned
    model once per wave (which made a channels build ~3x slower on that model)."""
    import onnx_ir as ir

    from onnxsqueeze.passes.channels import PruneChannelsPass
    from tests.graphs import conv_matmul

    rng = np.random.default_rng(5)
    calib = {"x": rng.standard_normal((24, 3, 6, 6)).astype(np.float32)}
    full_runs: list[list[str]] = []
    plain_capture = reconstruct.capture

    def counting(model, data, names, **kw):
        full_runs.append(list(names))
        return plain_capture(model, data, names, **kw)

    monkeypatch.setattr(reconstruct, "capture", counting)
    m = ir.serde.deserialize_model(conv_matmul())
    result = PruneChannelsPass(ratio=0.5, calibration=calib)(m)
    assert result.modified
    refitted = {e["op"] for e in result.reconstruction if "skipped" not in e}
    assert "MatMul" in refitted
    assert len(full_runs) == 1  # the original's layer outputs only
