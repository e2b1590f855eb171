"""A Triton Inference Server model repository for an ONNX model (backend ``onnxruntime``).

Layout written::

    REPO/NAME/config.pbtxt
    REPO/NAME/VERSION/model.onnx
    REPO/NAME/VERSION/model.onnx.manifest.json

The config is a ``ModelConfig`` protobuf message built with Triton's own schema (``model_config_pb2``
from the ``tritonclient`` package), rendered to text with ``google.protobuf.text_format`` and
parsed back before anything is written. Interface rules, as Triton applies them:

- when every input and output has a dynamic first dimension, it is the batch: it is left out of
  ``dims`` and ``max_batch_size`` is set (Triton's own default of 4 for ONNX, or the largest
  preferred batch size); otherwise ``max_batch_size`` is 0 and dims are the full shape;
- other dynamic dimensions are ``-1``; a tensor that is only ``[batch]`` (or a scalar) gets
  ``dims: [1]`` with an empty ``reshape``, the form Triton requires;
- ``model_warmup`` sends one zero-filled (integers, booleans, strings) or random (floats) request
  at batch 1 and one at ``max_batch_size``; dynamic non-batch dims need ``input_shapes``.

A repository is only ever added to: a new model gets a new folder, an existing one a new version
folder; an existing version is never replaced, and an existing ``config.pbtxt`` is kept when it
agrees with the generated one and refused (naming the fields) when it does not, because one config
serves every version. Each model or version folder is staged in a hidden temporary folder on the
same file system and renamed into place, so Triton never sees a half-written version.
"""

# NOTE: tritonclient and onnxruntime are imported inside functions (optional / heavy).

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze import manifest as mf
from onnxsqueeze import shapes
from onnxsqueeze.errors import InputError, ModelLoadError, UnsupportedModelError, one_line

CONFIG = "config.pbtxt"
MODEL_FILE = "model.onnx"
# Triton's onnxruntime backend auto-completes configs with this max_batch_size.
DEFAULT_MAX_BATCH = 4
TRT_WORKSPACE_BYTES = 1 << 30
KINDS = ("auto", "cpu", "gpu")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

_TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.STRING: "TYPE_STRING",
}
_FLOATS = {"TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_BF16"}


def model_config_pb2() -> Any:
    """Triton's ``model_config_pb2`` module, or an InputError saying how to install it."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except (ImportError, RuntimeError) as e:  # tritonclient.grpc raises RuntimeError without grpcio
        raise InputError(
            "Triton export needs tritonclient with grpc: pip install 'onnxsqueeze[triton]'"
        ) from e
    return pb2


@dataclasses.dataclass(frozen=True, kw_only=True)
class TritonOptions:
    """How the model is served. ``max_batch_size`` None means: 4 (or the largest preferred size)
    when the model has a dynamic batch dimension, else 0."""

    max_batch_size: int | None = None
    dynamic_batching: bool = False
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int | None = None
    instances: int = 1
    kind: str = "auto"
    tensorrt: bool = False
    fp16: bool = False
    warmup: bool = True
    input_shapes: Mapping[str, Sequence[int]] = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        """Raise InputError for contradictory options (before the model is even read)."""
        if self.kind not in KINDS:
            raise InputError(f"--kind '{self.kind}': expected one of {', '.join(KINDS)}")
        if self.instances < 1:
            raise InputError(f"--instances {self.instances}: must be at least 1")
        if self.max_batch_size is not None and self.max_batch_size < 0:
            raise InputError(f"--max-batch-size {self.max_batch_size}: must be 0 (no batching) or more")
        if any(b < 1 for b in self.preferred_batch_sizes):
            raise InputError("--preferred-batch-sizes: sizes must be positive integers")
        if self.max_queue_delay_us is not None and self.max_queue_delay_us < 0:
            raise InputError(f"--max-queue-delay-us {self.max_queue_delay_us}: must be 0 or more")
        if (self.preferred_batch_sizes or self.max_queue_delay_us is not None) and not self.dynamic_batching:
            raise InputError("--preferred-batch-sizes and --max-queue-delay-us need --dynamic-batching")
        if self.fp16 and not self.tensorrt:
            raise InputError("--fp16 sets TensorRT's precision mode: it needs --tensorrt")
        if self.tensorrt and self.kind == "cpu":
            raise InputError("--tensorrt runs on GPU instances: it cannot be combined with --kind cpu")


@dataclasses.dataclass(frozen=True)
class TritonExport:
    """What :func:`export_triton` wrote."""

    model_dir: Path
    version: int
    model_path: Path
    config_path: Path
    config_text: str
    config_written: bool  # False when an existing, consistent config.pbtxt was kept
    manifest_path: Path
    manifest: dict[str, Any]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "version": self.version,
            "model_path": str(self.model_path),
            "config_path": str(self.config_path),
            "config_written": self.config_written,
            "config": self.config_text,
            "manifest_path": str(self.manifest_path),
            "manifest": self.manifest,
        }


def default_name(model_path: str | os.PathLike[str]) -> str:
    """A Triton model name from a file name: its stem with unsafe characters replaced by ``_``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(model_path).stem)
    return stem if _NAME.match(stem) else f"model_{stem}"


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name in (".", ".."):
        raise InputError(
            f"--name '{name}': a Triton model name is a folder name of letters, digits, '_', '.', '-'"
        )


def _triton_type(vi: onnx.ValueInfoProto, kind: str) -> str:
    elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
    if elem not in _TRITON_TYPES:
        what = onnx.TensorProto.DataType.Name(elem) if elem else "a non-tensor type"
        raise UnsupportedModelError(f"{kind} '{vi.name}' has {what}, which Triton has no data type for")
    return _TRITON_TYPES[elem]


def _with_output_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model, with output shapes from shape inference when an output declares none."""
    if all(o.type.tensor_type.HasField("shape") for o in model.graph.output):
        return model
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort: the caller names the output that stays unknown
        return model


def _probe_shapes(
    model: onnx.ModelProto, given: Mapping[str, Sequence[int]], grow: int
) -> dict[str, tuple[int, ...]]:
    """Input shapes for a probe run: given dims, else static ones, else batch ``grow`` and size 128*grow."""
    out: dict[str, tuple[int, ...]] = {}
    for vi in shapes.graph_inputs(model):
        declared = shapes.declared_shape(vi)
        base = list(given.get(vi.name) or [d if isinstance(d, int) else 0 for d in declared])
        dims = []
        for axis, d in enumerate(declared):
            if isinstance(d, int):
                dims.append(d)
            elif axis == 0:
                dims.append(grow)
            else:
                dims.append(base[axis] * grow if base[axis] else 128 * grow)
        out[vi.name] = tuple(dims)
    return out


def observed_outputs(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """The model with output shapes from real runs where the declared ones disagree, and notes.

    Exporters sometimes declare an output wrongly (ddddocr's OCR declares ``[1, seqlen]`` and
    returns ``[T, 1, 8210]``); Triton rejects every response whose shape contradicts the config.
    Two runs at different sizes of the dynamic dims tell which dims are fixed; dims that change
    become dynamic. When the model does not run at the probe sizes, it is left as declared.
    """
    from onnxsqueeze.verify import run

    given = dict(input_shapes or {})
    try:
        first = run(model, shapes.make_inputs(model, _probe_shapes(model, given, 1)))
    except Exception:  # the probe sizes do not suit the model: keep the declared shapes
        return model, []
    try:
        second: dict[str, np.ndarray] | None = run(
            model, shapes.make_inputs(model, _probe_shapes(model, given, 2))
        )
    except Exception:  # a model that accepts one size only: one observation
        second = None
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    notes = []
    for vi in fixed.graph.output:
        if vi.name not in first:
            continue
        a = np.shape(first[vi.name])
        b = np.shape(second[vi.name]) if second is not None and vi.name in second else a
        observed = [x if len(a) == len(b) and x == y else -1 for x, y in zip(a, b, strict=False)]
        declared = shapes.declared_shape(vi) if vi.type.tensor_type.HasField("shape") else None
        agrees = (
            declared is not None
            and len(declared) == len(a)
            and all(not isinstance(d, int) or d == x for d, x in zip(declared, a, strict=True))
        )
        if agrees:
            continue
        shape = vi.type.tensor_type.shape
        shape.ClearField("dim")
        for axis, d in enumerate(observed):
            if d >= 0:
                shape.dim.add().dim_value = d
            else:
                shape.dim.add().dim_param = f"{vi.name}_dim{axis}"
        shown = "[" + ", ".join("?" if d is None else str(d) for d in declared or []) + "]"
        notes.append(
            f"output '{vi.name}': the model declares {shown} but returns {list(a)}; "
            f"the config uses the returned dims {[d if d >= 0 else -1 for d in observed]}"
        )
    return (fixed if notes else model), notes


def _io(model: onnx.ModelProto) -> list[tuple[str, onnx.ValueInfoProto]]:
    return [("input", vi) for vi in shapes.graph_inputs(model)] + [
        ("output", vi) for vi in model.graph.output
    ]


def _batchable(model: onnx.ModelProto) -> str | None:
    """None when every input and output has a dynamic first dim, else why not."""
    for kind, vi in _io(model):
        dims = shapes.declared_shape(vi)
        if not dims:
            return f"{kind} '{vi.name}' is a scalar"
        if isinstance(dims[0], int):
            return f"{kind} '{vi.name}' has a static first dimension {dims[0]}"
    return None


def _dims(vi: onnx.ValueInfoProto, kind: str, batched: bool) -> list[int]:
    if not vi.type.tensor_type.HasField("shape"):
        raise UnsupportedModelError(
            f"{kind} '{vi.name}' has no known shape (not even its rank); Triton's config needs its dims"
        )
    dims = shapes.declared_shape(vi)
    if batched:
        dims = dims[1:]
    return [d if isinstance(d, int) else -1 for d in dims]


def _warmup_dims(
    vi: onnx.ValueInfoProto, config_dims: list[int], batched: bool, given: Mapping[str, Sequence[int]]
) -> list[int] | None:
    """Concrete dims (without the batch dim when batched) for a warmup request, or None."""
    if all(d > 0 for d in config_dims):
        return config_dims
    if vi.name in given:
        full = [int(d) for d in given[vi.name]]
        dims = full[1:] if batched else full
        return dims if len(dims) == len(config_dims) else None
    if not batched and config_dims and config_dims[0] == -1 and all(d > 0 for d in config_dims[1:]):
        return [1, *config_dims[1:]]  # an unbatched model's dynamic first dim: send one sample
    return None


def build_config(model: onnx.ModelProto, name: str, options: TritonOptions = TritonOptions()) -> Any:
    """The Triton ``ModelConfig`` message for ``model`` served as ``name``.

    Raises:
        InputError: contradictory options, or batching asked of a model that cannot batch.
        UnsupportedModelError: a tensor has no Triton data type or no known shape.
    """
    options.check()
    _check_name(name)
    pb2 = model_config_pb2()
    model = _with_output_shapes(model)
    why_not = _batchable(model)
    if options.max_batch_size is None:
        max_batch = 0 if why_not else max((DEFAULT_MAX_BATCH, *options.preferred_batch_sizes))
    else:
        max_batch = options.max_batch_size
    if max_batch > 0 and why_not:
        raise InputError(
            f"--max-batch-size {max_batch}: Triton batching needs a dynamic first dimension on every "
            f"input and output, but {why_not}; use --max-batch-size 0"
        )
    if options.dynamic_batching and max_batch == 0:
        raise InputError("--dynamic-batching needs batching: the model has max_batch_size 0")
    too_big = [b for b in options.preferred_batch_sizes if b > max_batch]
    if too_big:
        raise InputError(f"--preferred-batch-sizes {too_big} exceed max_batch_size {max_batch}")
    batched = max_batch > 0

    config = pb2.ModelConfig(name=name, backend="onnxruntime", max_batch_size=max_batch)
    warm_inputs: dict[str, tuple[str, list[int] | None]] = {}
    for kind, vi in _io(model):
        dtype = _triton_type(vi, kind)
        dims = _dims(vi, kind, batched)
        tensor = (config.input if kind == "input" else config.output).add(
            name=vi.name, data_type=pb2.DataType.Value(dtype)
        )
        if dims:
            tensor.dims.extend(dims)
        else:  # [batch] or a scalar: Triton wants dims [1] reshaped to []
            tensor.dims.append(1)
            tensor.reshape.SetInParent()
        if kind == "input":
            warm_inputs[vi.name] = (dtype, _warmup_dims(vi, list(tensor.dims), batched, options.input_shapes))

    kind_value = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}[options.kind]
    config.instance_group.add(count=options.instances, kind=pb2.ModelInstanceGroup.Kind.Value(kind_value))
    if options.dynamic_batching:
        config.dynamic_batching.SetInParent()
        config.dynamic_batching.preferred_batch_size.extend(sorted(set(options.preferred_batch_sizes)))
        if options.max_queue_delay_us is not None:
            config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    if options.tensorrt:
        trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = "FP16" if options.fp16 else "FP32"
        trt.parameters["max_workspace_size_bytes"] = str(TRT_WORKSPACE_BYTES)
    if options.warmup and all(shape is not None for _, shape in warm_inputs.values()):
        for batch in sorted({1, max(max_batch, 1)}):
            entry = config.model_warmup.add(name=f"warmup_batch{batch}", batch_size=batch, count=1)
            for input_name, (dtype, shape) in warm_inputs.items():
                w = entry.inputs[input_name]
                w.data_type = pb2.DataType.Value(dtype)
                w.dims.extend(shape or [])
                if dtype in _FLOATS:
                    w.random_data = True
                else:  # random integers could be out-of-range token ids or indices
                    w.zero_data = True
    return config


def render(config: Any) -> str:
    """The config as ``config.pbtxt`` text, checked by parsing it back with Triton's schema.

    Raises:
        UnsupportedModelError: the text does not parse back to the same message (a bug to report).
    """
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    text = text_format.MessageToString(config)
    try:
        parsed = text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as e:
        raise UnsupportedModelError(f"the generated config.pbtxt does not parse: {e}") from e
    if parsed != config:
        raise UnsupportedModelError("the generated config.pbtxt does not parse back to the same config")
    return text


def parse_config(path: Path) -> Any:
    """Parse an existing ``config.pbtxt`` with Triton's schema.

    Raises:
        InputError: the file is not a valid Triton model config.
    """
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), pb2.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a valid Triton model config: {one_line(e)}") from e


# The fields this module generates; an existing config's other fields are the operator's.
_MANAGED = ("name", "backend", "max_batch_size", "input", "output", "instance_group", "dynamic_batching")


def config_differences(existing: Any, new: Any) -> list[str]:
    """The generated fields an existing config sets differently (empty when consistent).

    Compared: :data:`_MANAGED`, the TensorRT accelerator and the warmup requests. Fields only an
    operator sets (``version_policy``, ``parameters``, ``optimization.cuda``...) are ignored;
    ``platform: "onnxruntime_onnx"`` is the same backend as ``backend: "onnxruntime"``.
    """
    diffs = []
    for field in _MANAGED:
        if field == "backend" and not existing.backend and existing.platform == "onnxruntime_onnx":
            continue
        if field == "name" and not existing.name:  # Triton takes the name from the folder
            continue
        if field == "dynamic_batching":
            if (
                existing.HasField(field) != new.HasField(field)
                or existing.dynamic_batching != new.dynamic_batching
            ):
                diffs.append(field)
        elif field in ("name", "backend", "max_batch_size") and getattr(existing, field) != getattr(
            new, field
        ):
            diffs.append(f"{field} ({getattr(existing, field)!r} there, {getattr(new, field)!r} now)")
        elif getattr(existing, field) != getattr(new, field):
            diffs.append(field)
    accel = "optimization.execution_accelerators"
    if existing.optimization.execution_accelerators != new.optimization.execution_accelerators:
        diffs.append(accel)
    if list(existing.model_warmup) != list(new.model_warmup):
        diffs.append("model_warmup")
    return diffs


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _check_loads(path: Path, config: Any) -> None:
    """Load the model in onnxruntime, as Triton's backend will, and check its I/O names."""
    from onnxsqueeze import runtime

    sess = runtime.session(path)
    names = {i.name for i in sess.get_inputs()} | {o.name for o in sess.get_outputs()}
    wanted = {t.name for t in config.input} | {t.name for t in config.output}
    if names != wanted:
        raise ModelLoadError(f"{path}: onnxruntime sees tensors {sorted(names)}, the config {sorted(wanted)}")


def export_triton(
    model_path: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    *,
    name: str | None = None,
    version: int | None = None,
    options: TritonOptions = TritonOptions(),
    verify_report: Any = None,
    bench_summary: Mapping[str, Any] | None = None,
) -> TritonExport:
    """Add ``model_path`` to the Triton model repository ``repo`` as ``name``/``version``.

    Args:
        model_path: the ONNX model to serve.
        repo: the model repository folder (created if missing).
        name: the model name (default: the file's stem).
        version: the version number (default: one more than the highest existing, or 1).
        options: how the model is served.
        verify_report: verification metrics to record in the manifest, if the caller has them.
        bench_summary: a benchmark summary to record in the manifest.

    Raises:
        InputError: bad options, an existing version, an inconsistent existing config, or a path
            in the way.
        ModelLoadError / UnsupportedModelError: the model cannot be served as is.
    """
    options.check()
    model_path = Path(model_path)
    repo = Path(repo)
    name = name or default_name(model_path)
    _check_name(name)
    if version is not None and version < 1:
        raise InputError(f"--version {version}: Triton versions are positive integers")
    if repo.exists() and not repo.is_dir():
        raise InputError(f"{repo}: exists and is not a folder")
    model_dir = repo / name
    config_path = model_dir / CONFIG
    existing_config = None
    if model_dir.exists():
        if not model_dir.is_dir():
            raise InputError(f"{model_dir}: exists and is not a folder; choose another --name")
        if config_path.is_file():
            existing_config = parse_config(config_path)
        elif any(model_dir.iterdir()):
            raise InputError(
                f"{model_dir}: exists without {CONFIG}; refusing to add to a folder it did not make"
            )
    model = sio.load(model_path)
    # The default follows the repository: a new version keeps the model's batching (when it can
    # batch at all; if not, the config comparison below names the difference).
    if (
        existing_config is not None
        and options.max_batch_size is None
        and (existing_config.max_batch_size == 0 or _batchable(_with_output_shapes(model)) is None)
    ):
        options = dataclasses.replace(options, max_batch_size=existing_config.max_batch_size)
    model, notes = observed_outputs(_with_output_shapes(model), options.input_shapes)
    config = build_config(model, name, options)
    text = render(config)
    if options.warmup and not config.model_warmup:
        notes.append(
            "no model_warmup: an input has a dynamic non-batch dimension; give it with --input-shape"
        )
    if existing_config is not None:
        diffs = config_differences(existing_config, config)
        if diffs:
            raise InputError(
                f"{config_path}: the existing config differs in {'; '.join(diffs)} (one config serves every "
                "version); pass matching options, choose another --name, or remove the model folder"
            )
    taken = _versions(model_dir) if model_dir.is_dir() else []
    if version is None:
        version = (taken[-1] + 1) if taken else 1
    elif version in taken:
        raise InputError(f"{model_dir / str(version)}: version {version} exists and is never overwritten")

    config_final = text if existing_config is None else (model_dir / CONFIG).read_text(encoding="utf-8")
    export_info = {
        "kind": "triton",
        "model": name,
        "version": version,
        "config_sha256": hashlib.sha256(config_final.encode()).hexdigest(),
    }
    new_model = existing_config is None and not model_dir.exists()
    stage_parent = repo if new_model else model_dir
    stage_parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=stage_parent, prefix=".onnxsqueeze-"))
    try:
        version_dir = (stage / str(version)) if new_model else stage
        art = mf.save_artifact(
            model,
            version_dir / MODEL_FILE,
            source_path=model_path,
            verify_report=verify_report,
            bench_summary=bench_summary,
            export=export_info,
        )
        _check_loads(art.path, config)
        if new_model:
            sio.write_bytes_atomic(stage / CONFIG, text.encode())
            sio.set_default_mode(stage)
            os.rename(stage, model_dir)
        else:
            if existing_config is None:  # an empty model folder: give it its config first
                sio.write_bytes_atomic(model_dir / CONFIG, text.encode())
            sio.set_default_mode(stage)
            os.rename(stage, model_dir / str(version))
    except OSError as e:
        raise InputError(f"{model_dir}: cannot write the version folder: {e.strerror or e}") from e
    finally:
        if stage.exists():
            with contextlib.suppress(OSError):
                shutil.rmtree(stage)
    final_dir = model_dir / str(version)
    return TritonExport(
        model_dir=model_dir,
        version=version,
        model_path=final_dir / MODEL_FILE,
        config_path=model_dir / CONFIG,
        config_text=config_final,
        config_written=existing_config is None,
        manifest_path=mf.sidecar_path(final_dir / MODEL_FILE),
        manifest=art.manifest,
        notes=tuple(notes),
    )
