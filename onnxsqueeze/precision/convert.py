"""The guarded float16 conversion: measure, convert, verify, blame, repeat.

``convert_fp16`` is the whole conversion: cleanup (BN folded in float32, Constant weights lifted,
constants folded), the measurement (:mod:`.analysis`), ``ConvertToFloat16Pass`` with the measured
``keep_fp32``, then verification of the whole model against float32 by the task metric of each
output (:mod:`.checks`); while it fails, the nodes that create the error (:mod:`.blame`) are kept
float32 and the conversion is tried again.

onnxruntime is imported inside functions; nothing here reads or writes files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.errors import (
    InputError,
    ModelLoadError,
    SqueezeError,
    UnsupportedModelError,
    VerificationError,
    one_line,
)
from onnxsqueeze.passes.cleanup import CleanupPass
from onnxsqueeze.passes.fp16 import (
    DEFAULT_BLOCK_OPS,
    ConvertToFloat16Pass,
    Fp16PassResult,
    iter_nodes,
)
from onnxsqueeze.pipeline import run_passes
from onnxsqueeze.precision.analysis import Fp16Analysis, analyze_fp16, prepare
from onnxsqueeze.precision.blame import blame, keep_blamed
from onnxsqueeze.precision.checks import OutputCheck, check_outputs, normalized_error

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Fp16Result:
    """The guarded conversion's outcome (the converted model is ``model``)."""

    model: onnx.ModelProto
    fp32_nodes: dict[str, str]
    converted_nodes: int
    total_nodes: int
    casts_inserted: int
    casts_removed: int
    rounds: int
    report: Any  # VerifyReport of the final model against the float32 original
    normalized_error: float  # max over outputs of max_abs / max |reference|
    analysis: Fp16Analysis | None
    seconds: float
    passed: bool
    budget: str
    checks: tuple[OutputCheck, ...] = ()
    warnings: tuple[str, ...] = ()
    blamed: tuple[str, ...] = ()  # nodes kept float32 by the blame rounds


def convert_fp16(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    keep_io_types: bool = True,
    block_ops: frozenset[str] = DEFAULT_BLOCK_OPS,
    keep_fp32: frozenset[str] = frozenset(),
    dtype: str = "float16",
    tolerance: float | None = None,
    metric: str = "auto",
    threshold: float | None = None,
    normalized_tolerance: float = 0.01,
    measure: bool = True,
    measure_samples: int = 32,
    blame_samples: int = 4,
    max_rounds: int = 6,
    max_fp32_fraction: float = 0.5,
    provider: str = "cpu",
    source_sha256: str | None = None,
    data_label: str = "sample inputs",
    random_inputs: bool = False,
    on_step: Progress | None = None,
    accept: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], bool] | None = None,
    accept_budget: str = "",
) -> Fp16Result:
    """Cleanup, measure, convert and verify; keep float32 what the measurement blames until it passes.

    Args:
        model: the float32 model (not modified).
        feeds: sample inputs by name (first axis = samples): measurement and verification data.
        keep_io_types: inputs and outputs stay float32.
        block_ops: op types always kept float32.
        keep_fp32: node names always kept float32 (names after :func:`prepare`).
        dtype: ``float16`` or ``bfloat16``.
        tolerance: when given, the budget is ``max_abs <= tolerance`` on every output instead of
            the task metric.
        metric: ``auto`` (each output's task metric, see :func:`check_outputs`), a metric name
            for every output, or ``normalized`` (``max_abs / max |reference| <= normalized_tolerance``).
        threshold: overrides the metric's threshold (a fraction).
        normalized_tolerance: the budget of the ``normalized`` metric.
        measure: run :func:`analyze_fp16` (off: the block list and ``keep_fp32`` alone).
        measure_samples: the first samples of ``feeds`` used by the measurement (it keeps every
            intermediate tensor); verification uses all of ``feeds``.
        blame_samples: samples used by each blame round.
        max_rounds: conversions tried before giving up.
        max_fp32_fraction: give up when the blame rounds would keep more than this fraction of
            the nodes float32 (the conversion would no longer be a float16 model); graphs of
            fewer than 20 nodes give up only when every node would be float32.
        provider: onnxruntime execution provider for measurement and verification.
        source_sha256: the source file's hash, recorded in the provenance metadata.
        data_label: how the verification report names ``feeds``.
        random_inputs: ``feeds`` are random (a vacuous check then warns that real data is needed).
        on_step: progress callback receiving a short description of each step.
        accept: when given, the acceptance test of (reference, candidate) outputs in place of
            ``tolerance``/``normalized_tolerance`` (a task metric with its budget); NaN/Inf still fail.
        accept_budget: how the report names ``accept``'s budget.

    Returns:
        The result; ``passed`` is False when the budget is not met after ``max_rounds``
        (:func:`require_passed` turns that into a VerificationError).
    """
    from onnxsqueeze.verify import compare, run

    say = on_step or (lambda _msg: None)
    t0 = time.perf_counter()
    say("cleanup (lift constants, fold BN in float32, fold constants)")
    base = prepare(ir.serde.deserialize_model(model))
    base_proto = ir.serde.serialize_model(base)
    say("running the float32 model")
    try:
        reference = run(model, feeds, provider=provider)
    except SqueezeError:
        raise
    except Exception as e:  # onnxruntime rejects the inputs (shape or dtype)
        raise InputError(f"the model cannot run on the given inputs: {one_line(e)}") from e
    analysis = None
    keep = dict.fromkeys(keep_fp32, "kept float32 on request")
    if measure:
        say("measuring ranges and node-level error")
        sample = {k: v[:measure_samples] if np.ndim(v) else v for k, v in feeds.items()}
        analysis = analyze_fp16(base, sample, dtype=dtype, block_ops=block_ops, provider=provider)
        for k, v in analysis.keep.items():
            keep.setdefault(k, v)
    total_nodes = sum(1 for _ in iter_nodes(base.graph))
    blame_feeds = {k: v[:blame_samples] if np.ndim(v) else v for k, v in feeds.items()}
    blamed: list[str] = []
    rounds = 0
    while True:
        rounds += 1
        say(f"converting to {dtype} (round {rounds}, {len(keep)} node(s) kept float32)")
        candidate = ir.serde.deserialize_model(base_proto)
        pass_ = ConvertToFloat16Pass(
            keep_io_types=keep_io_types,
            block_ops=frozenset(block_ops),
            keep_fp32=frozenset(keep),
            dtype=dtype,
        )
        # the cleanup ran once in prepare(); it is recorded with the pass it prepared
        result = run_passes(candidate, [pass_], source_sha256=source_sha256, record=[CleanupPass(), pass_])
        assert isinstance(result, Fp16PassResult)
        proto = ir.serde.serialize_model(candidate)
        say("verifying against float32")
        try:
            outputs = run(proto, feeds, provider=provider)
        except ModelLoadError as e:
            if dtype == "float16":
                raise
            raise UnsupportedModelError(
                f"bfloat16: the '{provider}' provider cannot run the converted model, so it cannot be "
                f"verified ({str(e).split(': ', 1)[-1][:160]}); use a provider with bfloat16 kernels "
                "(--provider cuda) or float16"
            ) from e
        report = compare(reference, outputs, feeds=feeds, source=data_label)
        norm_err = normalized_error(reference, outputs)
        checks = check_outputs(
            reference, outputs, metric=metric, normalized_tolerance=normalized_tolerance, threshold=threshold
        )
        if accept is not None:
            ok = accept(reference, outputs)
        else:
            ok = report.within(tolerance) if tolerance is not None else all(c.passed for c in checks)
        ok = ok and not any(o.nonfinite for o in report.outputs)
        if ok or rounds >= max_rounds:
            break
        say("locating the nodes that create the error")
        created, errors = blame(base, proto, blame_feeds, keep, provider=provider)
        added = keep_blamed(base, keep, created, errors)
        # Give up when float16 would no longer cover most of the model (tiny graphs: any of it).
        limit = max_fp32_fraction * total_nodes if total_nodes >= 20 else total_nodes - 1
        if not added or len(keep) > limit:
            break
        blamed.extend(added)
    if accept_budget:
        budget = accept_budget
    elif tolerance is not None:
        budget = f"max abs error <= {tolerance:g}"
    else:
        budget = "; ".join(c.describe() for c in checks)
    warnings = [
        f"output '{c.output}': {c.vacuous}, so the {c.metric} check cannot show an error"
        + ("; pass real inputs with --data" if random_inputs else "; use more varied inputs")
        for c in checks
        if c.vacuous is not None and accept is None
    ]
    return Fp16Result(
        model=proto,
        fp32_nodes={name: keep.get(name, why) for name, why in result.fp32_nodes.items()},
        converted_nodes=result.converted_nodes,
        total_nodes=total_nodes,
        casts_inserted=result.casts_inserted,
        casts_removed=result.casts_removed,
        rounds=rounds,
        report=report,
        normalized_error=norm_err,
        analysis=analysis,
        seconds=time.perf_counter() - t0,
        passed=ok,
        budget=budget,
        checks=tuple(checks),
        warnings=tuple(warnings),
        blamed=tuple(blamed),
    )


def require_passed(result: Fp16Result) -> None:
    """Raise VerificationError when the guarded conversion missed its error budget."""
    if not result.passed:
        failed = [c.describe() for c in result.checks if not c.passed]
        what = "; ".join(failed) if failed else f"max abs error {result.report.max_abs:.3g}"
        raise VerificationError(
            f"fp16: after {result.rounds} round(s) {what}, beyond the budget ({result.budget}); "
            "keep more ops float32 with --block-op, or write it anyway with --force"
        )
