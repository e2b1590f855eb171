"""The ``onnxsqueeze`` command. Each topic module registers its commands here."""

from __future__ import annotations

from typing import Annotated

import typer

from onnxsqueeze.cli import bench, convert, core, fp16, squeeze
from onnxsqueeze.cli import distill as distill_cli
from onnxsqueeze.cli import export as export_cli
from onnxsqueeze.cli import finetune as finetune_cli
from onnxsqueeze.cli import prune as prune_cli
from onnxsqueeze.cli import resize as resize_cli

app = typer.Typer(
    name="onnxsqueeze",
    help="Squeeze ONNX models: smaller, faster and cheaper within an accuracy budget.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from onnxsqueeze import __version__

        typer.echo(f"onnxsqueeze {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Squeeze ONNX models: smaller, faster and cheaper within an accuracy budget."""


# In the order of a user's workflow: get an ONNX model, look at it, squeeze it, measure, deploy.
convert.register(app)
core.register(app)
fp16.register(app)
prune_cli.register(app)
resize_cli.register(app)
squeeze.register(app)
distill_cli.register(app)
finetune_cli.register(app)
bench.register(app)
export_cli.register(app)
