"""Shared ``Annotated`` option aliases, so every command spells a flag the same way."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

N = TypeVar("N", float, float | None)


def finite_non_negative(value: N) -> N:
    """Callback for tolerances, budgets and times: NaN, Inf and negatives are bad input (exit 2)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"{value!r} is not a finite number >= 0")
    return value


ModelArg = Annotated[Path, typer.Argument(help="An ONNX model file.", show_default=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Where to write the result (.onnx).")]
MaybeOutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Where to write the result (.onnx).")
]
InputShapeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input-shape",
        help="Bind an input's shape, NAME:d0,d1,... (repeatable). Dynamic batch dims default to 1.",
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="An .npz of real inputs keyed by input name (first axis = samples)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
ToleranceOpt = Annotated[
    float | None,
    typer.Option(
        "--tolerance", callback=finite_non_negative, help="Max absolute error allowed; exit 1 beyond it."
    ),
]
ForceFlag = Annotated[bool, typer.Option("--force", help="Write the result even if it fails verification.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")]
ProviderOpt = Annotated[str, typer.Option("--provider", help="Execution provider: cpu, cuda or tensorrt.")]
MetricOpt = Annotated[
    str | None,
    typer.Option(
        "--metric",
        help="Judge the result by this task metric against the original: accuracy (needs labels), "
        "agreement (top-1), iou (maps, with --threshold), cosine, mae, sequence (greedy CTC exact match).",
        show_default=False,
    ),
]
MaxDropOpt = Annotated[
    float | None,
    typer.Option(
        "--max-drop",
        help="The budget of --metric: largest drop from the original (points; mae: raw units). "
        "Default per metric: 1 point (accuracy, agreement, sequence), 2 (iou), 0.1 (cosine).",
        show_default=False,
    ),
]
ThresholdOpt = Annotated[float, typer.Option("--threshold", help="Binarization threshold of --metric iou.")]
ClassAxisOpt = Annotated[
    int | None,
    typer.Option(
        "--class-axis",
        help="The class axis of accuracy/agreement (default 1, or 2 for a [T, N, C] CTC output).",
        show_default=False,
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="Intra-op threads for latency (default: onnxruntime's, one per core)."),
]
CalibrationSamplesOpt = Annotated[
    int, typer.Option("--calibration-samples", "--calib-samples", min=1, help="Calibration samples used.")
]
# the cost of a model on a priced machine (bench, squeeze)
PricePerHourOpt = Annotated[
    float | None, typer.Option("--price-per-hour", help="Instance price in USD per hour, for the cost.")
]
InstanceOpt = Annotated[
    str | None,
    typer.Option(
        "--instance",
        help="Price the cost at a known instance (see `bench --list-instances`), e.g. aws/c7i.large.",
    ),
]


def acceptance(
    metric: str | None,
    max_drop: float | None,
    *,
    tolerance: float | None = None,
    threshold: float = 0.5,
    class_axis: int | None = None,
    relative: bool = False,
) -> Any:
    """The optimize layer's Acceptance from the shared flags."""
    from onnxsqueeze.optimize.base import Acceptance

    return Acceptance(
        metric=metric,
        max_drop=max_drop,
        relative=relative,
        tolerance=tolerance,
        threshold=threshold,
        class_axis=class_axis,
    )


# the training commands (distill, finetune)
TeacherOpt = Annotated[
    Path,
    typer.Option(
        "--teacher", help="The teacher: the ONNX model whose outputs are imitated.", show_default=False
    ),
]
TrainDataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Training .npz: inputs keyed by the teacher's input names; class labels under --labels-key are "
        "used if present.",
        show_default=False,
    ),
]
TrainThreadsOpt = Annotated[int, typer.Option("--threads", help="CPU threads for training and the teacher.")]
ValOpt = Annotated[
    Path | None,
    typer.Option(
        "--val", help="Validation .npz for early stopping and the report (default: a seeded 10% of --data)."
    ),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        help="A fixed plan of this many epochs (default: as many as --time-budget holds, stopped once "
        "validation stops improving).",
        show_default=False,
    ),
]
LrOpt = Annotated[
    float | None,
    typer.Option(
        "--lr",
        help="Peak learning rate (AdamW, cosine decay; default: found by a short range test).",
        show_default=False,
    ),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Samples per step.")]
LabelsKeyOpt = Annotated[str, typer.Option("--labels-key", help="Key of the class labels in the .npz files.")]
TeacherCacheOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache of teacher outputs (default ~/.cache/onnxsqueeze/teacher)."),
]
NoCacheFlag = Annotated[bool, typer.Option("--no-cache", help="Recompute teacher outputs; cache nothing.")]


def require_positive(value: float, flag: str, unit: str = "") -> None:
    """Bad input (exit 2) unless ``value > 0``: ``--time-budget 0: must be positive (minutes)``."""
    from onnxsqueeze.errors import InputError

    if value <= 0:
        raise InputError(f"{flag} {value}: must be positive{f' ({unit})' if unit else ''}")
