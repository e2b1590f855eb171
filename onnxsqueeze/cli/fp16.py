"""``fp16``: half precision guarded by measured error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import emit_json, escape, handle_errors, human_bytes, info, out, warn

CPU_NOTE = (
    "on CPU, onnxruntime has few float16 kernels and runs most float16 ops through float32 casts: "
    "expect the same or higher CPU latency; float16 pays off on GPU (cuda, tensorrt) and halves the file"
)


def _feeds(model: Any, data: Path | None, input_shape: list[str] | None, samples: int, seed: int) -> Any:
    from onnxsqueeze import io as sio
    from onnxsqueeze import shapes
    from onnxsqueeze.verify import prepare_feeds

    if data is not None:
        arrays = sio.load_npz(data)
        feeds = prepare_feeds(model, data=arrays, label=str(data))
        return {k: v[:samples] if v.ndim else v for k, v in feeds.items()}, f"{data} (first {samples})"
    overrides = shapes.parse_input_shapes(input_shape)
    batch = shapes.resolve_input_shapes(model, overrides, batch=samples)
    return shapes.make_inputs(model, batch, seed=seed), f"random (seed {seed})"


def render(result: Any, summary: dict[str, Any], show: int) -> None:
    from onnxsqueeze.cli.core import render_report

    t = Table(show_header=False, show_edge=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("converted", f"{result.converted_nodes} of {result.total_nodes} nodes to {summary['dtype']}")
    t.add_row("kept float32", str(len(result.fp32_nodes)))
    t.add_row("casts", f"{result.casts_inserted} inserted, {result.casts_removed} redundant removed")
    t.add_row(
        "size",
        f"{human_bytes(summary['bytes_before'])} -> {human_bytes(summary['bytes_after'])} "
        f"({summary['size_ratio']:.2f}x)",
    )
    t.add_row("error", f"normalized {result.normalized_error:.3g} (budget: {escape(result.budget)})")
    t.add_row("rounds", f"{result.rounds} ({result.seconds:.1f} s)")
    out.print(t)
    if result.fp32_nodes:
        kept = Table(title="nodes kept in float32", title_justify="left")
        kept.add_column("node")
        kept.add_column("why")
        items = list(result.fp32_nodes.items())
        for name, why in items[:show]:
            kept.add_row(escape(name), escape(why))
        if len(items) > show:
            kept.add_row(f"... {len(items) - show} more", "(--json lists all)")
        out.print(kept)
    render_report(result.report, None)


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
            callback=opt.finite_non_negative,
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
    from onnxsqueeze.manifest import save_artifact
    from onnxsqueeze.passes.fp16 import DEFAULT_BLOCK_OPS
    from onnxsqueeze.precision import convert_fp16, require_passed

    source = sio.load(model)
    sio.refuse_overwrite(output, [p for p in (model, data) if p is not None])  # before the work
    feeds, label = _feeds(source, data, input_shape, samples, seed)
    blocked = (set(DEFAULT_BLOCK_OPS) | set(block_op or ())) - set(allow_op or ())
    dtype = "bfloat16" if bf16 else "float16"
    result = convert_fp16(
        source,
        feeds,
        keep_io_types=keep_io_types,
        block_ops=frozenset(blocked),
        keep_fp32=frozenset(keep_node or ()),
        dtype=dtype,
        tolerance=tolerance,
        normalized_tolerance=normalized_tolerance,
        measure=measure,
        provider=provider,
        source_sha256=sio.sha256_file(model),
        data_label=label,
        on_step=None if json_ else info,
    )
    report = result.report
    if not result.passed and not force:
        require_passed(result)
    if result.converted_nodes == 0 and not force:
        from onnxsqueeze.errors import VerificationError

        raise VerificationError(
            f"nothing was converted: all {result.total_nodes} nodes kept float32 to stay within the "
            f"budget ({result.budget}); not written (a looser --tolerance converts more, --force writes it)"
        )
    save_artifact(result.model, output, source_path=model, verify_report=report)
    before, after = model.stat().st_size, output.stat().st_size
    summary = {
        "input": str(model),
        "output": str(output),
        "dtype": dtype,
        "bytes_before": before,
        "bytes_after": after,
        "size_ratio": after / before if before else 0.0,
    }
    if json_:
        emit_json(
            summary
            | {
                "passed": result.passed,
                "budget": result.budget,
                "normalized_error": result.normalized_error,
                "converted_nodes": result.converted_nodes,
                "total_nodes": result.total_nodes,
                "casts_inserted": result.casts_inserted,
                "casts_removed": result.casts_removed,
                "rounds": result.rounds,
                "seconds": result.seconds,
                "fp32_nodes": result.fp32_nodes,
                "verify": report.to_dict(),
            }
        )
    else:
        render(result, summary, show)
        out.print(f"wrote {escape(str(output))}")
    if not result.passed:
        warn(f"written with --force although the error is beyond the budget ({result.budget})")
    if result.converted_nodes == 0:
        warn("written with --force although nothing was converted: the model is still all float32")
    if provider == "cpu":
        warn(CPU_NOTE)


def register(app: typer.Typer) -> None:
    app.command("fp16")(fp16_cmd)
