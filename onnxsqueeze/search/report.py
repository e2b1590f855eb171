"""What a squeeze tells: report.md, results.json, the Pareto plot and the nothing-fits message."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxsqueeze import io as sio
from onnxsqueeze.search.algorithm import LATENCY_MIN_GAIN, Point, SearchResult, format_value
from onnxsqueeze.search.knobs import describe_settings
from onnxsqueeze.units import human_bytes

if TYPE_CHECKING:
    from onnxsqueeze.search.squeezer import Squeezer


def closest(result: SearchResult, n: int = 3) -> list[Point]:
    """The candidates nearest to the budget (smallest drop), for the nothing-fits message."""
    cands = [p for p in result.points if p.settings and p.error is None and p.drop is not None]
    return sorted(cands, key=lambda p: (p.drop or 0.0, p.value(result.objective)))[:n]


def nothing_fits_message(squeezer: Squeezer, result: SearchResult) -> str:
    m = squeezer.evaluator.metric
    tried = [p for p in result.points if p.settings]
    if result.truncated and not tried:
        # Not "nothing fits": nothing was measured. Say where the budget went.
        import time

        return (
            f"{result.truncated} before any candidate was measured (budget "
            f"{squeezer.options.time_budget_s:g} s; loading and measuring the original took "
            f"{time.monotonic() - squeezer.started:.0f} s on this machine; baseline {m.name} "
            f"{result.baseline.metric:.4g}); give a larger --time-budget"
        )
    near = closest(result)
    tail = "; ".join(
        f"{describe_settings(p.settings, squeezer.knobs)}: drop {p.drop:.3g}, "
        f"{result.objective} {format_value(p.value(result.objective))}"
        for p in near
    )
    what = "no candidate" if not any(p.fits for p in result.points if p.settings) else "no cheaper candidate"
    if result.truncated:
        what = f"{result.truncated} before a cheaper candidate was found; {what}"
    return (
        f"{what} fits the budget ({result.budget.describe(m)}; baseline {m.name} "
        f"{result.baseline.metric:.4g}); closest: {tail or _none_measured(tried)}"
    )


def _none_measured(tried: list[Point]) -> str:
    failed = [p for p in tried if p.error]
    if not failed:
        return "none evaluated"
    return f"none measured ({len(failed)} rejected; first: {failed[0].error})"[:400]


# What a ratio must beat to count as a gain in the report (timing noise; sizes and MACs are exact).
_NOISE = {"latency": LATENCY_MIN_GAIN, "size": 0.0, "macs": 0.0}


def _ft_metric(values: Any, metric: Any) -> str:
    if not isinstance(values, dict) or not values:
        return "-"
    key = metric if metric in values else next(iter(values))
    return f"{key} {float(values[key]):.4g}"


def improvement(baseline: Point, p: Point) -> dict[str, Any]:
    """How ``p`` compares with the baseline: its drop, ratios (candidate / baseline) of size,
    latency and MACs, and in words what improved (a latency within the timing noise does not)."""
    doc: dict[str, Any] = {"drop": p.drop}
    words = []
    for o, v, b in (
        ("size", p.size, baseline.size),
        ("latency", p.latency_ms, baseline.latency_ms),
        ("macs", p.macs, baseline.macs),
    ):
        r = float(v) / float(b) if v is not None and b else None
        doc[f"{o}_ratio"] = r
        if r is not None and r < 1.0 - _NOISE[o]:
            words.append(f"{o} {r:.2f}x ({1 - r:.0%} less)")
    doc["improved"] = words
    return doc


def not_improved_message(
    result: SearchResult, alternatives: Sequence[Mapping[str, Any]], folder: Path
) -> str:
    goal = ",".join(result.objectives or (result.objective,))
    first = alternatives[0]
    gains = ", ".join(first["improved"]) or "no measurable gain"
    return (
        f"no candidate within budget beats the original on {goal}; {len(alternatives)} Pareto-front "
        f"model(s) within budget written to {folder} (e.g. {first['label']}: {gains}; see report.md)"
    )


def results_dict(
    squeezer: Squeezer, result: SearchResult, *, elapsed_s: float | None = None
) -> dict[str, Any]:
    ev = squeezer.evaluator
    knobs = squeezer.knobs
    higher = ev.metric.higher_is_better
    return {
        "schema_version": 1,
        "model_sha256": squeezer.model_sha256,
        "data": ev.dataset.source,
        "samples": len(ev.dataset),
        "calibration": dataclasses.asdict(squeezer.calibration_source)
        if squeezer.calibration_source
        else None,
        "metric": ev.metric.name,
        "higher_is_better": higher,
        "objective": result.objective,
        "objectives": list(result.objectives or (result.objective,)),
        "provider": squeezer.options.provider,
        "price": {"usd_per_hour": squeezer.price, "source": squeezer.price_source},
        "budget": {"max_drop": result.budget.max_drop, "relative": result.budget.relative},
        "elapsed_s": elapsed_s,
        # Wall seconds per phase of this run (load, plan, baseline, single, combine, distill,
        # outputs); candidates read from the cache cost (almost) nothing here.
        "timings": dict(squeezer.timings),
        # CPU seconds of the search's process per phase and per plan (``plan:<knob>``).
        "cpu_timings": {k: round(v, 3) for k, v in getattr(squeezer, "cpu_timings", {}).items()},
        "stopped_early": sum(1 for p in result.points if p.samples is not None),
        "evaluations": squeezer.evaluations,
        "cache_hits": squeezer.cache_hits,
        "executor": squeezer.executor.describe(),
        # When and where each request ran (seconds from the start): see Squeezer.trace.
        "trace": squeezer.trace,
        "latency_method": latency_method(squeezer),
        "truncated": result.truncated,
        "baseline": result.baseline.to_dict(knobs),
        "best": result.best.to_dict(knobs) if result.best else None,
        "knobs": {k.name: {"settings": [str(s) for s in k.settings], "monotone": k.monotone} for k in knobs},
        "not_offered": result.skipped,
        "notes": squeezer.notes,
        "plans": squeezer.plans,
        "students": squeezer.students,
        "train_data": squeezer.train.source if squeezer.train is not None else None,
        "rejected": [{"candidate": a, "why": b} for a, b in result.rejected],
        "pareto": [p.to_dict(knobs) for p in result.pareto(higher)],
        "points": [p.to_dict(knobs) for p in result.points],
    }


def _cell(p: Point, objective: str) -> list[str]:
    return [
        (f"{p.metric:.4g}" + (f" (on {p.samples})" if p.samples is not None else ""))
        if p.metric is not None
        else "-",
        f"{p.drop:+.3g}" if p.drop is not None else "-",
        human_bytes(p.size),
        f"{p.macs / 1e6:.3g} M" if p.macs is not None else "-",
        f"{p.latency_ms:.3g}" if p.latency_ms is not None else "-",
        f"{p.cost:.3g}" if p.cost is not None else "-",
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def latency_method(squeezer: Squeezer) -> str:
    """How the search timed candidates (for the report: parallel runs must say it)."""
    from onnxsqueeze.search.streaming import StreamingSqueezer

    threads = squeezer.options.latency_threads
    if isinstance(squeezer, StreamingSqueezer):
        return squeezer.latency_method()
    return (
        "batch 1, each candidate within budget timed interleaved A/B against the original "
        f"({threads or 'default'} intra-op thread{'s' if threads != 1 else ''}, median ratio x the "
        "original's median), one candidate at a time per machine (timing slot), while other "
        "candidates may be scored in parallel"
    )


def render_report(squeezer: Squeezer, result: SearchResult, results: Mapping[str, Any]) -> str:
    ev = squeezer.evaluator
    knobs = squeezer.knobs
    m = ev.metric
    obj = result.objective
    base = result.baseline
    cols = [m.name, "drop", "size", "MACs", "latency ms", "$/1M inf"]
    lines = [
        "# onnxsqueeze squeeze report",
        "",
        f"- data: `{ev.dataset.source}` ({len(ev.dataset)} samples), metric **{m.name}**"
        f"{' (higher is better)' if m.higher_is_better else ' (lower is better)'}",
        f"- budget: {result.budget.describe(m)}; objective: **{','.join(result.objectives or (obj,))}**"
        f"; provider: {squeezer.options.provider}",
        f"- evaluations: {squeezer.evaluations} measured, {squeezer.cache_hits} from cache"
        + (f"; {results['elapsed_s']:.1f} s" if results.get("elapsed_s") is not None else "")
        + f"; candidates measured {squeezer.executor.describe()}",
        f"- latency: {latency_method(squeezer)}",
    ]
    if squeezer.calibration_source is not None:
        c = squeezer.calibration_source
        lines.append(f"- calibration: samples {c.start}:{c.stop} of `{c.data}` (not used for evaluation)")
    if result.truncated:
        lines.append(f"- **search stopped early: {result.truncated}**; rerun to continue from the cache")
    lines.append("")
    if result.best is not None:
        b = result.best
        lines += [
            "## Baseline vs best",
            "",
            f"Best: **{describe_settings(b.settings, knobs)}**",
            "",
            _table(["", *cols], [["baseline", *_cell(base, obj)], ["best", *_cell(b, obj)]]),
            "",
            f"Ratios (baseline / best): size {_ratio(base.size, b.size)}, latency "
            f"{_ratio(base.latency_ms, b.latency_ms)}, MACs {_ratio(base.macs, b.macs)}.",
            "",
            *_verify_lines(results.get("best", {}).get("verify")),
        ]
    elif results.get("not_improved"):
        goal = ",".join(result.objectives or (obj,))
        lines += [
            "## The objective was not improved",
            "",
            f"No candidate within budget beats the baseline on **{goal}**; these Pareto-front "
            "models within budget (non-dominated in metric, size, latency and MACs) are written "
            "under `pareto/` with their recipes. Ratios are candidate / baseline (same run); a "
            f"latency within {LATENCY_MIN_GAIN:.0%} of the baseline is timing noise.",
            "",
            _table(
                ["file", "candidate", "drop", "size", "latency", "MACs", "improved"],
                [
                    [
                        f"`{a['model']}`",
                        a["label"],
                        f"{a['drop']:+.3g}" if a.get("drop") is not None else "-",
                        *(
                            f"{a[k]:.2f}x" if a.get(k) is not None else "-"
                            for k in ("size_ratio", "latency_ratio", "macs_ratio")
                        ),
                        ", ".join(a["improved"]) or "-",
                    ]
                    for a in results["not_improved"]
                ],
            ),
            "",
        ]
    else:
        lines += ["## Nothing fits the budget", "", nothing_fits_message(squeezer, result), ""]
        near = closest(result)
        if near:
            lines += [
                _table(
                    ["closest candidates", *cols],
                    [[describe_settings(p.settings, knobs), *_cell(p, obj)] for p in near],
                ),
                "",
            ]
    lines += [
        "## Pareto front",
        "",
        f"{m.name} vs {obj}: no other evaluated point is both better and cheaper.",
        "",
        _table(
            ["candidate", *cols, "fits"],
            [
                [describe_settings(p.settings, knobs), *_cell(p, obj), "yes" if p.fits else "no"]
                for p in result.pareto(m.higher_is_better)
            ],
        ),
        "",
        "## What each technique contributed",
        "",
        f"Each knob alone at its best setting within budget, against the baseline ({obj}).",
        "",
    ]
    rows = []
    for k in knobs:
        p = result.singles.get(k.name)
        if p is None:
            rows.append([k.name, "-", "no setting fits or helps", "-", "-"])
        else:
            ((_, setting),) = p.settings.items()
            rows.append(
                [
                    k.name,
                    describe_settings(p.settings, knobs),
                    f"{p.drop:+.3g}" if p.drop is not None else "-",
                    _ratio(base.value(obj), p.value(obj)),
                    "yes"
                    if result.best is not None and result.best.settings.get(k.name) == setting
                    else "no",
                ]
            )
    lines += [_table(["knob", "setting", "drop", f"{obj} gain", "in best"], rows), ""]
    if result.skipped:
        lines += ["Not offered:", ""] + [f"- {k}: {v}" for k, v in result.skipped.items()] + [""]
    students = {k: v for k, v in squeezer.students.items() if v.get("method") != "finetune"}
    tuned = {k: v for k, v in squeezer.students.items() if v.get("method") == "finetune"}
    if tuned:
        lines += [
            f"Fine-tuned base models (the `+ft` knobs: the pass on the original, or on a distilled "
            "student (`on student`), then recovery training against the original on "
            f"`{squeezer.train.source if squeezer.train else '?'}`; "
            "metrics on a seeded 10% of it held out):",
            "",
            _table(
                ["pass", "metric before", "metric after", "epochs", "train s", "sha256"],
                [
                    [
                        spec.removeprefix("ft:").replace(":", "+ft ", 1).replace("@", " on student "),
                        _ft_metric(i.get("before"), i.get("metric")),
                        _ft_metric(i.get("after"), i.get("metric")),
                        str(i.get("epochs", "-")),
                        f"{i['seconds']:.0f}" if i.get("seconds") is not None else "-",
                        str(i.get("sha256", ""))[:12],
                    ]
                    for spec, i in tuned.items()
                ],
            ),
            "",
        ]
    if students:
        lines += [
            f"Distilled students (trained on `{squeezer.train.source if squeezer.train else '?'}`, "
            "early stopping on a seeded 10% of it; the evaluation data stay unseen):",
            "",
            _table(
                ["student", "params", "vs original", "epochs", "train s", "sha256"],
                [
                    [
                        spec,
                        str(i.get("params", "-")),
                        f"{i['param_reduction']:.1f}x fewer" if i.get("param_reduction") else "-",
                        str(i.get("epochs", "-")),
                        f"{i['seconds']:.0f}" if i.get("seconds") is not None else "-",
                        str(i.get("sha256", ""))[:12],
                    ]
                    for spec, i in students.items()
                ],
            ),
            "",
        ]
    if squeezer.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in squeezer.notes] + [""]
    lines += ["## Tried and rejected", ""]
    if result.rejected:
        lines += [f"- {a}: {b}" for a, b in result.rejected]
    else:
        lines.append("- nothing")
    timings = results.get("timings") or {}
    lines += [
        "",
        "## Where the time went",
        "",
        "Wall seconds of this run per phase (a candidate read from the cache costs almost nothing); "
        "per candidate below: building (passes), scoring, timing. A candidate is scored on a "
        f"quarter, then half of the samples first and stops as soon as it cannot fit even if every "
        f"other sample scored best ({results.get('stopped_early', 0)} stopped early); only "
        "candidates within budget are timed.",
        "",
        _table(["phase", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()]),
        "",
        "## Every evaluated point",
        "",
        _table(
            ["#", "phase", "candidate", *cols, "fits", "build s", "score s", "time s", "cached", "note"],
            [
                [
                    str(i),
                    p.phase,
                    describe_settings(p.settings, knobs),
                    *_cell(p, obj),
                    "yes" if p.fits else "no",
                    *(f"{v:.2f}" if v is not None else "-" for v in (p.build_s, p.score_s, p.time_s)),
                    "yes" if p.cached else "",
                    (p.error or p.note or "")[:120],
                ]
                for i, p in enumerate(result.points)
            ],
        ),
        "",
        "Latency: median of interleaved A/B timing against the original at batch 1 (optimized "
        f"onnxruntime session, onnxsqueeze.bench.timing); cost: {squeezer.price_source}.",
        "",
    ]
    return "\n".join(lines)


def _verify_lines(v: Mapping[str, Any] | None) -> list[str]:
    if not v:
        return []
    if "error" in v:
        return [f"Verification against the original: {v['error']}", ""]
    outs = v.get("outputs") or [{}]
    # The top-1 of the scored output (--output-name), not of whichever output comes first: on a
    # multi-head model (boxes, landmarks, class probabilities) the first may be a regression head.
    scored = next((o for o in outs if o.get("name") == v.get("scored_output")), outs[0])
    top1 = scored.get("top1_agreement")
    per_output = ""
    if len(outs) > 1:
        per_output = " (per output: " + ", ".join(f"'{o['name']}' {o['cosine']:.6f}" for o in outs) + ")"
    return [
        f"Verification against the original ({v['samples']} evaluation samples, onnxsqueeze.verify): "
        f"max abs {v['max_abs']:.3g}, min cosine {v['min_cosine']:.6f}{per_output}"
        + (f", top-1 agreement of '{scored['name']}' {top1:.1%}" if top1 is not None else "")
        + ".",
        "",
    ]


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or not math.isfinite(float(a)) or not math.isfinite(float(b)):
        return "-"
    return f"{float(a) / float(b):.2f}x"


def plot_pareto(squeezer: Squeezer, result: SearchResult, path: Path) -> bool:
    """Metric vs objective for every point, the front joined, the best starred. False if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    obj = result.objective
    m = squeezer.evaluator.metric
    pts = [
        p for p in result.points if p.error is None and p.metric is not None and math.isfinite(p.value(obj))
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter(
        [p.value(obj) for p in pts],
        [float(p.metric or 0.0) for p in pts],
        c=["tab:green" if p.fits else "tab:gray" for p in pts],
        s=22,
        label="evaluated (green: within budget)",
    )
    front = result.pareto(m.higher_is_better)
    ax.plot(
        [p.value(obj) for p in front],
        [float(p.metric or 0.0) for p in front],
        "-",
        color="tab:blue",
        lw=1,
        label="Pareto front",
    )
    base = result.baseline
    ax.scatter(
        [base.value(obj)],
        [float(base.metric or 0.0)],
        marker="s",
        color="black",
        s=40,
        label="baseline",
        zorder=3,
    )
    if result.best is not None:
        ax.scatter(
            [result.best.value(obj)],
            [float(result.best.metric or 0.0)],
            marker="*",
            color="tab:red",
            s=140,
            label="best",
            zorder=4,
        )
    if base.metric is not None and not result.budget.relative:
        limit = (
            base.metric - result.budget.max_drop
            if m.higher_is_better
            else base.metric + result.budget.max_drop
        )
        ax.axhline(limit, color="tab:red", ls="--", lw=0.8, label="budget")
    units = {
        "latency": "latency (ms, batch 1)",
        "size": "model size (bytes)",
        "macs": "MACs per sample",
        "cost": "USD per 1M inferences",
    }
    xs = [p.value(obj) for p in pts if p.value(obj) > 0]
    if xs and max(xs) / min(xs) > 10:  # one slow outlier (int8 dynamic on CPU) would squash the rest
        ax.set_xscale("log")
    ax.set_xlabel(units[obj])
    ax.set_ylabel(m.name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    sio.write_bytes_atomic(path, buf.getvalue())
    return True
