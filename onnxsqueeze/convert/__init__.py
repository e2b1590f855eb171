"""Framework models to verified ONNX: PyTorch (``from_torch``) and Keras/TensorFlow (``from_keras``).

Every conversion is cleaned with the foundation's CleanupPass and verified against the framework's
own outputs on the same inputs; the result carries the evidence (:class:`ConversionResult`).
torch and tensorflow are imported only when a converter runs.
"""

from __future__ import annotations

from typing import Any

from onnxsqueeze.convert.result import ConversionResult


def from_torch(module: Any, example_inputs: Any = None, **kwargs: Any) -> ConversionResult:
    """Export a PyTorch module to verified ONNX; see :func:`onnxsqueeze.convert.torch.from_torch`."""
    from onnxsqueeze.convert import torch as _t

    return _t.from_torch(module, example_inputs, **kwargs)


__all__ = ["ConversionResult", "from_torch"]
