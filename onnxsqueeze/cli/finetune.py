"""``finetune``: recovery training of a compressed ONNX model against the original, exported verified."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import emit_json, escape, handle_errors, info, out, progress


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
    teacher: Annotated[
        Path,
        typer.Option("--teacher", help="The original model, whose outputs are imitated.", show_default=False),
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Training .npz: inputs keyed by input name; labels under --labels-key are used if present.",
            show_default=False,
        ),
    ],
    output: opt.OutputOpt,
    val: Annotated[
        Path | None, typer.Option("--val", help="Validation .npz (default: a seeded 10% of --data).")
    ] = None,
    time_budget: Annotated[
        float, typer.Option("--time-budget", help="Minutes for the whole run (teacher, training).")
    ] = 5.0,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            help="A fixed plan of this many epochs (default: as many as the budget holds).",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Peak learning rate (AdamW, cosine decay; default: a short range test, read by its "
            "divergence point).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per step.")] = 32,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            help="Seed of the batch order and the split (with --epochs, the same seed gives the same "
            "weights; a time budget ends where the machine's speed puts it).",
        ),
    ] = 0,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for training.")] = 1,
    labels_key: Annotated[
        str, typer.Option("--labels-key", help="Key of class labels in the .npz.")
    ] = "labels",
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Cache of teacher outputs (default ~/.cache/onnxsqueeze/teacher)."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Recompute teacher outputs; cache nothing.")
    ] = False,
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
    from onnxsqueeze import io as sio
    from onnxsqueeze.errors import InputError
    from onnxsqueeze.finetune import FinetuneConfig, finetune
    from onnxsqueeze.manifest import save_artifact, sidecar_path

    inputs = [p for p in (candidate, teacher, data, val) if p is not None]
    sio.refuse_overwrite(output, inputs)
    sio.refuse_overwrite(sidecar_path(output), inputs)
    if time_budget <= 0:
        raise InputError(f"--time-budget {time_budget}: must be positive (minutes)")
    if lr is not None and lr <= 0:
        raise InputError(f"--lr {lr}: must be positive")
    config = FinetuneConfig(
        time_budget_s=time_budget * 60,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        threads=threads,
    )
    with progress("finetune") as update:

        def on_epoch(e: Any) -> None:
            mark = "  *best*" if e.best else ""
            line = f"epoch {e.epoch}/{e.planned}  loss {e.train_loss:.4f}  val {e.metric} {e.val_metric:.4g}"
            update(e.epoch, e.planned, line)
            info(f"{line}  {e.elapsed_s:.0f}s{mark}")

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
    report = result.report.to_dict()
    art = save_artifact(
        result.model,
        output,
        source_path=candidate,
        verify_report=result.export,
        export={
            "kind": "finetune",
            "teacher": {str(teacher): sio.sha256_file(teacher)},
            "config": report["config"],
            "best_epoch": report["training"]["best_epoch"],
            "before": report["before"],
            "after": report["after"],
            "data": {str(p): sio.sha256_file(p) for p in (data, val) if p is not None},
        },
        protect=inputs,
        libraries=("torch", "onnx2torch"),
    )
    if json_:
        emit_json(report | {"output": str(art.path), "manifest": str(art.manifest_path)})
    else:
        render(report, output)


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_cmd)
