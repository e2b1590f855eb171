"""prune through the front door: zero-weight and channel pruning (``onnxsqueeze.prune``) as one call.

Flow: load -> shapes resolved once (``--input-shape``, the data, the model) -> normalize
(Constant-node weights lifted, BatchNorm folded: paddle2onnx exports need it before any
Conv is seen as prunable) -> the pruning pass through ``run_passes`` -> checker, interface,
verification at the resolved shapes -> judged against the source by the task metric with a
budget (``--metric``/``--max-drop``) -> written when accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.errors import InputError, VerificationError
from onnxsqueeze.optimize import base
from onnxsqueeze.verify import run


@dataclasses.dataclass
class PruneReport(base.Report):
    mode: str = "channels"
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # prune.prune_* report

    def to_dict(self) -> dict[str, Any]:
        details = dict(self.details)
        return (
            details
            | {k: v for k, v in super().to_dict().items() if k != "details"}
            | {"notes": [*details.get("notes", []), *self.notes]}
        )


def prune(
    model: onnx.ModelProto | str | Path,
    output: str | Path | None = None,
    *,
    sparsity: float | None = None,
    channels: float | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    calibration: Mapping[str, np.ndarray] | None = None,
    eval_data: Mapping[str, np.ndarray] | None = None,
    eval_label: str = "random inputs",
    protect: Sequence[str | Path] = (),
    acceptance: base.Acceptance = base.DEFAULT,
    reconstruction: str = "lsq",
    scope: str = "layer",
    skip_first_last: bool = False,
    sparse_storage: bool = False,
    criterion: str = "l2",
    round_to: int = 1,
    coupled: bool = True,
    slim: bool = True,
    force: bool = False,
    say: base.Say = base._quiet,
    on_progress: Any = None,
) -> tuple[onnx.ModelProto, PruneReport]:
    """Prune (``sparsity`` or ``channels``), verify and judge against the source; write when accepted.

    Raises:
        InputError: bad options; UnsupportedModelError: nothing prunable;
        VerificationError: invalid result, or beyond the budget and not ``force``.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze import prune as api

    if (sparsity is None) == (channels is None):
        raise InputError("choose exactly one of --sparsity or --channels")
    if (
        sparsity is not None
        and output is not None
        and not isinstance(model, onnx.ModelProto)
        and sio.streams(model)
    ):
        if calibration is not None and reconstruction != "none":
            raise InputError(
                f"{model}: re-fitting the pruned layers of a model with over "
                f"{sio.STREAM_BYTES / 2**30:.2g} GiB of weights keeps every layer's activations in "
                "memory; prune it by magnitude with --reconstruction none"
            )
        if sparse_storage:
            raise InputError(
                f"{model}: sparse storage of a model with over {sio.STREAM_BYTES / 2**30:.2g} GiB of "
                "weights is not supported (protobuf's 2 GB limit applies to sparse initializers)"
            )
        return _prune_streamed(
            Path(model),
            Path(output),
            sparsity=sparsity,
            scope=scope,
            skip_first_last=skip_first_last,
            input_shapes=input_shapes,
            eval_data=eval_data,
            eval_label=eval_label,
            protect=protect,
            acceptance=acceptance,
            force=force,
            say=say,
        )
    src = base.load(model)
    if output is not None:
        sio.refuse_overwrite(output, [p for p in (src.path, *protect) if p is not None])
    data_for_shapes = calibration if calibration is not None else eval_data
    shapes_ = base.resolve_shapes(src.model, input_shapes, data_for_shapes)
    check_feeds = base.sample_feeds(src.model, shapes_, data=eval_data, samples=8)
    normalized, norm = base.normalize(
        src.model, feeds=check_feeds, slim=slim, source_sha256=src.sha256, say=say
    )
    say(
        "pruning" + (" and re-fitting layers" if calibration is not None and reconstruction != "none" else "")
    )
    common: dict[str, Any] = {
        "calibration": calibration,
        "eval_data": eval_data,
        "eval_label": eval_label,
        "input_shapes": shapes_,
        "source_sha256": src.sha256,
        "on_progress": on_progress,
        "reconstruction": reconstruction,
    }
    if sparsity is not None:
        pruned, details = api.prune_weights(
            normalized,
            sparsity=sparsity,
            scope=scope,
            skip_first_last=skip_first_last,
            sparse_storage=sparse_storage,
            **common,
        )
    else:
        assert channels is not None
        pruned, details = api.prune_channels(
            normalized, ratio=channels, criterion=criterion, round_to=round_to, coupled=coupled, **common
        )
    report = PruneReport(
        model=str(src.path or "<model>"),
        output=None if output is None else str(output),
        normalization=norm,
        input_shapes={k: list(v) for k, v in shapes_.items()},
        mode=details["mode"],
        details=details,
    )
    say("judging against the source")
    feeds = base.sample_feeds(
        src.model, shapes_, data=eval_data, samples=len(next(iter(eval_data.values()))) if eval_data else 8
    )
    reference, candidate = run(src.model, feeds), run(pruned, feeds)
    judgement = base.judge(
        reference,
        candidate,
        acceptance,
        labels=base.labels_of(eval_data),
        samples=base.count(feeds),
        source=eval_label,
        random_inputs=eval_data is None,
        # Zero-weight pruning has no test of its own: the default task metric gates it (50% of
        # YOLOv8n's weights zeroed one-shot was written with a box agreement of 0).
        gate_by_default=details["mode"] == "sparsity",
    )
    if details["mode"] == "sparsity" and not acceptance.gates:
        judgement = _task_checks(reference, candidate, judgement, report.notes)
    report.judgement = judgement
    report.notes.extend(judgement.warnings)
    report.passed = judgement.passed
    if not judgement.passed and not force:
        raise VerificationError(f"{judgement.reason}; not written (use --force to write it anyway)")
    if output is not None:
        path, manifest = base.write(
            pruned, output, source=src, verify_report=details["verify"], protect=protect
        )
        report.written, report.output, report.manifest = True, str(path), str(manifest)
    return pruned, report


def _task_checks(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], judgement: Any, notes: list[str]
) -> Any:
    """Every output judged by its task (fp16's default test: box agreement for detection heads,
    mask IoU for maps, top-1 for scores): a cosine of a raw YOLOv8 head stays near 1 while its class
    scores are destroyed, because the box coordinates dominate it."""
    from onnxsqueeze.precision import check_outputs

    checks = check_outputs(reference, candidate)
    for c in checks:
        if c.vacuous is not None:
            notes.append(
                f"output '{c.output}' not judged by {c.metric}: {c.vacuous}; give real inputs with --data"
            )
    # The task metrics only: fp16's cosine floor is for near-exact conversions, and cosine-only
    # outputs are the default metric's already.
    failed = [
        c
        for c in checks
        if c.vacuous is None and c.metric in ("boxes", "iou", "agreement", "frames") and c.value < c.threshold
    ]
    if not failed or not judgement.passed:
        return judgement
    reason = "beyond the budget: " + "; ".join(
        f"'{c.output}' {c.metric} {c.value:.4g} (>= {c.threshold:g})" for c in failed
    )
    return dataclasses.replace(judgement, passed=False, reason=reason)


def _prune_streamed(
    path: Path,
    output: Path,
    *,
    sparsity: float,
    scope: str,
    skip_first_last: bool,
    input_shapes: Mapping[str, Sequence[int]] | None,
    eval_data: Mapping[str, np.ndarray] | None,
    eval_label: str,
    protect: Sequence[str | Path],
    acceptance: base.Acceptance,
    force: bool,
    say: base.Say,
) -> tuple[onnx.ModelProto, PruneReport]:
    """Magnitude pruning of a model whose weights pass ``io.STREAM_BYTES``, near one copy of them.

    Near one copy of the weights (:func:`base.stream`): ``PruneWeightsPass`` masks one
    memory-mapped weight at a time. The normalization and the re-fit are skipped (said so in the
    notes).
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.errors import UnsupportedModelError
    from onnxsqueeze.passes.sparsity import PruneWeightsPass, PruneWeightsResult
    from onnxsqueeze.pipeline import run_passes

    samples = len(next(iter(eval_data.values()))) if eval_data else 8
    inputs = base.streamed_inputs(
        path, output, protect=protect, input_shapes=input_shapes, data=eval_data, samples=samples
    )
    notes = [
        f"weights of {sio.weight_bytes(inputs.interface) / 2**30:.2f} GiB: streamed (one tensor at a time); "
        "normalization skipped; weights pruned by magnitude alone, no re-fit"
    ]
    p = PruneWeightsPass(
        sparsity=sparsity,
        scope=scope,  # type: ignore[arg-type]
        skip_first_last=skip_first_last,
        reconstruction="none",
    )
    pruned: dict[str, Any] = {}

    def prune_weights(model: ir.Model) -> None:
        result = run_passes(model, [p], source_sha256=inputs.sha256)
        assert isinstance(result, PruneWeightsResult)
        if not result.layers:
            raise UnsupportedModelError(f"{path}: no Conv/Gemm/MatMul weight initializers to prune")
        if not result.modified:
            notes.append("nothing was pruned: the weights already have this sparsity")
        pruned.update(layers=result.layers, sparsity=result.sparsity, modified=result.modified)

    reports: list[PruneReport] = []

    def accept(staged: base.StreamedResult) -> None:
        reference, outputs = staged.reference, staged.outputs
        layers, achieved = pruned["layers"], pruned["sparsity"]
        params = sum(int(layer["params"]) for layer in layers)
        zeros_before = sum(layer["sparsity_before"] * layer["params"] for layer in layers)
        judgement = staged.judgement
        if not acceptance.gates:
            judgement = _task_checks(reference, outputs, judgement, notes)
        details: dict[str, Any] = {
            "mode": "sparsity",
            "options": p.options(),
            "sparsity": achieved,
            "layers": layers,
            "reconstruction": [],
            "modified": pruned["modified"],
            "notes": notes,
            "verify": staged.verify_report.to_dict(),
            "before": {
                "params": params,
                "nonzero_params": round(params - zeros_before),
                "sparsity": zeros_before / params if params else 0.0,
                "macs": None,
                "file_bytes": staged.bytes_before,
                "zipped_bytes": None,
            },
            "after": {
                "params": params,
                "nonzero_params": round(params * (1 - achieved)),
                "sparsity": achieved,
                "macs": None,
                "file_bytes": staged.bytes_after,
                "zipped_bytes": None,
            },
        }
        report = PruneReport(
            model=str(path),
            output=str(output),
            input_shapes={k: list(v) for k, v in inputs.shapes.items()},
            mode="sparsity",
            details=details,
        )
        report.judgement = judgement
        report.notes.extend(judgement.warnings)
        report.passed = judgement.passed
        reports.append(report)
        if not judgement.passed and not force:
            raise VerificationError(f"{judgement.reason}; not written (use --force to write it anyway)")

    manifest_path = base.stream(
        path,
        output,
        inputs,
        transform=prune_weights,
        accept=accept,
        acceptance=acceptance,
        random_inputs=eval_data is None,
        gate_by_default=True,  # zero-weight pruning: see prune()
        protect=protect,
        what="pruned",
        source_label=eval_label,
        steps=("pruning, one weight at a time", "writing the pruned weights", "judging against the source"),
        say=say,
    )
    report = reports[0]
    report.written, report.manifest = True, manifest_path
    return sio.load_interface(output), report
