"""``export triton`` and ``export ort``: deployment artifacts with their provenance manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import escape, handle_errors, human_bytes, out, show, warn

export_app = typer.Typer(
    name="export",
    help="Write deployment artifacts: a Triton model repository, the ONNX Runtime format.",
    no_args_is_help=True,
)


def _batch_sizes(text: str | None) -> tuple[int, ...]:
    from onnxsqueeze.errors import InputError

    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as e:
        raise InputError(f"--preferred-batch-sizes '{text}': expected integers like 4,8") from e


@handle_errors
def triton_cmd(
    model: opt.ModelArg,
    repo: Annotated[
        Path, typer.Option("--repo", help="The Triton model repository folder.", show_default=False)
    ],
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: the file's stem).")] = None,
    version: Annotated[
        int | None, typer.Option("--version", help="Version number (default: the highest existing + 1).")
    ] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option(
            "--max-batch-size",
            help="Triton's max_batch_size; 0 disables batching. Default: 4 (or the largest preferred size) "
            "when the model's first dim is dynamic, else 0.",
            show_default=False,
        ),
    ] = None,
    dynamic_batching: Annotated[
        bool, typer.Option("--dynamic-batching", help="Let Triton batch requests together.")
    ] = False,
    preferred_batch_sizes: Annotated[
        str | None,
        typer.Option("--preferred-batch-sizes", help="Batch sizes the batcher aims for, e.g. 4,8."),
    ] = None,
    max_queue_delay_us: Annotated[
        int | None,
        typer.Option("--max-queue-delay-us", help="How long a request may wait for a batch (microseconds)."),
    ] = None,
    instances: Annotated[int, typer.Option("--instances", help="Model instances per device.")] = 1,
    kind: Annotated[
        str, typer.Option("--kind", help="Instance kind: cpu, gpu or auto (Triton decides).")
    ] = "auto",
    tensorrt: Annotated[
        bool, typer.Option("--tensorrt", help="Run through onnxruntime's TensorRT execution accelerator.")
    ] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="TensorRT precision mode FP16 (with --tensorrt).")
    ] = False,
    warmup: Annotated[
        bool, typer.Option("--warmup/--no-warmup", help="Add model_warmup requests (batch 1 and max).")
    ] = True,
    input_shape: opt.InputShapeOpt = None,
    json_: opt.JsonFlag = False,
) -> None:
    """Add a model to a Triton model repository: NAME/config.pbtxt and NAME/VERSION/model.onnx.

    The config is built and validated with Triton's own schema (tritonclient's model_config_pb2).
    An existing repository only gains a version: other models' folders and existing versions are
    never touched, and an existing config.pbtxt must agree with the options given.
    """
    from onnxsqueeze.export import triton
    from onnxsqueeze.shapes import parse_input_shapes

    options = triton.TritonOptions(
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        preferred_batch_sizes=_batch_sizes(preferred_batch_sizes),
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        kind=kind.lower(),
        tensorrt=tensorrt,
        fp16=fp16,
        warmup=warmup,
        input_shapes=parse_input_shapes(input_shape),
    )
    result = triton.export_triton(model, repo, name=name, version=version, options=options)
    for note in result.notes:
        warn(note)
    show(json_, result.to_dict(), lambda: render_triton(result))


def render_triton(result: Any) -> None:
    kept = "written" if result.config_written else "kept (consistent)"
    out.print(f"[green]wrote[/] {escape(str(result.model_path))} (version {result.version})")
    out.print(f"config   {escape(str(result.config_path))} {kept}")
    out.print(f"manifest {escape(str(result.manifest_path))}")
    out.print(escape(result.config_text.rstrip()), style="dim")


@handle_errors
def ort_cmd(
    model: opt.ModelArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="The .ort file to write (default: MODEL with .ort).", show_default=False
        ),
    ] = None,
    optimization_level: Annotated[
        str,
        typer.Option(
            "--optimization-level",
            help="onnxruntime graph optimizations: disable, basic, extended, layout, all.",
        ),
    ] = "all",
    data: opt.DataOpt = None,
    input_shape: opt.InputShapeOpt = None,
    seed: opt.SeedOpt = 0,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance",
            help="Max absolute output difference vs the ONNX model. Default: relative, max rel <= 1e-3.",
            show_default=False,
        ),
    ] = None,
    force: opt.ForceFlag = False,
    json_: opt.JsonFlag = False,
) -> None:
    """Convert to the ONNX Runtime format (.ort) for mobile and edge, with onnxruntime's converter.

    The .ort file is loaded back and its outputs compared to the ONNX model's on the same inputs;
    it is not written if they differ beyond the tolerance (unless --force).
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.export import ort
    from onnxsqueeze.shapes import parse_input_shapes

    target = output if output is not None else model.with_suffix(".ort")
    arrays = sio.load_npz(data) if data is not None else None
    result = ort.export_ort(
        model,
        target,
        optimization_level=optimization_level.lower(),
        data=arrays,
        data_label=str(data),
        input_shapes=parse_input_shapes(input_shape),
        seed=seed,
        tolerance=tolerance,
        force=force,
    )
    show(json_, result.to_dict(), lambda: render_ort(result))
    if not result.passed:
        warn(f"written with --force although the check failed ({result.criterion})")


def render_ort(result: Any) -> None:
    from onnxsqueeze.cli.core import render_report

    render_report(result.report, None)
    if result.passed:
        out.print(f"[green]check passed[/] ({escape(result.criterion)})")
    out.print(
        f"[green]wrote[/] {escape(str(result.path))} ({human_bytes(result.ort_bytes)}, "
        f"ONNX {human_bytes(result.onnx_bytes)}, level {escape(result.optimization_level)})"
    )
    out.print(f"manifest {escape(str(result.manifest_path))}")


def register(app: typer.Typer) -> None:
    export_app.command("triton")(triton_cmd)
    export_app.command("ort")(ort_cmd)
    app.add_typer(export_app, name="export")
