"""The ONNX Runtime (``.ort``) format, for onnxruntime's mobile and minimal builds.

The conversion is onnxruntime's own: the converter behind
``python -m onnxruntime.tools.convert_onnx_models_to_ort`` (fixed optimization style), which loads
the model in an InferenceSession at the chosen graph optimization level and serializes the
optimized graph as a flatbuffer. As that tool does, the x86-only NCHWc layout transformer is
excluded at the ``layout`` and ``all`` levels so the file runs on ARM too.

The written ``.ort`` is then loaded in onnxruntime and its outputs compared to the ONNX model's
(graph optimizations disabled) on the same inputs; a file whose outputs differ beyond the
tolerance is not written unless forced. Optimizations such as fusions reorder float arithmetic:
ResNet-50's logits (magnitude ~800) move by 4e-4 at ``all``, 5e-7 of their scale, so the default
check is relative, ``max_rel <= 1e-3`` (``max_rel`` as :mod:`onnxsqueeze.verify` defines it,
floored at 1e-3 of each output's scale); an absolute ``tolerance`` replaces it when given.

The manifest goes into the sidecar ``<file>.manifest.json`` with the file's sha256 and the output
check (``file.verification``); the ``.ort`` file's metadata (the format keeps ``metadata_props``)
carries the short stamp (origin sha256, tool version) of :func:`onnxsqueeze.manifest.deployable`.
"""

# NOTE: onnxruntime is imported inside functions.

from __future__ import annotations

import contextlib
import dataclasses
import io as _io
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxsqueeze import io as sio
from onnxsqueeze import manifest as mf
from onnxsqueeze import runtime, shapes
from onnxsqueeze.errors import ConversionError, InputError, ModelLoadError, VerificationError, one_line
from onnxsqueeze.verify import VerifyReport, compare, prepare_feeds, run

LEVELS = ("disable", "basic", "extended", "layout", "all")
DEFAULT_RTOL = 1e-3


@dataclasses.dataclass(frozen=True)
class OrtExport:
    """What :func:`export_ort` wrote."""

    path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    report: VerifyReport
    passed: bool
    criterion: str
    onnx_bytes: int
    ort_bytes: int
    optimization_level: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "manifest_path": str(self.manifest_path),
            "onnx_bytes": self.onnx_bytes,
            "ort_bytes": self.ort_bytes,
            "optimization_level": self.optimization_level,
            "verification": self.report.to_dict() | {"criterion": self.criterion, "passed": self.passed},
        }


def check_passes(report: VerifyReport, tolerance: float | None) -> tuple[bool, str]:
    """Whether the ``.ort`` outputs agree with the ONNX model's, and the criterion applied."""
    finite = not any(o.nonfinite for o in report.outputs)
    if tolerance is not None:
        return finite and report.max_abs <= tolerance, f"max abs <= {tolerance:g}"
    worst = max((o.max_rel for o in report.outputs), default=0.0)
    return finite and worst <= DEFAULT_RTOL, f"max rel <= {DEFAULT_RTOL:g}"


def _convert(onnx_path: Path, out_dir: Path, level: str) -> Path:
    """Run onnxruntime's converter on one file; returns the ``.ort`` it wrote."""
    try:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle
        from onnxruntime.tools.convert_onnx_models_to_ort import _convert as ort_convert
    except ImportError as e:
        raise ConversionError(f"this onnxruntime has no ORT format converter: {one_line(e)}") from e
    chatter = _io.StringIO()  # the tool prints progress on stdout, which is ours
    try:
        with contextlib.redirect_stdout(chatter):
            converted = ort_convert(
                model_path_or_dir=onnx_path,
                output_dir=out_dir,
                optimization_level_str=level,
                optimization_style=OptimizationStyle.Fixed,
                custom_op_library=None,
                create_optimized_onnx_model=False,
                allow_conversion_failures=False,
                target_platform=None,
                # what convert_onnx_models_to_ort sets when no target platform is given
                session_options_config_entries={"session.qdqisint8allowed": "0"},
            )
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ConversionError(f"onnxruntime cannot convert it to ORT format: {one_line(e)}") from e
    if len(converted) != 1 or not Path(converted[0]).is_file():
        raise ConversionError(f"onnxruntime's converter wrote no .ort file ({chatter.getvalue().strip()})")
    return Path(converted[0])


def ort_session(path: str | os.PathLike[str]) -> Any:
    """An InferenceSession on an ``.ort`` file (CPU), as a mobile app would create it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.load_model_format", "ORT")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelLoadError(f"{path}: onnxruntime cannot load the ORT format file: {one_line(e)}") from e


def export_ort(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    optimization_level: str = "all",
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    tolerance: float | None = None,
    force: bool = False,
    bench_summary: Mapping[str, Any] | None = None,
) -> OrtExport:
    """Convert an ONNX model to the ORT format, check the file's outputs, write it with its manifest.

    Args:
        model_path: the ONNX model.
        out_path: the ``.ort`` file to write (never the input).
        optimization_level: ``disable``, ``basic``, ``extended``, ``layout`` or ``all`` (onnxruntime's
            graph optimization levels; the converter's default is ``all``).
        data: real inputs for the check (first axis = samples); seeded random inputs otherwise.
        data_label: how the manifest names ``data``.
        input_shapes: shapes for dynamic dims of random inputs.
        seed: seed of random inputs.
        tolerance: max absolute output difference allowed between the ``.ort`` and the ONNX model;
            None: ``max_rel <= DEFAULT_RTOL`` (see the module docstring).
        force: write the file even if it fails the check.
        bench_summary: a benchmark summary to record in the manifest.

    Raises:
        InputError: bad level or output path. ConversionError: onnxruntime cannot convert it.
        VerificationError: the ``.ort`` outputs differ beyond ``tolerance`` (and not ``force``).
    """
    if optimization_level not in LEVELS:
        raise InputError(f"--optimization-level '{optimization_level}': expected one of {', '.join(LEVELS)}")
    model_path, out_path = Path(model_path), Path(out_path)
    if out_path.suffix.lower() != ".ort":
        raise InputError(
            f"{out_path}: the ORT format file must end in .ort (onnxruntime picks the format by it)"
        )
    sio.refuse_overwrite(out_path, [model_path])
    model = sio.load(model_path)
    manifest = mf.build(
        model,
        source_path=model_path,
        bench_summary=bench_summary,
        export={"kind": "ort", "optimization_level": optimization_level, "optimization_style": "fixed"},
        output_format="ort",
    )
    with tempfile.TemporaryDirectory(prefix="onnxsqueeze-ort-") as tmp:
        staged = Path(tmp) / "model.onnx"
        sio.save(mf.deployable(model, origin=manifest["origin_sha256"]), staged)
        ort_file = _convert(staged, Path(tmp) / "out", optimization_level)
        feeds = prepare_feeds(model, data=data, input_shapes=input_shapes, seed=seed)
        feeds = {
            vi.name: np.asarray(feeds[vi.name]).astype(shapes.input_dtype(vi), copy=False)
            for vi in shapes.graph_inputs(model)
        }
        reference = run(model, feeds)
        candidate = runtime.run_batched(ort_session(ort_file), feeds)
        report = compare(
            reference,
            candidate,
            feeds=feeds,
            source=data_label if data is not None else f"random (seed {seed})",
        )
        passed, criterion = check_passes(report, tolerance)
        if not passed and not force:
            raise VerificationError(
                f"{out_path}: the ORT format model's outputs differ from the ONNX model's (max abs "
                f"{report.max_abs:.3g}, max rel {max(o.max_rel for o in report.outputs):.3g}; check: "
                f"{criterion}); not written (use --force to keep it)"
            )
        payload = ort_file.read_bytes()
    mf.sidecar_path(out_path).unlink(missing_ok=True)
    sio.write_bytes_atomic(out_path, payload, protect=[model_path])
    check = report.to_dict() | {"criterion": criterion, "passed": passed}
    manifest_path, full = mf.write(out_path, manifest, protect=[model_path], verification=check)
    return OrtExport(
        out_path,
        manifest_path,
        full,
        report,
        passed,
        criterion,
        model_path.stat().st_size,
        len(payload),
        optimization_level,
    )
