"""``squeeze`` (the accuracy-budgeted search) and ``apply`` (replay a recipe)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import (
    emit_json,
    err,
    escape,
    handle_errors,
    human_bytes,
    info,
    out,
    progress,
    show,
    warn,
)

# The knob names of onnxsqueeze.search.KNOBS, spelled out so that --help imports nothing heavy.
TECHNIQUES: tuple[str, ...] = (
    "resolution", "channels", "sparsity", "int8", "int8-dynamic", "int8-weights", "int4", "fp16", "distill",
    "sparsity+ft", "channels+ft", "resolution+ft",  # fine-tuned variants (--train-data)
)  # fmt: skip

MetricOpt = Annotated[
    str,
    typer.Option(
        "--metric",
        help="accuracy (needs labels) | agreement (top-1 vs the original; a [T, N, C] CTC output "
        "is scored per time step) | iou | cosine | mae | sequence (exact match of greedy CTC "
        "decodings). Default: accuracy when the data has labels, else agreement.",
    ),
]


# What squeeze writes into its folder besides the model (and a distilled student).
SQUEEZE_FILES = ("recipe.toml", "report.md", "results.json", "pareto.png", "calibration.npz")


def _parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    from onnxsqueeze.errors import InputError

    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise InputError(f"{what} '{text}': expected comma-separated numbers") from e


def _preprocess(
    size: str | None, resize: str, mean: str | None, std: str | None, layout: str, channels: str
) -> Any:
    from onnxsqueeze import evaluate as E
    from onnxsqueeze.errors import InputError

    kwargs: dict[str, Any] = {"resize": resize, "layout": layout.upper(), "channels": channels.upper()}
    if size:
        try:
            h, _, w = size.lower().partition("x")
            kwargs["size"] = (int(h), int(w or h))
        except ValueError as e:
            raise InputError(f"--image-size '{size}': expected HxW, e.g. 224x224") from e
    if mean:
        kwargs["mean"] = _parse_floats(mean, "--mean")
    if std:
        kwargs["std"] = _parse_floats(std, "--std")
    return E.Preprocess(**kwargs)


@handle_errors
def squeeze_cmd(
    models: Annotated[
        list[Path] | None,
        typer.Argument(
            help="ONNX model file(s). Several models (a fleet) are squeezed into OUT/<model>/ each, "
            "with OUT/fleet.md and OUT/fleet.json summing them up.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(),
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Evaluation data: an .npz of inputs (+ optional 'labels') or an image folder "
            "(ImageFolder layout: one subfolder per class, or flat without labels).",
        ),
    ] = None,
    models_from: Annotated[
        Path | None,
        typer.Option(
            "--models-from",
            help="A file listing a fleet, one 'MODEL [DATA [TRAIN_DATA]] [KEY=VALUE ...]' per line "
            "(# comments; KEY: metric, output, threshold, samples, calibration_samples); missing "
            "DATA / TRAIN_DATA default to --data / --train-data.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Measure candidates in N local processes (knobs are bisected concurrently; "
            "latency is still timed one candidate at a time per machine).",
        ),
    ] = None,
    ray: Annotated[
        bool,
        typer.Option("--ray", help="Measure candidates as tasks on a local Ray instance (extra: ray)."),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Measure candidates on an existing Ray cluster, e.g. HEAD:6379."),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option(
            "--max-drop",
            callback=opt.finite_non_negative,
            help="Largest allowed drop from the baseline (points, or % with --relative).",
        ),
    ] = 1.0,
    relative: Annotated[
        bool, typer.Option("--relative", help="--max-drop is a percentage of the baseline.")
    ] = False,
    metric: MetricOpt = "",
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            help="What to minimize: latency | size | macs | cost, or a priority list such as "
            "latency,size (ties on the first, within the timing noise, are broken by the next). "
            "Exit 3 when candidates fit but none beats the original on it (Pareto-front models "
            "within budget are written to OUT/pareto/).",
        ),
    ] = "latency",
    provider: opt.ProviderOpt = "cpu",
    time_budget: Annotated[
        float | None,
        typer.Option(
            "--time-budget",
            callback=opt.finite_non_negative,
            help="Minutes, counted from the start (loading, plans and the original's measurement included): no plan or evaluation starts after it (the original is always measured).",
        ),
    ] = None,
    techniques: Annotated[
        str | None,
        typer.Option(
            "--techniques",
            help=f"Comma-separated knobs to try: {', '.join(TECHNIQUES)} (default: every one whose pass is installed).",
        ),
    ] = None,
    calibration_data: Annotated[
        Path | None,
        typer.Option(
            "--calibration-data",
            help="An .npz for calibration (int8 static). Default: hold out the first "
            "--calibration-samples of --data and evaluate on the rest.",
        ),
    ] = None,
    calibration_samples: opt.CalibrationSamplesOpt = 64,
    train_data: Annotated[
        Path | None,
        typer.Option(
            "--train-data",
            help="Training .npz (inputs + optional 'labels'): offers the 'distill' knob (the model "
            "teaches a smaller catalog student) and the fine-tuned knobs 'sparsity+ft', "
            "'channels+ft', 'resolution+ft' (the pass, then recovery training against the model); "
            "the default calibration data.",
        ),
    ] = None,
    distill_minutes: Annotated[
        float, typer.Option("--distill-minutes", min=0.05, help="Training time of each distilled student.")
    ] = 1.0,
    train_epochs: Annotated[
        int | None,
        typer.Option(
            "--train-epochs",
            min=1,
            help="Train each distilled student and fine-tuned base this many epochs instead of "
            "their time budgets: reproducible byte for byte, also across --workers / --ray.",
        ),
    ] = None,
    distill_students: Annotated[
        str | None,
        typer.Option(
            "--distill-students",
            help="Comma-separated catalog students to distill into, larger to smaller (default: cnn8,cnn4).",
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", min=1, help="Use at most N samples of --data.")
    ] = None,
    output_name: Annotated[
        str | None, typer.Option("--output-name", help="Scored output (default: first).")
    ] = None,
    threshold: opt.ThresholdOpt = 0.5,
    price_per_hour: opt.PricePerHourOpt = None,
    instance: opt.InstanceOpt = None,
    latency_seconds: Annotated[
        float, typer.Option("--latency-seconds", min=0.0, help="Minimum timing-loop duration per candidate.")
    ] = 0.5,
    latency_threads: Annotated[
        int,
        typer.Option(
            "--threads",
            "--latency-threads",
            min=0,
            help="Intra-op threads when timing candidates (0: onnxruntime's default pool). One "
            "thread keeps the interleaved A/B timing fair on a shared machine.",
        ),
    ] = 1,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Evaluation cache (default: OUT/.cache).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Measure everything afresh.")] = False,
    image_size: Annotated[
        str | None, typer.Option("--image-size", help="Image folder: HxW (default 224x224).")
    ] = None,
    resize: Annotated[str, typer.Option("--resize", help="Image folder: crop | stretch | pad.")] = "crop",
    mean: Annotated[
        str | None, typer.Option("--mean", help="Image folder: per-channel mean (0..1 scale).")
    ] = None,
    std: Annotated[str | None, typer.Option("--std", help="Image folder: per-channel std.")] = None,
    layout: Annotated[str, typer.Option("--layout", help="Image folder: NCHW | NHWC.")] = "NCHW",
    color_order: Annotated[
        str, typer.Option("--color-order", help="Image folder: colour order RGB | BGR | GRAY.")
    ] = "RGB",
    input_shape: opt.InputShapeOpt = None,
    class_axis: opt.ClassAxisOpt = None,
    json_: opt.JsonFlag = False,
) -> None:
    """Find the cheapest model within an accuracy budget; write it with its recipe and a report.

    Measures the baseline, bisects each technique for its most aggressive setting within budget,
    combines the survivors greedily, and writes OUT/: the best model, recipe.toml, report.md,
    results.json and pareto.png. Evaluations are cached: rerun the same command to resume.
    Exit 1 when nothing fits the budget (for a fleet: when any model has no result); exit 3
    when candidates fit but none beats the original on the objective (the Pareto-front models
    within budget are then written to OUT/pareto/).

    Scale out with --workers N (local processes) or --ray / --ray-address (a Ray cluster): the
    search decides exactly as in one process and writes the same best model.
    """
    from onnxsqueeze.search.executor import make_executor
    from onnxsqueeze.shapes import parse_input_shapes

    t0 = time.perf_counter()
    entries = _entries(output, models, models_from, data, train_data, calibration_data)
    options = _options(
        max_drop, relative, objective, provider, time_budget, techniques, price_per_hour, instance,
        latency_seconds, latency_threads, distill_minutes, train_epochs, distill_students,
    )  # fmt: skip
    common = dict(
        metric=metric or None, calibration_data=calibration_data, calibration_samples=calibration_samples,
        samples=samples, output_name=output_name, threshold=threshold, cache_dir=cache_dir,
        use_cache=not no_cache, input_shapes=parse_input_shapes(input_shape) if input_shape else None,
        class_axis=class_axis,
    )  # fmt: skip
    # Workers import torch as they start when students will be trained (see search.executor).
    trains = any(e.train_data is not None for e in entries)
    executor = make_executor(workers, ray, ray_address, preload=("torch",) if trains else ())
    if len(entries) > 1 or models_from is not None:
        with executor:
            _fleet(entries, output, options, executor, json_, **common)
        return
    preprocess = (image_size, resize, mean, std, layout, color_order)
    _single(entries[0], output, options, executor, json_, t0, preprocess, **common)


def _entries(
    output: Path,
    models: list[Path] | None,
    models_from: Path | None,
    data: Path | None,
    train_data: Path | None,
    calibration_data: Path | None,
) -> list[Any]:
    """The models to squeeze (a fleet or one), the output folder checked before the work."""
    from onnxsqueeze import io as sio
    from onnxsqueeze.errors import InputError
    from onnxsqueeze.search.fleet import fleet_entries

    if output == Path():
        raise InputError("missing --output / -o: the output folder")
    entries = fleet_entries(models or [], models_from, data, train_data)
    inputs = [p for e in entries for p in (e.model, e.data, e.train_data)] + [calibration_data, models_from]
    names = []  # before the work, not after minutes of search
    if len(entries) == 1 and models_from is None:
        stem = entries[0].model.name.removesuffix(".onnx")
        names = [f"{stem}.squeezed.onnx", f"{stem}.student.onnx", *SQUEEZE_FILES]
    sio.check_output_folder(output, names, inputs)
    return entries


def _options(
    max_drop: float,
    relative: bool,
    objective: str,
    provider: str,
    time_budget: float | None,
    techniques: str | None,
    price_per_hour: float | None,
    instance: str | None,
    latency_seconds: float,
    latency_threads: int,
    distill_minutes: float,
    train_epochs: int | None,
    distill_students: str | None,
) -> Any:
    """The search's :class:`onnxsqueeze.search.SqueezeOptions` from the command's flags."""
    from onnxsqueeze import evaluate as E
    from onnxsqueeze import search as S

    return S.SqueezeOptions(
        budget=E.Budget(max_drop, relative),
        objective=objective,
        provider=provider,
        time_budget_s=time_budget * 60 if time_budget is not None else None,
        techniques=_names(techniques),
        price_per_hour=price_per_hour,
        instance=instance,
        latency_seconds=latency_seconds,
        latency_threads=latency_threads or None,
        distill_time_s=distill_minutes * 60,
        train_epochs=train_epochs,
        distill_students=_names(distill_students),
    )


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated list of names (None when not given)."""
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


def _single(
    entry: Any,
    output: Path,
    options: Any,
    executor: Any,
    json_: bool,
    t0: float,
    preprocess: tuple[Any, ...],
    **common: Any,
) -> None:
    """Squeeze one model into ``output``: the search with a line per point, its files, the summary."""
    from onnxsqueeze import search as S

    model, data, train_data = entry.model, entry.data, entry.train_data
    common["output"] = common.pop("output_name")
    with progress("loading images") as on_image:
        squeezer = S.make_squeezer(
            model,
            data,
            options=options,
            out_dir=output,
            preprocess=_preprocess(*preprocess) if data.is_dir() else None,
            on_image=on_image,
            train_data=train_data,
            **common,
        )
    evaluator = squeezer.evaluator
    evalset = evaluator.dataset
    for name, why in squeezer.skipped.items():
        info(f"not offered: {name} ({why})")

    def on_point(p: S.Point) -> None:
        label = S.describe_settings(p.settings, squeezer.knobs)
        if p.error:
            status = f"[yellow]rejected[/]: {escape(p.error[:100])}"
        else:
            status = "[green]fits[/]" if p.fits else "[red]over budget[/]"
            status += f"  {evaluator.metric.name} {p.metric:.4g} (drop {p.drop:+.3g})"
            if p.samples is not None:
                status += f" on {p.samples} samples, stopped early"
            status += f"  {human_bytes(p.size)}"
            status += f"  {p.latency_ms:.3g} ms" if p.latency_ms is not None else "  (not timed)"
        err.print(f"  {p.phase:<8} {escape(label):<28} {status}{'  (cached)' if p.cached else ''}")

    err.print(
        f"squeezing {escape(str(model))}: {evaluator.metric.name} on {len(evalset)} samples, "
        f"{options.budget.describe(evaluator.metric)}, objective {options.objective}"
    )
    squeezer.executor = executor
    if executor.workers > 1:
        info(f"candidates measured {executor.describe()}")
    try:
        with executor, progress("evaluating (batches)") as update:
            evaluator.on_batch = update if executor.workers == 1 else None
            result = squeezer.run(on_point=on_point)
    except KeyboardInterrupt:
        where = squeezer.cache_dir or "nowhere (--no-cache)"
        err.print(
            f"[red]interrupted[/] after {squeezer.evaluations} new evaluation(s); they are cached in "
            f"{escape(str(where))}: rerun the same command to resume"
        )
        raise typer.Exit(130) from None
    stem = model.name.removesuffix(".onnx")
    elapsed = time.perf_counter() - t0
    from onnxsqueeze.errors import BudgetNotMetError, ObjectiveNotImprovedError

    try:
        written = S.write_outputs(
            squeezer,
            result,
            output,
            protect=[model, data] + ([train_data] if train_data else []),
            model_name=stem,
            elapsed_s=elapsed,
        )
    except (BudgetNotMetError, ObjectiveNotImprovedError) as e:
        if json_:
            import json

            emit_json(json.loads((output / "results.json").read_text()))
        elif isinstance(e, ObjectiveNotImprovedError):
            warn(str(e))
            raise typer.Exit(e.exit_code) from None
        raise
    if json_:
        emit_json(
            S.results_dict(squeezer, result, elapsed_s=elapsed)
            | {"files": {k: str(v) for k, v in written.items()}}
        )
        return
    _render(squeezer, result, written, elapsed)


def _fleet(entries: list[Any], output: Path, options: Any, executor: Any, json_: bool, **kwargs: Any) -> None:
    """Squeeze a fleet: one search per model on one executor, a line per result, a summary."""
    import threading

    from onnxsqueeze.errors import BudgetNotMetError
    from onnxsqueeze.search.fleet import fleet_names, squeeze_fleet

    names = fleet_names([e.model for e in entries])
    width = max(len(n) for n in names)
    lock = threading.Lock()
    counts = dict.fromkeys(names, 0)
    best: dict[str, str] = {}
    err.print(f"squeezing {len(entries)} models, candidates measured {executor.describe()}")

    def on_point(name: str, squeezer: Any, p: Any) -> None:
        from onnxsqueeze import search as S

        with lock:
            counts[name] += 1
            if p.fits and p.settings and p.error is None:
                best[name] = S.describe_settings(p.settings, squeezer.knobs)
            what = "rejected" if p.error else ("fits" if p.fits else "over budget")
            err.print(
                f"  {escape(name):<{width}}  #{counts[name]:<3} {p.phase:<8} "
                f"{escape(S.describe_settings(p.settings, squeezer.knobs)):<28} {what}"
                f"{'  (cached)' if p.cached else ''}"
            )

    def on_model(name: str, row: Any) -> None:
        with lock:
            extra = (
                f"{row.candidate}, {row.size_ratio or 0:.2f}x smaller" if row.status == "ok" else row.message
            )
            err.print(
                f"[bold]{escape(name)}[/]: {row.status} ({escape(str(extra)[:160])}) in {row.seconds:.1f} s"
            )

    kwargs["output"] = kwargs.pop("output_name")
    rows, files = squeeze_fleet(entries, output, options=options, executor=executor,
                                on_point=on_point, on_model=on_model, **kwargs)  # fmt: skip
    if json_:
        emit_json(json.loads(files["json"].read_text()))
    else:
        out.print(files["markdown"].read_text())
        out.print(f"  summary  {escape(str(files['markdown']))}, {escape(str(files['json']))}")
    failed = [r.name for r in rows if r.status != "ok"]
    if failed:
        raise BudgetNotMetError(
            f"{len(failed)} of {len(rows)} model(s) without a result: {', '.join(failed)}"
        )


def _render(squeezer: Any, result: Any, written: dict[str, Path], elapsed: float) -> None:
    from onnxsqueeze import search as S

    obj = result.objective
    m = squeezer.evaluator.metric
    t = Table(title=f"squeeze: {m.name}, objective {obj}", title_justify="left")
    for col in ("", "candidate", m.name, "drop", "size", "latency ms", "MACs"):
        t.add_column(col)
    for tag, p in (("baseline", result.baseline), ("best", result.best)):
        t.add_row(
            tag,
            escape(S.describe_settings(p.settings, squeezer.knobs)),
            f"{p.metric:.4g}",
            f"{p.drop:+.3g}",
            human_bytes(p.size),
            f"{p.latency_ms:.3g}",
            f"{p.macs / 1e6:.3g} M" if p.macs is not None else "-",
        )
    out.print(t)
    b, base = result.best, result.baseline
    out.print(
        f"size {base.size / b.size:.2f}x smaller, latency {base.latency_ms / b.latency_ms:.2f}x; "
        f"{len(result.points)} points ({squeezer.evaluations} measured, {squeezer.cache_hits} cached) "
        f"in {elapsed:.1f} s"
    )
    if result.truncated:
        warn(f"search stopped early ({result.truncated}); rerun to continue from the cache")
    for kind in ("model", "manifest", "student", "finetuned", "recipe", "report", "results", "plot"):
        if kind in written:
            out.print(f"  {kind:<9} {escape(str(written[kind]))}")


@handle_errors
def apply_cmd(
    recipe: Annotated[Path, typer.Argument(help="A recipe.toml written by squeeze.", show_default=False)],
    model: opt.ModelArg,
    output: opt.OutputOpt,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Calibration data file (default: the path recorded in the recipe)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Apply even if the model or calibration data differ from the recipe's, or write a "
            "result beyond --tolerance.",
        ),
    ] = False,
    tolerance: opt.ToleranceOpt = None,
    input_shape: opt.InputShapeOpt = None,
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            help="The recipe's base model (a distilled student; default: the path in its [base]).",
        ),
    ] = None,
    json_: opt.JsonFlag = False,
) -> None:
    """Replay a recipe on a model, deterministically: same model and data give the same bytes.

    A recipe found with distillation names a base model (the student, saved beside it): MODEL is
    still the original (the teacher, its hash checked) and the passes replay on the student.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze import recipe as rcp
    from onnxsqueeze.manifest import save_artifact
    from onnxsqueeze.search.squeezer import written_form
    from onnxsqueeze.shapes import parse_input_shapes
    from onnxsqueeze.verify import verify

    sio.refuse_overwrite(output, [model, recipe, data])  # before the work
    r = rcp.load(recipe)
    proto = sio.load(model)
    sha = sio.sha256_file(model)
    if r.source_sha256 and r.source_sha256 != sha:
        _mismatch(
            f"{model}: sha256 {sha[:12]}... differs from the recipe's source {r.source_sha256[:12]}...", force
        )
    calibration = _recipe_calibration(r, recipe, data, force)
    start, start_sha = _recipe_base(r, recipe, base, force) or (proto, sha)
    result = rcp.build(start, r.steps, calibration=calibration, source_sha256=start_sha)
    # Verified against the source on the calibration samples (or seeded random inputs): a recipe
    # squeezes on purpose, so the metrics are reported and only --tolerance makes them a gate.
    report = verify(
        proto,
        result,
        data=calibration,
        data_label="calibration samples",
        input_shapes=parse_input_shapes(input_shape) if input_shape else None,
        seed=0,
    )
    if tolerance is not None and not report.within(tolerance) and not force:
        from onnxsqueeze.errors import VerificationError

        raise VerificationError(
            f"{output}: not written: max abs error {report.max_abs:.3g} vs the source exceeds "
            f"--tolerance {tolerance:g} (use --force to write anyway)"
        )
    save_artifact(
        written_form(result), output, source_path=model, verify_report=report,
        protect=[p for p in (model, recipe, data, base) if p],
    )  # fmt: skip
    digest = sio.sha256_file(output)
    doc = {"output": str(output), "sha256": digest, "steps": [s.to_dict() for s in r.steps]}
    show(json_, doc | {"verify": report.to_dict()}, lambda: _render_applied(output, digest, report))


def _mismatch(message: str, force: bool) -> None:
    """A recipe's recorded hash differs: bad input, or a warning with ``--force``."""
    from onnxsqueeze.errors import InputError

    if not force:
        raise InputError(message + " (use --force to apply anyway)")
    warn(message)


def _recipe_calibration(r: Any, recipe: Path, data: Path | None, force: bool) -> Any:
    """The recipe's calibration samples (its slice of ``data`` or of its recorded file), hash-checked."""
    from onnxsqueeze import evaluate as E
    from onnxsqueeze.errors import InputError

    if not r.needs_calibration():
        return None
    assert r.calibration is not None
    path = data or Path(r.calibration.data)
    if not path.is_absolute() and data is None:
        path = recipe.parent / path  # relative paths are relative to the recipe
    ds = E.load_npz_dataset(path)
    c = r.calibration
    if c.stop > len(ds):
        raise InputError(f"{path}: has {len(ds)} samples, the recipe calibrates on {c.start}:{c.stop}")
    cal = ds.take(c.start, c.stop)
    if cal.sha256() != c.sha256:
        _mismatch(f"{path}: calibration samples differ from the recipe's (sha256 mismatch)", force)
    return cal.inputs


def _recipe_base(r: Any, recipe: Path, base: Path | None, force: bool) -> tuple[Any, str] | None:
    """``(model, sha256)`` of the recipe's base model (a distilled student), hash-checked; None without."""
    from onnxsqueeze import io as sio
    from onnxsqueeze.errors import InputError

    if base is not None and r.base is None:
        raise InputError(f"{recipe}: --base given, but the recipe has no [base] model")
    if r.base is None:
        return None
    bpath = base or Path(r.base.path)
    if base is None and not bpath.is_absolute():
        bpath = recipe.parent / bpath
    if not bpath.is_file():
        raise InputError(f"{bpath}: the recipe's base model ({r.base.method} -> {r.base.student}) is missing")
    sha = sio.sha256_file(bpath)
    if sha != r.base.sha256:
        _mismatch(
            f"{bpath}: sha256 {sha[:12]}... differs from the recipe's base {r.base.sha256[:12]}...", force
        )
    return sio.load(bpath), sha


def _render_applied(output: Path, digest: str, report: Any) -> None:
    o = report.outputs[0]
    top1 = f", top-1 agreement {o.top1_agreement:.1%}" if o.top1_agreement is not None else ""
    out.print(
        f"wrote {escape(str(output))} ({human_bytes(output.stat().st_size)}, sha256 {digest[:16]}...)\n"
        f"  vs the source on {report.samples} {escape(report.source)}: max abs {report.max_abs:.3g}, "
        f"cosine {report.min_cosine:.6f}{top1}"
    )


def register(app: typer.Typer) -> None:
    app.command("squeeze")(squeeze_cmd)
    app.command("apply")(apply_cmd)
