"""The accuracy-budgeted squeeze: the cheapest model within N points of the baseline.

- :mod:`~onnxsqueeze.search.knobs`: the techniques the search can turn (:data:`KNOBS`) and the
  recipe steps of each setting.
- :mod:`~onnxsqueeze.search.algorithm`: the search itself (bisection of each knob alone, greedy
  combination), :class:`Point`, :class:`SearchResult` and the Pareto front; it knows nothing
  about models.
- :mod:`~onnxsqueeze.search.squeezer`: :class:`Squeezer` builds, scores, times and caches real
  candidates, on the evaluation cache (:mod:`~onnxsqueeze.search.cache`), the trained base models
  (:mod:`~onnxsqueeze.search.students`), successive halving (:mod:`~onnxsqueeze.search.halving`)
  and latency (:mod:`~onnxsqueeze.search.latency`); :class:`SqueezeOptions`
  (:mod:`~onnxsqueeze.search.options`) says what it optimizes.
- :mod:`~onnxsqueeze.search.run`: :func:`make_squeezer` loads the model and data; :func:`squeeze`
  is the whole run, :func:`write_outputs` (:mod:`~onnxsqueeze.search.outputs`) its files.
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
from onnxsqueeze.search.cache import CACHE_FORMAT
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
from onnxsqueeze.search.latency import compare_latency, measure_latency
from onnxsqueeze.search.options import DEFAULT_INSTANCE, SqueezeOptions
from onnxsqueeze.search.outputs import verify_best, write_outputs
from onnxsqueeze.search.report import closest, nothing_fits_message, plot_pareto, render_report, results_dict
from onnxsqueeze.search.run import make_squeezer, squeeze
from onnxsqueeze.search.squeezer import Squeezer

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
