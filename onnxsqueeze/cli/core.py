"""``inspect`` and ``verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import escape, handle_errors, human_bytes, human_count, out, show, warn


def _shape(s: list[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in s) + "]"


def render_summary(s: dict[str, Any]) -> None:
    io_table = Table(title=f"{s['path']}", title_justify="left", show_edge=False)
    for col in ("", "name", "dtype", "shape"):
        io_table.add_column(col)
    for kind in ("inputs", "outputs"):
        for e in s[kind]:
            io_table.add_row(kind[:-1], escape(e["name"]), e["dtype"], escape(_shape(e["shape"])))
    out.print(io_table)
    t = Table(show_header=False, show_edge=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("opset / IR", f"{s['opset']} / {s['ir_version']}")
    t.add_row("producer", escape(s["producer"] or "-"))
    t.add_row("nodes", str(s["nodes"]))
    t.add_row("ops", escape(", ".join(f"{k} {v}" for k, v in s["ops"].items())))
    t.add_row("params", human_count(s["params"]))
    t.add_row("weight bytes", ", ".join(f"{k} {human_bytes(v)}" for k, v in s["weight_bytes"].items()) or "-")
    t.add_row("zero weights", f"{s['sparsity']:.1%}")
    if s["macs"] is not None:
        shapes = ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in (s["macs_input_shapes"] or {}).items())
        t.add_row("MACs", f"{human_count(s['macs'])} (FLOPs {human_count(s['flops'])}) at {shapes}")
    else:
        t.add_row("MACs", escape(f"- ({s.get('macs_note', '')})"))
    t.add_row("file", f"{human_bytes(s['file_bytes'])} ({human_bytes(s['compressed_bytes'])} zipped)")
    for k, v in s.get("metadata", {}).items():
        if k == "onnxsqueeze" or k.startswith("onnxsqueeze."):  # the stamp; older files: the record
            t.add_row(escape(k), escape(v if len(v) < 200 else v[:197] + "..."))
    if s.get("manifest"):
        provenance_rows(t, s["manifest"])
    out.print(t)


def provenance_rows(t: Table, m: dict[str, Any]) -> None:
    """The manifest's essentials as rows of the inspect table."""
    src = m.get("source") or {}
    if src:
        t.add_row("source", escape(f"{src.get('path')} (sha256 {str(src.get('sha256'))[:12]})"))
    if m.get("recipe"):
        t.add_row("recipe", escape(" -> ".join(str(step.get("pass", "?")) for step in m["recipe"])))
    v = m.get("verification") or {}
    if v:
        worst = min((o.get("cosine", 1.0) for o in v.get("outputs", [])), default=1.0)
        top1 = [o["top1_agreement"] for o in v.get("outputs", []) if o.get("top1_agreement") is not None]
        extra = f", top-1 {min(top1):.1%}" if top1 else ""
        t.add_row(
            "verified",
            escape(
                f"max abs {v.get('max_abs', 0):.3g}, cosine {worst:.6f}{extra} on {v.get('samples')} "
                f"sample(s), {v.get('source')}"
            ),
        )
    if m.get("benchmark"):
        bench = m["benchmark"]
        shown = ", ".join(f"{k} {v}" for k, v in bench.items() if isinstance(v, (int, float, str)))
        t.add_row("benchmark", escape(shown or "recorded"))
    if m.get("export"):
        t.add_row(
            "export", escape(", ".join(f"{k} {v}" for k, v in m["export"].items() if k != "config_sha256"))
        )
    tool = m.get("tool") or {}
    where = f"{m.get('where')}, onnxsqueeze {tool.get('version')}"
    problems = m.get("problems") or []
    t.add_row(
        "manifest", f"[red]{escape('; '.join(problems))}[/]" if problems else escape(f"{where}, hashes match")
    )


@handle_errors
def inspect_cmd(
    model: opt.ModelArg,
    input_shape: opt.InputShapeOpt = None,
    json_: opt.JsonFlag = False,
) -> None:
    """Show a model's interface, size, parameters, sparsity and MACs."""
    from onnxsqueeze.shapes import parse_input_shapes
    from onnxsqueeze.summary import summarize

    s = summarize(model, parse_input_shapes(input_shape))
    show(json_, s, lambda: render_summary(s))


def render_report(report: Any, tolerance: float | None) -> None:
    t = Table(title=f"verified on {report.samples} sample(s), {escape(report.source)}", title_justify="left")
    for col in ("output", "shape", "max abs", "max rel", "cosine", "top-1 agree"):
        t.add_column(col)
    for o in report.outputs:
        t.add_row(
            escape(o.name),
            "x".join(map(str, o.shape)),
            f"{o.max_abs:.3g}",
            f"{o.max_rel:.3g}",
            f"{o.cosine:.6f}",
            "-" if o.top1_agreement is None else f"{o.top1_agreement:.1%}",
        )
    out.print(t)
    if tolerance is not None:
        out.print(f"[green]within tolerance {tolerance:g}[/]")


def render_verdict(report: Any, verdict: Any, tolerance: float | None) -> None:
    render_report(report, tolerance)
    out.print(
        f"{verdict.metric} of '{escape(verdict.output)}': {verdict.value:.4g} "
        f"(original {verdict.baseline:.4g}; {escape(verdict.budget)})"
    )


@handle_errors
def verify_cmd(
    original: Annotated[Path, typer.Argument(help="The reference model.", show_default=False)],
    candidate: Annotated[Path, typer.Argument(help="The model to check against it.", show_default=False)],
    input_shape: opt.InputShapeOpt = None,
    data: opt.DataOpt = None,
    tolerance: opt.ToleranceOpt = None,
    metric: opt.MetricOpt = None,
    max_drop: opt.MaxDropOpt = None,
    threshold: opt.ThresholdOpt = 0.5,
    class_axis: opt.ClassAxisOpt = None,
    seed: opt.SeedOpt = 0,
    provider: opt.ProviderOpt = "cpu",
    json_: opt.JsonFlag = False,
) -> None:
    """Run two models on the same inputs and compare their outputs.

    Max abs/rel error, cosine and top-1 agreement per output; with --metric, the task metric of
    the candidate against the reference, with a budget (--max-drop) that sets the exit code.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.errors import VerificationError
    from onnxsqueeze.optimize.base import verify_pair
    from onnxsqueeze.shapes import parse_input_shapes

    arrays = sio.load_npz(data) if data is not None else None
    report, verdict = verify_pair(
        original,
        candidate,
        opt.acceptance(metric, max_drop, tolerance=tolerance, threshold=threshold, class_axis=class_axis),
        data=arrays,
        data_label=str(data),
        input_shapes=parse_input_shapes(input_shape),
        seed=seed,
        provider=provider,
    )
    beyond = tolerance is not None and not report.within(tolerance)
    failed = beyond or not verdict.passed
    doc = report.to_dict() | {"tolerance": tolerance, "passed": not failed, "judgement": verdict.to_dict()}
    show(json_, doc, lambda: render_verdict(report, verdict, None if failed else tolerance))
    for w in verdict.warnings:
        warn(w)
    if beyond:
        raise VerificationError(f"max abs error {report.max_abs:.3g} exceeds tolerance {tolerance:g}")
    if failed:
        raise VerificationError(verdict.reason)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
    app.command("verify")(verify_cmd)
