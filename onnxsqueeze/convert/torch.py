"""PyTorch to ONNX: export with ``torch.onnx`` (dynamo first, TorchScript as the fallback), verify.

Sources: an ``nn.Module`` (API), a TorchScript archive (``torch.jit.save``), an ExportedProgram
(``.pt2``, ``torch.export.save``), a state_dict plus a factory that builds the module.

Export: ``torch.onnx.export(dynamo=True)`` with the batch axis marked ``Dim.DYNAMIC`` (a named
``Dim`` fails when the exporter specializes a batch of 1; ``DYNAMIC`` never fails, and a batch it
had to keep static is reported). When the dynamo exporter fails, or cannot give the requested
opset (torch 2.14 implements opset >= 18 only and silently keeps 18 when its down-conversion
fails), the TorchScript exporter (``dynamo=False``, ``dynamic_axes``) is used and the result
says so.

Safety: weights are read with ``torch.load(weights_only=True)``, which never runs code from the
file. A file that pickles a whole module needs full unpickling, which can run arbitrary code; it
is refused unless the caller passes ``trust_pickle=True``.

# NOTE: torch is imported inside functions; importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze.convert.result import BATCH, ConversionResult, finish
from onnxsqueeze.errors import ConversionError, InputError

DYNAMO = "torch.onnx (dynamo)"
TORCHSCRIPT = "torch.onnx (torchscript)"
MAX_VERIFY_SAMPLES = 256

TORCH_HINT = "PyTorch is not installed: pip install 'onnxsqueeze[torch]'"


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ConversionError(TORCH_HINT) from e
    return torch


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(e: BaseException) -> str:
    """The first informative line of the innermost cause (exporters wrap the real error)."""
    while e.__cause__ is not None:
        e = e.__cause__
    for line in _ANSI.sub("", str(e)).splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ")):
            prefix = "" if isinstance(e, ConversionError) else f"{type(e).__name__}: "
            return f"{prefix}{line[:300]}"
    return type(e).__name__


def _kwargs_adapter(module: Any, keys: Sequence[str]) -> Any:
    """Wrap a module called with keyword tensors so that exporters see positional inputs."""
    base: Any = _torch().nn.Module

    class KwargsAdapter(base):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(keys, args, strict=True)))

    return KwargsAdapter().eval()


def _requested_axes(
    names: Sequence[str],
    args: Sequence[Any],
    dynamic_batch: bool,
    extra: Mapping[str, Mapping[int, str]] | None,
) -> dict[str, dict[int, str]]:
    """Dynamic axes by input name: axis 0 (``batch``) of every input when ``dynamic_batch``, plus
    ``extra``; validated against the example inputs."""
    ranks = {n: t.ndim for n, t in zip(names, args, strict=True)}
    axes: dict[str, dict[int, str]] = {
        n: ({0: BATCH} if dynamic_batch and r else {}) for n, r in ranks.items()
    }
    for name, more in (extra or {}).items():
        if name not in ranks:
            raise InputError(f"dynamic axis for '{name}', but the inputs are {list(names)}")
        for axis, symbol in more.items():
            if not 0 <= axis < ranks[name]:
                raise InputError(f"dynamic axis {axis} of '{name}': the input has rank {ranks[name]}")
            axes[name][axis] = symbol
    return axes


def _name_axes(
    proto: onnx.ModelProto, names: Sequence[str], axes: Mapping[str, Mapping[int, str]], notes: list[str]
) -> dict[str, list[int]]:
    """Name the exporter's symbols (``s0``, ``s31``...) as requested; return the axes that really
    are dynamic, noting the ones the exporter kept static."""
    from onnxsqueeze.convert.result import rename_dim

    by_name = {vi.name: vi for vi in proto.graph.input}
    dynamic: dict[str, list[int]] = {}
    static: list[str] = []
    for name in names:
        vi = by_name.get(name)
        for axis, symbol in sorted(axes.get(name, {}).items()):
            dim = vi.type.tensor_type.shape.dim[axis] if vi is not None else None
            if dim is None or not dim.HasField("dim_param"):
                static.append(f"{name}[{axis}]")
                continue
            if dim.dim_param != symbol:
                rename_dim(proto, dim.dim_param, symbol)
            dynamic.setdefault(name, []).append(axis)
    if static:
        notes.append(f"the exporter kept these axes static: {', '.join(static)}")
    return dynamic


class _SkipDynamo(Exception):
    """Internal: go straight to the TorchScript exporter."""


def _default_input_names(module: Any, count: int) -> list[str]:
    try:
        params = [
            p.name
            for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError, AttributeError):
        params = []
    if len(params) >= count:
        return params[:count]
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def _leaves(output: Any) -> list[Any]:
    torch = _torch()
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]


@contextlib.contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    was = getattr(module, "training", False)
    if hasattr(module, "eval"):
        module.eval()
    try:
        yield
    finally:
        if was and hasattr(module, "train"):
            module.train(was)


def _normalize_inputs(example_inputs: Any) -> tuple[tuple[Any, ...], list[str] | None]:
    """(positional tensors, keyword names or None) from a tensor, a sequence or a dict."""
    torch = _torch()
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), None
    if isinstance(example_inputs, Mapping):
        keys = list(example_inputs)
        return tuple(example_inputs[k] for k in keys), keys
    if isinstance(example_inputs, Sequence):
        return tuple(example_inputs), None
    raise InputError(
        "example_inputs must be a tensor, a tuple of tensors or a dict of tensors, "
        f"not {type(example_inputs).__name__}"
    )


def _verify_inputs(
    args: Sequence[Any],
    names: Sequence[str],
    *,
    vary: Mapping[str, Sequence[int]],
    data: Mapping[str, np.ndarray] | None,
    seed: int,
) -> dict[str, np.ndarray]:
    """Inputs to verify on: ``data`` by name, else seeded normal floats and the example's integers.

    Each dynamic axis in ``vary`` gets one more element than the example had, so the check
    proves the axis really is dynamic. Integer and boolean inputs (token ids, masks) keep the
    example's values, tiled along the varied axes: random ids may be out of a vocabulary, the
    example's are valid by construction.
    """
    if data is not None:
        missing = [n for n in names if n not in data]
        if missing:
            raise InputError(f"the data has no array for input(s) {missing}; it has {sorted(data)}")
        return {n: np.asarray(data[n])[:MAX_VERIFY_SAMPLES] for n in names}
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, t in zip(names, args, strict=True):
        ex = t.detach().cpu().numpy()
        shape = list(ex.shape)
        for axis in vary.get(name, ()):
            shape[axis] += 1
        if np.issubdtype(ex.dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(ex.dtype)
            continue
        value = ex
        for axis in vary.get(name, ()):
            value = np.take(value, np.arange(shape[axis]) % max(ex.shape[axis], 1), axis=axis)
        feeds[name] = value
    return feeds


def _run_torch(runner: Any, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    torch = _torch()
    tensors = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names]
    with torch.no_grad():
        return [t.detach().cpu().numpy() for t in _leaves(runner(*tensors))]


def _opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _export_dynamo(
    model: Any,
    args: tuple[Any, ...],
    names: list[str],
    outputs: list[str],
    *,
    axes: Mapping[str, Mapping[int, str]],
    opset: int | None,
) -> onnx.ModelProto:
    torch = _torch()
    kwargs: dict[str, Any] = {}
    if axes and not isinstance(model, torch.export.ExportedProgram):
        # Dim.DYNAMIC, not a named Dim: a named one fails when the exporter specializes a size-1
        # example axis; DYNAMIC never fails, and an axis kept static is detected afterwards
        specs = tuple({a: torch.export.Dim.DYNAMIC for a in axes[n]} if axes.get(n) else None for n in names)
        # a ``forward(*args)`` (the keyword adapter) takes all specs as its one parameter
        kwargs["dynamic_shapes"] = (specs,) if _takes_varargs(model) else specs
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            args,
            None,
            dynamo=True,
            input_names=names,
            output_names=outputs,
            opset_version=opset,
            verbose=False,
            optimize=True,
            **kwargs,
        )
    proto = program.model_proto
    got = _opset_of(proto)
    if opset is not None and got != opset:
        raise ConversionError(f"it cannot produce opset {opset} (it gave opset {got})")
    return proto


def _export_torchscript(
    model: Any,
    args: tuple[Any, ...],
    names: list[str],
    outputs: list[str],
    *,
    axes: Mapping[str, Mapping[int, str]],
    opset: int | None,
) -> onnx.ModelProto:
    torch = _torch()
    buf = io.BytesIO()
    dynamic = {n: dict(a) for n, a in axes.items() if a}
    if any(0 in a for a in dynamic.values()):
        dynamic.update({n: {0: BATCH} for n in outputs})
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            buf,
            dynamo=False,
            input_names=names,
            output_names=outputs,
            opset_version=opset,
            dynamic_axes=dynamic or None,
        )
    return onnx.load_from_string(buf.getvalue())


def _takes_varargs(model: Any) -> bool:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return False
    return any(p.kind == p.VAR_POSITIONAL for p in params)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' progress prints and logged tracebacks (a failed opset down-conversion
    logs one and carries on) out of the user's terminal; failures still raise."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def from_torch(
    module: Any,
    example_inputs: Any = None,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    opset: int | None = None,
    tolerance: float = 1e-4,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    data_label: str = "data",
    seed: int = 0,
    strict: bool = True,
    source: str | None = None,
    source_sha256: str | None = None,
) -> ConversionResult:
    """Export a PyTorch model to ONNX, clean it and verify it against the module in onnxruntime.

    Args:
        module: an ``nn.Module`` (put in eval mode for the export, then restored), a TorchScript
            module, or a ``torch.export.ExportedProgram``.
        example_inputs: a tensor, a tuple of tensors (positional) or a dict of tensors (keyword
            arguments, whose keys become the input names). Optional for an ExportedProgram.
        input_names: ONNX input names (default: the dict keys or ``forward``'s parameter names).
        output_names: ONNX output names (default ``output`` or ``output_0``, ``output_1``...).
        dynamic_batch: make axis 0 of every input and output dynamic (symbol ``batch``).
        opset: the ONNX opset (default: the exporter's).
        tolerance: the max absolute error allowed between torch and onnxruntime outputs.
        dynamic_axes: more dynamic axes, by input name: ``{"input_ids": {1: "sequence"}}``
            (the symbol names the axis in the ONNX model). Verified one longer than the example.
        data: verification inputs by input name (first axis = samples; at most 256 used);
            default: seeded random floats one larger than the example along every dynamic axis
            (so the dynamic axes are exercised), and the example's integer inputs.
        seed: seed of the random verification inputs.
        strict: raise VerificationError beyond ``tolerance``; with False the caller checks
            ``result.passed``.
        source: how the result names the source (default: the module's class name).
        source_sha256: recorded in the model's provenance.

    Returns:
        A ConversionResult: ``.model``, ``.report`` (``.max_abs``), ``.exporter``, ``.warnings``.

    Raises:
        ConversionError: both exporters failed (the message names the failing op when the
            exporter does), or PyTorch is missing.
        VerificationError: (strict) the ONNX outputs differ beyond ``tolerance``.
        InputError: malformed example inputs or data.
    """
    torch = _torch()
    is_ep = isinstance(module, torch.export.ExportedProgram)
    if example_inputs is None:
        if not is_ep or not module.example_inputs:
            raise InputError("example_inputs are required (a tensor, a tuple or a dict of tensors)")
        ep_args, ep_kwargs = module.example_inputs
        example_inputs = dict(ep_kwargs) if ep_kwargs and not ep_args else ep_args
    args, keys = _normalize_inputs(example_inputs)
    if not args or not all(isinstance(t, torch.Tensor) for t in args):
        raise InputError("example_inputs must hold only tensors")
    label = source or type(module).__name__
    runner = module.module() if is_ep else module
    exported: Any = module
    if keys is not None:
        if is_ep:
            raise InputError("an ExportedProgram takes its example inputs positionally")
        runner = exported = _kwargs_adapter(module, keys)
    names = list(input_names) if input_names else (keys or _default_input_names(module, len(args)))
    if len(names) != len(args):
        raise InputError(f"{len(names)} input names {names} for {len(args)} example inputs")

    notes: list[str] = []
    with _eval_mode(module):
        try:
            with torch.no_grad():
                n_out = len(_leaves(runner(*args)))
        except Exception as e:
            raise ConversionError(f"{label}: the model fails on the example inputs: {_first_line(e)}") from e
        if n_out == 0:
            raise ConversionError(f"{label}: the model returns no tensor")
        outputs = (
            list(output_names)
            if output_names
            else (["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)])
        )
        if len(outputs) != n_out:
            raise InputError(f"{len(outputs)} output names {outputs} for {n_out} outputs of {label}")

        axes = _requested_axes(names, args, dynamic_batch, dynamic_axes)
        exporter, dynamo_error = DYNAMO, None
        # torch.export cannot take a ScriptModule: the TorchScript exporter is the one for it
        scripted = isinstance(module, torch.jit.ScriptModule)
        try:
            if scripted:
                raise _SkipDynamo
            proto = _export_dynamo(exported, args, names, outputs, axes=axes, opset=opset)
        except Exception as e:
            dynamo_error = None if scripted else _first_line(e)
            try:
                # ``runner`` is the module itself, the keyword adapter, or the program's module
                proto = _export_torchscript(runner, args, names, outputs, axes=axes, opset=opset)
            except Exception as e2:
                tried = f"dynamo exporter: {dynamo_error}; " if dynamo_error else ""
                raise ConversionError(
                    f"{label}: cannot export to ONNX. {tried}TorchScript exporter: {_first_line(e2)}"
                ) from e2
            exporter = TORCHSCRIPT
        if dynamo_error is not None:
            notes.append(
                f"the dynamo exporter failed ({dynamo_error}); used the TorchScript exporter instead"
            )
            warnings.warn(notes[-1], stacklevel=3)

        vary = _name_axes(proto, names, axes, notes)
        feeds = _verify_inputs(args, names, vary=vary, data=data, seed=seed)
        reference = _run_torch(runner, feeds, names)
    return finish(
        proto,
        feeds=feeds,
        reference=reference,
        exporter=exporter,
        source=label,
        tolerance=tolerance,
        warnings=notes,
        data_label=data_label if data is not None else f"random (seed {seed})",
        strict=strict,
        source_sha256=source_sha256,
    )


# ---------------------------------------------------------------------------------------------
# Files: what a path holds, loaded without running code from it.

PICKLE_REFUSED = (
    "{path}: holds a pickled Python object (a whole module?); unpickling it can run arbitrary code "
    "hidden in the file, so it is refused. Safe alternatives: save the weights "
    "(torch.save(model.state_dict(), 'w.pt')) and convert with --factory package.module:Class "
    "--weights w.pt, or save the model with torch.export.save (.pt2) or torch.jit.save. "
    "If you trust this file, pass --trust-pickle."
)


def file_kind(path: Path) -> str:
    """``torchscript``, ``exported-program`` or ``pickle`` (torch.save), by the archive's contents."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return "pickle"  # torch.save's legacy (non-zip) format
    if any(m.endswith(("archive_format", "/models/model.json")) for m in members):
        return "exported-program"
    if any("/code/" in m or m.endswith("/constants.pkl") for m in members):
        return "torchscript"
    return "pickle"


def load_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A state_dict from a file, with ``torch.load(weights_only=True)`` (never runs file code).

    Accepts a plain state_dict or a checkpoint dict holding one under ``state_dict``,
    ``model_state_dict`` or ``model``.

    Raises:
        InputError: missing file, a pickled object (refused), or no state_dict inside.
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file")
    obj = _safe_load(path)
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return dict(inner)
    raise InputError(f"{path}: not a state_dict (found {type(obj).__name__}); expected name -> tensor")


def _looks_pickled(path: Path) -> bool:
    """Whether a file is what torch.save writes: a zip archive, or a pickle (protocol 2 or later)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return zipfile.is_zipfile(path) or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


@contextlib.contextmanager
def _logged_errors(name: str) -> Iterator[list[str]]:
    """Collect (and keep off the terminal) the exceptions logger ``name`` logs, first lines."""
    found: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                found.append(_first_line(record.exc_info[1]))

    logger = logging.getLogger(name)
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    logger.handlers = [Keep()]  # torch attaches its own handler: replaced while loading
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield found
    finally:
        logger.handlers = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _safe_load(path: Path) -> Any:
    torch = _torch()
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not _looks_pickled(path):
            raise InputError(f"{path}: not a PyTorch file (neither a zip archive nor a pickle)") from e
        raise InputError(PICKLE_REFUSED.format(path=path)) from e
    except Exception as e:
        raise InputError(f"{path}: not a readable PyTorch file ({_first_line(e)})") from e


def build_from_factory(spec: str, weights: str | os.PathLike[str] | None = None) -> Any:
    """Import ``package.module:callable``, call it to build the module, load ``weights`` strictly.

    Raises:
        InputError: a malformed spec, an import failure, a non-module result, or weights that do
            not fit the module (the message lists missing and unexpected keys).
    """
    torch = _torch()
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise InputError(
            f"--factory '{spec}': expected package.module:callable (e.g. torchvision.models:resnet18)"
        )
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise InputError(f"--factory '{spec}': cannot import '{mod_name}': {_first_line(e)}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"--factory '{spec}': '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"--factory '{spec}': '{attr}' is not callable")
    try:
        module = obj()
    except Exception as e:
        raise ConversionError(f"--factory '{spec}': calling it failed: {_first_line(e)}") from e
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--factory '{spec}': returned {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = load_weights(weights)
        try:
            result = module.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches raise even when not strict
            detail = " ".join(_ANSI.sub("", str(e)).split())
            raise InputError(
                f"{weights}: the weights do not fit {type(module).__name__}: {detail[:300]}"
            ) from e
        if result.missing_keys or result.unexpected_keys:
            raise InputError(
                f"{weights}: the weights do not fit {type(module).__name__}: "
                f"missing {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
            )
    return module.eval()


def load_source(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> tuple[Any, str]:
    """Load a PyTorch model file: (module or ExportedProgram, kind).

    Raises:
        InputError: a state_dict without a factory, a pickled module without ``trust_pickle``,
            or an unreadable file.
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind = file_kind(path)
    try:
        with _quiet(), _logged_errors("torch.export") as logged:  # torch logs a bad archive's
            # traceback, then raises "see the warnings above": the logged error is the message
            if kind == "exported-program":
                return torch.export.load(str(path)), kind
            if kind == "torchscript":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
                    return torch.jit.load(str(path), map_location="cpu"), kind
    except Exception as e:
        why = logged[-1] if logged else _first_line(e)
        raise InputError(f"{path}: cannot load the {kind} archive: {why}") from e
    if not trust_pickle:
        obj = _safe_load(path)
        if isinstance(obj, Mapping):
            raise InputError(
                f"{path}: holds weights (a state_dict of {len(obj)} entries), not a model; "
                "give the code that builds it with --factory package.module:callable --weights FILE"
            )
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a model")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"{path}: cannot unpickle: {_first_line(e)}") from e
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj, "pickled module"


def example_from_shapes(shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """Float32 zero tensors of the given shapes, by input name (the CLI's ``--input-shape``)."""
    torch = _torch()
    return {name: torch.zeros(tuple(int(d) for d in dims)) for name, dims in shapes.items()}


def example_from_data(data: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The first sample of each array in ``data`` as tensors (dtype kept), by name."""
    torch = _torch()
    return {name: torch.from_numpy(np.ascontiguousarray(np.asarray(a)[:1])) for name, a in data.items()}


__all__ = [
    "ConversionResult",
    "build_from_factory",
    "example_from_data",
    "example_from_shapes",
    "file_kind",
    "from_torch",
    "load_source",
    "load_weights",
]
