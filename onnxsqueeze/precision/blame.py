"""Blame: which nodes create the error of a failed float16 conversion.

The converted model is run with every intermediate tensor exposed, next to the float32 model, and
each node gets the relative L2 error it *creates*: ``e(out) - max e(inputs)`` with
``e(v) = ||v_low - v_fp32|| / ||v_fp32||``. The nodes creating the most error are kept float32; a
node already float32 that still creates error receives its inputs rounded, so its float32 region
extends upstream through the data movement (Reshape, Transpose: no error created) to the node
whose rounding is to blame. Each round keeps only what the measurement blames, so the float32
region stays small.

onnxruntime is imported inside functions; nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnx_ir as ir

_FLOATISH = (ir.DataType.FLOAT, None)  # None: not inferred on the prepared model

# Ops that move values without computing: a rounding error passes through them unchanged.
DATA_MOVEMENT = frozenset(
    {
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Slice",
        "Gather",
        "Concat",
        "Split",
        "Expand",
        "Tile",
        "Pad",
        "DepthToSpace",
        "SpaceToDepth",
        "GatherElements",
        "GatherND",
    }
)


def _capture(
    proto: onnx.ModelProto, names: list[str], feeds: Mapping[str, np.ndarray], provider: str
) -> dict[str, np.ndarray]:
    from onnxsqueeze import runtime

    exposed = runtime.with_outputs(proto, names)
    sess = runtime.session(exposed, provider=provider)
    inputs = {i.name: np.asarray(feeds[i.name]) for i in sess.get_inputs()}
    return runtime.run_batched(sess, inputs, batch_size=2)


def blame(
    base: ir.Model,
    candidate: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    keep: Mapping[str, str],
    *,
    provider: str = "cpu",
) -> tuple[dict[str, float], dict[str, float]]:
    """The relative error each node of ``base`` creates in ``candidate`` (see the module docstring).

    Returns:
        ``(created, errors)``: per node name ``e(out) - max e(inputs)`` (nodes with a float
        output), and per tensor name its relative L2 error ``e``.
    """
    base_proto = ir.serde.serialize_model(base)
    names = [
        o.name
        for n in base.graph
        for o in n.outputs
        if o is not None and o.name and o.dtype in _FLOATISH and not o.is_graph_output()
    ]
    present = {o for n in candidate.graph.node for o in n.output}
    names = [n for n in names if n in present]
    ref = _capture(base_proto, names, feeds, provider)
    got = _capture(candidate, names, feeds, provider)
    errors: dict[str, float] = {}
    for name in names:
        r, c = np.asarray(ref[name]), np.asarray(got[name])
        if r.shape != c.shape or not np.issubdtype(r.dtype, np.floating):
            continue
        r64, c64 = r.astype(np.float64), c.astype(np.float64)
        finite = np.isfinite(r64)
        if np.any(finite & ~np.isfinite(c64)):
            errors[name] = float("inf")
            continue
        norm = float(np.linalg.norm(r64[finite]))
        diff = float(np.linalg.norm((r64 - c64)[finite]))
        errors[name] = diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))
    created: dict[str, float] = {}
    for node in base.graph:
        outs = [errors[o.name] for o in node.outputs if o is not None and o.name in errors]
        if not node.name or not outs:
            continue
        ins = [errors.get(v.name, 0.0) for v in node.inputs if v is not None and v.name]
        worst_in = max(ins, default=0.0)
        out = max(outs)
        created[node.name] = (out - worst_in) if np.isfinite(out) else float("inf")
    return created, errors


def keep_blamed(
    base: ir.Model,
    keep: dict[str, str],
    created: Mapping[str, float],
    errors: Mapping[str, float],
    *,
    fraction: float = 0.25,
    per_round: int = 8,
) -> list[str]:
    """Keep float32 the nodes creating the most error; returns the names added.

    Nodes creating at least ``fraction`` of the largest created error are blamed, at most
    ``per_round`` of them. A blamed node that is already float32 gets its inputs rounded: the
    float32 region extends upstream from it, through nodes that create (almost) no error of their
    own (data movement: Reshape, Transpose, ...), up to and including the first node that computes.
    """
    ranked = sorted(((v, k) for k, v in created.items() if v > 0), reverse=True)
    if not ranked:
        return []
    top = ranked[0][0]
    producers = {o.name: n for n in base.graph for o in n.outputs if o is not None and o.name}
    added: list[str] = []

    def add(name: str, why: str) -> None:
        if name not in keep:
            keep[name] = why
            added.append(name)

    blamed = [k for v, k in ranked if v >= fraction * top or not np.isfinite(v)][: max(per_round, 1)]
    for name in blamed:
        how = created[name]
        if name not in keep:
            add(name, f"kept float32 to meet the error budget (creates relative error {how:.3g})")
            continue
        by_name = {n.name: n for n in base.graph if n.name}
        pending = [by_name[name]] if name in by_name else []
        seen: set[str] = set()
        while pending:
            node = pending.pop()
            for v in node.inputs:
                if v is None or not v.name or v.name in seen or errors.get(v.name, 0.0) <= 0:
                    continue
                seen.add(v.name)
                p = producers.get(v.name)
                if p is None or not p.name:
                    continue
                if p.name not in keep:
                    add(
                        p.name,
                        f"kept float32 to meet the error budget (its output '{v.name}' reaches "
                        f"'{name}' rounded; relative error {errors[v.name]:.3g})",
                    )
                if p.op_type in DATA_MOVEMENT:
                    pending.append(p)  # it only moves rounded values: the rounding is further up
    return added
