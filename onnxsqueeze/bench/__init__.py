"""Benchmarks: latency percentiles, throughput, memory and cost per inference, with reports.

``benchmark(models, ...)`` times one or more ONNX models in onnxruntime (interleaved, the first
model the baseline), ``report`` renders the result as markdown, JSON and a PNG plot, ``gates``
turns ``--fail-if`` expressions into pass/fail, ``cost`` prices an inference.

# NOTE: nothing here imports typer or rich; matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

from onnxsqueeze.bench.cost import INSTANCES, PRICES_TAKEN, Instance, Price, resolve_price, usd_per_million
from onnxsqueeze.bench.gates import Gate, parse_gate, parse_gates
from onnxsqueeze.bench.harness import SCHEMA, BenchResult, benchmark, latency_stats
from onnxsqueeze.bench.report import JSON_SCHEMA, render_markdown, save_json, save_markdown, save_plot

__all__ = [
    "INSTANCES",
    "JSON_SCHEMA",
    "PRICES_TAKEN",
    "SCHEMA",
    "BenchResult",
    "Gate",
    "Instance",
    "Price",
    "benchmark",
    "latency_stats",
    "parse_gate",
    "parse_gates",
    "render_markdown",
    "resolve_price",
    "save_json",
    "save_markdown",
    "save_plot",
    "usd_per_million",
]
