"""``resize``: run a model at another input resolution (check, rewrite, or sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import escape, handle_errors, human_count, info, out, progress, show, warn

ResolutionOpt = Annotated[
    str | None,
    typer.Option(
        "--resolution", "-r", help="The new input size, HxW (e.g. 160x160) or one number for a square."
    ),
]
ScaleOpt = Annotated[
    float | None,
    typer.Option(
        "--scale",
        help="A factor on H and W instead of --resolution (e.g. 0.5). For dynamic H/W with --keep-interface.",
    ),
]
InputOpt = Annotated[
    str | None,
    typer.Option(
        "--input-name",
        "--input",
        help="The image input (default: the only input of rank >= 3, or the one --input-shape names).",
    ),
]
KeepOpt = Annotated[
    bool,
    typer.Option(
        "--keep-interface",
        help="Keep the I/O shapes: Resize after the input, and image-to-image outputs resized back.",
    ),
]
ModeOpt = Annotated[
    str, typer.Option("--mode", help="Interpolation of the interface Resizes: linear, nearest, cubic.")
]
CheckFlag = Annotated[
    bool,
    typer.Option(
        "--check", help="Print whether the model can change resolution (exit 1 if not); write nothing."
    ),
]
SweepOpt = Annotated[
    str | None,
    typer.Option(
        "--sweep",
        help="Resolutions to compare, e.g. 224,192,160,128 (or 224x224,160x120): MACs, latency, accuracy.",
    ),
]
MinAgreementOpt = Annotated[
    float | None,
    typer.Option(
        "--min-agreement",
        help="Fail (exit 1, nothing written unless --force) if top-1 agreement or map IoU with the original "
        "falls below this fraction.",
    ),
]


def _res(v: tuple[int | None, int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def render_verdict(v: Any) -> None:
    colour = "green" if v.ok else "red"
    out.print(f"[{colour}]{'accepted' if v.ok else 'refused'}[/]: {escape(v.message)}")
    t = Table(show_header=False, show_edge=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("input", f"{escape(v.input)} ({v.layout}, {_res(v.size)})")
    if v.ok:
        t.add_row("sizes", escape(v.sizes))
        t.add_row("outputs", escape(", ".join(f"{k}: {kind}" for k, kind in v.outputs.items())))
        if v.rewrites:
            t.add_row("constants to rewrite", escape(", ".join(v.rewrites)))
    out.print(t)


def render_sweep(points: list[Any], source: str) -> None:
    t = Table(
        title=f"resolution sweep on {escape(source)} (* the original; x: ratio to it)",
        title_justify="left",
        caption="accuracy: vs labels (maps: IoU vs label masks); top-1 agr, IoU, MAE: vs the original",
        caption_justify="left",
    )
    for col in ("size", "MACs", "MACs x", "ms", "ms x", "accuracy", "top-1 agr", "IoU", "MAE"):
        t.add_column(col, justify="right", no_wrap=True)
    for i, p in enumerate(points):
        label = "x".join(map(str, p.resolution)) + ("*" if i == 0 else "")
        if p.error:
            t.add_row(label, f"[red]{escape(p.error)}[/]", *[""] * 7)
            continue
        acc = "-" if p.accuracy is None else f"{p.accuracy:.4f}" if p.iou is not None else f"{p.accuracy:.1%}"
        t.add_row(
            label,
            human_count(p.macs),
            "-" if p.macs_ratio is None else f"{p.macs_ratio:.3f}",
            "-" if p.latency_ms is None else f"{p.latency_ms:.2f}",
            "-" if p.latency_ratio is None else f"{p.latency_ratio:.3f}",
            acc,
            _pct(p.top1_agreement),
            "-" if p.iou is None else f"{p.iou:.4f}",
            "-" if p.mean_abs_error is None else f"{p.mean_abs_error:.3g}",
        )
    # piped output (CI logs) is not cut at 80 columns: the numbers are the point
    width = out.width
    if not out.is_terminal:
        out.width = max(width, 120)
    try:
        out.print(t)
    finally:
        out.width = width


@handle_errors
def resize_cmd(
    model: opt.ModelArg,
    output: opt.MaybeOutputOpt = None,
    resolution: ResolutionOpt = None,
    scale: ScaleOpt = None,
    input_name: InputOpt = None,
    keep_interface: KeepOpt = False,
    mode: ModeOpt = "linear",
    check: CheckFlag = False,
    sweep: SweepOpt = None,
    data: opt.DataOpt = None,
    min_agreement: MinAgreementOpt = None,
    threads: opt.ThreadsOpt = None,
    input_shape: opt.InputShapeOpt = None,
    metric: opt.MetricOpt = None,
    max_drop: opt.MaxDropOpt = None,
    json_: opt.JsonFlag = False,
    force: opt.ForceFlag = False,
) -> None:
    """Run a model at another input resolution: --check it, rewrite it (-o), or --sweep resolutions.

    Fully convolutional models and models that pool globally before their classifier are accepted;
    anything tied to the feature-map size (Flatten -> Gemm, position embeddings, fixed-size Resize)
    is refused, naming the node. With --keep-interface the model keeps its input and output shapes.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.errors import InputError

    if sum(bool(x) for x in (check, sweep, output)) != 1:
        raise InputError("choose one of --check, --sweep RESOLUTIONS, or -o OUT with --resolution/--scale")
    source = sio.load(model)
    _check_flags(source, input_name, mode, resolution, scale, output)
    if output is not None:  # before the work, not after it
        sio.refuse_overwrite(output, [p for p in (model, data) if p is not None])
    arrays = sio.load_npz(data) if data is not None else None
    if check:
        _check(source, arrays, input_name, json_)
    elif sweep:
        _sweep(model, source, sweep, arrays, data, input_name, mode, threads, json_)
    else:
        assert output is not None
        budget = opt.acceptance(metric, max_drop)
        _, result = _rewrite(
            model, output, resolution, scale, input_name, keep_interface, mode, input_shape, arrays, data,
            budget, min_agreement, force,
        )  # fmt: skip
        report = result.to_dict()
        if report.get("failed"):
            warn(f"{report['failed']}; writing anyway (--force)")
        show(json_, report, lambda: render_report(report))


def _check(source: Any, arrays: Any, input_name: str | None, json_: bool) -> None:
    """``--check``: the analysis's verdict; exit 1 when the model cannot change resolution."""
    from onnxsqueeze import resolution_sweep as sweeps
    from onnxsqueeze.passes import resolution as res

    probe = sweeps.data_size(source, arrays, input_name)  # dynamic H/W: traced at the data's size
    verdict = res.analyze_resolution(source, input_name=input_name, probe=probe)
    show(json_, verdict.to_dict(), lambda: render_verdict(verdict))
    if not verdict.ok:
        raise typer.Exit(1)


def _sweep(
    model: Path,
    source: Any,
    sweep: str,
    arrays: Any,
    data: Path | None,
    input_name: str | None,
    mode: str,
    threads: int | None,
    json_: bool,
) -> None:
    """``--sweep``: MACs, latency and quality at each resolution."""
    from onnxsqueeze import resolution_sweep as sweeps

    sizes = sweeps.parse_sweep(sweep)
    with progress("sweeping resolutions", total=len(sizes) + 1) as update:
        points = sweeps.sweep_resolutions(
            source, sizes, input_name=input_name, data=arrays, mode=mode, threads=threads, on_step=update
        )
    label = str(data) if data is not None else "8 random inputs (agreement only)"
    doc = {"model": str(model), "data": label, "points": [p.to_dict() for p in points]}
    show(json_, doc, lambda: render_sweep(points, label))


def _rewrite(
    model: Path,
    output: Path,
    resolution: str | None,
    scale: float | None,
    input_name: str | None,
    keep_interface: bool,
    mode: str,
    input_shape: list[str] | None,
    arrays: Any,
    data: Path | None,
    acceptance: Any,
    min_agreement: float | None,
    force: bool,
) -> Any:
    """``-o``: the rewrite through the technique layer; a failed check names the flags that decide it."""
    from onnxsqueeze.errors import VerificationError
    from onnxsqueeze.optimize import resize
    from onnxsqueeze.passes import resolution as res
    from onnxsqueeze.shapes import parse_input_shapes

    try:
        return resize(
            model,
            output,
            resolution=res.parse_resolution(resolution) if resolution else None,
            scale=scale,
            input_name=input_name,
            keep_interface=keep_interface,
            mode=mode,
            input_shapes=parse_input_shapes(input_shape),
            data=arrays,
            data_label=str(data) if data is not None else None,
            acceptance=acceptance,
            min_agreement=min_agreement,
            force=force,
            say=info,
        )
    except VerificationError as e:  # the flags that would change the outcome
        flags = [f"--metric {acceptance.metric}"] if acceptance.metric else []
        flags += [f"--max-drop {acceptance.max_drop:g}"] if acceptance.max_drop is not None else []
        flags += [f"--min-agreement {min_agreement:g}"] if min_agreement is not None else []
        raise VerificationError(f"{e} ({' '.join(flags) or 'no budget'}; use --force to write anyway)") from e


def _check_flags(
    source: Any, input_name: str | None, mode: str, resolution: str | None, scale: float | None, output: Any
) -> None:
    """The library's checks, said with this command's flag names."""
    from onnxsqueeze import shapes
    from onnxsqueeze.errors import InputError
    from onnxsqueeze.passes.resolution import MODES

    names = [vi.name for vi in shapes.graph_inputs(source)]
    if input_name is not None and input_name not in names:
        raise InputError(f"--input '{input_name}': the model's inputs are {names}")
    if mode not in MODES:
        raise InputError(f"--mode '{mode}': choose one of {', '.join(MODES)}")
    if output is not None and (resolution is None) == (scale is None):
        raise InputError("give exactly one of --resolution HxW and --scale FACTOR")
    if scale is not None and not (0 < scale <= 16):
        raise InputError(f"--scale {scale}: expected a factor in (0, 16]")


def render_report(r: dict[str, Any]) -> None:
    kind = "keeping the interface" if r["keep_interface"] else "new input size"
    scaled = list(r["new_size"]) == [None, None]
    if scaled:
        stride = r["stride"]
        step = "" if list(stride) == [1, 1] else f", rounded to multiples of {stride[0]}x{stride[1]}"
        new = f"x{r['scale']} of the caller's size{step}"
    else:
        new = _res(tuple(r["new_size"]))
    out.print(f"input '{escape(r['input'])}': {_res(tuple(r['old_size']))} -> {new} ({kind})")
    for line in r["rewrites"]:
        out.print(f"  rewrote {escape(line)}")
    if r["resized_outputs"]:
        out.print(f"  outputs resized back to the original size: {escape(', '.join(r['resized_outputs']))}")
    if r.get("macs"):
        m = r["macs"]
        out.print(f"MACs {human_count(m['original'])} -> {human_count(m['candidate'])} ({m['ratio']:.3f}x)")
    a = r.get("agreement")
    if a:
        parts = []
        if a.get("accuracy") is not None:
            base = a.get("original_accuracy")
            if a.get("iou") is not None:  # a map: its "accuracy" is the IoU against the label masks
                suffix = f" (original {base:.4f})" if base is not None else ""
                parts.append(f"IoU vs labels {a['accuracy']:.4f}{suffix}")
            else:
                suffix = f" (original {base:.2%})" if base is not None else ""
                parts.append(f"accuracy {a['accuracy']:.2%}{suffix}")
        if a.get("top1_agreement") is not None:
            parts.append(f"top-1 agreement {a['top1_agreement']:.2%}")
        if a.get("iou") is not None:
            parts.append(f"IoU vs original {a['iou']:.4f}")
        if a.get("mean_abs_error") is not None:
            parts.append(f"mean abs error {a['mean_abs_error']:.4g}")
        if a.get("cosine") is not None:
            parts.append(f"cosine {a['cosine']:.4f}")
        out.print(f"vs original on {a['samples']} samples ({escape(a['source'])}): " + ", ".join(parts))
    out.print(f"[green]wrote[/] {escape(r['output'])}")


def register(app: typer.Typer) -> None:
    app.command("resize")(resize_cmd)
