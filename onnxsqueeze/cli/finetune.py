"""``finetune``: recovery training of a compressed ONNX model against the original, exported verified."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import (
    epoch_progress,
    escape,
    file_hashes,
    handle_errors,
    out,
    refuse_artifact,
    write_artifact,
)


def _fmt(key: str, value: float) -> str:
    return f"{value:.4g}" if key.startswith("rel_rmse") else f"{value:.2%}"


def render(report: dict[str, Any], output: Path) -> None:
    table = Table(
        title=f"fine-tuning on {report['samples']['train']} samples; measured on {report['samples']['val']} "
        "validation samples (onnxruntime)",
        title_justify="left",
    )
    for col in ("", "original", "before training", "fine-tuned"):
        table.add_column(col, justify="right" if col else "left")
    for key in report["after"]:
        table.add_row(
            key,
            _fmt(key, report["teacher"][key]),
            _fmt(key, report["before"][key]),
            _fmt(key, report["after"][key]),
        )
    out.print(table)
    tr = report["training"]
    out.print(
        f"trained {tr['epochs_run']} epochs ({tr['stop_reason']}), best epoch {tr['best_epoch']}, peak lr "
        f"{tr['lr']:.3g}{' (range test)' if tr['lr_found'] else ''}; {report['seconds']:.1f} s in all"
    )
    out.print(
        f"zero weights kept: {report['zeros']['result']} (candidate {report['zeros']['candidate']}); "
        f"conversion max abs {report['conversion_max_abs']:.2g}, export max abs {report['export_max_abs']:.2g}"
    )
    out.print(f"[green]wrote[/] {escape(str(output))}")


@handle_errors
def finetune_cmd(
    candidate: Annotated[
        Path, typer.Argument(help="The compressed model to fine-tune (.onnx).", show_default=False)
    ],
    teacher: opt.TeacherOpt,
    data: opt.TrainDataOpt,
    output: opt.OutputOpt,
    val: opt.ValOpt = None,
    time_budget: Annotated[
        float, typer.Option("--time-budget", help="Minutes for the whole run (teacher, training).")
    ] = 5.0,
    epochs: opt.EpochsOpt = None,
    lr: opt.LrOpt = None,
    batch_size: opt.BatchSizeOpt = 32,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            help="Seed of the batch order and the split (with --epochs, the same seed gives the same "
            "weights; a time budget ends where the machine's speed puts it).",
        ),
    ] = 0,
    threads: opt.TrainThreadsOpt = 1,
    labels_key: opt.LabelsKeyOpt = "labels",
    cache_dir: opt.TeacherCacheOpt = None,
    no_cache: opt.NoCacheFlag = False,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Max abs error of the conversion and of the export.")
    ] = 1e-4,
    json_: opt.JsonFlag = False,
) -> None:
    """Fine-tune a compressed model to imitate the original on unlabeled inputs, keeping its structure.

    The candidate is converted to PyTorch (onnx2torch), trained against the original's outputs
    (KL on class scores, relative MSE on other outputs, plus labels when given), exported back and
    verified. Zero weights stay zero, removed channels stay removed, the inputs and outputs keep
    their names and shapes. An op without a PyTorch converter is refused by name.
    """
    from onnxsqueeze.finetune import FinetuneConfig, finetune

    refuse_artifact(output, [candidate, teacher, data, val])
    opt.require_positive(time_budget, "--time-budget", "minutes")
    if lr is not None:
        opt.require_positive(lr, "--lr")
    config = FinetuneConfig(
        time_budget_s=time_budget * 60,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        threads=threads,
    )
    with epoch_progress("finetune") as (update, on_epoch):
        result = finetune(
            candidate,
            teacher,
            data,
            val=val,
            config=config,
            labels_key=labels_key,
            cache_dir=cache_dir,
            use_cache=not no_cache,
            tolerance=tolerance,
            on_teacher=lambda done, total: update(done, total, "teacher outputs"),
            on_epoch=on_epoch,
        )
    write_finetuned(
        result,
        output,
        json_,
        source=candidate,
        export={"kind": "finetune", "teacher": file_hashes(teacher)},
        protect=[candidate, teacher, data, val],
        data=file_hashes(data, val),
    )


def write_finetuned(
    result: Any,
    output: Path,
    json_: bool,
    *,
    source: Path,
    export: dict[str, Any],
    protect: list[Path | None],
    data: dict[str, str] | None = None,
) -> None:
    """Write a fine-tuned model (``finetune``, ``prune --finetune``) with its manifest and show its report."""
    report = result.report.to_dict()
    extra = {"before": report["before"], "after": report["after"], "data": data} if data is not None else {}
    write_artifact(
        result.model,
        output,
        report,
        json_,
        lambda: render(report, output),
        source_path=source,
        verify_report=result.export,
        export=export | {"config": report["config"], "best_epoch": report["training"]["best_epoch"]} | extra,
        protect=[p for p in protect if p is not None],
        libraries=("torch", "onnx2torch"),
    )


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_cmd)
