"""resize through the front door: the shape-aware resolution rewrite (``resolution_sweep``) as one call.

Flow: load -> input shapes (``--input-shape`` names the image input and, for dynamic H/W without
``--data``, the size to trace and measure at) -> ``resolution_sweep.resize_model`` (rewrite with
sizes rounded to the model's strides, run check, MACs, agreement with the source, provenance,
atomic write) -> the report. Acceptance by task metric: ``agreement`` (class scores) and ``iou``
(maps) with ``--max-drop``, as the rewrite measures them; other metrics are refused in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxsqueeze.errors import InputError
from onnxsqueeze.optimize import base

RESIZE_METRICS = ("agreement", "iou")


@dataclasses.dataclass
class ResizeReport(base.Report):
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # resize_model's report

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in super().to_dict().items() if k != "details"}
        return self.details | out | {"notes": [*self.details.get("notes", []), *self.notes]}


def _min_agreement(acceptance: base.Acceptance, min_agreement: float | None) -> float | None:
    if not acceptance.gates:
        return min_agreement
    if acceptance.metric is not None and acceptance.metric not in RESIZE_METRICS:
        raise InputError(
            f"resize --metric {acceptance.metric}: resize judges by {' or '.join(RESIZE_METRICS)} "
            "(top-1 agreement for class scores, IoU for maps)"
        )
    drop = acceptance.max_drop if acceptance.max_drop is not None else 1.0
    return max(0.0, 1.0 - drop / 100.0)


def resize(
    model: str | Path,
    output: str | Path,
    *,
    resolution: tuple[int, int] | None = None,
    scale: float | None = None,
    input_name: str | None = None,
    keep_interface: bool = False,
    mode: str = "linear",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str | None = None,
    acceptance: base.Acceptance = base.DEFAULT,
    min_agreement: float | None = None,
    force: bool = False,
    say: base.Say = base._quiet,
) -> tuple[None, ResizeReport]:
    """Rewrite the input resolution, judge the result against the source, write it when accepted.

    Raises:
        UnsupportedModelError: the analysis refuses (naming the node).
        VerificationError: below the budget and not ``force`` (nothing written).
    """
    from onnxsqueeze import resolution_sweep as sweeps
    from onnxsqueeze import shapes

    src = base.load(model)
    given = dict(input_shapes or {})
    if given:
        shapes.resolve_input_shapes(src.model, given)  # names and ranks checked, one line if wrong
        if input_name is None and len(given) == 1:
            input_name = next(iter(given))  # --input-shape names the image input
    if data is None and input_name is not None and input_name in given:
        # dynamic H/W without --data: measured on seeded random inputs at the given size
        bound = {**shapes.resolve_input_shapes(src.model, given)}
        bound = {k: (8, *v[1:]) for k, v in bound.items()}
        data = shapes.make_inputs(src.model, bound, seed=0)
        dims = "x".join(map(str, given[input_name]))
        data_label = f"8 random inputs (seed 0) at --input-shape {input_name}:{dims}"
    details = sweeps.resize_model(
        src.model,
        Path(model),
        Path(output),
        resolution=resolution,
        scale=scale,
        input_name=input_name,
        keep_interface=keep_interface,
        mode=mode,
        data=data,
        data_label=data_label,
        min_agreement=_min_agreement(acceptance, min_agreement),
        force=force,
        on_note=say,
    )
    report = ResizeReport(
        model=str(model),
        output=str(output),
        written=True,
        passed=bool(details.get("passed", True)),
        input_shapes={k: list(v) for k, v in given.items()},
        details=details,
    )
    return None, report
