"""``distill``: train a small student on an ONNX teacher's soft labels and export it, verified."""

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
    human_bytes,
    human_count,
    out,
    refuse_artifact,
    warn,
    write_artifact,
)
from onnxsqueeze.distill.student import catalog

STUDENT_HELP = (
    f"The student: a catalog name ({', '.join(catalog())}), "
    "a 'package.module:callable' returning a torch.nn.Module, or 'sepconv:SPEC' (SPEC with its "
    "k x k convs made depthwise-separable)."
)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _ratio(t: float | None, s: float | None, fmt: str = "{:.1f}x smaller") -> str:
    if not t or not s:
        return ""
    return fmt.format(t / s)


def render(report: dict[str, Any], output: Path, tolerance: float | None) -> None:
    t, s = report["models"]["teacher"], report["models"]["student"]
    table = Table(
        title=f"teacher vs student '{escape(report['student'])}' on {escape(report['report_data'])} "
        f"({report['samples']['report']} samples)",
        title_justify="left",
    )
    for col in ("", "teacher", "student", "ratio"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row(
        "params", human_count(t["params"]), human_count(s["params"]), _ratio(t["params"], s["params"])
    )
    table.add_row(
        "MACs / sample", human_count(t["macs"]), human_count(s["macs"]), _ratio(t["macs"], s["macs"])
    )
    table.add_row(
        "file",
        human_bytes(t["file_bytes"]),
        human_bytes(s["file_bytes"]),
        _ratio(t["file_bytes"], s["file_bytes"]),
    )
    if t["accuracy"] is not None:
        diff = (s["accuracy"] - t["accuracy"]) * 100
        table.add_row("accuracy", _pct(t["accuracy"]), _pct(s["accuracy"]), f"{diff:+.2f} points")
    table.add_row("agreement with teacher", _pct(t["agreement"]), _pct(s["agreement"]), "")
    if t["latency_ms"] is not None:
        table.add_row(
            "latency (batch 1, ORT CPU)",
            f"{t['latency_ms']:.3f} ms",
            f"{s['latency_ms']:.3f} ms",
            _ratio(t["latency_ms"], s["latency_ms"], "{:.1f}x faster"),
        )
    out.print(table)
    tr = report["training"]
    metric = next(k for k in tr if k.startswith("best_val_"))
    out.print(
        f"trained {tr['epochs_run']} epochs in {tr['seconds']:.1f} s ({tr['stop_reason']}); best epoch "
        f"{tr['best_epoch']}, validation {metric[len('best_val_') :]} {tr[metric]:.2%}; peak lr "
        f"{tr['lr']:.3g}" + (" (range test)" if tr["lr_found"] else "")
    )
    if report.get("sepconv"):
        sc = report["sepconv"]
        macs = f", MACs x{sc['mac_ratio']:.3f}" if sc.get("mac_ratio") is not None else ""
        out.print(f"sepconv: {sc['replaced']} convs made separable, params x{sc['param_ratio']:.3f}{macs}")
    hits = report["teacher_cache_hits"]
    out.print(
        "teacher outputs: "
        + ", ".join(f"{k} {'cached' if v else 'computed'}" for k, v in hits.items())
        + f"; export verified: max abs {report['export']['max_abs']:.2g} (ONNX vs PyTorch)"
        + (f" within {tolerance:g}" if tolerance is not None else "")
    )
    out.print(f"[green]wrote[/] {escape(str(output))}")


@handle_errors
def distill_cmd(
    teacher: opt.TeacherOpt,
    student: Annotated[str, typer.Option("--student", help=STUDENT_HELP, show_default=False)],
    data: opt.TrainDataOpt,
    output: opt.OutputOpt,
    val: opt.ValOpt = None,
    test: Annotated[
        Path | None, typer.Option("--test", help="A held-out .npz for the report only (default: --val).")
    ] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature T.")] = 4.0,
    alpha: Annotated[
        float,
        typer.Option("--alpha", help="Weight of the soft (teacher) term; 1 - alpha weights hard-label CE."),
    ] = 0.5,
    epochs: opt.EpochsOpt = None,
    batch_size: opt.BatchSizeOpt = 64,
    lr: opt.LrOpt = None,
    patience: Annotated[
        int,
        typer.Option(
            "--patience", help="Epochs without improvement before annealing and stopping (or stopping)."
        ),
    ] = 20,
    time_budget: Annotated[
        float,
        typer.Option(
            "--time-budget", callback=opt.finite_non_negative, help="Stop training within this many minutes."
        ),
    ] = 1.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights, batch order and split.")] = 0,
    threads: opt.TrainThreadsOpt = 1,
    labels_key: opt.LabelsKeyOpt = "labels",
    feature: Annotated[
        list[str] | None,
        typer.Option(
            "--feature",
            help="Also match a teacher tensor with a student module's output, TEACHER_TENSOR:STUDENT_MODULE "
            "(repeatable; a trained 1x1-conv/linear adapter maps the student's onto the teacher's).",
        ),
    ] = None,
    feature_weight: Annotated[
        float, typer.Option("--feature-weight", help="Weight of the --feature (MSE) terms in the loss.")
    ] = 1.0,
    teacher_output: Annotated[
        str | None,
        typer.Option("--teacher-output", help="Teacher output with the class scores (default: first)."),
    ] = None,
    cache_dir: opt.TeacherCacheOpt = None,
    no_cache: opt.NoCacheFlag = False,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            callback=opt.finite_non_negative,
            help="Max abs error of the exported ONNX vs PyTorch.",
        ),
    ] = 1e-4,
    force: opt.ForceFlag = False,
    json_: opt.JsonFlag = False,
) -> None:
    """Distill an ONNX teacher into a small student, export it to verified ONNX, compare the two.

    Loss: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels).

    Without labels in the data, the KL term alone (pure teacher-student).
    """
    from onnxsqueeze.distill import TrainConfig, distill

    refuse_artifact(output, [teacher, data, val, test])  # before training, not after minutes of it
    opt.require_positive(time_budget, "--time-budget", "minutes")
    config = TrainConfig(
        temperature=temperature,
        alpha=alpha,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        time_budget_s=time_budget * 60,
        feature_weight=feature_weight,
        seed=seed,
        threads=threads,
    )
    # one bar on stderr: the teacher's batches, then the epochs with loss and validation metric
    with epoch_progress("distill", ".2%", val_loss=True) as (update, on_epoch):
        result = distill(
            teacher,
            student,
            data,
            val=val,
            test=test,
            config=config,
            labels_key=labels_key,
            teacher_output=teacher_output,
            features=_features(feature),
            cache_dir=cache_dir,
            use_cache=not no_cache,
            tolerance=None,
            on_teacher=lambda done, total: update(done, total, "teacher outputs"),
            on_epoch=on_epoch,
        )
    within = _check_export(result.report.export, tolerance, force)
    report = result.report.to_dict()
    write_artifact(
        result.model,
        output,
        report,
        json_,
        lambda: render(report, output, tolerance if within else None),
        source_path=teacher,
        # the student has no reference but its PyTorch self: the check is the export's
        verify_report=result.report.export,
        export={
            "kind": "distill",
            "student": student,
            "config": report["config"],
            "best_epoch": report["training"].get("best_epoch"),
            "data": file_hashes(data, val, test),
        },
        protect=[p for p in (teacher, data, val, test) if p is not None],
        libraries=("torch", "torchvision"),
    )


def _features(specs: list[str] | None) -> list[tuple[str, str]]:
    """``--feature TEACHER_TENSOR:STUDENT_MODULE`` pairs."""
    from onnxsqueeze.errors import InputError

    pairs = []
    for spec in specs or ():
        tensor, sep, module = spec.rpartition(":")
        if not sep or not tensor or not module:
            raise InputError(f"--feature '{spec}': expected TEACHER_TENSOR:STUDENT_MODULE (e.g. relu_3:8)")
        pairs.append((tensor, module))
    return pairs


def _check_export(export: Any, tolerance: float, force: bool) -> bool:
    """Whether the exported student is within ``tolerance`` of PyTorch; beyond it, refused unless ``force``."""
    from onnxsqueeze.errors import VerificationError

    failed = export.max_abs > tolerance or any(o.nonfinite for o in export.outputs)
    if failed and not force:
        raise VerificationError(
            f"the exported student differs from PyTorch: max abs error {export.max_abs:.3g} "
            f"exceeds --tolerance {tolerance:g}; not written (use --force to write it anyway)"
        )
    if failed:
        warn(f"export max abs error {export.max_abs:.3g} exceeds {tolerance:g}; written anyway")
    return not failed


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_cmd)
