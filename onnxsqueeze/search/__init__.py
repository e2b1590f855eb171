"""The accuracy-budgeted squeeze: the cheapest model within N points of the baseline.

- :mod:`~onnxsqueeze.search.knobs`: the techniques the search can turn (:data:`KNOBS`) and the
  recipe steps of each setting.
- :mod:`~onnxsqueeze.search.algorithm`: the search itself (bisection of each knob alone, greedy
  combination), :class:`Point`, :class:`SearchResult` and the Pareto front; it knows nothing
  about models.
- :mod:`~onnxsqueeze.search.squeezer`: :class:`Squeezer` builds, scores, times and caches real
  candidates (students included); :func:`squeeze` is the whole run, :func:`write_outputs` its files.
- :mod:`~onnxsqueeze.search.report`: report.md, results.json, the plot and the nothing-fits message.
"""

# NOTE: imports flow cli -> search -> passes; this package never imports typer or rich.

from __future__ import annotations

from onnxsqueeze.search.algorithm import (
    LATENCY_MIN_GAIN,
    OBJECTIVES,
    Point,
    SearchResult,
    pareto_front,
    search,
)
from onnxsqueeze.search.knobs import (
    CLEANUP,
    KNOBS,
    Knob,
    PlanContext,
    Settings,
    allocate_ratios,
    available_knobs,
    base_of,
    describe_settings,
    steps_of,
)
from onnxsqueeze.search.report import closest, nothing_fits_message, plot_pareto, render_report, results_dict
from onnxsqueeze.search.squeezer import (
    CACHE_FORMAT,
    DEFAULT_INSTANCE,
    SqueezeOptions,
    Squeezer,
    compare_latency,
    make_squeezer,
    measure_latency,
    squeeze,
    verify_best,
    write_outputs,
)

__all__ = [
    "CACHE_FORMAT",
    "CLEANUP",
    "DEFAULT_INSTANCE",
    "KNOBS",
    "LATENCY_MIN_GAIN",
    "OBJECTIVES",
    "Knob",
    "PlanContext",
    "Point",
    "SearchResult",
    "Settings",
    "SqueezeOptions",
    "Squeezer",
    "allocate_ratios",
    "available_knobs",
    "base_of",
    "closest",
    "compare_latency",
    "describe_settings",
    "make_squeezer",
    "measure_latency",
    "nothing_fits_message",
    "pareto_front",
    "plot_pareto",
    "render_report",
    "results_dict",
    "search",
    "squeeze",
    "steps_of",
    "verify_best",
    "write_outputs",
]
