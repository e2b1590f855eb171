"""``--fail-if`` gates: the parser and their evaluation on a report."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from onnxsqueeze.bench.gates import Gate, evaluate, parse_gate, parse_gates
from onnxsqueeze.errors import InputError


@pytest.mark.parametrize(
    ("expr", "metric", "op", "threshold", "relative"),
    [
        ("p90>1.05x", "p90", ">", 1.05, True),
        (" P99 >= 1.2X ", "p99", ">=", 1.2, True),
        ("p50>+3%", "p50", ">", 1.03, True),
        ("throughput<-5%", "throughput", "<", 0.95, True),
        ("throughput<0.95x", "throughput", "<", 0.95, True),
        ("p99>25ms", "p99", ">", 25.0, False),
        ("mean>1.5s", "mean", ">", 1500.0, False),
        ("p50>800us", "p50", ">", 0.8, False),
        ("size>40MB", "size", ">", 40e6, False),
        ("size>=1.5MiB", "size", ">=", 1.5 * 2**20, False),
        ("throughput<100/s", "throughput", "<", 100.0, False),
        ("throughput<100", "throughput", "<", 100.0, False),
        ("cost>$0.50", "cost", ">", 0.5, False),
        ("cost>1x", "cost", ">", 1.0, True),
    ],
)
def test_parse(expr: str, metric: str, op: str, threshold: float, relative: bool) -> None:
    g = parse_gate(expr)
    assert (g.metric, g.op, g.relative) == (metric, op, relative)
    assert g.threshold == pytest.approx(threshold)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("p90 1.05x", "expected METRIC OP VALUE"),
        ("p90>>1.05x", "expected METRIC OP VALUE"),
        ("latency>1.05x", "unknown metric 'latency'"),
        ("p90>25", "give a unit"),
        ("size>40", "give a unit"),
        ("p90>40MB", "unit 'mb' does not fit metric 'p90'"),
        ("size>3ms", "unit 'ms' does not fit"),
        ("p90>$3", "'\\$' goes with cost"),
        ("p90>0x", "a ratio must be positive"),
    ],
)
def test_parse_errors(expr: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_gate(expr)


def test_parse_several() -> None:
    gates = parse_gates(["p90>1.05x, size>0.5x", "cost>1x;"])
    assert [g.metric for g in gates] == ["p90", "size", "cost"]


def test_holds() -> None:
    g = Gate("p90>1.05x", "p90", ">", 1.05, True)
    assert g.holds(1.06) and not g.holds(1.05) and not g.holds(0.9)
    assert Gate("t", "throughput", "<=", 0.95, True).holds(0.95)


def _doc(p90_ratio: float, priced: bool = True) -> dict[str, Any]:
    stats = {
        "count": 10,
        "mean": 10.0,
        "std": 1.0,
        "min": 8.0,
        "p50": 10.0,
        "p90": 12.0,
        "p95": 13.0,
        "p99": 14.0,
        "max": 15.0,
    }
    row = {"latency_ms": stats, "throughput_per_s": 100.0, "usd_per_million": 0.5 if priced else None}
    ratio = {"ratio": 1.0, "low": 0.9, "high": 1.1}
    ratios = {
        k: dict(ratio)
        for k in ("mean", "min", "p50", "p90", "p95", "p99", "max", "throughput", "cost", "size")
    }
    ratios["p90"] = {"ratio": p90_ratio, "low": p90_ratio, "high": p90_ratio}
    return {
        "cost": {"usd_per_hour": 1.0} if priced else None,
        "models": [{"name": "base", "file_bytes": 1000}, {"name": "cand", "file_bytes": 400}],
        "results": [
            {"model_index": 0, "batch": 1, **copy.deepcopy(row)},
            {"model_index": 1, "batch": 1, **copy.deepcopy(row)},
        ],
        "comparisons": [{"model_index": 1, "batch": 1, "ratios": ratios}],
    }


def test_evaluate_ratio_and_absolute_on_candidates_only() -> None:
    out = evaluate(parse_gates(["p90>1.05x", "size>500B", "p99>13ms", "cost>$0.4"]), _doc(1.2))
    by = {g["expr"]: g for g in out}
    assert len(out) == 4  # the baseline is not gated
    assert (
        by["p90>1.05x"]["failed"] and by["p90>1.05x"]["value"] == 1.2 and by["p90>1.05x"]["model"] == "cand"
    )
    assert not by["size>500B"]["failed"] and by["size>500B"]["value"] == 400
    assert by["p99>13ms"]["failed"] and by["cost>$0.4"]["failed"]
    assert not any(g["failed"] for g in evaluate(parse_gates(["p90>1.05x"]), _doc(1.04)))


def test_evaluate_refuses_what_it_cannot_judge() -> None:
    with pytest.raises(InputError, match="cost gates need"):
        evaluate(parse_gates(["cost>1x"]), _doc(1.0, priced=False))
    single = _doc(1.0)
    single["models"] = single["models"][:1]
    single["results"] = single["results"][:1]
    single["comparisons"] = []
    with pytest.raises(InputError, match="needs a baseline"):
        evaluate(parse_gates(["p90>1.05x"]), single)
    # absolute gates apply to the only model
    assert evaluate(parse_gates(["p50>5ms"]), single)[0]["failed"]
