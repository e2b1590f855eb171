"""fp16 through the front door: the guarded float16 conversion of ``precision`` as one call.

Flow: load -> shapes resolved once -> sample inputs -> normalize (verified) -> the guarded
conversion (measure, ``ConvertToFloat16Pass`` through ``run_passes``, verify, keep more float32
until accepted) -> judged against the *source* by the task metric -> written when accepted.

Acceptance: by default the conversion's own budget (max abs error / max |reference| per output,
or ``--tolerance`` on max abs); with ``Acceptance.metric`` the task metric and its budget decide
(e.g. ``iou`` for a probability map, ``agreement`` for a classifier). Without real data, an output
that is near-constant on random inputs makes the error meaningless: the result is accepted when
finite, with a warning asking for ``--data``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import metrics
from onnxsqueeze.errors import VerificationError
from onnxsqueeze.optimize import base
from onnxsqueeze.passes.fp16 import DEFAULT_BLOCK_OPS


@dataclasses.dataclass
class Fp16Report(base.Report):
    dtype: str = "float16"
    converted_nodes: int = 0
    total_nodes: int = 0
    fp32_nodes: dict[str, str] = dataclasses.field(default_factory=dict)
    casts_inserted: int = 0
    casts_removed: int = 0
    rounds: int = 0
    seconds: float = 0.0
    normalized_error: float = 0.0
    budget: str = ""
    bytes_before: int = 0
    bytes_after: int = 0
    verify: dict[str, Any] | None = None

    @property
    def size_ratio(self) -> float:
        return self.bytes_after / self.bytes_before if self.bytes_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"size_ratio": self.size_ratio}


def fp16(
    model: onnx.ModelProto | str | Path,
    output: str | Path | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    protect: Sequence[str | Path] = (),
    samples: int = 16,
    seed: int = 0,
    acceptance: base.Acceptance = base.DEFAULT,
    normalized_tolerance: float = 0.01,
    keep_io_types: bool = True,
    block_ops: frozenset[str] = DEFAULT_BLOCK_OPS,
    keep_fp32: frozenset[str] = frozenset(),
    dtype: str = "float16",
    measure: bool = True,
    provider: str = "cpu",
    slim: bool = True,
    force: bool = False,
    say: base.Say = base._quiet,
) -> tuple[onnx.ModelProto, Fp16Report]:
    """Convert a model to float16 (or bfloat16), judged against the source; write it when accepted.

    Args:
        model: the source model (path or proto).
        output: where to write the result (None: not written, returned only).
        input_shapes: ``--input-shape`` bindings.
        data: real inputs (and ``labels``); random inputs at the resolved shapes otherwise.
        data_label: how reports name ``data``.
        protect: more paths the output must not overwrite (the data file).
        samples: samples measured and verified on.
        acceptance: the metric and budget (see the module docstring).

    Raises:
        VerificationError: not accepted and not ``force`` (nothing written).
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.precision import convert_fp16
    from onnxsqueeze.verify import compare, run

    src = base.load(model)
    if output is not None:  # before the work, not after it
        sio.refuse_overwrite(output, [p for p in (src.path, *protect) if p is not None])
    shapes_ = base.resolve_shapes(src.model, input_shapes, data)
    feeds = base.sample_feeds(src.model, shapes_, data=data, samples=samples, seed=seed)
    labels = base.labels_of(data, samples)
    label = f"{data_label} (first {samples})" if data is not None else f"random (seed {seed})"
    say("running the source model")
    reference = run(src.model, feeds, provider=provider)
    normalized, norm = base.normalize(src.model, feeds=feeds, slim=slim, source_sha256=src.sha256, say=say)
    report = Fp16Report(
        model=str(src.path or "<model>"),
        output=None if output is None else str(output),
        normalization=norm,
        input_shapes={k: list(v) for k, v in shapes_.items()},
        dtype=dtype,
    )
    report.notes.extend(norm.notes)

    random = data is None
    flat = random and any(metrics.near_constant(v) for v in reference.values())
    accept = None
    budget_text = ""
    if acceptance.gates:

        def accept(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> bool:
            return base.judge(
                ref, out, acceptance, labels=labels, samples=base.count(feeds), random_inputs=random
            ).passed

        budget_text = f"--metric {acceptance.metric or '(default)'}"
    elif flat and acceptance.tolerance is None:

        def accept(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> bool:
            return all(np.isfinite(np.asarray(v)).all() for v in out.values())

        budget_text = "finite outputs (near-constant outputs on random inputs: no error budget)"

    result = convert_fp16(
        normalized,
        feeds,
        keep_io_types=keep_io_types,
        block_ops=block_ops,
        keep_fp32=keep_fp32,
        dtype=dtype,
        tolerance=acceptance.tolerance,
        normalized_tolerance=normalized_tolerance,
        measure=measure,
        provider=provider,
        source_sha256=src.sha256,
        data_label=label,
        on_step=say,
        accept=accept,
        accept_budget=budget_text,
    )
    # The final verdict is against the source, not the normalized form.
    say("verifying against the source")
    outputs = run(result.model, feeds, provider=provider)
    verify_report = compare(reference, outputs, feeds=feeds, source=label)
    judgement = base.judge(
        reference,
        outputs,
        acceptance,
        labels=labels,
        samples=base.count(feeds),
        source=label,
        random_inputs=random,
    )
    passed = result.passed and (not acceptance.gates or judgement.passed) and not judgement.nonfinite
    report.judgement = judgement
    report.notes.extend(judgement.warnings)
    report.passed = passed
    report.fp32_nodes = result.fp32_nodes
    report.converted_nodes = result.converted_nodes
    report.total_nodes = result.total_nodes
    report.casts_inserted = result.casts_inserted
    report.casts_removed = result.casts_removed
    report.rounds = result.rounds
    report.seconds = result.seconds
    report.normalized_error = result.normalized_error
    report.budget = result.budget
    report.verify = verify_report.to_dict()
    report.bytes_before = src.model.ByteSize()
    report.bytes_after = result.model.ByteSize()
    if not passed and not force:
        why = (
            judgement.reason
            if acceptance.gates and not judgement.passed
            else (
                f"max abs error {verify_report.max_abs:.3g} (normalized {result.normalized_error:.3g}) "
                f"beyond the budget {result.budget}"
            )
        )
        raise VerificationError(
            f"fp16: after {result.rounds} round(s), {why}; keep more ops float32 with --block-op, "
            "judge by the task with --metric, or write it anyway with --force"
        )
    if result.converted_nodes == 0:
        if not force:
            raise VerificationError(
                f"fp16: nothing was converted: all {result.total_nodes} nodes kept float32 to stay within "
                f"the budget ({result.budget}); not written (a looser --tolerance converts more, --force "
                "writes it)"
            )
        report.notes.append("written with --force although nothing was converted: the model is all float32")
    if output is not None:
        base.check(src.model, result.model, what=dtype, keep_interface=keep_io_types)
        path, manifest = base.write(
            result.model, output, source=src, verify_report=verify_report, protect=protect
        )
        report.written, report.output, report.manifest = True, str(path), str(manifest)
        if src.path is not None:
            report.bytes_before = src.path.stat().st_size
            report.bytes_after = path.stat().st_size
    return result.model, report
