"""Least-squares reconstruction of the layers that lost input channels (channel pruning + re-fit).

For a consumer layer ``L`` with original output ``Y`` (on calibration inputs, kept output channels
only) and pruned input ``X'`` (the *pruned* model's activation, so earlier re-fits are taken into
account), find the weights and bias minimizing the ridge-regularized error

    min_{W, b} || P(X') W + 1 b - Y ||^2 + lam * ||W||^2,      lam = ridge * mean(diag(P^T P))

where ``P(X')`` is the im2col matrix of the conv (one row per output position, ``C_in' * k_h * k_w``
columns) or the input itself for Gemm/MatMul. The normal equations ``(P^T P + lam I) W = P^T Y``
are accumulated over chunks of randomly sampled rows, so memory stays at ``O(D^2)`` with
``D = C_in' * k_h * k_w``: an exact regression on a subsample rather than a cheaper surrogate. The
fit includes the bias (an intercept column), which is the bias recalibration; a BatchNormalization
after ``L`` keeps its statistics because its input is matched. ``bias`` mode only shifts the bias by
the mean residual (``b += mean(Y - Y')``).

**Validation.** A least-squares fit with as many columns as rows reproduces its calibration data
exactly and generalizes badly (a squeeze-excite Conv after a global pool has one row per sample).
So every 4th calibration sample is held out (a quarter of the rows when there are fewer than 4
samples): normal equations are accumulated separately for the fit and the held-out rows, the ridge
strength ``lam`` is chosen per layer from ``RIDGES`` by the held-out error of the weights fitted on
the fit rows, and the layer keeps its un-refit weights when no ridge beats them on held-out data.
The chosen ridge is then refitted on all rows. The report gives the held-out errors.

**Cost.** Accumulating costs ``rows * D^2`` and solving ``D^3`` per ridge; rows are capped at
``max_rows`` and at ``max_flops / D^2`` (at least ``2 D``), and layers wider than ``max_columns``
are skipped (named in the report). A masked fit (a sparsity pattern kept) solves one system per
output; when that exceeds ``max_flops`` the dense system is solved once and the pruned weights
are zeroed (``projected`` in the report; the held-out check still decides), so no layer runs for
minutes.

Layers are fitted in waves: a wave holds the layers whose upstream re-fitted layers are all done.
The original's outputs of all layers come from one onnxruntime run; each wave's inputs come from
a run of only the part of the pruned model that the previous waves changed (``_Activations``), so
a channels candidate costs about two forward passes of the calibration set, not two per wave.
"""

# NOTE: onnxruntime is imported inside functions; this module does no file I/O.

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.passes._ir import set_const_input


def capture(
    model: onnx.ModelProto | ir.Model,
    data: Mapping[str, np.ndarray],
    names: Sequence[str],
    *,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Run ``model`` on ``data`` in onnxruntime and return the values ``names`` (any intermediate).

    The model is not modified; intermediate values are exposed as extra outputs of a copy.
    """
    from onnxsqueeze import runtime, shapes

    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else model
    copy = runtime.with_outputs(proto, names)
    feeds = shapes.select_inputs(copy, data, label="calibration data")
    outs = runtime.run_batched(runtime.session(copy), feeds, batch_size=batch_size)
    return {name: outs[name] for name in names}


_reuse_lock = threading.Lock()
_reuse: dict[str, dict[str, np.ndarray]] | None = None  # set inside reuse_original_outputs()


@contextlib.contextmanager
def reuse_original_outputs() -> Iterator[None]:
    """Within the block, :func:`refit` keeps the original's layer outputs it captured and reuses
    them when the same original is re-fitted against on the same calibration data again.

    A search's channel candidates all re-fit against the one unpruned model: its outputs are the
    same for every setting, so one capture serves them all (the pruned model's inputs are still
    captured per candidate). Only the last (original, calibration) pair is kept, and nothing is
    kept after the block. Nested blocks share the outer one's store.
    """
    global _reuse
    with _reuse_lock:
        outer = _reuse is not None
        if not outer:
            _reuse = {}
    try:
        yield
    finally:
        if not outer:
            with _reuse_lock:
                _reuse = None


def keep_original_outputs() -> None:
    """Open the store of :func:`reuse_original_outputs` for the rest of this process (idempotent).

    For a search's worker process: like the serial search, every channels candidate it builds
    re-fits against the same original, and a worker lives for the whole run. Without it each
    candidate captured the original's outputs again (a fleet's channels candidates cost about
    twice the CPU in workers than serially). The same bound: only the last (original,
    calibration) pair is kept.
    """
    global _reuse
    with _reuse_lock:
        if _reuse is None:
            _reuse = {}


def _original_outputs(
    original: onnx.ModelProto, calibration: Mapping[str, np.ndarray], names: Sequence[str]
) -> dict[str, np.ndarray]:
    """:func:`capture` of ``original``, through the store of :func:`reuse_original_outputs` when
    one is open (keyed by the model's bytes and the calibration arrays; callers only read them)."""
    memo = _reuse
    if memo is None:
        return capture(original, calibration, names)
    h = hashlib.sha256(original.SerializeToString(deterministic=True))
    for k in sorted(calibration):
        a = np.ascontiguousarray(calibration[k])
        h.update(f"{k}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    key = h.hexdigest()
    with _reuse_lock:
        have = dict(memo.get(key, {}))
    missing = [n for n in names if n not in have]
    if missing:
        have.update(capture(original, calibration, missing))
        with _reuse_lock:
            memo.clear()
            memo[key] = have
    return {n: have[n] for n in names}


class _Activations:
    """Values of a model being re-fitted, on the calibration data, recomputed only where they changed.

    Re-fitting layer by layer needs each wave's inputs from the model *with the earlier waves'
    new weights*. Running the whole model once per wave costs one forward pass per wave (16 on a
    16-group classifier: three quarters of a channels candidate's time). Instead, values that no
    pending (not yet re-fitted) layer can change are *final*; the final values that feed changing
    nodes are kept, and a wave runs only the sub-graph between them and the wave's inputs.

    The sub-graph is fed the kept values in chunks along axis 0, so only values whose first axis
    is the sample axis are kept; anything else (or a graph with subgraph attributes) is
    recomputed from the model inputs, which is what a plain :func:`capture` does.
    """

    def __init__(self, model: ir.Model, data: Mapping[str, np.ndarray], batch_size: int = 64) -> None:
        self.model, self.data = model, data
        arrays = [np.asarray(v) for v in data.values() if np.ndim(v)]
        self.samples = len(arrays[0]) if arrays else 0
        self.batch_size = batch_size
        self.store: dict[str, np.ndarray] = {}
        self.fed: dict[str, np.ndarray] | None = None
        self.incremental = self.samples > 0 and not any(
            a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
            for node in model.graph
            for a in node.attributes.values()
        )

    def _dirty(self, pending: set[ir.Node]) -> set[ir.Node]:
        """Nodes whose outputs a pending layer can still change (the pending layers included)."""
        dirty: set[ir.Node] = set()
        for node in self.model.graph:
            if node in pending or any(v is not None and v.producer() in dirty for v in node.inputs):
                dirty.add(node)
        return dirty

    def get(self, names: Sequence[str], pending: set[ir.Node]) -> dict[str, np.ndarray]:
        """The values ``names`` (final: no pending layer upstream) of the current model."""
        if not self.incremental:
            return capture(self.model, self.data, names, batch_size=self.batch_size)
        graph = self.model.graph
        values = {v.name: v for node in graph for v in node.outputs if v.name}
        values.update({v.name: v for v in graph.inputs if v.name})
        dirty = self._dirty(pending)
        # Walk back from the wanted values to kept values, model inputs and constants.
        needed: set[ir.Node] = set()
        boundary: set[str] = set()
        stack = [values[n] for n in names if n in values]
        if len(stack) != len(names):
            return capture(self.model, self.data, names, batch_size=self.batch_size)
        while stack:
            v = stack.pop()
            if v.name in self.store or v.is_graph_input():
                boundary.add(v.name or "")
                continue
            node = v.producer()
            if node is None or node in needed:
                continue
            needed.add(node)
            stack.extend(x for x in node.inputs if x is not None and x.const_value is None)
        # Final values computed here (or fed) that changing nodes read: kept for later waves.
        keep = {
            v.name
            for node in graph
            if node in dirty
            for v in node.inputs
            if v is not None
            and v.name
            and v.const_value is None
            and not v.is_graph_input()
            and v.producer() not in dirty
            and (v.producer() in needed or v.name in self.store)
        }
        outputs = list(dict.fromkeys([*names, *sorted(keep - self.store.keys())]))
        sub = self._submodel(needed, sorted(boundary), outputs)
        if self.fed is None:  # the model inputs, cast to their dtypes as capture() does
            from onnxsqueeze import shapes

            proto = ir.serde.serialize_model(self.model)
            self.fed = shapes.select_inputs(proto, self.data, label="calibration data")
        feeds = {n: self.store[n] if n in self.store else self.fed[n] for n in boundary}
        static = _static_batch(self.model)
        from onnxsqueeze import runtime

        outs = runtime.run_batched(runtime.session(sub), feeds, batch_size=static or self.batch_size)
        for name in outputs:
            a = outs[name]
            if name in keep and a.ndim and a.shape[0] == self.samples:
                self.store[name] = a
        # Kept values that only final nodes read cannot be a boundary of a later wave.
        live = {v.name for node in graph if node in dirty for v in node.inputs if v is not None}
        self.store = {k: a for k, a in self.store.items() if k in live}
        return {n: outs[n] for n in names}

    def _submodel(
        self, nodes: set[ir.Node], inputs: Sequence[str], outputs: Sequence[str]
    ) -> onnx.ModelProto:
        """The current model restricted to ``nodes``, fed ``inputs``, returning ``outputs``."""
        graph = self.model.graph
        keep_index = [i for i, node in enumerate(graph) if node in nodes]
        full = ir.serde.serialize_model(self.model)
        g = full.graph
        kept_nodes = [g.node[i] for i in keep_index]
        used = {name for n in kept_nodes for name in n.input}
        by_name = {v.name: v for node in graph for v in node.outputs if v.name}
        by_name.update({v.name: v for v in graph.inputs if v.name})

        def info(name: str) -> onnx.ValueInfoProto:
            v = by_name[name]
            dtype = v.dtype.value if v.dtype is not None else onnx.TensorProto.FLOAT
            return onnx.helper.make_tensor_value_info(name, dtype, None)

        new = onnx.helper.make_graph(
            kept_nodes,
            g.name,
            [info(n) for n in inputs],
            [info(n) for n in outputs],
            initializer=[t for t in g.initializer if t.name in used],
        )
        out = onnx.helper.make_model(new, opset_imports=full.opset_import, ir_version=full.ir_version)
        out.functions.extend(full.functions)
        return out


def _static_batch(model: ir.Model) -> int | None:
    """The fixed first dimension of the model's first input, if it has one."""
    shape = model.graph.inputs[0].shape if model.graph.inputs else None
    if shape is not None and len(shape) and isinstance(shape[0], int) and shape[0] > 0:
        return int(shape[0])
    return None


def _ancestors(graph: ir.Graph, targets: Sequence[ir.Node]) -> dict[ir.Node, set[ir.Node]]:
    """For each target node, the other targets upstream of it."""
    wanted = set(targets)
    up: dict[ir.Node, set[ir.Node]] = {}
    for node in graph:
        acc: set[ir.Node] = set()
        for v in node.inputs:
            p = v.producer() if v is not None else None
            if p is not None and p in up:
                acc |= up[p]
                if p in wanted:
                    acc.add(p)
        up[node] = acc
    return {t: up.get(t, set()) for t in targets}


def _attr_ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else default


def _attr_num(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    if attr is None:
        return default
    return float(attr.as_float() if attr.type == ir.AttributeType.FLOAT else attr.as_int())


class _Normal:
    """Accumulates ``G = P^T P`` and ``H = P^T Y`` (float64) plus the current prediction's error."""

    def __init__(self, d: int, n_out: int) -> None:
        self.g = np.zeros((d, d))
        self.h = np.zeros((d, n_out))
        self.yy = 0.0
        self.err_before = 0.0
        self.resid_sum = np.zeros(n_out)
        self.rows = 0

    def add(self, p: np.ndarray, y: np.ndarray, pred: np.ndarray) -> None:
        # float32 products per chunk (at most 4096 rows, 2.7x faster than float64 here), summed in
        # float64 across chunks; the ridge term dwarfs the rounding error.
        p32, y32 = p.astype(np.float32, copy=False), y.astype(np.float32, copy=False)
        self.g += (p32.T @ p32).astype(np.float64)
        self.h += (p32.T @ y32).astype(np.float64)
        y64 = y.astype(np.float64)
        self.yy += float((y64**2).sum())
        r = y64 - pred.astype(np.float64)
        self.err_before += float((r**2).sum())
        self.resid_sum += r.sum(axis=0)
        self.rows += len(p)

    def merged(self, other: _Normal) -> _Normal:
        out = _Normal(self.g.shape[0], self.h.shape[1])
        out.g, out.h = self.g + other.g, self.h + other.h
        out.yy, out.err_before = self.yy + other.yy, self.err_before + other.err_before
        out.resid_sum, out.rows = self.resid_sum + other.resid_sum, self.rows + other.rows
        return out

    def error(self, w: np.ndarray) -> float:
        """Relative squared error ``||P w - Y||^2 / ||Y||^2`` of weights ``w`` on these rows."""
        err = _quadratic(w, self.g) - 2 * float(np.sum(w * self.h)) + self.yy
        return max(err, 0.0) / max(self.yy, 1e-30)

    @property
    def before(self) -> float:
        """Relative squared error of the current (un-refit) weights on these rows."""
        return self.err_before / max(self.yy, 1e-30)

    def solve(self, ridge: float, intercept: bool, support: np.ndarray | None = None) -> np.ndarray:
        """Weights ``[D, n_out]`` (last row the bias when ``intercept``); :meth:`error` scores them.

        With ``support`` (a boolean ``[D, n_out]`` mask), each output column is fitted on its own
        nonzero rows only, so a sparsity pattern is kept: ``w_S = (G_SS + lam I)^-1 H_S``.
        """
        d = self.g.shape[0]
        reg = np.eye(d) * ridge * max(float(np.mean(np.diag(self.g))), 1e-12)
        if intercept:
            reg[-1, -1] = 0.0
        a = self.g + reg
        if support is None:
            w = _solve_spd(a, self.h)
        else:
            w = np.zeros_like(self.h)
            for o in range(self.h.shape[1]):
                s = np.flatnonzero(support[:, o])
                if len(s):
                    w[s, o] = _solve_spd(a[np.ix_(s, s)], self.h[s, o])
        return w


def _quadratic(w: np.ndarray, g: np.ndarray) -> float:
    """``sum_j w_j^T G w_j`` through one BLAS product (``np.einsum`` without a path is 20x slower)."""
    return float(np.sum(w * (g @ w)))


def _solve_spd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, b, rcond=None)[0]


def _conv_rows(
    xp: np.ndarray, node: ir.Node, kernel: tuple[int, int], pos: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """im2col rows ``[M, C * kh * kw]`` (W's flattening order) at output positions ``pos``."""
    sh, sw = _attr_ints(node, "strides", [1, 1])
    dh, dw = _attr_ints(node, "dilations", [1, 1])
    n, ho, wo = pos
    cols = [xp[n, :, ho * sh + i * dh, wo * sw + j * dw] for i in range(kernel[0]) for j in range(kernel[1])]
    return np.stack(cols, axis=-1).reshape(len(n), -1)


RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # relative to mean(diag(P^T P)); chosen per layer
MASKED_RIDGES = (1e-3, 1e-2, 1e-1)  # masked fits solve one system per output: fewer candidates
HOLDOUT = 4  # every HOLDOUT-th calibration sample is held out


def _budget_rows(total: int, d: int, max_rows: int, max_flops: float) -> int:
    """Rows sampled for a fit with ``d`` columns: at most ``max_rows`` and ``max_flops / d^2``."""
    return min(total, max_rows, max(2 * d, int(max_flops / max(d * d, 1))))


def _holdout(sample_of_row: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of held-out rows: every HOLDOUT-th sample, or a random quarter of the rows."""
    if samples >= HOLDOUT:
        return sample_of_row % HOLDOUT == HOLDOUT - 1
    return rng.random(len(sample_of_row)) < 1.0 / HOLDOUT


class _Split:
    """Normal equations of the fit rows and of the held-out rows."""

    def __init__(self, d: int, n_out: int) -> None:
        self.fit, self.val = _Normal(d, n_out), _Normal(d, n_out)

    def add(self, p: np.ndarray, y: np.ndarray, pred: np.ndarray, held: np.ndarray) -> None:
        for acc, sel in ((self.fit, ~held), (self.val, held)):
            if sel.any():
                acc.add(p[sel], y[sel], pred[sel])


def _fit_conv(
    node: ir.Node,
    x: np.ndarray,
    y: np.ndarray,
    mode: str,
    ridge: float | None,
    max_rows: int,
    rng: np.random.Generator,
    masked: bool = False,
    max_flops: float = 4e10,
    max_columns: int = 4096,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | str:
    w_value, b_value = node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None
    w = w_value.const_value.numpy()  # type: ignore[union-attr]
    b = b_value.const_value.numpy() if b_value is not None and b_value.const_value is not None else None
    if w.ndim != 4 or x.ndim != 4:
        return "only 2-D convolutions are re-fitted"
    auto_pad = node.attributes.get("auto_pad")
    if auto_pad is not None and auto_pad.as_string() not in ("NOTSET", ""):
        return "auto_pad convolutions are not re-fitted"
    cout, cin, kh, kw = w.shape
    d = cin * kh * kw
    if mode != "bias" and d + 1 > max_columns:
        return f"{d + 1} columns: too wide to re-fit within the cost bound (max {max_columns})"
    pt, pl, pb, pr = _attr_ints(node, "pads", [0, 0, 0, 0])
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n_all, _, hout, wout = y.shape
    total = n_all * hout * wout
    m = _budget_rows(total, d + 1, max_rows, max_flops)
    flat = np.sort(rng.choice(total, size=m, replace=False)) if m < total else np.arange(total)
    n_idx, rest = np.divmod(flat, hout * wout)
    h_idx, w_idx = np.divmod(rest, wout)
    held = _holdout(n_idx, n_all, rng)
    acc = _Split(d + 1, cout)
    w_flat = w.reshape(cout, d).astype(np.float64)
    b_cur = b.astype(np.float64) if b is not None else np.zeros(cout)
    for s in range(0, m, 4096):
        sel = slice(s, s + 4096)
        p = _conv_rows(xp, node, (kh, kw), (n_idx[sel], h_idx[sel], w_idx[sel]))
        target = y[n_idx[sel], :, h_idx[sel], w_idx[sel]]
        pred = p @ w_flat.T + b_cur
        acc.add(np.concatenate([p, np.ones((len(p), 1), p.dtype)], axis=1), target, pred, held[sel])
    w_new, b_new, info = _solve(acc, w_flat.T, b_cur, mode, ridge, masked, max_flops=max_flops)
    return w_new.T.reshape(cout, cin, kh, kw), b_new, info


def _solve(
    acc: _Split,
    w_cur: np.ndarray,
    b_cur: np.ndarray,
    mode: str,
    ridge: float | None,
    masked: bool = False,
    intercept: bool = True,
    max_flops: float = 4e10,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Choose the ridge on held-out rows, refit on all rows; keep the current weights if no better.

    ``w_cur`` is ``[D, n_out]`` (without the bias row); with ``intercept`` the fit has a bias row.
    """
    everything = acc.fit.merged(acc.val)
    # Validation is only meaningful with rows on both sides; otherwise judge on all rows.
    fit, val = (acc.fit, acc.val) if acc.fit.rows and acc.val.rows else (everything, everything)
    info: dict[str, Any] = {"rows": everything.rows, "held_out_rows": acc.val.rows if fit is not val else 0}
    before = val.before
    if mode == "bias":
        delta = fit.resid_sum / max(fit.rows, 1)
        b_try = b_cur + delta
        w_aug = np.concatenate([w_cur, b_try[None, :]], axis=0)
        after = val.error(w_aug) if intercept else before
        if after >= before:
            return w_cur, b_cur, info | {"error_before": before, "error_after": before, "refit": False}
        delta = everything.resid_sum / max(everything.rows, 1)
        return w_cur, b_cur + delta, info | {"error_before": before, "error_after": after, "refit": True}
    support = None
    if masked:
        support = w_cur != 0
        if intercept:
            support = np.concatenate([support, np.ones((1, w_cur.shape[1]), bool)], axis=0)
    candidates = (ridge,) if ridge is not None else (MASKED_RIDGES if masked else RIDGES)
    if support is not None:
        # One system per output column: sum |S_o|^3 / 3 flops per ridge. Beyond the bound, solve
        # the dense system once and zero the pruned weights (projected; validation still judges).
        cost = float(np.sum(support.sum(axis=0).astype(np.float64) ** 3) / 3) * len(candidates)
        if cost > max_flops:
            info["projected"] = True
            mask = support

            def solve(acc: _Normal, lam: float) -> np.ndarray:
                return acc.solve(lam, intercept=intercept) * mask

        else:

            def solve(acc: _Normal, lam: float) -> np.ndarray:
                return acc.solve(lam, intercept=intercept, support=support)

    else:

        def solve(acc: _Normal, lam: float) -> np.ndarray:
            return acc.solve(lam, intercept=intercept)

    tried: dict[float, float] = {}

    def held_out(i: int) -> float:
        if candidates[i] not in tried:
            tried[candidates[i]] = val.error(solve(fit, candidates[i]))
        return tried[candidates[i]]

    # The held-out error is unimodal in log(lam) over the grid in practice: start in the middle
    # and walk downhill, so a layer solves 2-4 systems instead of all 5 (same choice).
    i = len(candidates) // 2
    while True:
        here = held_out(i)
        down = [j for j in (i - 1, i + 1) if 0 <= j < len(candidates) and held_out(j) < here]
        if not down:
            break
        i = min(down, key=held_out)
    after, lam = tried[candidates[i]], candidates[i]
    info["ridges_tried"] = len(tried)
    if not after < before:  # the re-fit does not generalize: keep what we had
        return w_cur, b_cur, info | {"error_before": before, "error_after": before, "refit": False}
    sol = solve(everything, lam)
    info |= {"error_before": before, "error_after": after, "ridge": lam, "refit": True}
    if intercept:
        return sol[:-1], sol[-1], info
    return sol, b_cur, info


def _fit_dense(
    node: ir.Node,
    x: np.ndarray,
    y: np.ndarray,
    mode: str,
    ridge: float | None,
    max_rows: int,
    rng: np.random.Generator,
    masked: bool = False,
    max_flops: float = 4e10,
    max_columns: int = 4096,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | str:
    """Gemm / MatMul: the effective ``Y = X @ W + b`` view of the layer."""
    w = node.inputs[1].const_value.numpy().astype(np.float64)  # type: ignore[union-attr]
    x2 = x.reshape(-1, x.shape[-1]) if node.op_type == "MatMul" else x
    y2 = y.reshape(-1, y.shape[-1]) if node.op_type == "MatMul" else y
    if node.op_type == "Gemm":
        alpha, beta = _attr_num(node, "alpha", 1.0), _attr_num(node, "beta", 1.0)
        w_eff = alpha * (w.T if node.attributes.get("transB") and node.attributes["transB"].as_int() else w)
        c_value = node.inputs[2] if len(node.inputs) > 2 else None
        c = c_value.const_value.numpy() if c_value is not None and c_value.const_value is not None else None
        if c is not None and c.ndim == 2 and c.shape[0] != 1:
            return "Gemm with a per-row C is not re-fitted"
        b_cur = (
            np.broadcast_to(beta * c.astype(np.float64).reshape(-1), (w_eff.shape[1],))
            if c is not None
            else 0
        )
        b_cur = np.zeros(w_eff.shape[1]) + b_cur
    else:
        if mode == "bias":
            return "MatMul has no bias to correct"
        w_eff, b_cur = w, np.zeros(w.shape[1])
    intercept = node.op_type == "Gemm"
    d = w_eff.shape[0] + int(intercept)
    if mode != "bias" and d > max_columns:
        return f"{d} columns: too wide to re-fit within the cost bound (max {max_columns})"
    total = len(x2)
    m = _budget_rows(total, d, max_rows, max_flops)
    rows = np.sort(rng.choice(total, size=m, replace=False)) if m < total else np.arange(total)
    samples = len(x) if x.ndim else 1
    held = _holdout(rows * samples // max(total, 1), samples, rng)
    acc = _Split(d, w_eff.shape[1])
    for s in range(0, m, 4096):
        sel = rows[s : s + 4096]
        p, target = x2[sel], y2[sel]
        pred = p @ w_eff + b_cur
        if intercept:
            p = np.concatenate([p, np.ones((len(p), 1), p.dtype)], axis=1)
        acc.add(p, target, pred, held[s : s + 4096])
    return _solve(acc, w_eff, b_cur, mode, ridge, masked, intercept=intercept, max_flops=max_flops)


def _name(value: ir.Value | None) -> str:
    assert value is not None and value.name, "re-fitted layers read and write named values"
    return value.name


def _group(node: ir.Node) -> int:
    attr = node.attributes.get("group")
    return attr.as_int() if attr is not None else 1


def _write(graph: ir.Graph, node: ir.Node, w: np.ndarray, b: np.ndarray) -> None:
    dtype = node.inputs[1].const_value.numpy().dtype  # type: ignore[union-attr]
    if node.op_type == "Conv":
        set_const_input(graph, node, 1, w.astype(dtype))
        set_const_input(graph, node, 2, b.astype(dtype))
    elif node.op_type == "Gemm":
        trans_b = node.attributes.get("transB") is not None and node.attributes["transB"].as_int()
        set_const_input(graph, node, 1, (w.T if trans_b else w).astype(dtype))
        set_const_input(graph, node, 2, b.astype(dtype))
        node.attributes["alpha"] = ir.AttrFloat32("alpha", 1.0)
        node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    else:
        set_const_input(graph, node, 1, w.astype(dtype))


def refit(
    original: onnx.ModelProto,
    model: ir.Model,
    layers: Sequence[ir.Node],
    kept: Mapping[str, np.ndarray],
    calibration: Mapping[str, np.ndarray],
    *,
    mode: str = "lsq",
    ridge: float | None = None,
    max_rows: int = 20000,
    max_flops: float = 4e10,
    max_columns: int = 4096,
    seed: int = 0,
    masked: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Re-fit ``layers`` of the pruned ``model`` (in place) to match ``original`` on ``calibration``.

    Args:
        original: the model before pruning (same value names).
        model: the pruned model; the layers' weights are replaced.
        layers: Conv (group 1), Gemm or MatMul nodes of ``model`` whose input lost channels.
        kept: kept channel indices per value name (for the layers' pruned outputs).
        calibration: model inputs, first axis = samples.
        ridge: the relative ridge strength; None chooses it per layer from ``RIDGES`` on the
            held-out rows (see the module docstring).
        max_rows, max_flops, max_columns: the cost bounds of one layer (module docstring).
        masked: keep each layer's zero weights at zero (re-fit of a sparsity pattern).

    Returns:
        One dict per layer: ``layer``, ``op``, ``rows``, ``held_out_rows``, ``error_before`` and
        ``error_after`` (relative squared error ``||Y' - Y||^2 / ||Y||^2`` on the held-out rows),
        ``ridge`` and ``refit`` (False: the un-refit weights were kept), or ``skipped``.
    """
    rng = np.random.default_rng(seed)
    deps = _ancestors(model.graph, layers)
    done: set[ir.Node] = set()
    report: list[dict[str, Any]] = []
    pending = list(layers)
    # The original's outputs of every layer in one run (kept channels only), and the pruned
    # model's inputs per wave from the sub-graph that changed (_Activations).
    names = list(dict.fromkeys(_name(n.outputs[0]) for n in layers))
    targets = _original_outputs(original, calibration, names)
    for node in layers:
        name = _name(node.outputs[0])
        idx = kept.get(name)
        axis = -1 if node.op_type == "MatMul" else 1
        if idx is not None and targets[name].ndim > 1 and len(idx) != targets[name].shape[axis]:
            targets[name] = np.take(targets[name], idx, axis=axis)
    # A MatMul over sequences ([N, T, C] or [T, N, C]) may put another axis first: no sub-graph
    # runs then. A 2-D one ([N, C]: a classifier's head after Flatten) rows by sample like a Conv.
    sequential = any(n.op_type == "MatMul" and targets[_name(n.outputs[0])].ndim != 2 for n in layers)
    activations = _Activations(model, calibration)
    activations.incremental &= not sequential
    while pending:
        wave = [n for n in pending if deps[n] <= done]
        if not wave:  # cannot happen in a DAG; guard against an infinite loop
            wave = pending[:1]
        inputs = activations.get(list(dict.fromkeys(_name(n.inputs[0]) for n in wave)), set(pending))
        for node in wave:
            y = targets[_name(node.outputs[0])]
            x = inputs[_name(node.inputs[0])]
            grouped = node.op_type == "Conv" and _group(node) != 1
            if grouped or node.op_type not in ("Conv", "Gemm", "MatMul"):
                result: Any = f"{node.op_type} with groups is not re-fitted"
            else:
                fit = _fit_conv if node.op_type == "Conv" else _fit_dense
                result = fit(node, x, y, mode, ridge, max_rows, rng, masked, max_flops, max_columns)
            entry: dict[str, Any] = {"layer": node.name, "op": node.op_type, "mode": mode}
            if isinstance(result, str):
                entry["skipped"] = result
            else:
                w, b, info = result
                if info.get("refit", True):
                    _write(model.graph, node, w, b)
                entry.update(info)
            report.append(entry)
            done.add(node)
            pending.remove(node)
            if on_progress:
                on_progress(len(done), len(layers))
    return report
