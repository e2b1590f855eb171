"""``--fail-if`` gates: conditions on a benchmark that fail a CI job.

A gate is ``METRIC OP VALUE[UNIT]``, written as the failure condition::

    p90>1.05x          p90 latency more than 5% above the baseline's
    p50>+3%            the same as p50>1.03x
    throughput<0.95x   throughput more than 5% below the baseline's
    size>0.5x          file size above half the baseline's
    cost>1x            dearer per inference than the baseline
    p99>25ms           absolute: p99 latency above 25 ms
    size>40MB          absolute: file above 40 MB (MB = 10^6 bytes, MiB = 2^20)
    cost>$0.50         absolute: more than 0.50 USD per million inferences (needs a price)

Metrics: p50 p90 p95 p99 mean min max (latency per batch), throughput (items/s), size (file
bytes), cost (USD per million inferences). Ratio gates (``x`` or ``%``) compare each candidate
(every model after the first) with the baseline (the first) at the same batch size, using the
ratio of the pooled samples. Absolute gates apply to the candidates, or to the only model when
there is one. A gate fails when its condition holds for any candidate at any batch size.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from onnxsqueeze.errors import InputError

LATENCY = ("p50", "p90", "p95", "p99", "mean", "min", "max")
METRICS = (*LATENCY, "throughput", "size", "cost")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_UNITS: dict[str, tuple[str, float]] = {
    # unit -> (kind, factor to the report's unit: ms, bytes, items/s, USD per million)
    "us": ("latency", 1e-3),
    "ms": ("latency", 1.0),
    "s": ("latency", 1e3),
    "b": ("size", 1.0),
    "kb": ("size", 1e3),
    "mb": ("size", 1e6),
    "gb": ("size", 1e9),
    "kib": ("size", 2.0**10),
    "mib": ("size", 2.0**20),
    "gib": ("size", 2.0**30),
    "/s": ("throughput", 1.0),
}
_GATE = re.compile(
    r"^\s*(?P<metric>[a-z0-9]+)\s*(?P<op>>=|<=|>|<)\s*(?P<dollar>\$)?\s*"
    r"(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))\s*(?P<unit>x|%|us|ms|s|b|kb|mb|gb|kib|mib|gib|/s)?\s*$",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class Gate:
    """A parsed gate. ``relative``: ``threshold`` is a ratio to the baseline."""

    expr: str
    metric: str
    op: str
    threshold: float
    relative: bool

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)


def parse_gate(expr: str) -> Gate:
    """Parse one gate expression.

    Raises:
        InputError: the expression is malformed, names an unknown metric or a unit that does not
            fit the metric.
    """
    m = _GATE.match(expr)
    if not m:
        raise InputError(
            f"--fail-if '{expr}': expected METRIC OP VALUE, e.g. 'p90>1.05x', 'throughput<0.95x', "
            "'p99>25ms', 'size>40MB'"
        )
    metric, op, unit = m["metric"].lower(), m["op"], (m["unit"] or "").lower()
    if metric not in METRICS:
        raise InputError(f"--fail-if '{expr}': unknown metric '{metric}'; choose from {', '.join(METRICS)}")
    num = float(m["num"])
    if m["dollar"] and (metric != "cost" or unit):
        raise InputError(
            f"--fail-if '{expr}': '$' goes with cost in USD per million inferences, e.g. cost>$0.5"
        )
    if unit == "x":
        if num <= 0:
            raise InputError(f"--fail-if '{expr}': a ratio must be positive")
        return Gate(expr.strip(), metric, op, num, True)
    if unit == "%":
        return Gate(expr.strip(), metric, op, 1.0 + num / 100.0, True)
    kind = "latency" if metric in LATENCY else metric
    if unit:
        unit_kind, factor = _UNITS[unit]
        if unit_kind != kind:
            raise InputError(f"--fail-if '{expr}': unit '{unit}' does not fit metric '{metric}'")
    elif kind in ("latency", "size"):
        raise InputError(
            f"--fail-if '{expr}': give a unit ({'ms' if kind == 'latency' else 'MB'}) "
            "or a ratio to the baseline ('x' or '%')"
        )
    else:
        factor = 1.0
    return Gate(expr.strip(), metric, op, num * factor, False)


def parse_gates(exprs: Iterable[str]) -> list[Gate]:
    """Parse gates; each string may hold several, separated by commas or semicolons."""
    return [parse_gate(part) for expr in exprs for part in re.split(r"[;,]", expr) if part.strip()]


def check_applicable(gates: Sequence[Gate], *, n_models: int, priced: bool) -> None:
    """Refuse, before any run, gates the benchmark cannot evaluate.

    Raises:
        InputError: a ratio gate with a single model, or a cost gate without a price.
    """
    for gate in gates:
        if gate.relative and n_models < 2:
            raise InputError(
                f"--fail-if '{gate.expr}': a ratio gate needs a baseline; give two or more models"
            )
        if gate.metric == "cost" and not priced:
            raise InputError(f"--fail-if '{gate.expr}': cost gates need --price-per-hour or --instance")


def metric_value(run: Mapping[str, Any], model: Mapping[str, Any], metric: str) -> float | None:
    """A metric of one result row of the JSON report (``results[i]`` and its ``models[j]``)."""
    if metric in LATENCY:
        return float(run["latency_ms"][metric])
    if metric == "throughput":
        return float(run["throughput_per_s"])
    if metric == "size":
        return float(model["file_bytes"])
    value = run.get("usd_per_million")
    return None if value is None else float(value)


def evaluate(gates: Sequence[Gate], report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Evaluate gates on a report dict (the JSON schema); one entry per gate, model and batch.

    Raises:
        InputError: a ratio gate with a single model, or a cost gate without a price.
    """
    models = report["models"]
    results = report["results"]
    check_applicable(gates, n_models=len(models), priced=report.get("cost") is not None)
    ratios = {(c["model_index"], c["batch"]): c["ratios"] for c in report.get("comparisons", [])}
    out: list[dict[str, Any]] = []
    for gate in gates:
        for run in results:
            index = run["model_index"]
            if len(models) > 1 and index == 0:
                continue
            if gate.relative:
                value = ratios[(index, run["batch"])][gate.metric]["ratio"]
            else:
                value = metric_value(run, models[index], gate.metric)
            out.append(
                {
                    "expr": gate.expr,
                    "metric": gate.metric,
                    "model": models[index]["name"],
                    "batch": run["batch"],
                    "value": value,
                    "threshold": gate.threshold,
                    "relative": gate.relative,
                    "failed": value is not None and gate.holds(value),
                }
            )
    return out
