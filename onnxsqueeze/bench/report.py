"""Benchmark reports: a pull-request-ready markdown table, versioned JSON, and a PNG plot.

All three are rendered from the JSON document (``BenchResult.to_dict()``), so a saved JSON file
can be re-rendered later. matplotlib is imported only to draw, with its Agg canvas directly (no
pyplot state, no display needed).

JSON schema ``onnxsqueeze.bench/1`` (``JSON_SCHEMA`` below is its JSON Schema; fields are only
added within a major version, a removal or change of meaning bumps it):

- ``schema``: ``"onnxsqueeze.bench/1"``; ``created``: UTC time, ISO 8601.
- ``environment``: cpu, cores (physical, logical, usable), memory, load average at start, os,
  python, numpy and onnxruntime versions, gpu (name, driver, memory) or null, how peak RSS was read.
- ``settings``: provider and the onnxruntime provider chain, threads (null: onnxruntime's
  default), warm-up runs, minimum iterations and seconds per model and batch, interleaved rounds,
  batch sizes, io_binding, trt_fp16, graph optimization level, seed, data source.
- ``cost``: ``{usd_per_hour, label, source}`` or null.
- ``models[]``: name, path, sha256, file_bytes (with external data), declared inputs,
  session_create_s, session_rss_bytes, providers, intra_op_threads (0: default).
- ``results[]`` (one per model and batch): model, model_index, batch, input_shapes,
  first_run_ms, rss_growth_bytes, peak_rss_bytes, device_memory_bytes and its scope, iterations,
  duration_s, latency_ms {count, mean, std, min, p50, p90, p95, p99, max}, round_p50_ms[],
  throughput_per_s (items/s), usd_per_million (null without a price), device_ms (null, or
  h2d / compute / d2h statistics with IO binding).
- ``comparisons[]`` (one per candidate and batch): model, model_index, baseline, batch, ratios
  {mean, min, p50, p90, p95, p99, max, throughput, cost, size: {ratio, low, high}}: candidate over
  baseline from the pooled samples, low/high the range of the per-round ratios (null for a tail
  percentile when a round has too few samples for it: p90 < 10, p95 < 20, p99 < 100).
- ``gates[]``: expr, metric, model, batch, value, threshold, relative, failed.
"""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from onnxsqueeze import io as sio
from onnxsqueeze.units import human_bytes as fmt_bytes

_STATS = {
    "type": "object",
    "required": ["count", "mean", "std", "min", "p50", "p90", "p95", "p99", "max"],
    "properties": {
        "count": {"type": "integer", "minimum": 1},
        **{
            k: {"type": "number", "minimum": 0}
            for k in ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")
        },
    },
}
_RATIO = {
    "type": "object",
    "required": ["ratio", "low", "high"],
    "properties": {
        "ratio": {"type": "number", "exclusiveMinimum": 0},
        "low": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "high": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}

JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://onnxsqueeze.dev/schemas/bench-1.json",
    "title": "onnxsqueeze benchmark report",
    "type": "object",
    "required": [
        "schema",
        "created",
        "environment",
        "settings",
        "cost",
        "models",
        "results",
        "comparisons",
        "gates",
    ],
    "properties": {
        "schema": {"const": "onnxsqueeze.bench/1"},
        "created": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
        "environment": {
            "type": "object",
            "required": ["cpu", "physical_cores", "logical_cores", "os", "python", "onnxruntime", "gpu"],
            "properties": {
                "cpu": {"type": "string"},
                "physical_cores": _INT_OR_NULL,
                "logical_cores": _INT_OR_NULL,
                "usable_cores": _INT_OR_NULL,
                "onnxruntime": {"type": "string"},
                "gpu": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["name", "driver"],
                            "properties": {"name": {"type": "string"}, "driver": {"type": "string"}},
                        },
                    ]
                },
            },
        },
        "settings": {
            "type": "object",
            "required": [
                "provider",
                "providers",
                "threads",
                "warmup",
                "min_iterations",
                "min_duration_s",
                "rounds",
                "batches",
                "io_binding",
                "trt_fp16",
                "graph_optimization",
                "seed",
            ],
            "properties": {
                "provider": {"enum": ["cpu", "cuda", "tensorrt"]},
                "providers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "threads": _INT_OR_NULL,
                "warmup": {"type": "integer", "minimum": 1},
                "min_iterations": {"type": "integer", "minimum": 0},
                "min_duration_s": {"type": "number", "minimum": 0},
                "rounds": {"type": "integer", "minimum": 1},
                "batches": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
                "io_binding": {"type": "boolean"},
                "trt_fp16": {"type": "boolean"},
                "graph_optimization": {"enum": ["all", "disabled"]},
            },
        },
        "cost": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["usd_per_hour", "label", "source"],
                    "properties": {
                        "usd_per_hour": {"type": "number", "exclusiveMinimum": 0},
                        "label": {"type": "string"},
                        "source": {"type": "string"},
                    },
                },
            ]
        },
        "models": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [
                    "name",
                    "path",
                    "sha256",
                    "file_bytes",
                    "session_create_s",
                    "session_rss_bytes",
                    "providers",
                    "intra_op_threads",
                ],
                "properties": {
                    "name": {"type": "string"},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "file_bytes": {"type": "integer", "minimum": 1},
                    "session_create_s": {"type": "number", "minimum": 0},
                    "session_rss_bytes": {"type": "integer", "minimum": 0},
                    "providers": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "results": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [
                    "model",
                    "model_index",
                    "batch",
                    "input_shapes",
                    "first_run_ms",
                    "iterations",
                    "duration_s",
                    "latency_ms",
                    "round_p50_ms",
                    "throughput_per_s",
                    "usd_per_million",
                    "rss_growth_bytes",
                    "peak_rss_bytes",
                    "device_memory_bytes",
                    "device_ms",
                ],
                "properties": {
                    "model_index": {"type": "integer", "minimum": 0},
                    "batch": {"type": "integer", "minimum": 1},
                    "input_shapes": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    },
                    "iterations": {"type": "integer", "minimum": 1},
                    "latency_ms": _STATS,
                    "round_p50_ms": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                    "throughput_per_s": {"type": "number", "exclusiveMinimum": 0},
                    "usd_per_million": _NUM_OR_NULL,
                    "peak_rss_bytes": {"type": "integer", "minimum": 0},
                    "device_memory_bytes": _INT_OR_NULL,
                    "device_ms": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": ["h2d", "compute", "d2h"],
                                "properties": {"h2d": _STATS, "compute": _STATS, "d2h": _STATS},
                            },
                        ]
                    },
                },
            },
        },
        "comparisons": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["model", "model_index", "baseline", "batch", "ratios"],
                "properties": {
                    "ratios": {
                        "type": "object",
                        "required": ["p50", "p90", "p95", "p99", "mean", "throughput", "cost", "size"],
                        "additionalProperties": _RATIO,
                    }
                },
            },
        },
        "gates": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["expr", "metric", "model", "batch", "value", "threshold", "relative", "failed"],
                "properties": {
                    "metric": {
                        "enum": [
                            "p50",
                            "p90",
                            "p95",
                            "p99",
                            "mean",
                            "min",
                            "max",
                            "throughput",
                            "size",
                            "cost",
                        ]
                    },
                    "value": _NUM_OR_NULL,
                    "failed": {"type": "boolean"},
                    "relative": {"type": "boolean"},
                },
            },
        },
    },
}


def _doc(result: Any) -> dict[str, Any]:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


# --------------------------------------------------------------------------------------------
# formatting


def fmt_ms(v: float | None) -> str:
    """Milliseconds with 3 significant figures (0.102, 5.91, 59.1, 591)."""
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt_usd(v: float | None) -> str:
    if v is None:
        return "-"
    return f"${v:,.2f}" if v >= 1 else f"${v:.3g}"


MARK_MIN_CHANGE = 0.02
"""A ratio is marked better/worse only when it moved at least this much (and in every round)."""


def fmt_ratio(r: Mapping[str, float | None], *, lower_is_better: bool = True, spread: bool = True) -> str:
    """``0.53× (0.51–0.55) 🟢``: the pooled ratio, its per-round range, and a mark.

    🟢 / 🔴: better / worse by at least 2% pooled and in every round; no mark: within the noise,
    or no per-round range (too few samples per round for a tail percentile).
    """
    ratio, low, high = r["ratio"], r.get("low"), r.get("high")
    assert ratio is not None
    text = f"{ratio:.2f}×"
    if low is None or high is None:
        return text
    if spread and (low != ratio or high != ratio):
        text += f" ({low:.2f}–{high:.2f})"
    lower = high < 1 and ratio <= 1 - MARK_MIN_CHANGE
    higher = low > 1 and ratio >= 1 + MARK_MIN_CHANGE
    better, worse = (lower, higher) if lower_is_better else (higher, lower)
    return text + (" 🟢" if better else " 🔴" if worse else "")


def fmt_gate_value(g: Mapping[str, Any]) -> str:
    """A gate's measured value in its metric's unit."""
    value = g["value"]
    if value is None:
        return "n/a"
    if g["relative"]:
        return f"{value:.3f}×"
    metric = g.get("metric", "")
    if metric == "size":
        return fmt_bytes(value)
    if metric == "throughput":
        return f"{fmt_num(value)} items/s"
    if metric == "cost":
        return f"{fmt_usd(value)} / 1M"
    return f"{fmt_ms(value)} ms"


def _code(text: str) -> str:
    """A name as inline code in a table cell (backslash-escaping is literal inside code spans)."""
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def environment_line(doc: Mapping[str, Any]) -> str:
    """One sentence: where and how the figures were measured, and how to read them."""
    env, s = doc["environment"], doc["settings"]
    where = f"{env['cpu']} ({env.get('usable_cores') or env['logical_cores']} cores usable"
    where += f", {env['physical_cores']} physical)" if env.get("physical_cores") else ")"
    if env.get("gpu"):
        gpu = env["gpu"]
        where = f"{gpu['name']} (driver {gpu['driver']}) with {where}"
    threads = f"{s['threads']} intra-op threads" if s["threads"] else "default intra-op threads"
    iters = f"≥{s['min_iterations']} runs" + (
        f" and ≥{s['min_duration_s']:g} s" if s["min_duration_s"] else ""
    )
    parts = [
        f"{' → '.join(s['providers'])} on {where}, onnxruntime {env['onnxruntime']}, {threads}, "
        f"graph optimizations {s['graph_optimization']}, {env['os']}, Python {env['python']}.",
        f"{iters} per model and batch after {s['warmup']} warm-up runs, interleaved in {s['rounds']} rounds "
        "(order reversed each round); one request in flight (single stream).",
    ]
    if any(r.get("device_memory_scope") == "device" for r in doc["results"]):
        parts.append(
            "GPU memory marked (device) is the whole GPU's use: this process's could not be isolated."
        )
    if s.get("io_binding"):
        parts.append(
            "IO binding: inputs copied to the device and outputs back on every call, included in latency."
        )
    if len(doc["models"]) > 1:
        parts.append(
            "Ratios are candidate / baseline from the pooled samples, (low–high) the range over rounds "
            "(shown for a tail percentile only with enough samples per round); "
            "🟢/🔴: at least 2% better/worse, pooled and in every round."
        )
    if doc.get("cost"):
        parts.append(f"Cost = price per hour / (throughput × 3600) × 10⁶, at {doc['cost']['source']}.")
    load = env.get("load_average")
    if load:
        parts.append(
            f"Load average at start {load[0]:g} on {env.get('usable_cores') or env['logical_cores']} cores."
        )
    return " ".join(parts)


def render_markdown(result: Any, *, title: str = "onnxsqueeze bench") -> str:
    """A markdown report that reads well as a pull-request comment."""
    doc = _doc(result)
    models = doc["models"]
    priced = doc.get("cost") is not None
    s = doc["settings"]
    # The marker lets a CI job find and update its previous comment instead of adding another.
    lines = ["<!-- onnxsqueeze-bench -->", f"### {title}", ""]
    names = [_code(m["name"]) for m in models]
    head = f"{names[0]} (baseline) vs {', '.join(names[1:])}" if len(models) > 1 else names[0]
    batches = ", ".join(str(b) for b in s["batches"])
    lines += [f"{head} · {s['provider']} · batch {batches}", ""]

    if doc.get("comparisons"):
        cols = ["Candidate vs baseline", "Batch", "p50", "p90", "p99", "Throughput"]
        cols += ["Cost / inference"] if priced else []
        cols += ["Size"]
        lines += ["| " + " | ".join(cols) + " |", "|:--|--:|" + "--:|" * (len(cols) - 2)]
        for c in doc["comparisons"]:
            r = c["ratios"]
            cells = [
                _code(c["model"]),
                str(c["batch"]),
                fmt_ratio(r["p50"]),
                fmt_ratio(r["p90"]),
                fmt_ratio(r["p99"]),
                fmt_ratio(r["throughput"], lower_is_better=False),
            ]
            cells += [fmt_ratio(r["cost"])] if priced else []
            cells += [fmt_ratio(r["size"], spread=False)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    cols = ["Model", "Batch", "p50 ms", "p90 ms", "p99 ms", "Items/s"]
    cols += ["$ / 1M inferences"] if priced else []
    cols += ["Size", "Peak RSS"]
    if any(r.get("device_memory_bytes") for r in doc["results"]):
        cols.append("GPU memory")
    lines += ["| " + " | ".join(cols) + " |", "|:--|--:|" + "--:|" * (len(cols) - 2)]
    for r in doc["results"]:
        m = models[r["model_index"]]
        lat = r["latency_ms"]
        name = _code(m["name"]) + (" *(baseline)*" if r["model_index"] == 0 and len(models) > 1 else "")
        cells = [name, str(r["batch"]), fmt_ms(lat["p50"]), fmt_ms(lat["p90"]), fmt_ms(lat["p99"])]
        cells.append(fmt_num(r["throughput_per_s"]))
        if priced:
            cells.append(fmt_usd(r["usd_per_million"]))
        cells += [fmt_bytes(m["file_bytes"]), fmt_bytes(r["peak_rss_bytes"])]
        if "GPU memory" in cols:
            scope = " (device)" if r.get("device_memory_scope") == "device" else ""
            cells.append(fmt_bytes(r.get("device_memory_bytes")) + scope)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    noisy = noise_note(doc)
    if noisy:
        lines += [noisy, ""]

    if doc.get("gates"):
        lines += [*_gates_md(doc["gates"]), ""]

    lines += ["<details><summary>Full statistics</summary>", ""]
    cols = [
        "Model",
        "Batch",
        "n",
        "mean ± std ms",
        "min",
        "p95",
        "max",
        "first run ms",
        "session s",
        "session RSS",
    ]
    lines += ["| " + " | ".join(cols) + " |", "|:--|" + "--:|" * (len(cols) - 1)]
    for r in doc["results"]:
        m = models[r["model_index"]]
        lat = r["latency_ms"]
        cells = [
            _code(m["name"]),
            str(r["batch"]),
            str(lat["count"]),
            f"{fmt_ms(lat['mean'])} ± {fmt_ms(lat['std'])}",
            fmt_ms(lat["min"]),
            fmt_ms(lat["p95"]),
            fmt_ms(lat["max"]),
            fmt_ms(r["first_run_ms"]),
            f"{m['session_create_s']:.3f}",
            fmt_bytes(m["session_rss_bytes"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.get("device_ms") for r in doc["results"]):
        lines += [
            "",
            "| Model | Batch | H2D p50 ms | compute p50 ms | compute p90 ms | D2H p50 ms |",
            "|:--|--:|--:|--:|--:|--:|",
        ]
        for r in doc["results"]:
            d = r.get("device_ms")
            if d:
                cells = [_code(r["model"]), str(r["batch"]), fmt_ms(d["h2d"]["p50"])]
                cells += [fmt_ms(d["compute"]["p50"]), fmt_ms(d["compute"]["p90"]), fmt_ms(d["d2h"]["p50"])]
                lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Models: " + "; ".join(f"{_code(m['name'])} sha256 {m['sha256'][:12]}" for m in models)]
    lines += ["", "</details>", "", f"<sub>{environment_line(doc)}</sub>", ""]
    return "\n".join(lines)


NOISE_WARN = 0.10
"""Warn when a model's p50 moved more than this between rounds (max - min over the median)."""


def round_spread(row: Mapping[str, Any]) -> float:
    """How much a result's p50 moved between rounds: (max - min) / median of the round p50s."""
    values = list(row.get("round_p50_ms") or [])
    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else 0.0


def noise_note(doc: Mapping[str, Any]) -> str | None:
    """A warning line when the machine was noisy enough to blur small ratios, else None."""
    worst = max(doc["results"], key=round_spread, default=None)
    if worst is None or round_spread(worst) <= NOISE_WARN:
        return None
    return (
        f"⚠️ Noisy machine: p50 moved by up to {round_spread(worst):.0%} between rounds "
        f"({_code(worst['model'])} at batch {worst['batch']}). Interleaving spreads drift over every model, "
        "but read the per-round ranges before trusting a small ratio."
    )


def _gates_md(gates: Iterable[Mapping[str, Any]]) -> list[str]:
    by_expr: dict[str, list[Mapping[str, Any]]] = {}
    for g in gates:
        by_expr.setdefault(g["expr"], []).append(g)
    lines = []
    for expr, rows in by_expr.items():
        failed = [g for g in rows if g["failed"]]

        def show(g: Mapping[str, Any]) -> str:
            value = fmt_gate_value(g)
            return f"{_code(g['model'])} at batch {g['batch']}: {value}"

        if failed:
            lines.append(f"- ❌ **failed** `{expr}`: " + "; ".join(show(g) for g in failed))
        else:
            lines.append(f"- ✅ passed `{expr}`" + (f" ({'; '.join(show(g) for g in rows)})" if rows else ""))
    n_failed = sum(1 for ln in lines if ln.startswith("- ❌"))
    head = (
        f"**Gates: {n_failed} of {len(lines)} failed**" if n_failed else f"**Gates: all {len(lines)} passed**"
    )
    return [head, "", *lines]


# --------------------------------------------------------------------------------------------
# files


def to_json(result: Any) -> str:
    return json.dumps(_doc(result), indent=2, allow_nan=False) + "\n"


def save_json(result: Any, path: str | Path) -> Path:
    """Write the JSON report atomically; refuses to overwrite a benchmarked model."""
    doc = _doc(result)
    return sio.write_bytes_atomic(path, to_json(doc).encode(), protect=[m["path"] for m in doc["models"]])


def save_markdown(result: Any, path: str | Path, **kwargs: Any) -> Path:
    doc = _doc(result)
    text = render_markdown(doc, **kwargs)
    return sio.write_bytes_atomic(path, text.encode(), protect=[m["path"] for m in doc["models"]])


def plot_png(result: Any) -> bytes:
    """A PNG: latency vs batch size per model (left); latency vs cost, or throughput (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    doc = _doc(result)
    priced = doc.get("cost") is not None
    fig = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    batches = doc["settings"]["batches"]
    for i, m in enumerate(doc["models"]):
        rows = sorted((r for r in doc["results"] if r["model_index"] == i), key=lambda r: r["batch"])
        x = [r["batch"] for r in rows]
        p50 = [r["latency_ms"]["p50"] for r in rows]
        p90 = [r["latency_ms"]["p90"] for r in rows]
        label = m["name"] + (" (baseline)" if i == 0 and len(doc["models"]) > 1 else "")
        (line,) = left.plot(x, p50, marker="o", label=label)
        left.fill_between(x, p50, p90, color=line.get_color(), alpha=0.2, linewidth=0)
        y = [r["usd_per_million"] for r in rows] if priced else [r["throughput_per_s"] for r in rows]
        right.plot(p50, y, marker="o", color=line.get_color(), label=label)
        for r, xx, yy in zip(rows, p50, y, strict=True):
            right.annotate(f"b{r['batch']}", (xx, yy), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if len(batches) > 1:  # latency grows about linearly with the batch: log-log shows it best
        from matplotlib.ticker import FuncFormatter

        left.set_xscale("log", base=2)
        left.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        left.yaxis.set_major_formatter(plain)
        left.yaxis.set_minor_formatter(plain)
    left.set_xticks(batches, [str(b) for b in batches])
    left.set_xlabel("batch size")
    left.set_ylabel("latency per batch, ms (line p50, band to p90)")
    left.set_title("Latency vs batch size")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    right.set_xlabel("p50 latency per batch, ms")
    if priced:
        right.set_ylabel("USD per million inferences")
        right.set_title(f"Latency vs cost ({doc['cost']['label']})")
    else:
        right.set_ylabel("throughput, items/s")
        right.set_title("Latency vs throughput (no price given)")
    right.grid(True, alpha=0.3)
    env = doc["environment"]
    device = env["gpu"]["name"] if env.get("gpu") else env["cpu"]
    fig.suptitle(f"onnxsqueeze bench · {doc['settings']['provider']} · {device}", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_plot(result: Any, path: str | Path) -> Path:
    doc = _doc(result)
    return sio.write_bytes_atomic(path, plot_png(doc), protect=[m["path"] for m in doc["models"]])
