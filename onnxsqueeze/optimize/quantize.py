"""int8 through the front door: ``QuantizeInt8Pass`` (onnxruntime's quantizer) as one call.

Flow: load -> shapes resolved once -> normalize (BatchNorm folded before any bias is quantized)
-> the pass through ``run_passes`` -> checker -> judged against the source by the task metric
-> written when accepted. The pass's own options pass through unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.errors import VerificationError
from onnxsqueeze.optimize import base


@dataclasses.dataclass
class QuantizeReport(base.Report):
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0


def quantize(
    model: onnx.ModelProto | str | Path,
    output: str | Path | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    calibration_samples: int = 64,
    protect: Sequence[str | Path] = (),
    acceptance: base.Acceptance = base.DEFAULT,
    slim: bool = True,
    force: bool = False,
    say: base.Say = base._quiet,
    **options: Any,
) -> tuple[onnx.ModelProto, QuantizeReport]:
    """Quantize to int8 (``options``: ``QuantizeInt8Pass`` fields), judge, write when accepted.

    ``data`` gives the calibration inputs (its first ``calibration_samples``) and the inputs
    judged on; random inputs at the resolved shapes otherwise.
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze.passes.quantize import QuantizeInt8Pass
    from onnxsqueeze.pipeline import run_passes
    from onnxsqueeze.verify import run

    src = base.load(model)
    if output is not None:
        sio.refuse_overwrite(output, [p for p in (src.path, *protect) if p is not None])
    shapes_ = base.resolve_shapes(src.model, input_shapes, data)
    feeds = base.sample_feeds(src.model, shapes_, data=data, samples=calibration_samples)
    normalized, norm = base.normalize(src.model, feeds=feeds, slim=slim, source_sha256=src.sha256, say=say)
    say("quantizing to int8")
    step = QuantizeInt8Pass(calibration=feeds, **options)
    m = ir.serde.deserialize_model(base._copy(normalized))
    run_passes(m, [step], source_sha256=src.sha256)
    result = ir.serde.serialize_model(m)
    base.check(src.model, result, what="int8")
    labels = (
        np.asarray(data["labels"])[:calibration_samples] if data is not None and "labels" in data else None
    )
    judgement = base.judge(
        run(src.model, feeds),
        run(result, feeds),
        acceptance,
        labels=labels,
        samples=base.count(feeds),
        source=data_label if data is not None else "random inputs",
        random_inputs=data is None,
    )
    report = QuantizeReport(
        model=str(src.path or "<model>"),
        output=None if output is None else str(output),
        normalization=norm,
        input_shapes={k: list(v) for k, v in shapes_.items()},
        judgement=judgement,
        passed=judgement.passed,
        notes=[*norm.notes, *judgement.warnings],
        options=step.options(),
        bytes_before=src.model.ByteSize(),
        bytes_after=result.ByteSize(),
    )
    if not judgement.passed and not force:
        raise VerificationError(f"{judgement.reason}; not written (use --force to write it anyway)")
    if output is not None:
        path, manifest = base.write(result, output, source=src, protect=protect)
        report.written, report.output, report.manifest = True, str(path), str(manifest)
    return result, report
