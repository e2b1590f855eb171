"""``convert``: a PyTorch or Keras/TensorFlow model to a verified, cleaned ONNX file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import (
    err,
    escape,
    handle_errors,
    human_bytes,
    out,
    refuse_artifact,
    show,
    warn,
)


def _dims(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def render(result: Any, source_label: str, written: Path | None = None) -> None:
    d = result.to_dict()
    out.print(
        f"converted [bold]{escape(source_label)}[/] with {escape(result.exporter)}, opset {d['opset']}, "
        f"{d['nodes']} nodes after cleanup (exporter: {d['exported_nodes']})"
    )
    t = Table(show_edge=False)
    for col in ("", "name", "dtype", "shape"):
        t.add_column(col)
    for kind in ("inputs", "outputs"):
        for e in d[kind]:
            t.add_row(kind[:-1], escape(e["name"]), e["dtype"], escape(_dims(e["shape"])))
    out.print(t)
    from onnxsqueeze.cli.core import render_report

    render_report(result.report, None)
    verdict = "[green]within[/]" if result.passed else "[red]exceeds[/]"
    out.print(f"max abs error {result.max_abs:.3g} {verdict} tolerance {result.tolerance:g}")
    if written is not None:
        out.print(f"wrote {escape(str(written))} ({human_bytes(written.stat().st_size)})")


@handle_errors
def convert_cmd(
    output: opt.OutputOpt,
    source: Annotated[
        Path | None,
        typer.Argument(
            help="A PyTorch file (.pt2 ExportedProgram, TorchScript archive, state_dict with --factory), "
            "a Keras file (.keras, .h5, .hdf5) or a TensorFlow SavedModel folder.",
            show_default=False,
        ),
    ] = None,
    input_shape: opt.InputShapeOpt = None,
    opset: Annotated[
        int | None, typer.Option("--opset", help="ONNX opset (default: the exporter's).", show_default=False)
    ] = None,
    dynamic_batch: Annotated[
        bool,
        typer.Option("--dynamic-batch/--static-batch", help="Make axis 0 of the inputs and outputs dynamic."),
    ] = True,
    dynamic_axis: Annotated[
        list[str] | None,
        typer.Option(
            "--dynamic-axis",
            help="PyTorch: another dynamic axis, NAME:AXIS[=SYMBOL] (repeatable), e.g. input_ids:1=sequence.",
            show_default=False,
        ),
    ] = None,
    factory: Annotated[
        str | None,
        typer.Option(
            "--factory",
            help="package.module:callable that builds the torch.nn.Module (e.g. "
            "facenet_pytorch.models.mtcnn:ONet); weights from --weights or SOURCE.",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights", help="A state_dict for --factory (read with weights_only=True).", show_default=False
        ),
    ] = None,
    nchw: Annotated[
        bool, typer.Option("--nchw", help="Keras/TF: expose 4-D inputs and outputs as NCHW.")
    ] = False,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Allow a file that pickles a whole torch module. Unpickling can run arbitrary code: "
            "only for files you trust.",
        ),
    ] = False,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            callback=opt.finite_non_negative,
            help="Max absolute error allowed vs. the framework; exit 1 beyond it.",
        ),
    ] = 1e-4,
    data: opt.DataOpt = None,
    seed: opt.SeedOpt = 0,
    force: opt.ForceFlag = False,
    json_: opt.JsonFlag = False,
) -> None:
    """Convert a PyTorch or Keras/TensorFlow model to ONNX, clean it, and verify it against the framework.

    Both models run on the same inputs (seeded, or --data) and their outputs are compared.

    Beyond --tolerance nothing is written (exit 1) unless --force.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.convert import convert_file, parse_dynamic_axes
    from onnxsqueeze.shapes import parse_input_shapes

    protect = [p for p in (source, weights, data) if p is not None]
    refuse_artifact(output, protect)  # before converting, not after minutes of export
    arrays = sio.load_npz(data) if data is not None else None
    if not json_:
        err.print("converting...", style="dim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what matters comes back in result.warnings, printed below
        result = convert_file(
            source,
            factory=factory,
            weights=weights,
            trust_pickle=trust_pickle,
            input_shapes=parse_input_shapes(input_shape),
            opset=opset,
            dynamic_batch=dynamic_batch,
            dynamic_axes=parse_dynamic_axes(dynamic_axis),
            nchw=nchw,
            tolerance=tolerance,
            data=arrays,
            data_label=str(data),
            seed=seed,
            strict=False,
        )
    for note in result.warnings:
        warn(note)
    written = _save(result, output, source, weights, factory, protect) if result.passed or force else None
    label = factory if factory and source is None and weights is None else result.source
    paths = {
        "output": str(written.path) if written else None,
        "manifest": str(written.manifest_path) if written else None,
    }
    show(json_, result.to_dict() | paths, lambda: render(result, label, written.path if written else None))
    if not result.passed:
        from onnxsqueeze.convert.result import failure_message
        from onnxsqueeze.errors import VerificationError

        if force:
            warn(f"{failure_message(result)}; written anyway (--force)")
            return
        raise VerificationError(
            f"{failure_message(result)}; nothing written (use --force to write it anyway)"
        )


def _save(
    result: Any,
    output: Path,
    source: Path | None,
    weights: Path | None,
    factory: str | None,
    protect: list[Path],
) -> Any:
    from onnxsqueeze.manifest import save_artifact

    tf = result.exporter == "tf2onnx"
    return save_artifact(
        result.model,
        output,
        # the weights are the source when a factory builds the module (the code is --factory)
        source_path=weights if weights is not None else source,
        verify_report=result.report,
        export={"kind": "convert", "exporter": result.exporter, "factory": factory},
        protect=protect,
        libraries=("tensorflow", "tf2onnx") if tf else ("torch", "torchvision"),
    )


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_cmd)
