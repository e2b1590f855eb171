"""Deployment artifacts: a Triton model repository (:mod:`.triton`) and the ONNX Runtime format (:mod:`.ort`).

Each writes its artifact with its provenance manifest (:mod:`onnxsqueeze.manifest`) beside it.
"""

# NOTE: submodules are imported by name (``from onnxsqueeze.export import triton``) so that importing
# this package loads neither tritonclient nor onnxruntime.
