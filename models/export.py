"""The recipes' one exporter: a torch module to a checked, byte-deterministic ONNX file.

The sample models are exported with torch.onnx's TorchScript exporter at opset 17 (small, fast,
and how the cached models in ``.cache/models`` were made), then re-saved through
``onnxsqueeze.io`` (checked, atomic, deterministic bytes). The tool itself converts with
``onnxsqueeze.convert.from_torch``; the recipes keep this fixed path so that re-running a recipe
gives the same model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

OPSET = 17


def export_torchscript(
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> Path:
    """Export ``module`` traced on ``example`` to ``path`` (a temp file beside it, then io.save)."""
    import torch

    from onnxsqueeze import io as sio

    tmp = path.with_name(f".{path.name}.export")
    torch.onnx.export(
        module,
        example,
        str(tmp),
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
        opset_version=OPSET,
        dynamo=False,
    )
    try:
        sio.save(sio.load(tmp), path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
