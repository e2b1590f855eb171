"""Knowledge distillation: train a small PyTorch student on an ONNX teacher's soft labels.

The pipeline of :func:`distill`:

1. the teacher (any ONNX model, run in onnxruntime) labels the training, validation and report
   data once; its logits are cached on disk by teacher hash and data hash (:mod:`.teacher`);
2. the student named by a spec is built for the teacher's input shape and class count
   (:mod:`.student`, catalog in :mod:`.catalog`);
3. it trains on ``alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE(student, labels)``
   (:mod:`.loss`; pure KL without labels), seeded, on 2 CPU threads, with early stopping on
   validation, the best epoch kept and a time budget (:mod:`.train`);
4. it is exported to ONNX with a dynamic batch and verified against PyTorch (:mod:`.export`);
5. teacher and student are reported side by side (:mod:`.report`).

Without ``val`` data a seeded 10% of the training data is held out for early stopping; the report
data defaults to the validation data.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze import shapes
from onnxsqueeze.distill.loss import distillation_loss
from onnxsqueeze.distill.report import ModelStats, side_by_side, stats_dict
from onnxsqueeze.distill.teacher import TeacherOutputs, default_cache_dir, output_name, teacher_logits
from onnxsqueeze.distill.train import EpochLog, Split, TrainConfig, TrainResult, evaluate, train_student
from onnxsqueeze.errors import InputError
from onnxsqueeze.verify import VerifyReport

Data = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DistillReport:
    """Everything a distillation run measured."""

    teacher: ModelStats
    student: ModelStats
    student_spec: str
    training: TrainResult
    export: VerifyReport
    config: TrainConfig
    cache_hits: dict[str, bool]
    samples: dict[str, int]
    report_data: str
    sepconv: dict[str, Any] | None = None

    @property
    def param_reduction(self) -> float:
        return self.teacher.params / max(1, self.student.params)

    def to_dict(self) -> dict[str, Any]:
        return {
            "student": self.student_spec,
            "models": stats_dict({"teacher": self.teacher, "student": self.student}),
            "param_reduction": self.param_reduction,
            "report_data": self.report_data,
            "samples": self.samples,
            "training": self.training.to_dict(),
            "export": {"max_abs": self.export.max_abs, "samples": self.export.samples},
            "config": dataclasses.asdict(self.config),
            "teacher_cache_hits": self.cache_hits,
            "sepconv": self.sepconv,
        }


@dataclasses.dataclass(frozen=True)
class DistillResult:
    model: onnx.ModelProto
    report: DistillReport


def _split_arrays(
    data: Data, names: list[str], labels_key: str, label: str
) -> tuple[dict, np.ndarray | None]:
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"{label}: no array for teacher input(s) {missing}; it has {sorted(data)}")
    inputs = {n: np.asarray(data[n]) for n in names}
    sizes = {len(v) for v in inputs.values()}
    labels = np.asarray(data[labels_key]).astype(np.int64) if labels_key in data else None
    if labels is not None:
        sizes.add(len(labels))
        if labels.ndim != 1:
            raise InputError(
                f"{label}: '{labels_key}' must be class indices [N], not shape {list(labels.shape)}"
            )
    if len(sizes) != 1:
        raise InputError(f"{label}: arrays have different sample counts {sorted(sizes)}")
    if next(iter(sizes)) < 2:
        raise InputError(f"{label}: needs at least 2 samples")
    return inputs, labels


def _model_dtype(x: np.ndarray) -> np.ndarray:
    """Floats as float32, integers (token ids) as int64, contiguous: what the student is fed."""
    dtype = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float32
    return np.ascontiguousarray(x, dtype=dtype)


def _load(data: Data | str | Path, label: str) -> tuple[Data, str]:
    if isinstance(data, str | Path):
        return sio.load_npz(data), str(data)
    return data, label


def distill(
    teacher: str | Path,
    student: str,
    train: Data | str | Path,
    *,
    val: Data | str | Path | None = None,
    test: Data | str | Path | None = None,
    config: TrainConfig | None = None,
    labels_key: str = "labels",
    teacher_output: str | None = None,
    features: Sequence[tuple[str, str]] = (),
    cache_dir: Path | None = None,
    use_cache: bool = True,
    measure_latency: bool = True,
    tolerance: float | None = 1e-4,
    on_teacher: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> DistillResult:
    """Distill ``teacher`` (an ONNX file) into the student ``student`` names; see the module doc.

    Args:
        teacher: the teacher's ``.onnx`` file.
        student: a student spec (:mod:`onnxsqueeze.distill.student`).
        train: training inputs keyed by the teacher's input names (an ``.npz`` path or arrays),
            with optional class labels under ``labels_key``.
        val: validation data for early stopping (default: 10% of ``train``, seeded).
        test: data for the side-by-side report (default: the validation data).
        config: the training hyper-parameters.
        labels_key: the key of the class labels in the data files.
        teacher_output: the teacher output with the class scores (default: its first).
        features: ``(teacher_tensor, student_module)`` pairs to match as hints (see :mod:`.loss`).
        cache_dir: where teacher outputs are cached (default :func:`default_cache_dir`).
        use_cache: False recomputes the teacher outputs and writes nothing to the cache.
        measure_latency: time both models in onnxruntime for the report.
        tolerance: max abs difference allowed between the exported ONNX student and PyTorch
            (None: report it, check nothing; the caller decides).
        on_teacher: ``(done, total)`` while the teacher labels data.
        on_epoch: called after each epoch with its :class:`EpochLog`.

    Returns:
        The verified student ONNX model (teacher's input/output names, dynamic batch, provenance
        in metadata) and the report.

    Raises:
        ModelLoadError, InputError: bad teacher, data or student spec.
        UnsupportedModelError: the teacher's output is not class scores, or the student does not fit.
        VerificationError: the exported student differs from PyTorch beyond ``tolerance``.
    """
    import torch

    from onnxsqueeze.distill.export import export_student
    from onnxsqueeze.distill.student import build_student

    config = config or TrainConfig()
    if not 0.0 <= config.alpha <= 1.0:
        raise InputError(f"--alpha {config.alpha}: must be in [0, 1]")
    if config.temperature <= 0:
        raise InputError(f"--temperature {config.temperature}: must be positive")
    if (config.epochs is not None and config.epochs < 1) or config.batch_size < 2:
        raise InputError("--epochs must be >= 1 and --batch-size >= 2")
    teacher_path = Path(teacher)
    teacher_model = sio.load(teacher_path)
    teacher_sha = sio.sha256_file(teacher_path)
    out_name = output_name(teacher_model, teacher_output)
    names = [vi.name for vi in shapes.graph_inputs(teacher_model)]
    cache = (cache_dir or default_cache_dir()) if use_cache else None

    train_data, train_label = _load(train, "train")
    x_train, y_train = _split_arrays(train_data, names, labels_key, train_label)
    hits: dict[str, bool] = {}

    def soft(inputs: dict, key: str, tensors: Sequence[str] = ()) -> TeacherOutputs:
        result = teacher_logits(
            teacher_model,
            teacher_sha,
            inputs,
            cache_dir=cache,
            output=out_name,
            features=tensors,
            on_batch=on_teacher,
            threads=config.threads,
        )
        hits[key] = result.cache_hit
        return result

    train_out = soft(x_train, "train", [t for t, _ in features])
    t_train = train_out.logits
    f_train = tuple(train_out.features[t] for t, _ in features)
    if val is None:
        rng = np.random.default_rng(config.seed)
        order = rng.permutation(len(t_train))
        n_val = max(1, len(order) // 10)
        vi, ti = np.sort(order[:n_val]), np.sort(order[n_val:])
        x_val = {k: v[vi] for k, v in x_train.items()}
        y_val = y_train[vi] if y_train is not None else None
        t_val = t_train[vi]
        x_train = {k: v[ti] for k, v in x_train.items()}
        y_train = y_train[ti] if y_train is not None else None
        t_train = t_train[ti]
        f_train = tuple(f[ti] for f in f_train)
        val_label = f"10% of {train_label} (seed {config.seed})"
    else:
        val_data, val_label = _load(val, "val")
        x_val, y_val = _split_arrays(val_data, names, labels_key, val_label)
        t_val = soft(x_val, "val").logits
    if test is None:
        x_test, y_test, t_test, test_label = x_val, y_val, t_val, val_label
    else:
        test_data, test_label = _load(test, "test")
        x_test, y_test = _split_arrays(test_data, names, labels_key, test_label)
        t_test = soft(x_test, "test").logits

    num_classes = t_train.shape[1]
    for key, y in (("train", y_train), ("val", y_val), ("test", y_test)):
        if y is not None and (y.min() < 0 or y.max() >= num_classes):
            raise InputError(
                f"{key} data: labels must be class indices in [0, {num_classes}) for this teacher; "
                f"found {y.min()}..{y.max()}"
            )

    first = x_train[names[0]]
    torch.manual_seed(config.seed)
    example = tuple(torch.from_numpy(_model_dtype(x_train[n][:2])) for n in names)
    built = build_student(student, first.shape[1:], num_classes, example=example)

    def split(x: dict, t: np.ndarray, y: np.ndarray | None, f: tuple[np.ndarray, ...] = ()) -> Split:
        return Split(tuple(_model_dtype(x[n]) for n in names), t, y, f)

    result = train_student(
        built.module,
        split(x_train, t_train, y_train, f_train),
        split(x_val, t_val, y_val),
        config,
        taps=[s for _, s in features],
        on_epoch=on_epoch,
    )
    check = tuple(_model_dtype(x_test[n][:64]) for n in names)
    model, export_report = export_student(
        built.module, check, input_names=names, output_names=[out_name], tolerance=tolerance
    )
    _provenance(model, teacher_sha, student, config, result)
    stats = side_by_side(
        teacher_model,
        model,
        {n: _model_dtype(x_test[n]) for n in names},
        labels=y_test,
        teacher_logits=t_test,
        output=out_name,
        measure_latency=measure_latency,
    )
    report = DistillReport(
        teacher=stats["teacher"],
        student=stats["student"],
        student_spec=student,
        training=result,
        export=export_report,
        config=config,
        cache_hits=hits,
        samples={"train": len(t_train), "val": len(t_val), "report": len(t_test)},
        report_data=test_label,
        sepconv=built.sepconv.to_dict() if built.sepconv is not None else None,
    )
    return DistillResult(model, report)


def _provenance(
    model: onnx.ModelProto, teacher_sha: str, spec: str, config: TrainConfig, result: TrainResult
) -> None:
    import torch

    from onnxsqueeze.distill.export import stamp_provenance

    stamp_provenance(
        model,
        "distill",
        {
            "teacher_sha256": teacher_sha,
            "student": spec,
            "config": json.dumps(dataclasses.asdict(config), sort_keys=True),
            "best_epoch": str(result.best_epoch),
            "torch": torch.__version__,
        },
    )


__all__ = [
    "DistillReport",
    "DistillResult",
    "EpochLog",
    "ModelStats",
    "Split",
    "TeacherOutputs",
    "TrainConfig",
    "TrainResult",
    "default_cache_dir",
    "distill",
    "distillation_loss",
    "evaluate",
    "teacher_logits",
    "train_student",
]
