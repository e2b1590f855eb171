"""PyTorch student -> verified ONNX, through :func:`onnxsqueeze.convert.from_torch`.

The student is exported like any PyTorch model the ``convert`` command takes: the dynamo exporter
first (TorchScript as the fallback, said in a warning), a dynamic batch axis, CleanupPass, and a
check in onnxruntime against PyTorch on the real samples given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from onnxsqueeze.verify import VerifyReport

# Samples traced by the exporter; the verification runs on all the samples given.
TRACE_SAMPLES = 2


def export_student(
    module: Any,
    example_inputs: Sequence[np.ndarray],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    tolerance: float | None = 1e-4,
) -> tuple[onnx.ModelProto, VerifyReport]:
    """Export ``module`` with a dynamic batch axis and check it in onnxruntime against PyTorch.

    Args:
        module: the trained student (exported in eval mode, its mode restored afterwards).
        example_inputs: real inputs, first axis = samples; their first samples trace the export
            and all of them (up to 256) are the verification data.
        input_names, output_names: the ONNX interface (the teacher's names).
        tolerance: max absolute difference allowed between ONNX and PyTorch outputs (None: only
            report it).

    Raises:
        ConversionError: neither torch.onnx exporter can export the module.
        VerificationError: onnxruntime's outputs differ from PyTorch's beyond ``tolerance``.
    """
    import torch

    from onnxsqueeze.convert import from_torch

    arrays = [np.ascontiguousarray(x) for x in example_inputs]
    trace = tuple(torch.from_numpy(x[:TRACE_SAMPLES].copy()) for x in arrays)
    result = from_torch(
        module,
        trace,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_batch=True,
        tolerance=math.inf if tolerance is None else tolerance,
        data=dict(zip(input_names, arrays, strict=True)),
        data_label="PyTorch vs onnxruntime",
        strict=tolerance is not None,
        source=f"student {type(module).__name__}",
    )
    return result.model, result.report


def stamp_provenance(model: onnx.ModelProto, kind: str, info: dict[str, str]) -> None:
    """Mark a trained model as onnxsqueeze's: producer, and ``onnxsqueeze.<kind>.<key>`` metadata."""
    from onnxsqueeze import __version__

    model.producer_name, model.producer_version = "onnxsqueeze", __version__
    for key, value in info.items():
        model.metadata_props.add(key=f"onnxsqueeze.{kind}.{key}", value=value)
