"""PyTorch student -> verified ONNX. The one place distillation touches a converter.

NOTE: this is a stand-in for ``onnxsqueeze.convert.from_torch`` (being built in parallel). Both
return the model and a :class:`~onnxsqueeze.verify.VerifyReport`, so the swap is this body::

    result = from_torch(
        module, tensors, input_names=input_names, output_names=output_names, dynamic_batch=True,
        opset=OPSET, tolerance=math.inf if tolerance is None else tolerance,
        data=dict(zip(input_names, example_inputs)), strict=tolerance is not None,
    )
    return result.model, result.report
"""

from __future__ import annotations

import io as _io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import runtime
from onnxsqueeze.errors import ConversionError, VerificationError
from onnxsqueeze.verify import VerifyReport, compare

OPSET = 17


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
        module: the trained student (put in eval mode).
        example_inputs: real inputs, first axis = samples; they trace the export and are the
            verification data.
        input_names, output_names: the ONNX interface (the teacher's names).
        tolerance: max absolute difference allowed between ONNX and PyTorch outputs (None: only
            report it).

    Raises:
        ConversionError: torch.onnx cannot export the module.
        VerificationError: onnxruntime's outputs differ from PyTorch's beyond ``tolerance``.
    """
    import torch

    module.eval()
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in example_inputs)
    axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    buf = _io.BytesIO()
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of dynamo; it is small, fast and
            # exact for these students (and from_torch will choose for us once it lands)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                tensors,
                buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        model = onnx.load_from_string(buf.getvalue())
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"student {type(module).__name__}: torch.onnx.export failed: {first}") from e
    with torch.no_grad():
        expected = module(*tensors)
    expected_list = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    sess = runtime.session(model)
    got = runtime.run_batched(sess, dict(zip(input_names, example_inputs, strict=True)))
    report = compare(
        {n: t.numpy() for n, t in zip(output_names, expected_list, strict=True)},
        got,
        samples=len(example_inputs[0]),
        inputs={n: tuple(x.shape) for n, x in zip(input_names, example_inputs, strict=True)},
        source="PyTorch vs onnxruntime",
    )
    if tolerance is not None and not report.within(tolerance):
        raise VerificationError(
            f"the exported student differs from PyTorch: max abs error {report.max_abs:.3g} "
            f"exceeds tolerance {tolerance:g}"
        )
    return model, report
