"""Pruning as users run it: apply a pruning pass, verify the result and measure it.

- :func:`prune_weights`: zero-weight (magnitude) pruning (``PruneWeightsPass``);
- :func:`prune_channels`: structured channel pruning (``PruneChannelsPass``);
- :func:`sensitivity`: each prunable group alone at several ratios, as rows of data (the search
  uses it to give each group its own ratio).

Each returns plain JSON-able reports: params, nonzero params, MACs, file size and zipped size
before and after, the verification metrics against the original, and the accuracy (labels in the
data) or top-1 agreement with the original, with and without reconstruction when calibration data
is given. Models are ``onnx.ModelProto`` in and out; this module does no file I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze import io as sio
from onnxsqueeze import metrics, shapes
from onnxsqueeze.errors import UnsupportedModelError, VerificationError, one_line
from onnxsqueeze.passes.channels import PruneChannelsPass, PruneChannelsResult
from onnxsqueeze.passes.sparsity import PruneWeightsPass, PruneWeightsResult, to_sparse_initializers
from onnxsqueeze.pipeline import run_passes

Progress = Callable[[int, int], None]


def limit(data: Mapping[str, np.ndarray], samples: int | None) -> dict[str, np.ndarray]:
    """The first ``samples`` samples of every array (all when None)."""
    return {k: (v[:samples] if samples else v) for k, v in data.items()}


def _first_output(model: onnx.ModelProto, data: Mapping[str, np.ndarray]) -> np.ndarray:
    from onnxsqueeze import runtime

    sess = runtime.session(model)
    out = runtime.run_batched(sess, shapes.select_inputs(model, data))
    return out[sess.get_outputs()[0].name]


def score(
    model: onnx.ModelProto, data: Mapping[str, np.ndarray], reference: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy of the first output (``labels`` in data) and top-1 agreement with ``reference``.

    Outputs that are not class scores ``[N, C]`` get the cosine similarity to ``reference``.
    """
    out = _first_output(model, data)
    result: dict[str, float] = {}
    classes = out.ndim == 2 and out.shape[1] >= 2 and not metrics.unit_rows(out)  # not embeddings
    if "labels" in data and classes:
        result["accuracy"] = float(np.mean(out.argmax(1) == np.asarray(data["labels"]).reshape(-1)))
    if reference is not None:
        if classes:
            result["agreement"] = float(np.mean(out.argmax(1) == reference.argmax(1)))
        else:
            a, b = out.reshape(-1).astype(np.float64), reference.reshape(-1).astype(np.float64)
            result["cosine"] = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30))
    return result


def measure(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, Any]:
    """Params, nonzero params, MACs, serialized and zipped size of a model."""
    from onnxsqueeze.summary import compressed_size, count_macs, weight_stats

    stats = weight_stats(model)
    nonzero = 0
    for tensor in sio.iter_tensors(sio.densified(model).graph):
        nonzero += int(np.count_nonzero(onnx.numpy_helper.to_array(tensor)))
    try:
        macs: int | None = count_macs(model, input_shapes)[0]
    except Exception:  # a dynamic non-batch dim: MACs unknown, the rest still useful
        macs = None
    data = model.SerializeToString(deterministic=True)
    return {
        "params": stats["params"],
        "nonzero_params": nonzero,
        "sparsity": stats["sparsity"],
        "macs": macs,
        "file_bytes": len(data),
        "zipped_bytes": compressed_size(data),
    }


def _interface(model: onnx.ModelProto) -> list[tuple[str, list[Any]]]:
    return [(vi.name, shapes.declared_shape(vi)) for vi in [*shapes.graph_inputs(model), *model.graph.output]]


def _dims_compatible(declared: list[Any], inferred: list[Any]) -> bool:
    """Whether ``inferred`` only makes ``declared`` more specific (a symbol became a number)."""
    return len(declared) == len(inferred) and all(
        not isinstance(d, int) or d == i for d, i in zip(declared, inferred, strict=True)
    )


def keep_declared_outputs(original: onnx.ModelProto, pruned: onnx.ModelProto) -> None:
    """Put the original's declared output types back where shape inference only specialized them.

    Serializing after the pass may replace a symbolic output dim by the number inference found
    (all-MiniLM's ``embeddings`` ``[batch, Divembeddings_dim_1]`` became ``[batch, 384]``): the
    model's interface is the same, so the original's declaration is kept. A concrete dim that
    changed is left as it is, for :func:`check_result` to refuse.
    """
    declared = {vi.name: vi for vi in original.graph.output}
    for vi in pruned.graph.output:
        was = declared.get(vi.name)
        if was is not None and was.type.HasField("tensor_type") and vi.type.HasField("tensor_type"):
            same_dtype = was.type.tensor_type.elem_type == vi.type.tensor_type.elem_type
            if same_dtype and _dims_compatible(shapes.declared_shape(was), shapes.declared_shape(vi)):
                vi.type.CopyFrom(was.type)


def check_result(original: onnx.ModelProto, pruned: onnx.ModelProto) -> None:
    """The pruned model passes the full checker (with shape inference) and keeps its interface.

    Raises:
        VerificationError: it does not.
    """
    try:
        sio.check_model(pruned)
    except Exception as e:
        raise VerificationError(f"the pruned model is invalid: {e}") from e
    if _interface(original) != _interface(pruned):
        raise VerificationError("pruning changed the model's inputs or outputs (a bug; please report it)")


def _verify(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    data: Mapping[str, np.ndarray] | None,
    label: str,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
):
    from onnxsqueeze.verify import verify

    report = verify(
        original,
        pruned,
        data=shapes.select_inputs(original, data) if data else None,
        data_label=label,
        input_shapes=input_shapes,
    )
    if any(o.nonfinite for o in report.outputs):
        raise VerificationError("the pruned model produces NaN/Inf where the original does not")
    return report


def _source(model: onnx.ModelProto) -> str:
    return sio.sha256_model(model)


def _ir(model: onnx.ModelProto) -> ir.Model:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return ir.serde.deserialize_model(copy)


def prune_weights(
    model: onnx.ModelProto,
    *,
    sparsity: float,
    scope: str = "layer",
    skip_first_last: bool = False,
    calibration: Mapping[str, np.ndarray] | None = None,
    eval_data: Mapping[str, np.ndarray] | None = None,
    eval_label: str = "data",
    sparse_storage: bool = False,
    reconstruction: str = "lsq",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    source_sha256: str | None = None,
    on_progress: Progress | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Magnitude-prune a model, re-fit with calibration data, verify and measure.

    ``reconstruction`` is ``lsq`` (masked least-squares re-fit with calibration data) or ``none``;
    ``input_shapes`` fixes dynamic input dimensions for verification with random inputs and MACs.

    Returns:
        The pruned model and its report (see the module docstring).

    Raises:
        InputError: bad options or data. VerificationError: the result is invalid or not finite.
    """
    notes: list[str] = []
    calib = shapes.select_inputs(model, calibration) if calibration is not None else None
    p = PruneWeightsPass(
        sparsity=sparsity,
        scope=scope,  # type: ignore[arg-type]
        skip_first_last=skip_first_last,
        calibration=calib,
        reconstruction=reconstruction,  # type: ignore[arg-type]
        on_progress=on_progress,
    )
    m = _ir(model)
    result = run_passes(m, [p], source_sha256=source_sha256 or _source(model))
    assert isinstance(result, PruneWeightsResult)
    if not result.layers:
        raise UnsupportedModelError(
            f"model '{model.graph.name}': no Conv/Gemm/MatMul weight initializers to prune"
        )
    pruned = ir.serde.serialize_model(m)
    if calib is None or reconstruction == "none":
        notes.append(
            "no calibration data or --reconstruction none: weights pruned by magnitude alone, no re-fit"
        )
    if not result.modified:
        notes.append("nothing was pruned: the weights already have this sparsity")
    without = None
    if calib is not None and reconstruction != "none" and eval_data is not None:
        plain = _ir(model)
        dataclasses.replace(p, calibration=None, on_progress=None)(plain)
        without = ir.serde.serialize_model(plain)
    report = _report(model, pruned, without, eval_data, eval_label, notes, input_shapes)
    if sparse_storage:
        pruned = _store_sparse(pruned, report, notes)
    report.update(
        {
            "mode": "sparsity",
            "options": p.options(),
            "sparsity": result.sparsity,
            "layers": result.layers,
            "reconstruction": result.reconstruction,
            "modified": result.modified,
        }
    )
    return pruned, report


def store_sparse(dense: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """``dense`` with its weights stored as ``sparse_initializer`` where each tensor is smaller so
    (:func:`onnxsqueeze.passes.sparsity.to_sparse_initializers`), if onnxruntime runs that form
    with bit-identical outputs (seeded random inputs); else ``dense`` itself.

    The one sparse storage: ``prune --sparse-storage``, and every model ``squeeze`` writes or
    sizes and ``apply`` replays (a deterministic function of the dense model, so both give the
    same bytes). onnx's basic checker must pass; the full one is for the dense form (the caller's).
    The tensors the sparse ones stand for must equal the dense ones bit for bit; a model whose
    inputs have dynamic dimensions (no random inputs without shapes) must load in onnxruntime.

    Returns:
        The model to write and why it is dense (empty when it is sparse-stored).
    """
    from onnxsqueeze.errors import InputError
    from onnxsqueeze.verify import verify

    stored, converted = to_sparse_initializers(dense)
    if not converted:
        return dense, "no weight tensor is sparse enough to gain from it"
    try:
        onnx.checker.check_model(stored)
        before = {t.name: t for t in dense.graph.initializer}
        for t in sio.densified(stored).graph.initializer:
            if t.SerializeToString(deterministic=True) != before[t.name].SerializeToString(
                deterministic=True
            ):
                a, b = onnx.numpy_helper.to_array(t), onnx.numpy_helper.to_array(before[t.name])
                if a.dtype != b.dtype or not np.array_equal(a, b):
                    return dense, f"tensor '{t.name}' does not come back from its sparse form"
        try:
            diff = verify(dense, stored, seed=0).max_abs
        except InputError:  # a dynamic dimension: no random inputs; onnxruntime must load it
            from onnxsqueeze import runtime

            runtime.session(stored)
            diff = 0.0
    except Exception as e:  # a runtime that cannot load them: keep the dense form, say so
        return dense, one_line(e)[:160]
    if diff != 0.0:
        return dense, f"its onnxruntime outputs differ from the dense model's (max abs {diff:.3g})"
    return stored, ""


def _store_sparse(dense: onnx.ModelProto, report: dict[str, Any], notes: list[str]) -> onnx.ModelProto:
    """:func:`store_sparse` for ``prune --sparse-storage``: the report's sizes follow the file."""
    stored, why = store_sparse(dense)
    if why:
        notes.append(f"sparse storage not used: {why}")
        return dense
    converted = len(stored.graph.sparse_initializer) - len(dense.graph.sparse_initializer)
    size = measure(stored)
    if size["file_bytes"] >= report["after"]["file_bytes"]:
        notes.append("sparse storage not used: the file was not smaller")
        return dense
    notes.append(
        f"{converted} weight tensor(s) stored as sparse_initializer: file {report['after']['file_bytes']} -> "
        f"{size['file_bytes']} bytes, zipped {report['after']['zipped_bytes']} -> {size['zipped_bytes']}"
    )
    report["dense_after"] = report["after"]
    logical = {k: report["after"][k] for k in ("params", "nonzero_params", "sparsity", "macs")}
    report["after"] = size | logical  # same weights and MACs; only the file changed
    return stored


def prune_channels(
    model: onnx.ModelProto,
    *,
    ratio: float,
    ratios: Mapping[str, float] | None = None,
    criterion: str = "l2",
    round_to: int = 1,
    coupled: bool = True,
    calibration: Mapping[str, np.ndarray] | None = None,
    reconstruction: str = "lsq",
    eval_data: Mapping[str, np.ndarray] | None = None,
    eval_label: str = "data",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    source_sha256: str | None = None,
    on_progress: Progress | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Remove channels, propagate, re-fit with calibration data, verify and measure.

    With calibration and evaluation data the report also holds the accuracy of the same pruning
    without reconstruction (``accuracy.pruned_without_reconstruction``).
    """
    notes: list[str] = []
    calib = shapes.select_inputs(model, calibration) if calibration is not None else None
    p = PruneChannelsPass(
        ratio=ratio,
        ratios=dict(ratios) if ratios else None,
        criterion=criterion,  # type: ignore[arg-type]
        round_to=round_to,
        coupled=coupled,
        calibration=calib,
        reconstruction=reconstruction,  # type: ignore[arg-type]
        on_progress=on_progress,
    )
    m = _ir(model)
    result = run_passes(m, [p], source_sha256=source_sha256 or _source(model))
    assert isinstance(result, PruneChannelsResult)
    if not any(g["status"] in ("pruned", "unchanged") for g in result.groups):
        reasons = "; ".join(sorted({g["status"] for g in result.groups})) or "no Conv/Gemm/MatMul layers"
        raise UnsupportedModelError(f"model '{model.graph.name}': no prunable channel group ({reasons})")
    if not result.modified:
        notes.append("nothing was pruned: every group is blocked, skipped or too small for the ratio")
    if criterion == "bn" and result.criterion != "bn":
        notes.append("criterion bn: no BatchNormalization after the producers (folded?); used l2 norms")
    if calib is None or reconstruction == "none":
        notes.append("no reconstruction: channels chosen by weight norms alone; expect an accuracy drop")
    odd = [g["group"] for g in result.groups if g["status"] == "pruned" and g["kept"] % 8]
    if odd and round_to == 1:
        notes.append(
            f"{len(odd)} group(s) keep channel counts that are not multiples of 8; onnxruntime on CPU "
            "ran MobileNetV3 slower with such counts (benchmarks/RESULTS.md): consider --round-to 8"
        )
    pruned = ir.serde.serialize_model(m)
    without = None
    if calib is not None and reconstruction != "none" and eval_data is not None and result.modified:
        plain = _ir(model)
        dataclasses.replace(p, calibration=None, on_progress=None)(plain)
        without = ir.serde.serialize_model(plain)
    report = _report(model, pruned, without, eval_data, eval_label, notes, input_shapes)
    report.update(
        {
            "mode": "channels",
            "options": p.options(),
            "criterion": result.criterion,
            "groups": result.groups,
            "reconstruction": result.reconstruction,
            "modified": result.modified,
        }
    )
    return pruned, report


def _report(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    without: onnx.ModelProto | None,
    eval_data: Mapping[str, np.ndarray] | None,
    eval_label: str,
    notes: list[str],
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    keep_declared_outputs(original, pruned)
    check_result(original, pruned)
    verification = _verify(original, pruned, eval_data, eval_label, input_shapes)
    out: dict[str, Any] = {
        "before": measure(original, input_shapes),
        "after": measure(pruned, input_shapes),
        "verify": verification.to_dict(),
        "notes": notes,
    }
    if eval_data is not None:
        ref = _first_output(original, eval_data)
        quality: dict[str, Any] = {"data": eval_label, "samples": len(ref)}
        base = score(original, eval_data, ref)
        after = score(pruned, eval_data, ref)
        for key in ("accuracy", "agreement", "cosine"):
            if key in after:
                quality[key] = {"original": base.get(key), "pruned": after[key]}
                if without is not None:
                    quality[key]["pruned_without_reconstruction"] = score(without, eval_data, ref)[key]
        out["quality"] = quality
    return out


def sensitivity(
    model: onnx.ModelProto,
    data: Mapping[str, np.ndarray],
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    *,
    criterion: str = "l2",
    round_to: int = 1,
    calibration: Mapping[str, np.ndarray] | None = None,
    reconstruction: str = "none",
    groups: Sequence[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    on_progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Prune each prunable group alone at each ratio and measure the quality on ``data``.

    Args:
        model: the model.
        data: evaluation inputs; with ``labels`` the metric is accuracy, otherwise top-1
            agreement with the original (cosine similarity for non-class outputs).
        ratios: channel fractions removed.
        calibration: inputs for reconstruction (with ``reconstruction`` ``lsq`` or ``bias``).
        groups: restrict to these group names (default: every prunable group).

    Returns:
        One row per (group, ratio): ``group``, ``producers``, ``channels``, ``ratio``, ``kept``,
        ``macs`` and ``macs_ratio`` (whole model, vs the original), ``metric``, ``value`` (the
        metric), ``baseline`` (the original's metric) and ``drop`` (baseline - value). Groups that
        cannot be pruned are listed once with ``status`` saying why and no metric.
    """
    from onnxsqueeze.passes.channels import analyze
    from onnxsqueeze.summary import count_macs

    ref = _first_output(model, data)
    base = score(model, data, ref)
    metric = "accuracy" if "accuracy" in base else ("agreement" if "agreement" in base else "cosine")
    macs0 = count_macs(model, input_shapes)[0]
    found = analyze(_ir(model))
    wanted = [g for g in found if groups is None or g.name in groups]
    calib = shapes.select_inputs(model, calibration) if calibration is not None else None
    rows: list[dict[str, Any]] = []
    todo = [(g, r) for g in wanted if g.blocked is None for r in ratios]
    for g in wanted:
        if g.blocked is not None:
            rows.append(
                {"group": g.name, "producers": list(g.producers), "channels": g.channels, "status": g.blocked}
            )
    for done, (g, r) in enumerate(todo, start=1):
        m = _ir(model)
        p = PruneChannelsPass(
            ratio=0.0,
            ratios={g.name: r},
            criterion=criterion,  # type: ignore[arg-type]
            round_to=round_to,
            calibration=calib,
            reconstruction=reconstruction,  # type: ignore[arg-type]
        )
        result = p(m)
        assert isinstance(result, PruneChannelsResult)
        entry = next(e for e in result.groups if e["group"] == g.name)
        pruned = ir.serde.serialize_model(m)
        macs = count_macs(pruned, input_shapes)[0]
        value = score(pruned, data, ref)[metric]
        rows.append(
            {
                "group": g.name,
                "producers": list(g.producers),
                "channels": g.channels,
                "ratio": r,
                "kept": entry["kept"],
                "macs": macs,
                "macs_ratio": macs / macs0 if macs0 else None,
                "metric": metric,
                "value": value,
                "baseline": base[metric],
                "drop": base[metric] - value,
                "status": entry["status"],
            }
        )
        if on_progress:
            on_progress(done, len(todo))
    return rows
