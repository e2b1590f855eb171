"""``prune``: zero-weight (magnitude) pruning, structured channel pruning, sensitivity analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import (
    escape,
    handle_errors,
    human_bytes,
    human_count,
    info,
    out,
    progress,
    show,
    warn,
)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def render_sizes(report: dict[str, Any]) -> None:
    b, a = report["before"], report["after"]
    t = Table(title="before / after", title_justify="left")
    for col in ("", "before", "after", "ratio"):
        t.add_column(col)
    for key, label, fmt in (
        ("params", "params", human_count),
        ("nonzero_params", "nonzero params", human_count),
        ("macs", "MACs", human_count),
        ("file_bytes", "file", human_bytes),
        ("zipped_bytes", "zipped file", human_bytes),
    ):
        t.add_row(label, fmt(b[key]), fmt(a[key]), _ratio(b[key], a[key]))
    t.add_row("zero weights", _pct(b["sparsity"]), _pct(a["sparsity"]), "")
    out.print(t)


def render_quality(report: dict[str, Any]) -> None:
    q = report.get("quality")
    v = report["verify"]
    if q:
        t = Table(title=f"quality on {q['samples']} samples of {escape(q['data'])}", title_justify="left")
        for col in ("metric", "original", "pruned", "pruned, no reconstruction"):
            t.add_column(col)
        for key in ("accuracy", "agreement", "cosine"):
            if key in q:
                row = q[key]
                t.add_row(
                    key,
                    _pct(row.get("original")),
                    _pct(row["pruned"]),
                    _pct(row.get("pruned_without_reconstruction")),
                )
        out.print(t)
    worst = max(v["outputs"], key=lambda o: o["max_abs"])
    agree = worst.get("top1_agreement")
    out.print(
        f"verified on {v['samples']} sample(s) ({escape(v['source'])}): output '{escape(worst['name'])}' "
        f"max abs {worst['max_abs']:.3g}, cosine {worst['cosine']:.4f}"
        + ("" if agree is None else f", top-1 agreement {agree:.1%}")
    )


def render_sparsity(report: dict[str, Any]) -> None:
    t = Table(title=f"zero weights per layer (overall {report['sparsity']:.1%})", title_justify="left")
    for col in ("layer", "op", "params", "before", "after"):
        t.add_column(col)
    for layer in report["layers"]:
        t.add_row(
            escape(layer["layer"] or layer["weight"]),
            layer["op"],
            human_count(layer["params"]),
            _pct(layer["sparsity_before"]),
            "skipped" if layer["skipped"] else _pct(layer["sparsity"]),
        )
    out.print(t)


def render_groups(report: dict[str, Any]) -> None:
    t = Table(title=f"channel groups (criterion {report['criterion']})", title_justify="left")
    for col in ("group", "producers", "channels", "kept", "status"):
        t.add_column(col)
    for g in report["groups"]:
        t.add_row(
            escape(g["group"]),
            str(len(g["producers"])),
            str(g["channels"]),
            str(g["kept"]),
            escape(g["status"]),
        )
    out.print(t)


def render_reconstruction(report: dict[str, Any]) -> None:
    rows = report.get("reconstruction") or []
    if not rows:
        return
    t = Table(title="least-squares re-fit (relative squared error of the layer output)", title_justify="left")
    for col in ("layer", "op", "rows", "before", "after"):
        t.add_column(col)
    for r in rows:
        if "skipped" in r:
            t.add_row(escape(r["layer"]), r["op"], "-", "-", escape(r["skipped"]))
        else:
            t.add_row(
                escape(r["layer"]),
                r["op"],
                str(r["rows"]),
                f"{r['error_before']:.4f}",
                f"{r['error_after']:.4f}",
            )
    out.print(t)


def render_sensitivity(rows: list[dict[str, Any]]) -> None:
    ratios = sorted({r["ratio"] for r in rows if "ratio" in r})
    metric = next((r["metric"] for r in rows if "metric" in r), "metric")
    base = next((r["baseline"] for r in rows if "baseline" in r), None)
    t = Table(
        title=f"sensitivity: {metric} when pruning one group (original {_pct(base)})", title_justify="left"
    )
    t.add_column("group")
    t.add_column("channels")
    for r in ratios:
        t.add_column(f"{r:.0%} pruned")
    groups: dict[str, dict[float, dict[str, Any]]] = {}
    blocked: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "ratio" in row:
            groups.setdefault(row["group"], {})[row["ratio"]] = row
        else:
            blocked[row["group"]] = row
    for name, by_ratio in groups.items():
        first = next(iter(by_ratio.values()))
        t.add_row(
            escape(name),
            str(first["channels"]),
            *(
                f"{_pct(by_ratio[r]['value'])} ({by_ratio[r]['macs_ratio']:.0%} MACs)"
                if r in by_ratio
                else "-"
                for r in ratios
            ),
        )
    for name, row in blocked.items():
        t.add_row(escape(name), str(row["channels"]), *(["-"] * len(ratios)))
    out.print(t)
    if blocked:
        info(
            f"{len(blocked)} group(s) cannot be pruned: "
            + "; ".join(f"{k}: {v['status']}" for k, v in blocked.items())
        )


def _parse_ratios(text: str) -> list[float]:
    from onnxsqueeze.errors import InputError

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise InputError(f"--ratios '{text}': expected comma-separated numbers like 0.25,0.5,0.75") from e
    if not values or any(not 0 < v < 1 for v in values):
        raise InputError(f"--ratios '{text}': every ratio must be between 0 and 1")
    return values


@handle_errors
def prune_cmd(
    model: opt.ModelArg,
    output: opt.MaybeOutputOpt = None,
    sparsity: Annotated[
        float | None, typer.Option("--sparsity", help="Zero-weight pruning: fraction of weights set to zero.")
    ] = None,
    scope: Annotated[
        str, typer.Option("--scope", help="Sparsity per layer (layer) or one threshold over all (global).")
    ] = "layer",
    skip_first_last: Annotated[
        bool, typer.Option("--skip-first-last", help="Keep the first and last layer dense.")
    ] = False,
    sparse_storage: Annotated[
        bool, typer.Option("--sparse-storage", help="Store sparse weights as ONNX sparse_initializer.")
    ] = False,
    channels: Annotated[
        float | None, typer.Option("--channels", help="Structured pruning: fraction of channels removed.")
    ] = None,
    criterion: Annotated[str, typer.Option("--criterion", help="Channel importance: l1, l2 or bn.")] = "l2",
    round_to: Annotated[
        int,
        typer.Option(
            "--round-to", help="Keep channel counts multiples of N (8 for CPU: odd counts ran slower)."
        ),
    ] = 1,
    coupled: Annotated[
        bool, typer.Option("--coupled/--no-coupled", help="Prune residual-coupled groups (shared indices).")
    ] = True,
    reconstruction: Annotated[
        str, typer.Option("--reconstruction", help="With --data: lsq (least-squares re-fit), bias or none.")
    ] = "lsq",
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Calibration inputs (.npz) for re-fitting; the data measured by --sensitivity."
        ),
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval-data", help="Inputs (+ 'labels') to measure accuracy/agreement on (default: --data)."
        ),
    ] = None,
    calibration_samples: opt.CalibrationSamplesOpt = 512,
    sensitivity: Annotated[
        bool,
        typer.Option(
            "--sensitivity",
            help="Measure each channel group alone at --ratios on --data; with --eval-data too, "
            "re-fit on --data and measure on --eval-data. Writes nothing.",
        ),
    ] = False,
    ratios: Annotated[str, typer.Option("--ratios", help="Ratios for --sensitivity.")] = "0.25,0.5,0.75",
    max_drop: opt.MaxDropOpt = None,
    metric: opt.MetricOpt = None,
    threshold: opt.ThresholdOpt = 0.5,
    class_axis: opt.ClassAxisOpt = None,
    finetune: Annotated[
        bool,
        typer.Option(
            "--finetune",
            help="Prune gradually with recovery training against the original on --data (sparsity: "
            "cubic schedule; channels: rounds), validated on --eval-data; 5 minutes.",
        ),
    ] = False,
    input_shape: opt.InputShapeOpt = None,
    json_: opt.JsonFlag = False,
    force: opt.ForceFlag = False,
) -> None:
    """Prune a model: zero small weights (--sparsity) or remove whole channels (--channels).

    Channel removal follows BN, activations, depthwise convs, Concat, Split/Slice, Flatten->Gemm
    and residual Add/Mul; model inputs and outputs keep their shapes.
    With --data (a few hundred unlabeled inputs) each affected layer is re-fitted by least squares.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.shapes import parse_input_shapes

    _check_modes(sparsity, channels, sensitivity, scope, criterion, output)
    shapes_ = parse_input_shapes(input_shape)
    if output is not None:  # before the work, not after it
        sio.refuse_overwrite(output, [p for p in (model, data, eval_data) if p is not None])
    calib, evaluation, eval_label = _prune_data(data, eval_data, calibration_samples)
    if sensitivity:
        rows = _sensitivity(
            model, evaluation, shapes_, ratios, criterion, round_to,
            reconstruction if eval_data is not None else "none", calib if eval_data is not None else None,
        )  # fmt: skip
        show(json_, {"model": str(model), "data": eval_label, "rows": rows}, lambda: render_sensitivity(rows))
        return
    assert output is not None
    if finetune:
        _finetune(model, output, data, eval_data, sparsity, channels, criterion, round_to, scope, json_)
        return
    from onnxsqueeze import optimize
    from onnxsqueeze.errors import InputError

    if max_drop is not None and metric is None and evaluation is None:
        raise InputError("--max-drop needs --data or --eval-data to measure accuracy or agreement")
    with progress("re-fitting layers") as update:
        _, result = optimize.prune(
            model,
            output,
            sparsity=sparsity,
            channels=channels,
            input_shapes=shapes_,
            calibration=calib,
            eval_data=evaluation,
            eval_label=eval_label,
            protect=[p for p in (data, eval_data) if p is not None],
            acceptance=opt.acceptance(metric, max_drop, threshold=threshold, class_axis=class_axis),
            reconstruction=reconstruction,
            scope=scope,
            skip_first_last=skip_first_last,
            sparse_storage=sparse_storage,
            criterion=criterion,
            round_to=round_to,
            coupled=coupled,
            force=force,
            say=info,
            on_progress=update,
        )
    report = result.to_dict()
    show(json_, report, lambda: render_pruned(report))
    if not result.passed:
        j = result.judgement
        warn(f"{j.reason if j else 'beyond the budget'} (written anyway: --force)")


def _check_modes(
    sparsity: float | None,
    channels: float | None,
    sensitivity: bool,
    scope: str,
    criterion: str,
    output: Path | None,
) -> None:
    from onnxsqueeze.errors import InputError

    modes = [
        name
        for name, on in (
            ("--sparsity", sparsity is not None),
            ("--channels", channels is not None),
            ("--sensitivity", sensitivity),
        )
        if on
    ]
    if len(modes) != 1:
        raise InputError("choose exactly one of --sparsity, --channels or --sensitivity")
    if scope not in ("layer", "global"):
        raise InputError(f"--scope '{scope}': use layer or global")
    if criterion not in ("l1", "l2", "bn"):
        raise InputError(f"--criterion '{criterion}': use l1, l2 or bn")
    if not sensitivity and output is None:
        raise InputError("missing --output/-o for the pruned model")


def _prune_data(
    data: Path | None, eval_data: Path | None, calibration_samples: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
    """(calibration arrays, evaluation arrays, evaluation label) from --data and --eval-data."""
    from onnxsqueeze import io as sio
    from onnxsqueeze import prune as api

    calib = api.limit(sio.load_npz(data), calibration_samples) if data is not None else None
    if eval_data is not None:
        return calib, sio.load_npz(eval_data), str(eval_data)
    if data is not None:
        return calib, sio.load_npz(data), f"{data} (the calibration data: optimistic)"
    return calib, None, "random inputs"


def _sensitivity(
    model: Path,
    evaluation: dict[str, Any] | None,
    shapes_: Any,
    ratios: str,
    criterion: str,
    round_to: int,
    reconstruction: str,
    calibration: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """``--sensitivity``: each channel group pruned alone, measured on the evaluation data.

    --data alone is the measured data (weight-only pruning); with --eval-data, --data is the
    calibration set and each candidate is re-fitted as the final pruning would be.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze import prune as api
    from onnxsqueeze.errors import InputError
    from onnxsqueeze.optimize import base

    if evaluation is None:
        raise InputError("--sensitivity needs --data (inputs, with 'labels' for accuracy)")
    source = sio.load(model)
    # the same normalized form the pruning runs on (Constant-node weights lifted, BN folded)
    normalized, _ = base.normalize(
        source,
        feeds=base.sample_feeds(source, base.resolve_shapes(source, shapes_, evaluation), data=evaluation),
        say=info,
    )
    with progress("sensitivity") as update:
        return api.sensitivity(
            normalized,
            evaluation,
            _parse_ratios(ratios),
            criterion=criterion,
            round_to=round_to,
            calibration=calibration,
            reconstruction=reconstruction,
            input_shapes=shapes_,
            on_progress=update,
        )


def render_pruned(report: dict[str, Any]) -> None:
    if report["mode"] == "sparsity":
        render_sparsity(report)
    else:
        render_groups(report)
    render_reconstruction(report)
    render_sizes(report)
    render_quality(report)
    for note in report["notes"]:
        warn(note)
    info(f"wrote {report['output']}")


def _finetune(
    model: Path,
    output: Path,
    data: Path | None,
    eval_data: Path | None,
    sparsity: float | None,
    channels: float | None,
    criterion: str,
    round_to: int,
    scope: str,
    json_: bool,
) -> None:
    """``--finetune``: gradual pruning with recovery training (onnxsqueeze.finetune.gradual)."""
    from onnxsqueeze.cli.finetune import write_finetuned
    from onnxsqueeze.errors import InputError
    from onnxsqueeze.finetune.gradual import prune_and_finetune

    if data is None:
        raise InputError("--finetune needs --data (training inputs; the original model is the teacher)")
    with progress("finetune") as update:
        result = prune_and_finetune(
            model,
            data,
            sparsity=sparsity,
            channels=channels,
            val=eval_data,
            prune_options={"criterion": criterion, "round_to": round_to},
            scope=scope,
        )
        update(1, 1, "done")
    write_finetuned(
        result,
        output,
        json_,
        source=model,
        export={"kind": "prune+finetune", "sparsity": sparsity, "channels": channels},
        protect=[model, data, eval_data],
    )


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_cmd)
