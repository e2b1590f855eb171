"""Framework models to verified ONNX: PyTorch (``from_torch``) and Keras/TensorFlow (``from_keras``).

Every conversion is cleaned with the foundation's CleanupPass and verified against the framework's
own outputs on the same inputs; the result carries the evidence (:class:`ConversionResult`).
torch and tensorflow are imported only when a converter runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# NOTE: these modules import torch / tensorflow inside their functions only; importing them is cheap.
from onnxsqueeze.convert.keras import from_keras
from onnxsqueeze.convert.result import ConversionResult
from onnxsqueeze.convert.torch import from_torch
from onnxsqueeze.errors import InputError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".torchscript", ".ptl", ".bin", ".ckpt")


def parse_dynamic_axes(specs: Sequence[str] | None) -> dict[str, dict[int, str]]:
    """Parse ``NAME:AXIS`` or ``NAME:AXIS=SYMBOL`` (``input_ids:1=sequence``) into a dict."""
    axes: dict[str, dict[int, str]] = {}
    for spec in specs or ():
        name, sep, rest = spec.rpartition(":")
        axis_text, _, symbol = rest.partition("=")
        if not sep or not name or not axis_text.strip().isdigit():
            raise InputError(
                f"--dynamic-axis '{spec}': expected NAME:AXIS or NAME:AXIS=SYMBOL (e.g. input_ids:1=sequence)"
            )
        axis = int(axis_text)
        axes.setdefault(name, {})[axis] = symbol.strip() or f"{name}_{axis}"
    return axes


def source_kind(source: str | os.PathLike[str] | None, factory: str | None = None) -> str:
    """``torch`` or ``keras``: which converter a source needs (by factory, folder, suffix, content).

    Raises:
        InputError: the source is missing or of no known kind.
    """
    if source is None:
        if factory:
            return "torch"
        raise InputError("give a model file (or --factory package.module:callable with --weights)")
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix.lower() in KERAS_SUFFIXES:
        return "keras"
    if factory:
        return "torch"
    if path.suffix.lower() in TORCH_SUFFIXES:
        return "torch"
    import zipfile

    if zipfile.is_zipfile(path):  # torch.save, torch.jit.save and torch.export.save write zips
        return "torch"
    with open(path, "rb") as f:
        if f.read(8) == b"\x89HDF\r\n\x1a\n":
            return "keras"
    raise InputError(
        f"{path}: unknown model format; expected a PyTorch file ({', '.join(TORCH_SUFFIXES)}), "
        f"a Keras file ({', '.join(KERAS_SUFFIXES)}) or a SavedModel folder"
    )


def convert_file(
    source: str | os.PathLike[str] | None,
    *,
    factory: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    nchw: bool = False,
    tolerance: float = 1e-4,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    seed: int = 0,
    strict: bool = True,
) -> ConversionResult:
    """Convert a model file (or a factory plus weights) to verified ONNX: the ``convert`` command.

    PyTorch: a TorchScript archive, an ExportedProgram (``.pt2``), a state_dict with ``factory``
    (``package.module:callable``; the weights are ``weights`` or ``source``), or, only with
    ``trust_pickle``, a pickled module. Example inputs come from ``input_shapes`` (float32, in
    the given order) or the first sample of ``data``; an ExportedProgram carries its own.
    Keras/TensorFlow: ``.keras``, ``.h5``/``.hdf5``, SavedModel folders.

    Raises:
        InputError, ConversionError, VerificationError (strict): see the converters.
    """
    from onnxsqueeze import io as sio

    kind = source_kind(source, factory)
    digest = sio.sha256_file(source) if source is not None and Path(source).is_file() else None
    common: dict[str, Any] = {
        "opset": opset,
        "dynamic_batch": dynamic_batch,
        "tolerance": tolerance,
        "data": data,
        "data_label": data_label,
        "seed": seed,
        "strict": strict,
        "source_sha256": digest,
    }
    if kind == "keras":
        if factory or weights or trust_pickle:
            raise InputError("--factory, --weights and --trust-pickle apply to PyTorch models only")
        if dynamic_axes:
            raise InputError(
                "--dynamic-axis applies to PyTorch models; a Keras model keeps dynamic the dims its "
                "Input declares as None"
            )
        from onnxsqueeze.convert import keras as _k

        return _k.from_keras(source, input_shapes=input_shapes, nchw=nchw, **common)

    from onnxsqueeze.convert import torch as _t

    if nchw:
        raise InputError("--nchw applies to Keras/TensorFlow models (PyTorch models are NCHW already)")
    if factory:
        if source is not None and weights is not None:
            raise InputError("give the weights once: as SOURCE or with --weights")
        weights = weights if weights is not None else source
        module: Any = _t.build_from_factory(factory, weights)
        label = factory.rpartition(":")[2] + (f" + {Path(weights).name}" if weights else "")
        if weights is not None:
            common["source_sha256"] = sio.sha256_file(weights)
    else:
        if weights is not None:
            raise InputError("--weights needs --factory (the code that builds the module)")
        module, _ = _t.load_source(source, trust_pickle=trust_pickle)  # type: ignore[arg-type]
        label = str(source)
    if input_shapes:
        example: Any = _t.example_from_shapes(input_shapes)
    elif data is not None:
        example = _t.example_from_data(data)
    else:
        example = None
        import torch

        if not isinstance(module, torch.export.ExportedProgram):
            raise InputError(
                f"{label}: give the input shape(s) with --input-shape NAME:d0,d1,... "
                "(or real inputs with --data)"
            )
    names = list(example) if example is not None else None
    args = tuple(example.values()) if example is not None else None
    return _t.from_torch(module, args, input_names=names, source=label, dynamic_axes=dynamic_axes, **common)


__all__ = [
    "ConversionResult",
    "convert_file",
    "from_keras",
    "from_torch",
    "parse_dynamic_axes",
    "source_kind",
]
