"""Reports: the JSON schema, the markdown a PR comment shows, the PNG plot, import hygiene."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from onnxsqueeze.bench import JSON_SCHEMA, benchmark, render_markdown
from onnxsqueeze.bench.cost import Price
from onnxsqueeze.bench.report import fmt_ratio, plot_png, save_json, save_markdown, save_plot, to_json
from onnxsqueeze.errors import InputError
from tests.graphs import tiny_mlp

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def real_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("models")
    large, small = tiny_mlp(folder / "large.onnx", 128), tiny_mlp(folder / "small.onnx", 16)
    result = benchmark(
        [large, small],
        batches=[1, 2],
        warmup=1,
        iterations=4,
        duration=0,
        rounds=2,
        price=Price(0.1785, "aws/c7i.xlarge", "aws/c7i.xlarge on-demand $0.1785/h, price taken 2025-01"),
        gates=["p90>100x"],
    )
    return result.to_dict()


def _stats(p50: float) -> dict[str, float]:
    return {
        "count": 100,
        "mean": p50 * 1.05,
        "std": p50 * 0.1,
        "min": p50 * 0.9,
        "p50": p50,
        "p90": p50 * 1.2,
        "p95": p50 * 1.3,
        "p99": p50 * 1.5,
        "max": p50 * 2,
    }


def synthetic_doc() -> dict[str, Any]:
    """Two models at batch 1: the candidate exactly half the baseline's latency and cost."""
    env = {
        "cpu": "Test CPU 9000",
        "physical_cores": 4,
        "logical_cores": 8,
        "usable_cores": 8,
        "os": "Linux-test",
        "python": "3.11.7",
        "onnxruntime": "1.32.0",
        "gpu": None,
        "load_average": [0.5, 0.5, 0.5],
    }
    settings = {
        "provider": "cpu",
        "providers": ["CPUExecutionProvider"],
        "threads": 4,
        "warmup": 10,
        "min_iterations": 100,
        "min_duration_s": 1.0,
        "rounds": 5,
        "batches": [1],
        "io_binding": False,
        "trt_fp16": False,
        "graph_optimization": "all",
        "seed": 0,
        "data": None,
    }

    def model(name: str, size: int) -> dict[str, Any]:
        return {
            "name": name,
            "path": f"/m/{name}",
            "sha256": "ab" * 32,
            "file_bytes": size,
            "session_create_s": 0.1,
            "session_rss_bytes": 1000,
            "providers": ["CPUExecutionProvider"],
            "intra_op_threads": 4,
        }

    def row(i: int, p50: float) -> dict[str, Any]:
        stats = _stats(p50)
        thr = 1e3 / stats["mean"]
        return {
            "model": ["base_model.onnx", "cand.onnx"][i],
            "model_index": i,
            "batch": 1,
            "input_shapes": {"x": [1, 16]},
            "first_run_ms": 30.0,
            "iterations": 100,
            "duration_s": 1.0,
            "latency_ms": stats,
            "round_p50_ms": [p50] * 5,
            "throughput_per_s": thr,
            "usd_per_million": 0.5 / (thr * 3600) * 1e6,
            "rss_growth_bytes": 0,
            "peak_rss_bytes": 200 * 2**20,
            "device_memory_bytes": None,
            "device_memory_scope": None,
            "device_ms": None,
        }

    half = {"ratio": 0.5, "low": 0.45, "high": 0.55}
    ratios = {k: dict(half) for k in ("mean", "min", "p50", "p90", "p95", "p99", "max", "cost")}
    ratios["throughput"] = {"ratio": 2.0, "low": 1.8, "high": 2.2}
    ratios["size"] = {"ratio": 0.25, "low": 0.25, "high": 0.25}
    return {
        "schema": "onnxsqueeze.bench/1",
        "created": "2026-11-28T12:00:00Z",
        "environment": env,
        "settings": settings,
        "cost": {"usd_per_hour": 0.5, "label": "test/box", "source": "test/box $0.5/h, price taken 2025-01"},
        "models": [model("base_model.onnx", 4_000_000), model("cand.onnx", 1_000_000)],
        "results": [row(0, 10.0), row(1, 5.0)],
        "comparisons": [
            {
                "model": "cand.onnx",
                "model_index": 1,
                "baseline": "base_model.onnx",
                "batch": 1,
                "ratios": ratios,
            }
        ],
        "gates": [
            {
                "expr": "p90>1.05x",
                "metric": "p90",
                "model": "cand.onnx",
                "batch": 1,
                "value": 0.5,
                "threshold": 1.05,
                "relative": True,
                "failed": False,
            }
        ],
    }


# ------------------------------------------------------------------------------------ JSON


def test_real_run_matches_schema(real_doc: dict[str, Any]) -> None:
    doc = json.loads(to_json(real_doc))  # strict JSON: no NaN or infinity
    jsonschema.validate(doc, JSON_SCHEMA)
    assert doc["schema"] == JSON_SCHEMA["properties"]["schema"]["const"]


def test_synthetic_doc_matches_schema_and_schema_rejects_breakage() -> None:
    doc = synthetic_doc()
    jsonschema.validate(doc, JSON_SCHEMA)
    for mutate in (
        lambda d: d.update(schema="onnxsqueeze.bench/2"),
        lambda d: d["results"][0].pop("latency_ms"),
        lambda d: d["results"][0]["latency_ms"].update(p90=-1.0),
        lambda d: d["models"][0].update(sha256="xyz"),
        lambda d: d["comparisons"][0]["ratios"].pop("p90"),
        lambda d: d["settings"].update(provider="tpu"),
    ):
        broken = copy.deepcopy(doc)
        mutate(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, JSON_SCHEMA)


def test_save_json_round_trips_and_protects_models(tmp_path: Path) -> None:
    doc = synthetic_doc()
    path = save_json(doc, tmp_path / "out" / "bench.json")
    assert json.loads(path.read_text()) == doc
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    doc["models"][0]["path"] = str(model)
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_json(doc, model)


# ------------------------------------------------------------------------------------ markdown


def _tables(md: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``md`` as a list of {header: cell} rows (delimiter row dropped)."""
    tables: list[list[dict[str, str]]] = []
    block: list[list[str]] = []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if block:
            header, rows = block[0], block[2:]
            tables.append([dict(zip(header, r, strict=True)) for r in rows])
            block = []
    return tables


def _number(cell: str) -> float:
    """``$1.46`` -> 1.46, ``3.8 MiB`` -> bytes, ``1,000`` -> 1000."""
    text = cell.strip("$").replace(",", "")
    value, _, unit = text.partition(" ")
    return float(value) * {"": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]


def _ratio(cell: str) -> tuple[float, float | None, float | None, str]:
    """``0.50× (0.45–0.55) 🟢`` -> (0.5, 0.45, 0.55, "🟢")."""
    head, _, rest = cell.partition("×")
    rng, mark = rest.strip(), ""
    if rng.endswith(("🟢", "🔴")):
        rng, mark = rng[:-1].strip(), rng[-1]
    if not rng:
        return float(head), None, None, mark
    low, high = rng.strip("()").split("–")
    return float(head), float(low), float(high), mark


def test_markdown_tables_carry_the_documents_figures() -> None:
    """Every figure a PR comment shows is read back from its tables and checked against the JSON
    document it renders (to the three significant digits shown), so a wrong column, unit or
    ratio fails; no output string is copied into the test."""
    doc = synthetic_doc()
    doc["results"][1]["latency_ms"] = _stats(3.7)  # the candidate at 0.37x, not a round half
    for name, r in doc["comparisons"][0]["ratios"].items():
        if name not in ("throughput", "size"):
            r.update(ratio=0.37, low=0.33, high=0.41)
    md = render_markdown(doc)
    lines = md.splitlines()
    assert lines[0] == "<!-- onnxsqueeze-bench -->"  # the marker a CI bot updates its comment by
    ratios, absolute, full = _tables(md)

    (row,) = ratios
    assert row["Candidate vs baseline"] == "`cand.onnx`" and row["Batch"] == "1"
    want = doc["comparisons"][0]["ratios"]
    for col, key in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("Throughput", "throughput")):
        got = _ratio(row[col])
        assert got[:3] == pytest.approx((want[key]["ratio"], want[key]["low"], want[key]["high"]), abs=0.006)
        assert got[3] == "🟢"  # better beyond 2% pooled and in every round
    assert _ratio(row["Size"])[0] == pytest.approx(0.25, abs=0.006)

    assert [r["Model"] for r in absolute] == ["`base_model.onnx` *(baseline)*", "`cand.onnx`"]
    for r, res, model in zip(absolute, doc["results"], doc["models"], strict=True):
        stats = res["latency_ms"]
        for col, key in (("p50 ms", "p50"), ("p90 ms", "p90"), ("p99 ms", "p99")):
            assert _number(r[col]) == pytest.approx(stats[key], rel=0.006)
        assert _number(r["Items/s"]) == pytest.approx(res["throughput_per_s"], rel=0.006)
        assert _number(r["$ / 1M inferences"]) == pytest.approx(res["usd_per_million"], rel=0.006)
        assert _number(r["Size"]) == pytest.approx(model["file_bytes"], rel=0.02)
        assert _number(r["Peak RSS"]) == pytest.approx(res["peak_rss_bytes"], rel=0.006)
    assert [_number(r["n"]) for r in full] == [res["iterations"] for res in doc["results"]]

    assert "**Gates: all 1 passed**" in md and "`p90>1.05x`" in md
    assert "\\_" not in md  # escaping stays out of code spans
    # the footnote names the environment and how to read the numbers
    foot = lines[-2] if lines[-1] == "" else lines[-1]
    assert foot.startswith("<sub>") and foot.endswith("</sub>")
    env = doc["environment"]
    for needle in (env["cpu"], f"onnxruntime {env['onnxruntime']}", "4 intra-op threads", "5 rounds"):
        assert needle in foot
    assert doc["cost"]["source"].split(", ")[-1] in foot  # when the price was taken


def test_markdown_failed_gate_and_single_model() -> None:
    doc = synthetic_doc()
    doc["gates"][0].update(value=1.2, failed=True)
    md = render_markdown(doc)
    assert (
        "**Gates: 1 of 1 failed**" in md and "❌ **failed** `p90>1.05x`: `cand.onnx` at batch 1: 1.200×" in md
    )

    single = synthetic_doc()
    single["models"] = single["models"][:1]
    single["results"] = single["results"][:1]
    single["comparisons"], single["gates"], single["cost"] = [], [], None
    md = render_markdown(single)
    assert "Candidate vs baseline" not in md and "(baseline)" not in md and "$" not in md.split("<sub>")[0]


def test_ratio_marks_only_beyond_noise() -> None:
    assert fmt_ratio({"ratio": 1.01, "low": 1.005, "high": 1.02}) == "1.01× (1.00–1.02)"  # < 2%: no mark
    assert fmt_ratio({"ratio": 0.9, "low": 0.7, "high": 1.1}) == "0.90× (0.70–1.10)"  # rounds disagree
    assert fmt_ratio({"ratio": 1.1, "low": 1.05, "high": 1.2}).endswith("🔴")
    assert fmt_ratio({"ratio": 1.1, "low": 1.05, "high": 1.2}, lower_is_better=False).endswith("🟢")
    assert fmt_ratio({"ratio": 0.5, "low": None, "high": None}) == "0.50×"  # no range: no verdict


def test_markdown_of_a_real_run(real_doc: dict[str, Any], tmp_path: Path) -> None:
    path = save_markdown(real_doc, tmp_path / "bench.md")
    md = path.read_text()
    assert md.count("| `small.onnx` | ") >= 2 and "`large.onnx` *(baseline)*" in md


# ------------------------------------------------------------------------------------ plot


def test_plot_is_a_png(real_doc: dict[str, Any], tmp_path: Path) -> None:
    png = save_plot(real_doc, tmp_path / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    unpriced = synthetic_doc()
    unpriced["cost"] = None
    assert plot_png(unpriced).startswith(b"\x89PNG")


def test_library_imports_no_cli_or_heavy_packages() -> None:
    code = (
        "import sys, onnxsqueeze.bench\n"
        "bad = [m for m in ('typer', 'rich', 'matplotlib', 'onnxruntime', 'torch') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_noise_warning_only_when_rounds_disagree() -> None:
    doc = synthetic_doc()
    assert "Noisy machine" not in render_markdown(doc)  # identical rounds
    doc["results"][1]["round_p50_ms"] = [5.0, 5.0, 6.0, 5.0, 4.5]
    md = render_markdown(doc)
    assert "⚠️ Noisy machine: p50 moved by up to 30% between rounds (`cand.onnx` at batch 1)" in md
