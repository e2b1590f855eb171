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
import onnx_ir as ir

from onnxsqueeze import metrics
from onnxsqueeze.errors import InputError, VerificationError
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

    if output is not None and not isinstance(model, onnx.ModelProto) and sio.streams(model):
        return _fp16_streamed(
            Path(model),
            Path(output),
            input_shapes=input_shapes,
            data=data,
            data_label=data_label,
            protect=protect,
            samples=samples,
            seed=seed,
            acceptance=acceptance,
            normalized_tolerance=normalized_tolerance,
            keep_io_types=keep_io_types,
            block_ops=block_ops,
            keep_fp32=keep_fp32,
            dtype=dtype,
            provider=provider,
            force=force,
            say=say,
        )
    src = base.load(model)
    if output is not None:  # before the work, not after it
        sio.refuse_overwrite(output, [p for p in (src.path, *protect) if p is not None])
    quantized, floating = _weight_bytes(src.model)
    if quantized > floating and not force:  # ddddocr's onnx.quantize'd export: fp16 gave 1.00x
        raise InputError(
            f"fp16: the model is quantized already ({quantized:,} bytes of 8-bit or narrower weights, "
            f"{floating:,} of float32 weights): half precision would shrink only the float32 part; "
            "nothing written (--force converts it anyway)"
        )
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


def _weight_bytes(model: onnx.ModelProto) -> tuple[int, int]:
    """(bytes of 8-bit or narrower integer initializers, bytes of float32/float64 ones)."""
    narrow = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    wide = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE}
    quantized = floating = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        if t.data_type in narrow:
            quantized += n
        elif t.data_type in wide:
            floating += n * (4 if t.data_type == onnx.TensorProto.FLOAT else 8)
    return quantized, floating


def _normalized_error(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> float:
    """The largest max abs error over outputs, each relative to its max |reference| (floored)."""
    worst = 0.0
    for i, (name, ref) in enumerate(reference.items()):
        out = outputs[name] if name in outputs else list(outputs.values())[i]
        r, o = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        if r.shape != o.shape or not r.size:
            continue
        finite = np.isfinite(r)
        if not finite.any():
            continue
        scale = max(float(np.abs(r[finite]).max()), 1e-6)
        with np.errstate(invalid="ignore"):
            worst = max(worst, float(np.nan_to_num(np.abs(r - o)[finite], nan=np.inf).max()) / scale)
    return worst


def _fp16_streamed(
    path: Path,
    output: Path,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None,
    data: Mapping[str, np.ndarray] | None,
    data_label: str,
    protect: Sequence[str | Path],
    samples: int,
    seed: int,
    acceptance: base.Acceptance,
    normalized_tolerance: float,
    keep_io_types: bool,
    block_ops: frozenset[str],
    keep_fp32: frozenset[str],
    dtype: str,
    provider: str,
    force: bool,
    say: base.Say,
) -> tuple[onnx.ModelProto, Fp16Report]:
    """fp16 of a model whose weights pass ``io.STREAM_BYTES``: one conversion, verified, written.

    Near one copy of the weights at a time (:func:`base.stream`): ``ConvertToFloat16Pass`` runs
    on an ``onnx_ir`` model whose float32 weights stay memory-mapped until each is converted. The
    normalization and the node-by-node precision search (several copies of the model) are
    skipped, and said so: a result beyond the budget is refused with the ops to keep float32
    (``--block-op``).

    Returns:
        The written model's graph (weights referenced in its external data, not loaded) and the report.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.passes.fp16 import ConvertToFloat16Pass
    from onnxsqueeze.pipeline import run_passes

    inputs = base.streamed_inputs(
        path, output, protect=protect, input_shapes=input_shapes, data=data, samples=samples, seed=seed
    )
    label = f"{data_label} (first {samples})" if data is not None else f"random (seed {seed})"
    report = Fp16Report(
        model=str(path),
        output=str(output),
        input_shapes={k: list(v) for k, v in inputs.shapes.items()},
        dtype=dtype,
        rounds=1,
    )
    report.notes.append(
        f"weights of {sio.weight_bytes(inputs.interface) / 2**30:.2f} GiB: streamed (one tensor at a time); "
        "normalization and the node-by-node precision search were skipped"
    )

    def convert(model: ir.Model) -> None:
        report.total_nodes = sum(1 for _ in model.graph.all_nodes())
        result = run_passes(
            model,
            [
                ConvertToFloat16Pass(
                    keep_io_types=keep_io_types, block_ops=block_ops, keep_fp32=keep_fp32, dtype=dtype
                )
            ],
            source_sha256=inputs.sha256,
        )
        report.fp32_nodes = dict(getattr(result, "fp32_nodes", {}))
        report.converted_nodes = int(getattr(result, "converted_nodes", 0))
        report.casts_inserted = int(getattr(result, "casts_inserted", 0))
        report.casts_removed = int(getattr(result, "casts_removed", 0))

    def accept(staged: base.StreamedResult) -> None:
        reference, outputs, verify_report = staged.reference, staged.outputs, staged.verify_report
        judgement = staged.judgement
        normalized = _normalized_error(reference, outputs)
        if acceptance.gates:
            within = judgement.passed
            report.budget = f"--metric {acceptance.metric or '(default)'}"
        elif acceptance.tolerance is not None:
            within = verify_report.max_abs <= acceptance.tolerance
            report.budget = f"max abs <= {acceptance.tolerance:g}"
        else:
            within = normalized <= normalized_tolerance
            report.budget = f"normalized error <= {normalized_tolerance:g}"
        passed = within and not judgement.nonfinite
        report.judgement = judgement
        report.notes.extend(judgement.warnings)
        report.passed = passed
        report.normalized_error = normalized
        report.verify = verify_report.to_dict()
        if not passed and not force:
            why = (
                judgement.reason
                if acceptance.gates and not judgement.passed
                else f"max abs error {verify_report.max_abs:.3g} (normalized {normalized:.3g}) beyond the "
                f"budget {report.budget}"
            )
            raise VerificationError(
                f"{dtype}: {why}; keep ops float32 with --block-op, judge by the task with --metric, or "
                "write it anyway with --force"
            )
        if report.converted_nodes == 0 and not force:
            raise VerificationError(
                f"{dtype}: nothing was converted (every node kept float32); not written (--force writes it)"
            )
        report.bytes_before, report.bytes_after = staged.bytes_before, staged.bytes_after

    report.manifest = base.stream(
        path,
        output,
        inputs,
        transform=convert,
        accept=accept,
        acceptance=acceptance,
        random_inputs=data is None,
        protect=protect,
        what=dtype,
        keep_interface=keep_io_types,
        source_label=label,
        provider=provider,
        steps=(
            f"converting to {dtype}, one weight at a time",
            "writing the converted weights",
            "verifying against the source",
        ),
        say=say,
    )
    report.written = True
    return sio.load_interface(output), report
