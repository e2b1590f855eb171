"""Shared ``Annotated`` option aliases, so every command spells a flag the same way."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, TypeVar

import typer

N = TypeVar("N", float, float | None)


def finite_non_negative(value: N) -> N:
    """Callback for tolerances, budgets and times: NaN, Inf and negatives are bad input (exit 2)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"{value!r} is not a finite number >= 0")
    return value


ModelArg = Annotated[Path, typer.Argument(help="An ONNX model file.", show_default=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Where to write the result (.onnx).")]
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
