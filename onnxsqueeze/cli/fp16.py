"""``fp16``: half precision guarded by measured error."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli import _output as output_
from onnxsqueeze.cli._output import escape, handle_errors, human_bytes, info, out, warn

CPU_NOTE = (
    "on CPU, onnxruntime has few float16 kernels and runs most float16 ops through float32 casts: "
    "expect the same or higher CPU latency; float16 pays off on GPU (cuda, tensorrt) and halves the file"
)


def render(report: Any, show: int) -> None:
    t = Table(show_header=False, show_edge=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    n = report.normalization
    if n is not None:
        t.add_row("normalized", f"{n.nodes_before} -> {n.nodes_after} nodes ({escape(n.used)})")
    t.add_row("converted", f"{report.converted_nodes} of {report.total_nodes} nodes to {report.dtype}")
    t.add_row("kept float32", str(len(report.fp32_nodes)))
    t.add_row("casts", f"{report.casts_inserted} inserted, {report.casts_removed} redundant removed")
    t.add_row(
        "size",
        f"{human_bytes(report.bytes_before)} -> {human_bytes(report.bytes_after)} ({report.size_ratio:.2f}x)",
    )
    t.add_row("error", f"normalized {report.normalized_error:.3g} (budget: {escape(report.budget)})")
    j = report.judgement
    if j is not None:
        t.add_row(
            j.metric,
            f"{j.value:.4g} (original {j.baseline:.4g}; budget: {escape(j.budget)}) on {j.samples} sample(s)",
        )
    t.add_row("rounds", f"{report.rounds} ({report.seconds:.1f} s)")
    out.print(t)
    _kept(report, show)
    out.print(f"wrote {escape(str(report.output))}")


def _kept(report: Any, show: int) -> None:
    if report.fp32_nodes:
        kept = Table(title="nodes kept in float32", title_justify="left")
        kept.add_column("node")
        kept.add_column("why")
        items = list(report.fp32_nodes.items())
        for name, why in items[:show]:
            kept.add_row(escape(name), escape(why))
        if len(items) > show:
            kept.add_row(f"... {len(items) - show} more", "(--json lists all)")
        out.print(kept)


@handle_errors
def fp16_cmd(
    model: opt.ModelArg,
    output: opt.OutputOpt,
    keep_io_types: Annotated[
        bool,
        typer.Option(
            "--keep-io-types/--no-keep-io-types",
            help="Keep float32 model inputs and outputs (cast inside), so callers keep feeding float32.",
        ),
    ] = True,
    block_op: Annotated[
        list[str] | None,
        typer.Option("--block-op", help="Also keep this op type in float32 (repeatable)."),
    ] = None,
    allow_op: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-op", help="Remove an op type from the default float32 block list (repeatable)."
        ),
    ] = None,
    keep_node: Annotated[
        list[str] | None,
        typer.Option("--keep-node", help="Keep this node (by name) in float32 (repeatable)."),
    ] = None,
    tolerance: opt.ToleranceOpt = None,
    normalized_tolerance: Annotated[
        float,
        typer.Option(
            "--normalized-tolerance",
            help="Without --tolerance: the budget on max abs error / max |reference| per output.",
        ),
    ] = 0.01,
    data: opt.DataOpt = None,
    input_shape: opt.InputShapeOpt = None,
    samples: Annotated[
        int,
        typer.Option("--samples", min=1, help="Samples used to measure and verify (random or from --data)."),
    ] = 16,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure/--no-measure",
            help="Run the model to find nodes that overflow, underflow or lose accuracy in float16.",
        ),
    ] = True,
    bf16: Annotated[
        bool, typer.Option("--bf16", help="Convert to bfloat16 instead (for runtimes with bfloat16 kernels).")
    ] = False,
    metric: opt.MetricOpt = None,
    max_drop: opt.MaxDropOpt = None,
    threshold: opt.ThresholdOpt = 0.5,
    class_axis: opt.ClassAxisOpt = None,
    seed: opt.SeedOpt = 0,
    provider: opt.ProviderOpt = "cpu",
    show: Annotated[int, typer.Option("--show", help="Kept-float32 nodes listed in the table.")] = 20,
    force: opt.ForceFlag = False,
    json_: opt.JsonFlag = False,
) -> None:
    """Convert a model to float16, keeping in float32 the nodes measured to be unsafe.

    Cleanup first (Constant weights lifted, BatchNorm folded in float32, constants folded).
    Then every tensor and node is measured on sample inputs, the model is converted and verified.
    A result beyond the error budget is not written unless --force.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.optimize import fp16
    from onnxsqueeze.passes.fp16 import DEFAULT_BLOCK_OPS
    from onnxsqueeze.shapes import parse_input_shapes

    blocked = (set(DEFAULT_BLOCK_OPS) | set(block_op or ())) - set(allow_op or ())
    _, report = fp16(
        model,
        output,
        input_shapes=parse_input_shapes(input_shape),
        data=sio.load_npz(data) if data is not None else None,
        data_label=str(data),
        protect=[data] if data is not None else [],
        samples=samples,
        seed=seed,
        acceptance=opt.acceptance(
            metric, max_drop, tolerance=tolerance, threshold=threshold, class_axis=class_axis
        ),
        normalized_tolerance=normalized_tolerance,
        keep_io_types=keep_io_types,
        block_ops=frozenset(blocked),
        keep_fp32=frozenset(keep_node or ()),
        dtype="bfloat16" if bf16 else "float16",
        measure=measure,
        provider=provider,
        force=force,
        say=info,
    )
    output_.show(json_, report.to_dict(), lambda: render(report, show))
    for note in report.notes:
        warn(note)
    if not report.passed:
        warn("written with --force although the result is beyond its budget")
    if provider == "cpu":
        warn(CPU_NOTE)


def register(app: typer.Typer) -> None:
    app.command("fp16")(fp16_cmd)
