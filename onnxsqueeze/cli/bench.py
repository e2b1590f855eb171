"""``bench``: latency, throughput, memory and cost of one or more models, with PR-ready reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from onnxsqueeze.cli import _options as opt
from onnxsqueeze.cli._output import emit_json, escape, handle_errors, info, out, progress
from onnxsqueeze.errors import GateFailedError, InputError


def _list_instances(value: bool) -> None:
    if not value:
        return
    from onnxsqueeze.bench.cost import INSTANCES, PRICES_TAKEN

    t = Table(
        title=f"Built-in on-demand prices (taken {PRICES_TAKEN}; check before use)", title_justify="left"
    )
    for col in ("instance", "USD / hour", "hardware", "region"):
        t.add_column(col)
    for inst in INSTANCES.values():
        t.add_row(inst.name, f"{inst.price_per_hour:g}", inst.hardware, inst.region)
    out.print(t)
    raise typer.Exit()


def _print_schema(value: bool) -> None:
    if not value:
        return
    from onnxsqueeze.bench.report import JSON_SCHEMA

    emit_json(JSON_SCHEMA)
    raise typer.Exit()


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError as e:
        raise InputError(
            f"--batch '{text}': expected positive integers separated by commas, e.g. 1,8,32"
        ) from e
    if not values or any(v <= 0 for v in values):
        raise InputError(f"--batch '{text}': expected positive integers separated by commas, e.g. 1,8,32")
    return values


def _check_outputs(models: list[Path], outputs: list[Path | None], plot: Path | None) -> None:
    inputs = {m.resolve() for m in models}
    for path in outputs:
        if path is not None and str(path) != "-" and path.resolve() in inputs:
            raise InputError(f"{path}: refusing to overwrite a benchmarked model; choose another output")
    if plot is not None and plot.suffix.lower() != ".png":
        raise InputError(f"--plot {plot}: the plot is a PNG; give a file name ending in .png")


def render_table(doc: dict[str, Any]) -> None:
    from onnxsqueeze.bench.report import fmt_bytes, fmt_ms, fmt_num, fmt_ratio, fmt_usd

    priced = doc.get("cost") is not None
    ratios = {(c["model_index"], c["batch"]): c["ratios"] for c in doc["comparisons"]}
    t = Table(
        show_edge=False,
        box=None,
        header_style="bold",
        caption="latency per batch in ms",
        caption_justify="left",
    )
    cols = ["model", "batch", "p50", "p90", "p99", "items/s"]
    cols += ["$/1M inf."] if priced else []
    cols += ["p50 vs base"] if ratios else ["size"]
    t.add_column(cols[0], no_wrap=True)
    for col in cols[1:]:
        t.add_column(col, justify="right", no_wrap=True)
    for r in doc["results"]:
        m = doc["models"][r["model_index"]]
        lat = r["latency_ms"]
        row = [escape(m["name"]), str(r["batch"]), fmt_ms(lat["p50"]), fmt_ms(lat["p90"]), fmt_ms(lat["p99"])]
        row.append(fmt_num(r["throughput_per_s"]))
        row += [fmt_usd(r["usd_per_million"])] if priced else []
        if ratios:
            rr = ratios.get((r["model_index"], r["batch"]))
            row.append(fmt_ratio(rr["p50"], spread=False) if rr else "baseline")
        else:
            row.append(fmt_bytes(m["file_bytes"]))
        t.add_row(*row)
    out.print(t)


@handle_errors
def bench_cmd(
    models: Annotated[
        list[Path],
        typer.Argument(help="ONNX models; with several, the first is the baseline.", show_default=False),
    ],
    provider: opt.ProviderOpt = "cpu",
    batch: Annotated[
        str, typer.Option("--batch", "-b", help="Batch sizes, comma separated (e.g. 1,8,32).")
    ] = "1",
    threads: opt.ThreadsOpt = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs per model and batch.")] = 10,
    iterations: Annotated[
        int | None,
        typer.Option(
            "--iterations",
            "-n",
            help="Minimum timed runs per model and batch (default 100).",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help="Minimum timed seconds per model and batch (default 1). With --iterations, both are met.",
            show_default=False,
        ),
    ] = None,
    rounds: Annotated[
        int, typer.Option("--rounds", help="Interleaved rounds (A B, B A, ...) to split runs into.")
    ] = 5,
    input_shape: opt.InputShapeOpt = None,
    data: opt.DataOpt = None,
    seed: opt.SeedOpt = 0,
    price_per_hour: opt.PricePerHourOpt = None,
    instance: opt.InstanceOpt = None,
    prices: Annotated[
        Path | None,
        typer.Option(
            "--prices", help="A TOML/JSON price file adding to or replacing the built-in instance prices."
        ),
    ] = None,
    json_: opt.JsonFlag = False,
    json_file: Annotated[
        Path | None,
        typer.Option("--report", help="Write the JSON report to this file.", show_default=False),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option("--markdown", help="Write the markdown report (a PR comment) here ('-': stdout)."),
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot here.")] = None,
    fail_if: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-if",
            help="Exit 1 if this holds for a candidate, e.g. 'p90>1.05x', 'throughput<0.95x', 'p99>25ms', "
            "'size>40MB', 'cost>1x' (repeatable).",
        ),
    ] = None,
    io_binding: Annotated[
        bool | None,
        typer.Option(
            "--io-binding/--no-io-binding",
            help="Bind inputs/outputs on the GPU (default: on for cuda/tensorrt).",
            show_default=False,
        ),
    ] = None,
    trt_fp16: Annotated[bool, typer.Option("--trt-fp16", help="Let TensorRT build fp16 engines.")] = False,
    trt_cache: Annotated[
        Path | None,
        typer.Option(
            "--trt-cache", help="Folder to keep TensorRT engines and timing caches in between runs."
        ),
    ] = None,
    optimize: Annotated[
        bool, typer.Option("--optimize/--no-optimize", help="onnxruntime graph optimizations, as deployed.")
    ] = True,
    schema: Annotated[
        bool,
        typer.Option(
            "--schema",
            callback=_print_schema,
            is_eager=True,
            help="Print the JSON report's JSON Schema and exit.",
        ),
    ] = False,
    list_instances: Annotated[
        bool,
        typer.Option(
            "--list-instances", callback=_list_instances, is_eager=True, help="Show the price table and exit."
        ),
    ] = False,
) -> None:
    """Benchmark models: latency percentiles, throughput, memory and cost per inference.

    Several models run interleaved, reported as ratios to the first (the baseline).

    --fail-if gates a CI job on those ratios (exit 1 when a gate fails).
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.bench import benchmark
    from onnxsqueeze.bench.cost import resolve_price
    from onnxsqueeze.bench.gates import parse_gates
    from onnxsqueeze.shapes import parse_input_shapes

    batches = parse_batches(batch)
    if iterations is None and duration is None:
        iterations, duration = 100, 1.0
    gates = list(fail_if or [])
    parse_gates(gates)  # bad syntax fails before any model is loaded
    price = resolve_price(price_per_hour=price_per_hour, instance=instance, prices_file=prices)
    _check_outputs(models, [json_file, markdown, plot], plot)
    arrays = sio.load_npz(data) if data is not None else None

    with progress("benchmarking", total=None) as update:

        def on_progress(model: str, b: int, done: int, total: int) -> None:
            update(done, total, f"{model} · batch {b}")

        result = benchmark(
            models,
            provider=provider,
            batches=batches,
            threads=threads,
            warmup=warmup,
            iterations=iterations or 0,
            duration=duration or 0.0,
            rounds=rounds,
            input_shapes=parse_input_shapes(input_shape),
            data=arrays,
            data_label=str(data) if data is not None else None,
            seed=seed,
            price=price,
            gates=gates,
            io_binding=io_binding,
            trt_fp16=trt_fp16,
            trt_cache=trt_cache,
            optimize=optimize,
            on_progress=on_progress,
        )
    doc = result.to_dict()
    _write_reports(doc, json_, json_file, markdown, plot)
    _gate(result.failed_gates, doc)


def _write_reports(
    doc: dict[str, Any], json_: bool, json_file: Path | None, markdown: Path | None, plot: Path | None
) -> None:
    """The report: JSON on stdout (--json), files (--report, --markdown, --plot), else the table."""
    from onnxsqueeze.bench import report

    to_stdout = False
    if json_:
        emit_json(doc)
        to_stdout = True
    if json_file is not None:
        info(f"wrote {report.save_json(doc, json_file)}")
    if markdown is not None:
        if str(markdown) == "-":
            typer.echo(report.render_markdown(doc))
            to_stdout = True
        else:
            info(f"wrote {report.save_markdown(doc, markdown)}")
    if plot is not None:
        info(f"wrote {report.save_plot(doc, plot)}")
    if not to_stdout:
        render_table(doc)


def _gate(failed: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    """Exit 1 naming the first failed --fail-if gate."""
    from onnxsqueeze.bench import report

    if failed:
        first = failed[0]
        worst = report.fmt_gate_value(first)
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise GateFailedError(
            f"gate '{first['expr']}' failed: {first['model']} at batch {first['batch']}: {worst}{more}"
        )
    if doc["gates"]:
        info(f"all {len({g['expr'] for g in doc['gates']})} gate(s) passed")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
