"""The shared flow of every technique: load -> normalize -> resolve shapes -> pass -> check -> write.

Each technique module (``fp16``, ``prune``, ``resize``, ``quantize``) is a thin function over
these steps:

1. :func:`load`: the source model and its file hash (for provenance);
2. :func:`normalize`: Constant-node weights lifted to initializers, BatchNorm folded, constants
   folded, dead code removed (``CleanupPass``), then onnxslim where it removes more nodes; the
   result is verified against the source on the same inputs, else the smaller safe form is used;
   every value with a shape gets a type, so serializing prints nothing;
3. :func:`resolve_shapes`: the input shapes, once: ``--input-shape`` first, then the data's
   shapes, then the model's static dims; a dynamic dim none of them binds is one line naming
   the input and the flag;
4. the pass, through :func:`onnxsqueeze.pipeline.run_passes` (provenance recorded);
5. :func:`judge`: the result against the source by a task metric (``metrics``) with a budget,
   or by max abs error; on random inputs whose outputs are near-constant, a warning asking for
   real data instead of a refusal;
6. :func:`write`: atomically, with the manifest, only when accepted (or forced).
"""

# NOTE: this module imports nothing from cli/ or search.

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze import metrics, shapes
from onnxsqueeze.errors import InputError, VerificationError, one_line
from onnxsqueeze.pipeline import type_values

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


# ------------------------------------------------------------------------------------------ load


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """A model as read, with what provenance needs."""

    model: onnx.ModelProto
    path: Path | None
    sha256: str


def load(model: onnx.ModelProto | str | Path) -> Source:
    """The source model (from a path, checked, or a proto as given) and its hash."""
    from onnxsqueeze import io as sio

    if isinstance(model, onnx.ModelProto):
        return Source(model, None, sio.sha256_model(model))
    path = Path(model)
    return Source(sio.load(path), path, sio.sha256_file(path))


# ------------------------------------------------------------------------------------- normalize


@dataclasses.dataclass(frozen=True)
class NormalizeReport:
    """What normalization did: node counts per form and the form kept."""

    nodes_before: int
    nodes_cleanup: int
    nodes_slim: int | None
    nodes_after: int
    used: str  # "cleanup+onnxslim", "cleanup" or "none"
    max_abs: float | None  # of the kept form against the source, None when not run
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"notes": list(self.notes)}


def _cleanup(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxsqueeze.passes.cleanup import CleanupPass

    m = ir.serde.deserialize_model(_copy(model))
    CleanupPass()(m)
    type_values(m)
    return ir.serde.serialize_model(m)


def slimmed_form(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` after :class:`~onnxsqueeze.passes.cleanup.SimplifyWithOnnxslimPass` (onnxslim,
    then the cleanup; the declared interface kept where inference agrees), every value typed; None
    when onnxslim removes nothing. Not verified: :func:`normalize` and the search verify it."""
    from onnxsqueeze.passes.cleanup import SimplifyWithOnnxslimPass

    result = SimplifyWithOnnxslimPass()(ir.serde.deserialize_model(_copy(model)))
    if not result.modified:
        return None
    type_values(result.model)
    return ir.serde.serialize_model(result.model)


def _restore_interface(form: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """The source's declared input and output types on ``form`` (simplifiers may rewrite them)."""
    declared = {vi.name: vi for vi in [*source.graph.input, *source.graph.output]}
    for vi in [*form.graph.input, *form.graph.output]:
        if vi.name in declared:
            vi.type.CopyFrom(declared[vi.name].type)
    return form


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def same_outputs(
    reference: Mapping[str, np.ndarray], model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]
) -> float | None:
    """Max abs error of ``model`` against ``reference`` outputs, relative to their scale; None: fails."""
    from onnxsqueeze.verify import run

    try:
        out = run(model, feeds)
    except Exception:  # a rewrite onnxruntime refuses is not used
        return None
    worst = 0.0
    for i, (name, r) in enumerate(reference.items()):
        c = out[name] if name in out else list(out.values())[i]
        if np.shape(c) != np.shape(r):
            return None
        r64, c64 = np.asarray(r, np.float64), np.asarray(c, np.float64)
        if np.any(np.isfinite(r64) & ~np.isfinite(c64)):
            return None
        finite = np.isfinite(r64)
        if not finite.any():
            continue
        scale = max(float(np.abs(r64[finite]).max()), 1e-6)
        worst = max(worst, float(np.abs(r64 - c64)[finite].max()) / scale)
    return worst


def normalize(
    model: onnx.ModelProto,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    slim: bool = True,
    rtol: float = 1e-4,
    source_sha256: str | None = None,
    say: Say = _quiet,
) -> tuple[onnx.ModelProto, NormalizeReport]:
    """Cleanup, then onnxslim where it removes more; each form verified on ``feeds``.

    Args:
        model: the source (not modified).
        feeds: inputs to verify the normalized forms on (none: not verified, the checker only).
        slim: try onnxslim after the cleanup.
        rtol: the largest max abs error, relative to each output's max |value|, a form may have.
        source_sha256: recorded with the ``normalize`` step in the provenance when the kept form
            differs from the source.

    Returns:
        The kept form and the report. A form that fails verification is not used (noted).
    """
    from onnxsqueeze.verify import run

    notes: list[str] = []
    before = len(model.graph.node)
    reference = None
    if feeds is not None:
        try:
            reference = run(model, feeds)
        except Exception as e:  # the caller's own run will say why, with its context
            notes.append(f"not verified: the source does not run on the inputs ({one_line(e)[:120]})")
    say("normalizing (lift Constant weights, fold BatchNorm and constants)")
    candidates: list[tuple[str, onnx.ModelProto]] = []
    try:
        cleaned = _restore_interface(_cleanup(model), model)
        candidates.append(("cleanup", cleaned))
    except Exception as e:  # cleanup is best effort: the technique runs on the source
        notes.append(f"cleanup failed, the source is used as is: {one_line(e)[:160]}")
        cleaned = model
    slimmed = None
    if slim:
        say("simplifying with onnxslim")
        slimmed = slimmed_form(cleaned)
        if slimmed is not None:
            declared = {vi.name: vi.type for vi in model.graph.output}
            if any(vi.name in declared and vi.type != declared[vi.name] for vi in slimmed.graph.output):
                notes.append(
                    "an output's declared shape contradicts what the model computes; the simplified "
                    "form declares the computed one"
                )
            candidates.append(("cleanup+onnxslim", slimmed))
    kept, used, err = model, "none", None
    # A form that writes more bytes than the others is not a simplification: onnxslim folds
    # Cast(int8 weight) * scale (weights stored compressed) back into float weights (4x the bytes).
    smallest = min((form.ByteSize() for _, form in candidates), default=0)
    for name, form in list(candidates):
        if form.ByteSize() > 1.05 * smallest:
            notes.append(
                f"{name} not used: it writes {form.ByteSize() - smallest:,} more bytes (a folded constant is larger than its inputs)"
            )
            candidates.remove((name, form))
    for name, form in sorted(candidates, key=lambda c: len(c[1].graph.node)):
        if reference is not None and feeds is not None:
            diff = same_outputs(reference, form, feeds)
            if diff is None or diff > rtol:
                notes.append(
                    f"{name} not used: its outputs differ from the source's"
                    + ("" if diff is None else f" (max error {diff:.2g} of the output scale)")
                )
                continue
            err = diff
        kept, used = form, name
        break
    if used != "none" and len(kept.graph.node) != before:
        from onnxsqueeze.pipeline import record_provenance

        m = ir.serde.deserialize_model(kept)
        record_provenance(m, [{"pass": "normalize", "options": {"used": used}}], source_sha256)
        kept = ir.serde.serialize_model(m)
    report = NormalizeReport(
        nodes_before=before,
        nodes_cleanup=len(cleaned.graph.node),
        nodes_slim=None if slimmed is None else len(slimmed.graph.node),
        nodes_after=len(kept.graph.node),
        used=used,
        max_abs=err,
        notes=tuple(notes),
    )
    return kept, report


# -------------------------------------------------------------------------------------- shapes


def resolve_shapes(
    model: onnx.ModelProto,
    given: Mapping[str, Sequence[int]] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
) -> shapes.Shapes:
    """Concrete input shapes at batch 1: ``given`` (--input-shape), else the data's, else the model's.

    Raises:
        InputError: a dynamic dimension none of them binds (naming the input and the flag), or a
            given shape that does not fit the model.
    """
    overrides = {k: tuple(int(d) for d in v) for k, v in (given or {}).items()}
    for vi in shapes.graph_inputs(model):
        if vi.name in overrides or data is None or vi.name not in data:
            continue
        arr = np.asarray(data[vi.name])
        declared = shapes.declared_shape(vi)
        dynamic = any(not isinstance(d, int) for d in declared[1:])
        if dynamic and arr.ndim and len(declared) == arr.ndim:
            overrides[vi.name] = (1, *arr.shape[1:])
    return shapes.resolve_input_shapes(model, overrides)


def sample_feeds(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]],
    *,
    data: Mapping[str, np.ndarray] | None = None,
    samples: int = 8,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Inputs to measure on: the first ``samples`` of ``data``, or seeded random ones at the shapes."""
    if data is not None:
        arrays = shapes.select_inputs(model, data)
        return {k: v[:samples] if np.ndim(v) else v for k, v in arrays.items()}
    batched = {k: (samples, *tuple(v)[1:]) if len(v) else tuple(v) for k, v in input_shapes.items()}
    return shapes.make_inputs(model, batched, seed=seed)


def count(feeds: Mapping[str, np.ndarray]) -> int:
    """The samples in a feed dict (the first axis of its first array)."""
    first = np.asarray(next(iter(feeds.values()))) if feeds else np.zeros(0)
    return int(first.shape[0]) if first.ndim else 1


# --------------------------------------------------------------------------------------- check


def _interface(model: onnx.ModelProto) -> list[tuple[str, Any]]:
    """Input names and shapes, output names (output shapes may be corrected by normalization)."""
    return [(vi.name, shapes.declared_shape(vi)) for vi in shapes.graph_inputs(model)] + [
        (vi.name, None) for vi in model.graph.output
    ]


def check(
    original: onnx.ModelProto,
    result: onnx.ModelProto,
    *,
    what: str,
    keep_interface: bool = True,
    path: Path | None = None,
) -> None:
    """The result passes the full checker and, with ``keep_interface``, keeps the I/O names and shapes.

    ``path``: the result's file, for a result whose weights are in external data beside it.

    Raises:
        VerificationError: it does not.
    """
    from onnxsqueeze import io as sio

    try:
        sio.check_model(result, path)
    except Exception as e:
        raise VerificationError(f"the {what} model is invalid: {one_line(e)}") from e
    if keep_interface and _interface(original) != _interface(result):
        raise VerificationError(f"{what} changed the model's inputs or outputs (a bug; please report it)")


@dataclasses.dataclass(frozen=True)
class Acceptance:
    """When a result is good enough: a task metric within a budget, and/or a max abs error.

    ``metric`` None means the technique's own default test (e.g. fp16's normalized error); a
    metric without ``max_drop`` uses the metric's default budget (``mae`` has none: measured only).
    """

    metric: str | None = None
    max_drop: float | None = None
    relative: bool = False
    tolerance: float | None = None
    threshold: float = 0.5
    class_axis: int | None = None
    output: str | None = None

    @property
    def gates(self) -> bool:
        """Whether the task metric decides (a metric or a budget was asked for)."""
        return self.metric is not None or self.max_drop is not None

    def __post_init__(self) -> None:
        if self.metric is not None:
            metrics.get(self.metric)
        if self.max_drop is not None:
            metrics.Budget(self.max_drop, self.relative)  # validates
        if self.tolerance is not None and not self.tolerance >= 0:
            raise InputError(f"--tolerance {self.tolerance}: must be >= 0")


DEFAULT = Acceptance()


@dataclasses.dataclass(frozen=True)
class Judgement:
    """The verdict of :func:`judge`."""

    metric: str
    output: str
    baseline: float
    value: float
    drop: float
    budget: str
    passed: bool
    samples: int
    source: str
    max_abs: float
    nonfinite: int
    warnings: tuple[str, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"warnings": list(self.warnings)}


def judge(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    acceptance: Acceptance,
    *,
    labels: np.ndarray | None = None,
    samples: int | None = None,
    source: str = "",
    random_inputs: bool = False,
    gate_by_default: bool = False,
) -> Judgement:
    """Judge candidate outputs against the reference's by the acceptance's metric and budget.

    Without a metric, the default for the output (``metrics.default_metric``) is measured and
    reported; it gates only when ``acceptance.metric`` names it. NaN/Inf the reference does not
    have always fail. On random inputs, a near-constant reference output gives a warning that
    the measure says little and asks for real data; the result is then not refused by it.
    ``gate_by_default``: the default metric with its default budget gates too (techniques that
    have no test of their own, e.g. zero-weight pruning), except on such near-constant outputs.
    """
    names = list(reference)
    if acceptance.output is not None and acceptance.output not in names:
        raise InputError(f"output '{acceptance.output}' is not an output of the model; it has {names}")
    name = acceptance.output or names[0]
    ref = np.asarray(reference[name])
    cand_items = list(candidate.items())
    cand = np.asarray(candidate[name] if name in candidate else cand_items[names.index(name)][1])
    n = samples if samples is not None else (len(ref) if ref.ndim else 1)
    warnings: list[str] = []
    nonfinite = int(np.count_nonzero(np.isfinite(ref) & ~np.isfinite(cand))) if ref.shape == cand.shape else 0
    max_abs = (
        float(np.max(np.abs(ref.astype(np.float64) - cand.astype(np.float64))))
        if ref.shape == cand.shape and ref.size
        else 0.0
    )
    metric_name = acceptance.metric or metrics.default_metric(ref, labels=labels is not None, samples=n)
    m = metrics.get(metric_name)
    if m.needs_labels and labels is None:
        if acceptance.metric is not None:
            raise InputError(
                "--metric accuracy needs 'labels' in --data; without labels use agreement, iou, cosine, "
                "mae or sequence"
            )
        metric_name, m = "agreement", metrics.get("agreement")
    kw = dict(threshold=acceptance.threshold, class_axis=acceptance.class_axis, samples=n)
    try:
        value = metrics.score(metric_name, cand, ref, labels=labels, **kw)  # type: ignore[arg-type]
    except InputError:
        if acceptance.metric is not None:
            raise
        metric_name, m = "cosine", metrics.get("cosine")  # the default did not fit this output
        value = metrics.score(metric_name, cand, ref, **kw)  # type: ignore[arg-type]
    if m.needs_labels:
        baseline = metrics.score(metric_name, ref, ref, labels=labels, **kw)  # type: ignore[arg-type]
    else:
        baseline = 0.0 if not m.higher_is_better else 100.0
    max_drop = acceptance.max_drop if acceptance.max_drop is not None else m.default_drop
    passed, reason, budget_text = True, "", "measured only"
    uninformative = random_inputs and metrics.near_constant(ref)
    gating = acceptance.gates or (gate_by_default and not uninformative)
    if max_drop is not None:
        budget = metrics.Budget(max_drop, acceptance.relative)
        scale = float(np.mean(np.abs(ref))) if metric_name == "mae" else abs(baseline)
        drop = budget.drop(baseline, value, higher_is_better=m.higher_is_better, scale=scale)
        budget_text = budget.describe(m)
        if gating and not budget.fits(baseline, value, higher_is_better=m.higher_is_better, scale=scale):
            passed, reason = (
                False,
                f"{metric_name} {value:.4g} vs {baseline:.4g}: beyond the budget {budget_text}",
            )
    else:
        drop = value - baseline if not m.higher_is_better else baseline - value
    if acceptance.tolerance is not None and max_abs > acceptance.tolerance and passed:
        passed = False
        reason = f"output '{name}' max abs error {max_abs:.3g} exceeds --tolerance {acceptance.tolerance:g}"
    if nonfinite:
        passed, reason = False, f"output '{name}' has {nonfinite} NaN/Inf values the original does not"
    if uninformative:
        warnings.append(
            f"output '{name}' is near-constant on random inputs, so the measured error says little about "
            "the task: give real inputs with --data"
        )
    return Judgement(
        metric=metric_name,
        output=name,
        baseline=baseline,
        value=value,
        drop=drop,
        budget=budget_text if gating or acceptance.max_drop is not None else f"measured only ({budget_text})",
        passed=passed,
        samples=n,
        source=source,
        max_abs=max_abs,
        nonfinite=nonfinite,
        warnings=tuple(warnings),
        reason=reason,
    )


def labels_of(data: Mapping[str, np.ndarray] | None, samples: int | None = None) -> np.ndarray | None:
    """The class labels of ``data`` (its first ``samples``), None without a ``labels`` array."""
    if data is None or "labels" not in data:
        return None
    return np.asarray(data["labels"])[:samples]


def judge_models(
    source: onnx.ModelProto,
    candidate: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    acceptance: Acceptance,
    *,
    labels: np.ndarray | None,
    label: str,
    random_inputs: bool,
) -> Judgement:
    """Run the source and the candidate on ``feeds`` and :func:`judge` the candidate's outputs."""
    from onnxsqueeze.verify import run

    return judge(
        run(source, feeds),
        run(candidate, feeds),
        acceptance,
        labels=labels,
        samples=count(feeds),
        source=label,
        random_inputs=random_inputs,
    )


def verify_pair(
    original: str | Path,
    candidate: str | Path,
    acceptance: Acceptance,
    *,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    provider: str = "cpu",
) -> tuple[Any, Judgement]:
    """Two model files on the same inputs: the output comparison and the task-metric judgement.

    Returns:
        ``(VerifyReport, Judgement)``; the caller decides what fails (a tolerance, the budget).
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.verify import run_and_compare

    for path in (original, candidate):
        sio.load(path)  # every check and refusal of a load; the sessions then read the files
    feeds, ref_out, cand_out, report = run_and_compare(
        original,
        candidate,
        data=data,
        data_label=data_label,
        input_shapes=input_shapes,
        seed=seed,
        provider=provider,
    )
    verdict = judge(
        ref_out,
        cand_out,
        acceptance,
        labels=labels_of(data),
        samples=count(feeds),
        source=report.source,
        random_inputs=data is None,
    )
    return report, verdict


# --------------------------------------------------------------------------------------- write


def write(
    model: onnx.ModelProto | ir.Model,
    output: str | Path,
    *,
    source: Source,
    verify_report: Any = None,
    protect: Sequence[str | Path] = (),
) -> tuple[Path, Path]:
    """Write a result atomically with its manifest; returns the model's and the manifest's paths."""
    from onnxsqueeze.manifest import save_artifact

    art = save_artifact(
        model, output, source_path=source.path, verify_report=verify_report, protect=[*protect]
    )
    return Path(art.path), Path(art.manifest_path)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedInputs:
    """What a streamed technique (weights past ``io.STREAM_BYTES``) runs on, read without the weights."""

    interface: onnx.ModelProto  # the graph, weights not loaded
    sha256: str
    shapes: dict[str, tuple[int, ...]]
    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedResult:
    """The staged result of a streamed technique, read back by onnxruntime from its file."""

    reference: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    verify_report: Any
    judgement: Judgement
    bytes_before: int
    bytes_after: int


def streamed_inputs(
    path: Path,
    output: Path,
    *,
    protect: Sequence[str | Path],
    input_shapes: Mapping[str, Sequence[int]] | None,
    data: Mapping[str, np.ndarray] | None,
    samples: int,
    seed: int = 0,
) -> StreamedInputs:
    """Refuse to overwrite an input, then read the interface, hash, shapes and feeds of a streamed model."""
    from onnxsqueeze import io as sio

    sio.refuse_overwrite(output, [path, *protect])
    interface = sio.load_interface(path)
    sha = sio.sha256_file(path)
    shapes_ = resolve_shapes(interface, input_shapes, data)
    feeds = sample_feeds(interface, shapes_, data=data, samples=samples, seed=seed)
    return StreamedInputs(interface, sha, dict(shapes_), feeds, labels_of(data, samples))


def stream(
    path: Path,
    output: Path,
    inputs: StreamedInputs,
    *,
    transform: Callable[[ir.Model], None],
    accept: Callable[[StreamedResult], None],
    acceptance: Acceptance,
    random_inputs: bool,
    gate_by_default: bool = False,
    protect: Sequence[str | Path],
    what: str,
    keep_interface: bool = True,
    source_label: str,
    provider: str = "cpu",
    steps: tuple[str, str, str],
    say: Say,
) -> str:
    """One streamed technique, near one copy of the weights: reference, transform, stage, verify, commit.

    onnxruntime reads the source from its file for the reference outputs (that session is gone
    before the transform); ``transform`` rewrites the memory-mapped ``onnx_ir`` model in place (and keeps no reference to
    it); the result is written to the output's temp folder tensor by tensor; the in-memory copy is
    released before onnxruntime reads the staged file back, and the outputs are judged against the
    reference (:func:`judge`); ``accept`` takes the verdict and raises to refuse (the staged files are then removed). ``steps`` are the three progress lines
    (transforming, writing, verifying).

    Returns:
        The written manifest's path.
    """
    import gc

    from onnxsqueeze import io as sio
    from onnxsqueeze import manifest
    from onnxsqueeze.verify import compare, run

    say("running the source model (onnxruntime reads its weights from the file)")
    reference = run(path, inputs.feeds, provider=provider)
    say(steps[0])
    model = sio.load_lazy(path, check=False)
    transform(model)
    say(steps[1])
    staged, staged_model = sio.stage_streamed(model, output, protect=[path, *protect])
    del model
    gc.collect()  # the in-memory rewritten weights go before onnxruntime loads them from the file
    try:
        say(steps[2])
        outputs = run(staged_model, inputs.feeds, provider=provider)
        check(
            inputs.interface,
            sio.load_interface(staged_model),
            what=what,
            keep_interface=keep_interface,
            path=staged_model,
        )
        verify_report = compare(reference, outputs, feeds=inputs.feeds, source=source_label)
        accept(
            StreamedResult(
                reference=reference,
                outputs=outputs,
                verify_report=verify_report,
                judgement=judge(
                    reference,
                    outputs,
                    acceptance,
                    labels=inputs.labels,
                    samples=count(inputs.feeds),
                    source=source_label,
                    random_inputs=random_inputs,
                    gate_by_default=gate_by_default,
                ),
                bytes_before=sum(f.stat().st_size for f in sio.referenced_files(path) if f.is_file()),
                bytes_after=sum(Path(tmp).stat().st_size for tmp, _ in staged.moves),
            )
        )
        art = manifest.commit_streamed(
            staged, staged_model, output, source_path=path, verify_report=verify_report
        )
    except BaseException:
        staged.abort()
        raise
    return str(art.manifest_path)


@dataclasses.dataclass
class Report:
    """Base of the technique reports: what every command renders and prints with ``--json``."""

    model: str
    output: str | None = None
    written: bool = False
    manifest: str | None = None
    passed: bool = True
    normalization: NormalizeReport | None = None
    input_shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    judgement: Judgement | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return out
