"""The provenance manifest written beside every artifact, and the one short stamp inside it.

A manifest records how an artifact was made, so a deployment pipeline can pick it up and an auditor
can trace it: the source file and its sha256, the first source ever read (``origin_sha256``), the
tool and library versions, the recipe (the passes and options ``onnxsqueeze.pipeline`` recorded
while the command ran), how trained models were trained (``training``: distillation and
fine-tuning configs), verification metrics against the source, an optional benchmark summary, what
produced it (``export``), and the manifests of the models it was made from (``lineage``).

Where it lives:

- **sidecar**: ``<artifact file name>.manifest.json`` beside the artifact (``model.onnx`` ->
  ``model.onnx.manifest.json``; one per artifact, so several artifacts can share a folder). It
  holds the whole record, plus ``file``: ``file.sha256`` of the exact bytes on disk, their size,
  the sha256 of any external data file, and for converted formats the check of the file's
  outputs; ``output.model_sha256`` is the sha256 of the model's deterministic serialization
  (:func:`model_sha256` recomputes it from the saved model). :func:`attach_benchmark` later
  records the latest benchmark here (the model's bytes stay).
- **in the model**: only what deployment needs (:func:`deployable`). The provenance the passes
  recorded in ``metadata_props`` while the command ran (``onnxsqueeze.passes``, the distill and
  fine-tune configs, ...) moves to the sidecar, and the model keeps one short entry,
  ``onnxsqueeze`` = ``{"origin_sha256": ..., "version": ...}`` (about 100 bytes), so a copied
  model still names its first source and the tool. Intermediate values' types and shapes
  (``value_info``) are not stored: onnxruntime infers them (values made by an op without a
  standard ONNX schema keep theirs). On a 7 KB squeezed CNN the provenance and value_info were
  2.5 KB of the file.

Files written before this layout (the whole manifest embedded under ``onnxsqueeze.manifest``, the
pass list under ``onnxsqueeze.passes``) stay readable: :func:`read` and :func:`check` take the
embedded copy when there is no sidecar, and the next command carries their history on.

:func:`check` recomputes the hashes and says what no longer matches; ``onnxsqueeze inspect``
shows it. ``source.path`` is recorded as the command was given it; ``source.sha256`` identifies it.

Nothing time- or machine-dependent beyond library versions is recorded: the same input and
options give the same bytes.

Other commands adopt it with one call in place of ``io.save``::

    save_artifact(model, out, source_path=src, verify_report=report, protect=[src])
"""

# NOTE: this module imports nothing from cli/, passes/ or export/.

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from onnxsqueeze import io as sio
from onnxsqueeze.errors import InputError, ModelLoadError, one_line
from onnxsqueeze.pipeline import PASSES_KEY, SOURCE_KEY, STAMP_KEY, tool_version

MANIFEST_KEY = "onnxsqueeze.manifest"  # the whole manifest, embedded by files written before the stamp
_PROVENANCE = "onnxsqueeze."  # prefix of the keys passes and trainers record while a command runs
_TRAINING = ("distill", "finetune")  # onnxsqueeze.<kind>.<key> entries of trained models
SCHEMA = "onnxsqueeze.manifest/1"
SUFFIX = sio.COMPANION_SUFFIXES[1]  # ".manifest.json"
# Libraries whose versions change what an artifact contains; others are added by the caller.
LIBRARIES = ("numpy", "onnx", "onnx-ir", "onnxruntime", "protobuf")

PathLike = sio.PathLike


@dataclasses.dataclass(frozen=True)
class Artifact:
    """What :func:`save_artifact` wrote."""

    path: Path
    manifest_path: Path
    manifest: dict[str, Any]


def sidecar_path(artifact: PathLike) -> Path:
    """The sidecar manifest of an artifact: ``model.onnx`` -> ``model.onnx.manifest.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SUFFIX)


def library_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Python and the installed versions of :data:`LIBRARIES` and ``extra`` (missing ones skipped)."""
    versions = {"python": platform.python_version()}
    for name in sorted({*LIBRARIES, *extra}):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _without_manifest(model: onnx.ModelProto | ir.Model) -> onnx.ModelProto:
    proto = sio.to_proto(model)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    kept = [p for p in out.metadata_props if p.key != MANIFEST_KEY]
    if len(kept) != len(out.metadata_props):
        del out.metadata_props[:]
        out.metadata_props.extend(kept)
    for tensor in sio.iter_tensors(out.graph):
        # onnx's external-data loader sets data_location = DEFAULT explicitly, which proto2
        # serializes; clear it so a model hashes the same whether its weights were inline or not
        if tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.DEFAULT:
            tensor.ClearField("data_location")
    return out


def model_sha256(model: onnx.ModelProto | ir.Model) -> str | None:
    """sha256 of a model's deterministic serialization (without the manifest older files embedded).

    This is the sidecar's ``output.model_sha256``; recompute it from a saved
    model (``model_sha256(io.load(path))``) to check the manifest belongs to it. None for a model
    over protobuf's 2 GB limit, which has no single serialization (its ``file`` hashes remain).
    """
    proto = _without_manifest(model)
    return sio.sha256_model(proto) if proto.ByteSize() < sio.PROTO_LIMIT else None


def embedded(model: onnx.ModelProto | ir.Model) -> dict[str, Any] | None:
    """The manifest embedded in a model written before the stamp layout, else what the stamp
    says (``stamp``: origin and tool version only), or None (also when it is not valid JSON)."""
    meta = _metadata(model)
    raw = meta.get(MANIFEST_KEY)
    if raw:
        return _parse(raw)
    stamp = _parse(meta[STAMP_KEY]) if meta.get(STAMP_KEY) else None
    if stamp is None:
        return None
    return {
        "schema": SCHEMA,
        "stamp": True,
        "tool": {"name": "onnxsqueeze", "version": stamp.get("version")},
        "origin_sha256": stamp.get("origin_sha256"),
    }


def _metadata(model: onnx.ModelProto | ir.Model) -> dict[str, str]:
    if isinstance(model, ir.Model):
        return dict(model.metadata_props)
    return {p.key: p.value for p in model.metadata_props}


def _parse(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder (e.g. a SavedModel) as a hash over its sorted file hashes."""
    if path.is_file():
        return sio.sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path).as_posix()}\0{sio.sha256_file(f)}\n".encode())
    return digest.hexdigest()


def _source(source_path: PathLike | None) -> dict[str, Any] | None:
    if source_path is None:
        return None
    path = Path(source_path)
    if not path.exists():
        raise InputError(f"{path}: the source recorded in the manifest does not exist")
    entry: dict[str, Any] = {"path": str(path), "sha256": _sha256_path(path)}
    if path.is_file():
        entry["bytes"] = path.stat().st_size
    return entry


def _recipe(proto: onnx.ModelProto | ir.Model) -> tuple[list[Any], str | None]:
    """The passes recorded in a model's metadata and its first source's sha256 (the recorded key,
    else the stamp's)."""
    meta = _metadata(proto)
    recipe: list[Any] = []
    if meta.get(PASSES_KEY):
        try:
            value = json.loads(meta[PASSES_KEY])
            recipe = value if isinstance(value, list) else []
        except json.JSONDecodeError:
            recipe = []
    origin = meta.get(SOURCE_KEY)
    if origin is None and meta.get(STAMP_KEY):
        origin = (_parse(meta[STAMP_KEY]) or {}).get("origin_sha256")
    return recipe, origin


def _training(proto: onnx.ModelProto | ir.Model) -> dict[str, dict[str, Any]] | None:
    """How the model's weights were trained: the ``onnxsqueeze.<distill|finetune>.<key>`` entries
    (``distill.export.stamp_provenance``), by kind; JSON values parsed."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in _metadata(proto).items():
        kind, _, name = key.removeprefix(_PROVENANCE).partition(".")
        if key.startswith(_PROVENANCE) and kind in _TRAINING and name:
            parsed = _parse(value) if value.startswith("{") else None
            out.setdefault(kind, {})[name] = parsed if parsed is not None else value
    return out or None


def _prior(model: onnx.ModelProto | ir.Model, source: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The manifest of what the model was made from: embedded in it (older files), else the
    source's sidecar when it describes the source's bytes (``source``: :func:`_source`'s entry)."""
    prior = embedded(model)
    if prior is not None and not prior.get("stamp"):
        return prior
    if source is not None and sidecar_path(source["path"]).is_file():
        side = _parse(sidecar_path(source["path"]).read_text(encoding="utf-8"))
        if side is not None and (side.get("file") or {}).get("sha256") == source["sha256"]:
            return {k: v for k, v in side.items() if k != "file"}
    return None


def _clean(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, NaN/Inf as None (JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _report_dict(report: Any) -> dict[str, Any] | None:
    if report is None:
        return None
    if hasattr(report, "to_dict"):
        return _clean(report.to_dict())
    if isinstance(report, Mapping):
        return _clean(report)
    raise TypeError(f"verify_report must be a VerifyReport or a dict, not {type(report).__name__}")


def build(
    model: onnx.ModelProto | ir.Model,
    *,
    source_path: PathLike | None,
    verify_report: Any = None,
    bench_summary: Mapping[str, Any] | None = None,
    export: Mapping[str, Any] | None = None,
    output_format: str = "onnx",
    libraries: Iterable[str] = (),
) -> dict[str, Any]:
    """The manifest of ``model`` (not yet written).

    Args:
        model: the model about to be saved; its metadata gives the recipe and training, and
            the source's manifest (embedded in an older file, else the source's sidecar) becomes
            the last entry of ``lineage`` (its recipe the start of this one).
        source_path: the file (or folder) the command read; None for a model built in memory.
        verify_report: a :class:`~onnxsqueeze.verify.VerifyReport` (or its ``to_dict()``) of the
            model against the source.
        bench_summary: the latest benchmark summary, any JSON-able dict.
        export: what produced the artifact and how (e.g. ``{"kind": "triton", ...}``).
        output_format: ``onnx`` or ``ort``.
        libraries: more distributions whose versions to record (e.g. ``torch`` for a conversion).
    """
    return _build(
        model,
        source_path=source_path,
        verify_report=verify_report,
        bench_summary=bench_summary,
        export=export,
        output_format=output_format,
        libraries=libraries,
    )[0]


def _build(
    model: onnx.ModelProto | ir.Model,
    *,
    source_path: PathLike | None,
    verify_report: Any = None,
    bench_summary: Mapping[str, Any] | None = None,
    export: Mapping[str, Any] | None = None,
    output_format: str = "onnx",
    libraries: Iterable[str] = (),
) -> tuple[dict[str, Any], onnx.ModelProto]:
    """:func:`build`, and the model's written form (:func:`deployable`): one copy of the model."""
    recipe, origin = _recipe(model)  # metadata only: no copy
    source = _source(source_path)
    prior = _prior(model, source)
    lineage: list[Any] = []
    if prior is not None:
        lineage = [*prior.get("lineage", []), {k: v for k, v in prior.items() if k != "lineage"}]
        # A source written with the stamp carries no pass list: its history is in its sidecar.
        past = [step for step in prior.get("recipe") or [] if isinstance(step, dict)]
        if past and recipe[: len(past)] != past:
            recipe = [*past, *recipe]
        origin = origin or prior.get("origin_sha256")
    output: dict[str, Any] = {"format": output_format, "model_sha256": None}
    manifest = {
        "schema": SCHEMA,
        "tool": {"name": "onnxsqueeze", "version": tool_version()},
        "libraries": library_versions(libraries),
        "source": source,
        "origin_sha256": origin,
        "recipe": recipe,
        "verification": _report_dict(verify_report),
        "benchmark": _clean(bench_summary) if bench_summary is not None else None,
        "export": _clean(export) if export is not None else None,
        "output": output,
        "lineage": lineage,
    }
    training = _training(model)
    if training is not None:
        manifest["training"] = training
    written = deployable(model, origin=origin)
    if written.ByteSize() < sio.PROTO_LIMIT:  # no manifest entry to leave out: hashed as written
        output["model_sha256"] = sio.sha256_model(written)
    return manifest, written


def _dumps(manifest: Mapping[str, Any]) -> str:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False)


def deployable(model: onnx.ModelProto | ir.Model, *, origin: str | None = None) -> onnx.ModelProto:
    """A copy of ``model`` as it is written: what deployment needs, the provenance in the sidecar.

    Every ``onnxsqueeze.*`` metadata entry (the pass history, the training configs, an embedded
    manifest of an older file) is replaced by the one stamp ``onnxsqueeze`` =
    ``{"origin_sha256", "version"}``, and ``value_info`` (the types and shapes of intermediate
    values) is dropped: onnxruntime infers them. A value made by an op with no standard ONNX
    schema (a contrib or custom op) keeps its entry, as a runtime may need it. Attributes equal
    to their default (the schema's, or the spec's all-ones ``strides``/``dilations`` and all-zeros
    ``pads`` of Conv and pooling) are left out, as the spec reads an absent one
    (:func:`_drop_default_attributes`). The user's own metadata, the inputs' and outputs'
    declarations and all names stay.

    Args:
        model: the result of a command, its provenance still in its metadata; not modified.
        origin: the first source's sha256 (default: the one recorded in the model).
    """
    out = sio.to_proto(model)
    if out is model:  # a ModelProto: copied; an onnx_ir model was just serialized into a new one
        out = onnx.ModelProto()
        out.CopyFrom(model)
    _, recorded = _recipe(out)
    origin = origin or recorded
    kept = [p for p in out.metadata_props if p.key != STAMP_KEY and not p.key.startswith(_PROVENANCE)]
    del out.metadata_props[:]
    out.metadata_props.extend(kept)
    stamp = out.metadata_props.add()
    stamp.key = STAMP_KEY
    stamp.value = _dumps({"origin_sha256": origin, "version": tool_version()})
    _drop_value_info(out.graph)
    opsets = {o.domain or "": o.version for o in out.opset_import}
    _drop_default_attributes(out.graph, opsets)
    for tensor in sio.iter_tensors(out.graph):
        if tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.DEFAULT:
            tensor.ClearField("data_location")  # as _without_manifest: the same bytes either way
    return out


_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")


# Attributes the spec gives a default in words, not in the schema ("If not present, the stride
# defaults to 1 along each spatial axis", the same for dilations; pads "default to 0"). Only ops
# whose explicit zero pads and absent pads mean the same (not ConvTranspose: with output_shape its
# pads are computed).
_SPATIAL_DEFAULTS: dict[str, int] = {"strides": 1, "dilations": 1, "pads": 0}
_SPATIAL_OPS = frozenset({"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"})


def _drop_default_attributes(graph: onnx.GraphProto, opsets: Mapping[str, int]) -> None:
    """Leave out the attributes of standard ops that equal the default an absent one takes.

    The schema of the model's opset gives the default (``Conv.group = 1``, ``Gemm.alpha = 1.0``,
    ``MaxPool.storage_order = 0`` ...); the ones the spec states in words are in
    ``_SPATIAL_DEFAULTS``. The exporters write them all out: 0.2-0.4 KB of a 5 KB CNN.
    """
    for node in graph.node:
        for attr in node.attribute:
            for sub in (attr.g,) if attr.HasField("g") else attr.graphs:
                _drop_default_attributes(sub, opsets)
        domain = node.domain or ""
        if domain not in ("", "ai.onnx") or "" not in opsets:
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets[""], "")
        except onnx.defs.SchemaError:
            continue
        kept = []
        for attr in node.attribute:
            default = _default_of(schema, node.op_type, attr)
            if default is None or onnx.helper.get_attribute_value(attr) != default:
                kept.append(attr)
        if len(kept) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(kept)


def _default_of(schema: Any, op_type: str, attr: onnx.AttributeProto) -> Any:
    """The value an absent ``attr`` takes, or None when it has none (or it is not a plain value)."""
    if attr.ref_attr_name or attr.name not in schema.attributes:
        return None
    if op_type in _SPATIAL_OPS and attr.name in _SPATIAL_DEFAULTS:
        if attr.type != onnx.AttributeProto.INTS or not attr.ints:
            return None
        return [_SPATIAL_DEFAULTS[attr.name]] * len(attr.ints)
    default = schema.attributes[attr.name].default_value
    if default.type == onnx.AttributeProto.UNDEFINED or default.type != attr.type:
        return None
    if default.type not in (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING):
        return None
    return onnx.helper.get_attribute_value(default)


def _drop_value_info(graph: onnx.GraphProto) -> None:
    """Drop the value_info of values made by standard ONNX ops, here and in subgraphs."""
    custom: set[str] = set()
    for node in graph.node:
        if node.domain not in _STANDARD_DOMAINS or not onnx.defs.has(node.op_type, node.domain or ""):
            custom.update(node.output)
        for attr in node.attribute:
            for sub in (attr.g,) if attr.HasField("g") else attr.graphs:
                _drop_value_info(sub)
    kept = [vi for vi in graph.value_info if vi.name in custom]
    if len(kept) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(kept)


def file_facts(path: PathLike, *, staged: sio.Staged | None = None, **more: Any) -> dict[str, Any]:
    """The sidecar's ``file`` block: name, bytes and sha256 of the file, and of its external data.

    With ``staged``, the bytes are read from the temp files not yet renamed to ``path``.
    """
    path = Path(path)
    data = path.with_name(path.name + ".data")

    def where(p: Path) -> Path:
        tmp = staged.temp_of(p) if staged is not None else None
        return Path(tmp) if tmp else p

    facts: dict[str, Any] = {
        "name": path.name,
        "bytes": where(path).stat().st_size,
        "sha256": sio.sha256_file(where(path)),
    }
    if where(data).is_file():
        facts["data_files"] = {data.name: sio.sha256_file(where(data))}
    return facts | more


def write(
    artifact: PathLike, manifest: Mapping[str, Any], *, protect: Iterable[PathLike] = (), **file_extra: Any
) -> tuple[Path, dict[str, Any]]:
    """Write the sidecar manifest of an artifact already on disk, atomically.

    Returns:
        The sidecar's path and its content (``manifest`` plus the ``file`` block).
    """
    full = {**manifest, "file": _clean(file_facts(artifact, **file_extra))}
    text = json.dumps(full, indent=2, sort_keys=True, allow_nan=False) + "\n"
    path = sio.write_bytes_atomic(sidecar_path(artifact), text.encode(), protect=protect)
    return path, full


def save_artifact(
    model: onnx.ModelProto | ir.Model,
    out_path: PathLike,
    *,
    source_path: PathLike | None,
    verify_report: Any = None,
    bench_summary: Mapping[str, Any] | None = None,
    export: Mapping[str, Any] | None = None,
    protect: Iterable[PathLike] = (),
    libraries: Iterable[str] = (),
) -> Artifact:
    """Save a model in its deployable form (:func:`deployable`) and the sidecar manifest beside it.

    The one call every writing command uses in place of :func:`onnxsqueeze.io.save`. All files are
    staged to temp names and renamed together, external data and sidecar first, the model last, so
    a crash never leaves a new model without its manifest. ``source_path`` is never overwritten.

    Args:
        model: the result (protobuf or onnx_ir); not modified.
        out_path: the ``.onnx`` file to write.
        source_path: the file the command read (hashed into the manifest); None if none.
        verify_report: the result's verification against the source.
        bench_summary: the latest benchmark summary, if any.
        export: what produced the artifact (see :func:`build`).
        protect: more paths that must not be overwritten.
        libraries: more distributions whose versions to record.

    Raises:
        InputError: ``out_path`` is the source or a protected path, or the source is missing.
    """
    out_path = Path(out_path)
    protect = [*protect, *([source_path] if source_path is not None else [])]
    sio.refuse_overwrite(out_path, protect)
    sio.refuse_overwrite(sidecar_path(out_path), protect)
    manifest, written = _build(
        model,
        source_path=source_path,
        verify_report=verify_report,
        bench_summary=bench_summary,
        export=export,
        libraries=libraries,
    )
    # Manifest first, model last: an interrupted run leaves both files or neither new one (a
    # sidecar beside an older model says so through its hashes).
    staged = sio.stage(written, out_path, protect=protect)
    try:
        return _commit_with_sidecar(staged, out_path, manifest)
    except BaseException:
        staged.abort()
        raise


def _commit_with_sidecar(staged: sio.Staged, out_path: Path, manifest: dict[str, Any]) -> Artifact:
    """Add the sidecar (the manifest and the staged files' facts) to ``staged`` and commit it, model last."""
    full = {**manifest, "file": _clean(file_facts(out_path, staged=staged))}
    text = json.dumps(full, indent=2, sort_keys=True, allow_nan=False) + "\n"
    staged.add(sidecar_path(out_path), [text.encode()])
    staged.moves.sort(key=lambda move: move[1] == out_path)  # stable: the model goes last
    staged.commit()
    return Artifact(out_path, sidecar_path(out_path), full)


def commit_streamed(
    staged: sio.Staged,
    staged_model: PathLike,
    out_path: PathLike,
    *,
    source_path: PathLike | None,
    verify_report: Any = None,
) -> Artifact:
    """Rewrite a model staged by :func:`onnxsqueeze.io.stage_streamed` in its deployable form
    (:func:`deployable`), add the sidecar, and rename everything into place (the model last).

    The model file is small (its weights are in external data), so it is read and rewritten
    here; ``output.model_sha256`` is None (a model with external data has no single
    serialization: the sidecar's ``file`` block hashes the files).
    """
    out_path, staged_model = Path(out_path), Path(staged_model)
    try:
        proto = onnx.load(str(staged_model), load_external_data=False)
        manifest, out = _build(proto, source_path=source_path, verify_report=verify_report)
        manifest["output"]["model_sha256"] = None
        staged_model.write_bytes(out.SerializeToString(deterministic=True))
        return _commit_with_sidecar(staged, out_path, manifest)
    except BaseException:
        staged.abort()
        raise


def attach_benchmark(artifact: PathLike, summary: Mapping[str, Any]) -> Path:
    """Record the latest benchmark summary of an artifact in its sidecar manifest.

    Benchmarks run after an artifact is written, and re-embedding would change the model's bytes,
    so only the sidecar is updated (an older file's embedded copy keeps what was known when it
    was written). An artifact without a sidecar gets one built from what the model carries.

    Raises:
        InputError: the artifact has no manifest, or changed since its sidecar was written.
    """
    path = Path(artifact)
    found = read(path)
    if found is None:
        raise InputError(f"{path}: has no onnxsqueeze manifest to attach the benchmark to")
    problems = [p for p in check(path, found) if "sha256 differs" in p or "external data" in p]
    if problems:
        raise InputError(f"{path}: {problems[0]}; refusing to attach a benchmark to changed bytes")
    manifest = {k: v for k, v in found.items() if k not in ("where", "file", "stamp")}
    file_extra = {k: v for k, v in (found.get("file") or {}).items() if k == "verification"}
    side, _ = write(path, manifest | {"benchmark": _clean(summary)}, **file_extra)
    return side


def _embedded_in_file(path: Path) -> dict[str, Any] | None:
    if path.suffix.lower() == ".ort":
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelLoadError(f"{path}: onnxruntime cannot load it: {one_line(e)}") from e
        shell = onnx.ModelProto()
        for key, value in sess.get_modelmeta().custom_metadata_map.items():
            shell.metadata_props.add(key=key, value=value)
        return embedded(shell)
    return embedded(sio.load(path, check=False))


def read(path: PathLike) -> dict[str, Any] | None:
    """The manifest of an artifact: its sidecar if present, else what the model carries (the
    whole manifest in older files, the stamp's origin and version in newer ones: ``stamp`` true).

    Args:
        path: the artifact (``.onnx`` or ``.ort``) or its sidecar ``.manifest.json``.

    Returns:
        The manifest, with ``"where": "sidecar" | "embedded"`` added; None when there is none.

    Raises:
        InputError: the sidecar exists but is not a JSON object.
    """
    path = Path(path)
    side = path if path.name.endswith(SUFFIX) else sidecar_path(path)
    if side.is_file():
        value = _parse(side.read_text(encoding="utf-8"))
        if value is None:
            raise InputError(f"{side}: not a JSON manifest")
        return value | {"where": "sidecar"}
    if path.name.endswith(SUFFIX):
        raise InputError(f"{path}: no such manifest")
    found = _embedded_in_file(path)
    return None if found is None else found | {"where": "embedded"}


def check(
    path: PathLike, manifest: Mapping[str, Any] | None = None, *, model: onnx.ModelProto | None = None
) -> list[str]:
    """What does not match between an artifact and its manifest (empty when all hashes match).

    Checks the sidecar's ``file.sha256`` (and external data) against the bytes on disk and, for an
    ONNX artifact, ``output.model_sha256`` against the model recomputed without its manifest.

    Args:
        path: the artifact.
        manifest: its manifest (default: :func:`read`).
        model: the artifact already loaded, to avoid loading it again.
    """
    path = Path(path)
    manifest = manifest if manifest is not None else read(path)
    if manifest is None:
        return [f"{path.name}: no manifest"]
    if manifest.get("stamp") and not manifest.get("file"):
        return [
            f"{path.name}: no sidecar manifest ({sidecar_path(path).name}); the model carries only its origin and tool version"
        ]
    problems = []
    facts = manifest.get("file")
    if facts:
        if facts.get("sha256") != sio.sha256_file(path):
            problems.append(
                f"{path.name}: sha256 differs from the sidecar's (the file changed after writing)"
            )
        for name, digest in (facts.get("data_files") or {}).items():
            data = path.with_name(name)
            if not data.is_file() or sio.sha256_file(data) != digest:
                problems.append(f"{name}: external data missing or changed")
    output = manifest.get("output") or {}
    if path.suffix.lower() != ".ort" and output.get("model_sha256"):
        try:
            loaded = model if model is not None else sio.load(path, check=False)
        except ModelLoadError as e:
            return [*problems, str(e)]
        if model_sha256(loaded) != output["model_sha256"]:
            problems.append(f"{path.name}: the model differs from the manifest's model_sha256")
    return problems


def inspect(path: PathLike, model: onnx.ModelProto) -> dict[str, Any] | None:
    """The manifest of a loaded ONNX artifact with ``where`` and ``problems`` (for ``inspect``)."""
    path = Path(path)
    side = sidecar_path(path)
    found: dict[str, Any] | None
    if side.is_file():
        found = read(path)
    else:
        found = embedded(model)
        found = None if found is None else found | {"where": "embedded"}
    if found is None:
        return None
    return found | {"problems": check(path, found, model=model)}
