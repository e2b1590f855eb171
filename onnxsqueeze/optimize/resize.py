"""resize through the front door: the input-resolution rewrite as one call.

Flow: load -> shapes resolved once (``--input-shape``, the data, the model) -> normalize ->
``RewriteInputResolutionPass`` through ``run_passes`` (so the recorded pass is the one that ran)
-> MACs -> the source at full size against the result with its interface kept, judged by the task
metric (``agreement`` for class scores, ``iou`` for maps, ``sequence`` for CTC outputs, or
``--metric``) -> written when accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze.errors import SqueezeError, VerificationError
from onnxsqueeze.optimize import base


@dataclasses.dataclass
class ResizeReport(base.Report):
    rewrite: dict[str, Any] = dataclasses.field(default_factory=dict)  # RewriteInfo.to_dict()
    modified: bool = False
    macs: dict[str, Any] | None = None
    agreement: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        return self.rewrite | {k: v for k, v in out.items() if k != "rewrite"}


def _macs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> int:
    from onnxsqueeze.summary import count_macs

    return count_macs(model, {k: tuple(v) for k, v in input_shapes.items()})[0]


def resize(
    model: onnx.ModelProto | str | Path,
    output: str | Path | None = None,
    *,
    resolution: tuple[int, int] | None = None,
    scale: float | None = None,
    input_name: str | None = None,
    keep_interface: bool = False,
    mode: str = "linear",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str | None = None,
    protect: Sequence[str | Path] = (),
    acceptance: base.Acceptance = base.DEFAULT,
    min_agreement: float | None = None,
    slim: bool = False,
    force: bool = False,
    say: base.Say = base._quiet,
) -> tuple[onnx.ModelProto, ResizeReport]:
    """Rewrite the input resolution, judge the result against the source, write it when accepted.

    Args:
        min_agreement: the older form of a budget: top-1 agreement (or map IoU) as a fraction.
        slim: normalize first (off by default: the resolution analysis reads the exporter's
            shape arithmetic, which folding may already have turned into constants).

    Raises:
        UnsupportedModelError: the analysis refuses (naming the node).
        VerificationError: beyond the budget and not ``force`` (nothing written).
    """
    from onnxsqueeze import io as sio
    from onnxsqueeze import runtime, shapes
    from onnxsqueeze.passes.resolution import (
        ResolutionPassResult,
        RewriteInputResolutionPass,
        compare_outputs,
        rewrite_resolution,
    )
    from onnxsqueeze.pipeline import run_passes
    from onnxsqueeze.verify import output_metrics

    src = base.load(model)
    if output is not None:
        sio.refuse_overwrite(output, [p for p in (src.path, *protect) if p is not None])
    given = dict(input_shapes or {})
    if input_name is None and len(given) == 1:
        input_name = next(iter(given))  # --input-shape names the image input
    source_model = src.model
    norm = None
    if slim:
        source_model, norm = base.normalize(src.model, source_sha256=src.sha256, say=say)
    say("rewriting the input resolution")
    step = RewriteInputResolutionPass(
        resolution=resolution, scale=scale, input_name=input_name, keep_interface=keep_interface, mode=mode
    )
    m = ir.serde.deserialize_model(base._copy(source_model))
    result = run_passes(m, [step], source_sha256=src.sha256)
    assert isinstance(result, ResolutionPassResult)
    candidate = ir.serde.serialize_model(m)
    info = result.info
    report = ResizeReport(
        model=str(src.path or "<model>"),
        output=None if output is None else str(output),
        normalization=norm,
        rewrite=info.to_dict(),
        modified=result.modified,
    )
    if not result.modified:
        report.notes.append("the model is already at this size; written unchanged")
    # MACs at batch 1: the source at its size, the candidate at the size it computes at
    try:
        shapes0 = base.resolve_shapes(src.model, given, data)
        report.input_shapes = {k: list(v) for k, v in shapes0.items()}
        static = {
            vi.name
            for vi in shapes.graph_inputs(candidate)
            if all(isinstance(d, int) for d in shapes.declared_shape(vi)[1:])
        }
        shapes1 = base.resolve_shapes(candidate, {k: v for k, v in given.items() if k not in static}, data)
        base_macs, cand_macs = _macs(src.model, shapes0), _macs(candidate, shapes1)
        report.macs = {"original": base_macs, "candidate": cand_macs, "ratio": cand_macs / base_macs}
    except SqueezeError as e:  # a dynamic H/W with no size to count at
        report.notes.append(f"MACs not computed: {e}")
    except Exception as e:  # shape inference gave up at the new size: MACs are a nicety
        report.notes.append(f"MACs not computed: {str(e)[:160]}")
    evaluated = candidate
    if not keep_interface and result.modified:
        evaluated, _, _ = rewrite_resolution(
            source_model,
            resolution=resolution,
            scale=scale,
            input_name=input_name,
            keep_interface=True,
            mode=mode,
        )
    judgement = None
    if result.modified:
        say("comparing with the source")
        try:
            if data is not None:
                feeds = shapes.select_inputs(src.model, data)
                label = data_label or "data"
            else:
                resolved = base.resolve_shapes(src.model, given, None)
                feeds = base.sample_feeds(src.model, resolved, samples=8)
                label = "8 random inputs (seed 0)"
            ref = runtime.run_batched(runtime.session(src.model), feeds)
            cand = runtime.run_batched(runtime.session(evaluated), feeds)
        except SqueezeError as e:  # a dynamic H/W without --data or --input-shape
            report.notes.append(f"agreement not measured: {e}")
        else:
            labels = np.asarray(data["labels"]) if data is not None and "labels" in data else None
            first = next(iter(ref))
            agreement: dict[str, Any] = dict(compare_outputs(ref[first], cand[first], labels=labels))
            om = output_metrics(first, ref[first], cand[first])
            agreement.update(cosine=om.cosine, max_abs=om.max_abs, nonfinite=om.nonfinite)
            if labels is not None:
                agreement["original_accuracy"] = compare_outputs(ref[first], ref[first], labels=labels)[
                    "accuracy"
                ]
            agreement.update(output=first, samples=len(next(iter(feeds.values()))), source=label)
            report.agreement = agreement
            acc = acceptance
            if min_agreement is not None and not acceptance.gates:
                kind = "agreement" if agreement.get("top1_agreement") is not None else "iou"
                if agreement.get("top1_agreement") is None and agreement.get("iou") is None:
                    kind = "cosine"
                acc = dataclasses.replace(acceptance, metric=kind, max_drop=100.0 * (1.0 - min_agreement))
            judgement = base.judge(
                ref,
                cand,
                acc,
                labels=labels,
                samples=base.count(feeds),
                source=label,
                random_inputs=data is None,
            )
            if acc is not acceptance and not judgement.passed and not judgement.nonfinite:
                judgement = dataclasses.replace(
                    judgement,
                    reason=f"{judgement.metric} {judgement.value / 100:.4f} with the original is below "
                    f"--min-agreement {min_agreement:g}",
                )
            report.judgement = judgement
            report.notes.extend(judgement.warnings)
    report.passed = judgement is None or judgement.passed
    if not report.passed and not force:
        assert judgement is not None
        raise VerificationError(f"{judgement.reason}; nothing written (use --force to write anyway)")
    if not report.passed:
        report.notes.append("beyond the budget; written anyway (--force)")
    if output is not None:
        path, manifest = base.write(m, output, source=src, verify_report=report.agreement, protect=protect)
        report.written, report.output, report.manifest = True, str(path), str(manifest)
    return candidate, report
