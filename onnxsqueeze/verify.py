"""Numerical verification of a candidate model against its reference in onnxruntime.

Every transforming command checks its result with :func:`verify`. Metrics per output:

- ``max_abs``: ``max |ref - cand|``;
- ``max_rel``: ``max |ref - cand| / max(|ref|, 1e-3 * max|ref|)`` (the floor keeps values near
  zero from dominating; it is relative to the output's own scale);
- ``cosine``: cosine similarity of the flattened outputs;
- ``top1_agreement``: for outputs shaped like class scores ``[N, C]`` with ``C >= 2``, the
  fraction of rows whose argmax agrees (per time step for ``[T, N, C]`` CTC sequences);
- ``nonfinite``: NaN/Inf values in the candidate that the reference does not have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze import runtime, shapes
from onnxsqueeze.errors import VerificationError


@dataclasses.dataclass(frozen=True)
class OutputMetrics:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    cosine: float
    top1_agreement: float | None
    nonfinite: int


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    outputs: tuple[OutputMetrics, ...]
    samples: int
    inputs: dict[str, tuple[int, ...]]
    source: str  # "random (seed N)" or the data file

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def min_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    def within(self, tolerance: float) -> bool:
        return self.max_abs <= tolerance and not any(o.nonfinite for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "source": self.source,
            "max_abs": self.max_abs,
            "outputs": [dataclasses.asdict(o) | {"shape": list(o.shape)} for o in self.outputs],
        }


def _as_proto(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    # a path: the interface only; onnxruntime reads the weights from the file (one copy, not three)
    return model if isinstance(model, onnx.ModelProto) else sio.load_interface(model)


def prepare_feeds(
    model: onnx.ModelProto,
    *,
    data: Mapping[str, np.ndarray] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    batch: int | None = None,
    label: str = "the data",
) -> dict[str, np.ndarray]:
    """Inputs for a model: arrays from ``data`` (by input name, checked; ``label`` names it in
    errors) or seeded random ones."""
    if data is not None:
        return shapes.select_inputs(model, data, label=label)
    resolved = shapes.resolve_input_shapes(model, input_shapes, batch=batch)
    return shapes.make_inputs(model, resolved, seed=seed)


def _cast_feeds(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for vi in shapes.graph_inputs(model):
        if vi.name in feeds:
            out[vi.name] = np.asarray(feeds[vi.name]).astype(shapes.input_dtype(vi), copy=False)
    return out


def run(
    model: onnx.ModelProto | str | Path,
    feeds: Mapping[str, np.ndarray],
    *,
    provider: str = "cpu",
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Run a model on feeds (first axis = samples), casting inputs to the model's dtypes."""
    proto = _as_proto(model)
    sess = runtime.session(proto if isinstance(model, onnx.ModelProto) else model, provider=provider)
    return runtime.run_batched(sess, _cast_feeds(proto, feeds), batch_size=batch_size)


def output_metrics(
    name: str, ref: np.ndarray, cand: np.ndarray, *, samples: int | None = None
) -> OutputMetrics:
    """Metrics of one output pair (see the module docstring)."""
    if ref.shape != cand.shape:
        raise VerificationError(
            f"output '{name}': shape {cand.shape} differs from the reference's {ref.shape}"
        )
    r = ref.astype(np.float64)
    c = cand.astype(np.float64)
    finite = np.isfinite(r) & np.isfinite(c)
    nonfinite = int(np.count_nonzero(np.isfinite(r) & ~np.isfinite(c)))
    diff = np.abs(r - c)[finite] if finite.any() else np.zeros(1)
    scale = float(np.max(np.abs(r[finite]))) if finite.any() else 0.0
    denom = np.maximum(np.abs(r[finite]), 1e-3 * scale) if finite.any() else np.ones(1)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.where(denom > 0, denom, 1.0)).max()) if diff.size else 0.0
    rf, cf = r[finite].ravel(), c[finite].ravel()
    nr, nc = float(np.linalg.norm(rf)), float(np.linalg.norm(cf))
    if nr == 0.0 and nc == 0.0:
        cosine = 1.0
    elif nr == 0.0 or nc == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.dot(rf, cf) / (nr * nc))
    top1 = None
    if np.issubdtype(ref.dtype, np.floating):
        from onnxsqueeze.metrics import sequence_layout

        axis = (
            1 if ref.ndim == 2 and ref.shape[1] >= 2 else (2 if sequence_layout(ref.shape, samples) else None)
        )
        if axis is not None:
            top1 = float(np.mean(np.argmax(r, axis=axis) == np.argmax(c, axis=axis)))
    return OutputMetrics(name, tuple(ref.shape), max_abs, max_rel, cosine, top1, nonfinite)


def compare(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    samples: int = 1,
    inputs: Mapping[str, tuple[int, ...]] | None = None,
    source: str = "",
    feeds: Mapping[str, np.ndarray] | None = None,
) -> VerifyReport:
    """Compare two output dicts (matched by name, or by position when the names differ).

    ``feeds``, the inputs both outputs were computed from, fill in ``samples`` (the first axis
    of the first input) and ``inputs`` (their shapes) for the report.
    """
    if feeds:
        first = np.asarray(next(iter(feeds.values())))
        samples = int(first.shape[0]) if first.ndim else 1
        inputs = {k: tuple(np.shape(v)) for k, v in feeds.items()}
    ref_items = list(reference.items())
    cand_items = list(candidate.items())
    if len(ref_items) != len(cand_items):
        raise VerificationError(
            f"the candidate has {len(cand_items)} outputs, the reference {len(ref_items)}"
        )
    if samples < 1:
        raise VerificationError("the verification ran on 0 samples: nothing was compared")
    metrics = []
    for i, (name, ref) in enumerate(ref_items):
        ref = np.asarray(ref)
        if np.issubdtype(ref.dtype, np.inexact) and not np.all(np.isfinite(ref)):
            bad = int(ref.size - np.count_nonzero(np.isfinite(ref)))
            raise VerificationError(
                f"the reference's output '{name}' has {bad} NaN/Inf value(s) of {ref.size} on {source or 'these inputs'}: "
                "a comparison with it means nothing (check the inputs)"
            )
        cand = candidate[name] if name in candidate else cand_items[i][1]
        metrics.append(output_metrics(name, ref, np.asarray(cand), samples=samples if feeds else None))
    return VerifyReport(tuple(metrics), samples, dict(inputs or {}), source)


def run_pair(
    reference: onnx.ModelProto | str | Path,
    candidate: onnx.ModelProto | str | Path,
    *,
    data: Mapping[str, np.ndarray] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    provider: str = "cpu",
    label: str = "the data",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The feeds, and the reference's and the candidate's outputs on them (see :func:`verify`).

    Models given as paths run from their files (onnxruntime reads the weights once); ``label``
    names ``data`` in errors.
    """
    ref_model = _as_proto(reference)
    feeds = prepare_feeds(ref_model, data=data, input_shapes=input_shapes, seed=seed, label=label)
    return feeds, run(reference, feeds, provider=provider), run(candidate, feeds, provider=provider)


def run_and_compare(
    reference: onnx.ModelProto | str | Path,
    candidate: onnx.ModelProto | str | Path,
    *,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    provider: str = "cpu",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray], VerifyReport]:
    """:func:`run_pair` then :func:`compare`: ``(feeds, reference outputs, candidate outputs, report)``."""
    feeds, ref_out, cand_out = run_pair(
        reference,
        candidate,
        data=data,
        input_shapes=input_shapes,
        seed=seed,
        provider=provider,
        label=data_label,
    )
    source = data_label if data is not None else f"random (seed {seed})"
    return feeds, ref_out, cand_out, compare(ref_out, cand_out, feeds=feeds, source=source)


def verify(
    reference: onnx.ModelProto | str | Path,
    candidate: onnx.ModelProto | str | Path,
    *,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    tolerance: float | None = None,
    provider: str = "cpu",
) -> VerifyReport:
    """Run reference and candidate on the same inputs and compare their outputs.

    Args:
        reference: the original model (proto or path).
        candidate: the transformed model.
        data: real inputs keyed by input name (first axis = samples); random inputs otherwise.
        data_label: how the report names the data source.
        input_shapes: shapes for dynamic dims when inputs are random.
        seed: seed of the random inputs.
        tolerance: when given, raise VerificationError if ``max_abs`` exceeds it (or NaN/Inf
            appear).
        provider: execution provider for both runs.

    Raises:
        VerificationError: outputs differ in count or shape, or exceed ``tolerance``.
    """
    report = run_and_compare(
        reference,
        candidate,
        data=data,
        data_label=data_label,
        input_shapes=input_shapes,
        seed=seed,
        provider=provider,
    )[3]
    if tolerance is not None and not report.within(tolerance):
        worst = max(report.outputs, key=lambda o: o.max_abs)
        extra = f", {worst.nonfinite} NaN/Inf" if worst.nonfinite else ""
        raise VerificationError(
            f"verification failed: output '{worst.name}' max abs error {worst.max_abs:.3g} "
            f"exceeds tolerance {tolerance:g}{extra}"
        )
    return report
