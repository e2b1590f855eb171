"""Recipes: the passes (and options) that turned a source model into a squeezed one, as TOML.

A recipe replays deterministically: :func:`build` on the same source model and calibration data
gives byte-identical output, so a CI job can rebuild the artifact ``squeeze`` found::

    format = 1
    source_sha256 = "9f2c..."            # the model the recipe was made for

    [calibration]                         # only when a step takes calibration data
    data = "/data/val.npz"                # where the arrays came from (``apply --data`` overrides)
    start = 0
    stop = 64
    sha256 = "1ab4..."                    # of the arrays used, checked on replay

    [[steps]]
    pass = "cleanup"

    [[steps]]
    pass = "int8"
    calibration = true
    options = { mode = "static", per_channel = true }

Pass names are keys of :data:`onnxsqueeze.passes.PASSES`.

A step that needs training (distillation into a smaller student) cannot be replayed byte for byte
cheaply: its result depends on a time budget and on torch's kernels. Such a recipe names a
**base model** instead, stored beside the recipe, and the passes run on it::

    [base]                                # the passes run on this model, not on the source
    path = "digits_cnn.student.onnx"      # relative to the recipe
    sha256 = "5e1d..."                    # checked on replay
    method = "distill"
    student = "cnn4"                      # how it was made (provenance)

``apply`` checks the source model's hash as usual (the teacher), then replays the steps on the
base model: the result is byte-identical to what ``squeeze`` wrote.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze import io as sio
from onnxsqueeze.errors import InputError

FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Step:
    """One pass of a recipe: its registry name, options, and whether it takes calibration data."""

    pass_name: str
    options: tuple[tuple[str, Any], ...] = ()
    calibration: bool = False

    @classmethod
    def of(
        cls, pass_name: str, options: Mapping[str, Any] | None = None, *, calibration: bool = False
    ) -> Step:
        return cls(pass_name, tuple(sorted((options or {}).items())), calibration)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pass": self.pass_name}
        if self.calibration:
            out["calibration"] = True
        if self.options:
            out["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options}
        return out


@dataclasses.dataclass(frozen=True)
class CalibrationSource:
    """Where a recipe's calibration arrays come from: samples ``start:stop`` of a data file."""

    data: str
    start: int
    stop: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """The model a recipe's steps run on when it is not the source (a distilled student).

    Attributes:
        path: the ONNX file, relative to the recipe's folder (or absolute).
        sha256: of that file's bytes, checked on replay.
        method: how it was made from the source (``distill`` or ``finetune``).
        student: the student spec it was made with (``distill``).
        steps: the passes whose output was fine-tuned against the source (``finetune``);
            provenance only: ``apply`` does not retrain, it reuses the stored model.
    """

    path: str
    sha256: str
    method: str = "distill"
    student: str = ""
    steps: tuple[Step, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "method": self.method}
        if self.student:
            doc["student"] = self.student
        if self.steps:
            doc["steps"] = [s.to_dict() for s in self.steps]
        return doc


@dataclasses.dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    source_sha256: str | None = None
    calibration: CalibrationSource | None = None
    base: BaseModel | None = None

    def needs_calibration(self) -> bool:
        return any(s.calibration for s in self.steps)

    def to_toml(self) -> str:
        import tomli_w

        doc: dict[str, Any] = {"format": FORMAT}
        if self.source_sha256:
            doc["source_sha256"] = self.source_sha256
        if self.calibration is not None and self.needs_calibration():
            doc["calibration"] = dataclasses.asdict(self.calibration)
        if self.base is not None:
            doc["base"] = self.base.to_dict()
        doc["steps"] = [s.to_dict() for s in self.steps]
        header = "# onnxsqueeze recipe: replay with `onnxsqueeze apply recipe.toml MODEL -o OUT`\n"
        return header + tomli_w.dumps(doc)


def _parse_steps(raw_steps: Any, source: str) -> list[Step]:
    from onnxsqueeze.passes import PASSES

    if not isinstance(raw_steps, list):
        raise InputError(f"{source}: steps must be an array of tables")
    steps: list[Step] = []
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, dict) or not isinstance(raw.get("pass"), str):
            raise InputError(f"{source}: step {i + 1} has no 'pass' name")
        name = raw["pass"]
        if name not in PASSES:
            raise InputError(
                f"{source}: step {i + 1}: unknown pass '{name}'; known: {', '.join(sorted(PASSES))}"
            )
        options = raw.get("options", {})
        if not isinstance(options, dict):
            raise InputError(f"{source}: step {i + 1}: 'options' must be a table")
        fields = {f.name for f in dataclasses.fields(PASSES[name])}  # type: ignore[arg-type]
        unknown = sorted(set(options) - fields)
        if unknown:
            raise InputError(f"{source}: step {i + 1} ({name}): unknown option(s) {unknown}")
        opts = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        steps.append(Step.of(name, opts, calibration=bool(raw.get("calibration", False))))
    return steps


def loads(text: str, *, source: str = "recipe") -> Recipe:
    """Parse a recipe; every problem is an InputError naming ``source``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{source}: not valid TOML ({e})") from e
    if doc.get("format", FORMAT) != FORMAT:
        raise InputError(f"{source}: recipe format {doc.get('format')} is not supported (expected {FORMAT})")
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise InputError(f"{source}: no [[steps]]")
    steps = _parse_steps(raw_steps, source)
    calibration = None
    if "calibration" in doc:
        c = doc["calibration"]
        try:
            calibration = CalibrationSource(str(c["data"]), int(c["start"]), int(c["stop"]), str(c["sha256"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{source}: [calibration] needs data, start, stop and sha256") from e
    base = None
    if "base" in doc:
        b = doc["base"]
        try:
            base = BaseModel(
                str(b["path"]),
                str(b["sha256"]),
                str(b.get("method", "distill")),
                str(b.get("student", "")),
                tuple(_parse_steps(b.get("steps", []), f"{source}: [base]")),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{source}: [base] needs path and sha256") from e
    recipe = Recipe(tuple(steps), doc.get("source_sha256"), calibration, base)
    if recipe.needs_calibration() and calibration is None:
        raise InputError(f"{source}: a step takes calibration data but the recipe has no [calibration]")
    return recipe


def load(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the recipe ({e})") from e
    return loads(text, source=str(path))


def save(recipe: Recipe, path: str | Path, *, protect: Sequence[str | Path] = ()) -> Path:
    return sio.write_bytes_atomic(path, recipe.to_toml().encode(), protect=protect)


def make_passes(
    steps: Sequence[Step], calibration: Mapping[str, np.ndarray] | None, model: ir.Model | None = None
) -> list[Any]:
    """Instantiate the passes of ``steps``; calibrated steps get ``calibration=`` the arrays.

    A pass that takes calibrated activation ranges instead (``ranges``: int8 static) is calibrated
    by the technique layer on ``model`` as it stands before that step; without ``model`` only its
    options are checked.

    Raises:
        InputError: a pass is unknown, an option is invalid, or calibration data are missing.
    """
    return [_make_pass(step, calibration, model) for step in steps]


def _make_pass(step: Step, calibration: Mapping[str, np.ndarray] | None, model: ir.Model | None) -> Any:
    from onnxsqueeze.passes import PASSES

    cls = PASSES.get(step.pass_name)
    if cls is None:
        raise InputError(f"unknown pass '{step.pass_name}'; known: {', '.join(sorted(PASSES))}")
    kwargs = dict(step.options)
    if step.calibration:
        if calibration is None:
            raise InputError(f"pass '{step.pass_name}' needs calibration data")
        if "ranges" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
            from onnxsqueeze.optimize.quantize import calibrated_int8_options

            kwargs = calibrated_int8_options(kwargs, calibration, model)
        else:
            kwargs["calibration"] = dict(calibration)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise InputError(f"pass '{step.pass_name}': invalid options {dict(step.options)} ({e})") from e


def build(
    model: onnx.ModelProto,
    steps: Sequence[Step],
    *,
    calibration: Mapping[str, np.ndarray] | None = None,
    source_sha256: str | None = None,
) -> onnx.ModelProto:
    """Run ``steps`` on a copy of ``model`` and return the result (provenance recorded).

    Deterministic: the same model, steps and calibration arrays give the same bytes.

    Raises:
        InputError: see :func:`make_passes`.
        UnsupportedModelError: a pass cannot be applied (its message names why).
    """
    return build_traced(model, steps, calibration=calibration, source_sha256=source_sha256)[0]


def build_traced(
    model: onnx.ModelProto,
    steps: Sequence[Step],
    *,
    calibration: Mapping[str, np.ndarray] | None = None,
    source_sha256: str | None = None,
    applied: Sequence[bool] = (),
    described: Sequence[dict[str, Any]] = (),
    on_step: Callable[[int, ir.Model, list[bool], list[dict[str, Any]]], None] | None = None,
) -> tuple[onnx.ModelProto, list[bool]]:
    """:func:`build`, also returning whether each step modified the model.

    ``applied``: the first ``len(applied)`` steps were already run on ``model`` (without
    provenance), and whether each modified it; they are recorded, not rerun. The search
    normalizes its base model once this way and gets the same bytes as a full build.
    ``described``: the provenance of the first applied steps as they ran (:func:`describe` of
    their passes: a calibrated int8 step records its measured ranges); default their options.
    ``on_step(i, model, modified, described)``: called after step ``i`` ran, with the model as it
    stands (before provenance: a caller may keep it to resume a longer build from there).
    """
    from onnxsqueeze.passes.base import describe
    from onnxsqueeze.pipeline import record_provenance, run_passes

    passes = make_passes(steps, calibration)  # every option checked before any work
    record = [describe(p) for p in passes]
    record[: len(described)] = list(described)
    work = ir.serde.deserialize_model(model)
    modified: list[bool] = list(applied)
    for i in range(len(applied), len(steps)):
        # Each pass is built on the model as it stands: a calibrated int8 step measures its
        # activation ranges after the passes before it. Recorded once, all steps, at the end.
        passes[i] = _make_pass(steps[i], calibration, work)
        run_passes(work, [passes[i]], source_sha256=source_sha256, record=[], trace=modified)
        record[i] = describe(passes[i])
        if on_step is not None:
            on_step(i, work, modified, record[: i + 1])
    record_provenance(work, record, source_sha256)
    return ir.serde.serialize_model(work), modified
