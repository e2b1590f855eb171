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

from onnxsqueeze.errors import InputError, VerificationError
from onnxsqueeze.optimize import base


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
    judgement = base.judge_models(
        src.model,
        pruned,
        feeds,
        acceptance,
        labels=base.labels_of(eval_data),
        label=eval_label,
        random_inputs=eval_data is None,
    )
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
