"""Recovery fine-tuning of a compressed ONNX model against the original, without its training code.

The pipeline of :func:`finetune`:

1. the candidate (a pruned, resized... model) is normalized by the project's cleanup and converted
   to a trainable PyTorch module (:mod:`.torch_graph`, onnx2torch plus :mod:`.ops`); an op without
   a converter is refused by name before anything else runs;
2. the conversion is checked: the module's outputs against the candidate's in onnxruntime;
3. the original (the teacher) labels the training and validation inputs once; its outputs are cached
   by model hash and data hash (:func:`onnxsqueeze.distill.teacher.teacher_outputs`);
4. the module trains to imitate the teacher (:mod:`.train`): zero weights stay zero, the graph
   (so the removed channels and the interface) is the candidate's, BatchNorm statistics frozen;
5. it is exported with :func:`onnxsqueeze.convert.from_torch` and verified against PyTorch; the
   written model keeps the candidate's input and output declarations.

Without ``val`` data a seeded 10% of the training data is held out for early stopping and the report.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze import runtime, shapes
from onnxsqueeze.distill.train import EpochLog
from onnxsqueeze.errors import InputError, VerificationError
from onnxsqueeze.finetune.torch_graph import TorchGraph, missing_ops, normalize, to_onnx, to_torch
from onnxsqueeze.finetune.train import FinetuneConfig, OutputKind, TrainSummary, clock, output_kinds, train

Data = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class FinetuneReport:
    """What a fine-tuning run measured (metrics on the validation data, in onnxruntime)."""

    metric: str
    teacher: dict[str, float]
    before: dict[str, float]
    after: dict[str, float]
    conversion_max_abs: float
    export_max_abs: float
    zeros: dict[str, int]
    training: TrainSummary
    cache_hits: dict[str, bool]
    samples: dict[str, int]
    config: FinetuneConfig
    ops: dict[str, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "teacher": self.teacher,
            "before": self.before,
            "after": self.after,
            "conversion_max_abs": self.conversion_max_abs,
            "export_max_abs": self.export_max_abs,
            "zeros": self.zeros,
            "training": self.training.to_dict(),
            "teacher_cache_hits": self.cache_hits,
            "samples": self.samples,
            "config": dataclasses.asdict(self.config),
            "ops": self.ops,
            "seconds": round(self.seconds, 2),
        }


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    model: onnx.ModelProto
    report: FinetuneReport
    export: Any  # the VerifyReport of the export (onnxruntime vs PyTorch)


def _load(data: Path | Data, label: str) -> tuple[dict[str, np.ndarray], str]:
    if isinstance(data, (str, Path)):
        return dict(sio.load_npz(Path(data))), str(data)
    return dict(data), label


def _cast(model: onnx.ModelProto, data: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return [
        np.ascontiguousarray(np.asarray(data[vi.name]).astype(shapes.input_dtype(vi), copy=False))
        for vi in shapes.graph_inputs(model)
    ]


def score(
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    teacher: Mapping[str, np.ndarray],
    kinds: list[OutputKind],
    labels: np.ndarray | None,
    threads: int = 2,
) -> dict[str, float]:
    """The model's agreement with the teacher (top-1) and accuracy on the labels, on its first
    class-score output; for other outputs the relative RMS error to the teacher."""
    sess = runtime.session(model, optimize=True, threads=threads)
    names = [i.name for i in sess.get_inputs()]
    out = runtime.run_batched(sess, {n: inputs[n] for n in names}, batch_size=64)
    result: dict[str, float] = {}
    scores = next((k for k in kinds if k.kind == "scores"), None)
    if scores is not None:
        pred = out[scores.name].argmax(1)
        result["agreement"] = float((pred == teacher[scores.name].argmax(1)).mean())
        if labels is not None:
            result["accuracy"] = float((pred == labels).mean())
    for k in kinds:
        if k.kind == "tensor":
            err = float(((out[k.name].astype(np.float64) - teacher[k.name]) ** 2).mean())
            result[f"rel_rmse:{k.name}"] = float(np.sqrt(err / k.scale))
    return result


@dataclasses.dataclass
class Session:
    """A converted candidate with its data and the teacher's outputs, ready to train (and re-train)."""

    norm: onnx.ModelProto
    graph: TorchGraph
    kinds: list[OutputKind]
    x_tr: dict[str, np.ndarray]
    t_tr: list[np.ndarray]
    y_tr: np.ndarray | None
    x_va: dict[str, np.ndarray]
    t_va_raw: dict[str, np.ndarray]
    t_va: list[np.ndarray]
    y_va: np.ndarray | None
    teacher_model: onnx.ModelProto
    teacher_sha: str
    cache_hits: dict[str, bool]
    conversion_max_abs: float
    config: FinetuneConfig
    start: float

    def train(
        self,
        config: FinetuneConfig | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None,
        start_time: float | None = None,
    ) -> TrainSummary:
        names = self.graph.input_names
        return train(
            self.graph,
            self.kinds,
            [self.x_tr[n] for n in names],
            self.t_tr,
            self.y_tr,
            [self.x_va[n] for n in names],
            self.t_va,
            self.y_va,
            config or self.config,
            on_epoch=on_epoch,
            start_time=self.start if start_time is None else start_time,
        )

    def score(self, model: onnx.ModelProto) -> dict[str, float]:
        return score(model, self.x_va, self.t_va_raw, self.kinds, self.y_va, self.config.threads)


def prepare(
    candidate: str | Path | onnx.ModelProto,
    teacher: str | Path,
    train_data: Path | Data,
    *,
    val: Path | Data | None = None,
    config: FinetuneConfig | None = None,
    labels_key: str = "labels",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    tolerance: float = 1e-4,
    on_teacher: Callable[[int, int], None] | None = None,
) -> Session:
    """Steps 1-3 of the module docstring: convert and check the candidate, label the data."""
    from onnxsqueeze.distill.teacher import as_logits, default_cache_dir, teacher_outputs

    config = config or FinetuneConfig()
    t0 = clock(config)()
    if config.time_budget_s is not None and config.time_budget_s <= 0:
        raise InputError("the time budget must be positive")
    if config.batch_size < 2:
        raise InputError("--batch-size must be >= 2")
    cand = candidate if isinstance(candidate, onnx.ModelProto) else sio.load(Path(candidate))
    teacher_path = Path(teacher)
    teacher_model = sio.load(teacher_path)
    teacher_sha = sio.sha256_file(teacher_path)
    cand_io = _interface_names(cand)
    if cand_io != _interface_names(teacher_model):
        raise InputError(
            f"the candidate's inputs and outputs {cand_io} are not the teacher's "
            f"{_interface_names(teacher_model)}"
        )
    norm = normalize(cand)
    # refuse an unconvertible op before the teacher or anything else runs
    graph: TorchGraph = to_torch(norm)

    tr, train_label = _load(train_data, "train")
    names = graph.input_names
    missing = [n for n in names if n not in tr]
    if missing:
        raise InputError(f"{train_label}: no array for input(s) {missing}; it has {sorted(tr)}")
    y_tr = tr.get(labels_key)
    y_tr = y_tr.astype(np.int64) if y_tr is not None else None
    cache = (cache_dir or default_cache_dir()) if use_cache else None
    hits: dict[str, bool] = {}
    x_tr = dict(zip(names, _cast(norm, tr), strict=True))
    t_tr, hits["train"] = teacher_outputs(
        teacher_model, teacher_sha, x_tr, cache_dir=cache, threads=config.threads, on_batch=on_teacher
    )
    if val is None:
        order = np.random.default_rng(config.seed).permutation(len(x_tr[names[0]]))
        n_val = max(2, len(order) // 10)
        vi, ti = np.sort(order[:n_val]), np.sort(order[n_val:])
        x_va = {k: v[vi] for k, v in x_tr.items()}
        t_va = {k: v[vi] for k, v in t_tr.items()}
        y_va = y_tr[vi] if y_tr is not None else None
        x_tr = {k: v[ti] for k, v in x_tr.items()}
        t_tr = {k: v[ti] for k, v in t_tr.items()}
        y_tr = y_tr[ti] if y_tr is not None else None
    else:
        va, _ = _load(val, "val")
        x_va = dict(zip(names, _cast(norm, va), strict=True))
        y_va = va.get(labels_key)
        y_va = y_va.astype(np.int64) if y_va is not None else None
        t_va, hits["val"] = teacher_outputs(teacher_model, teacher_sha, x_va, cache_dir=cache)
    kinds = output_kinds(graph.output_names, t_tr)
    if not kinds:
        raise InputError("the model has no floating-point output to train against")
    for k in kinds:
        if k.kind == "scores" and y_tr is not None:
            c = t_tr[k.name].shape[1]
            if y_tr.min() < 0 or y_tr.max() >= c:
                raise InputError(
                    f"labels must be class indices in [0, {c}); found {y_tr.min()}..{y_tr.max()}"
                )
            break

    def teacher_arrays(t: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [
            as_logits(t[k.name], k.name) if k.kind == "scores" else t[k.name].astype(np.float32)
            for k in kinds
        ]

    # the conversion, checked against the candidate in onnxruntime before any training
    conv_err = _conversion_error(graph, norm, x_va, tolerance)
    return Session(
        norm=norm,
        graph=graph,
        kinds=kinds,
        x_tr=x_tr,
        t_tr=teacher_arrays(t_tr),
        y_tr=y_tr,
        x_va=x_va,
        t_va_raw=t_va,
        t_va=teacher_arrays(t_va),
        y_va=y_va,
        teacher_model=teacher_model,
        teacher_sha=teacher_sha,
        cache_hits=hits,
        conversion_max_abs=conv_err,
        config=config,
        start=t0,
    )


def finish(
    session: Session,
    summary: TrainSummary,
    before: dict[str, float],
    zeros_before: int,
    tolerance: float,
) -> FinetuneResult:
    """Step 5: export, check the zeros and the interface, measure, record provenance."""
    import torch

    names = session.graph.input_names
    check = {n: session.x_va[n][:64] for n in names}
    model, export_report = to_onnx(session.graph, session.norm, check, tolerance=tolerance)
    zeros_after = _weight_zeros(model)
    if zeros_after < zeros_before:
        raise VerificationError(
            f"the exported model has {zeros_after} zero weights where the candidate had {zeros_before}"
        )
    after = session.score(model)
    _provenance(model, session.teacher_sha, session.config, summary, torch.__version__)
    has_scores = any(k.kind == "scores" for k in session.kinds)
    metric = ("accuracy" if session.y_va is not None else "agreement") if has_scores else "rel_rmse"
    report = FinetuneReport(
        metric=metric,
        teacher=session.score(session.teacher_model),
        before=before,
        after=after,
        conversion_max_abs=session.conversion_max_abs,
        export_max_abs=float(export_report.max_abs),
        zeros={"candidate": zeros_before, "result": zeros_after},
        training=summary,
        cache_hits=session.cache_hits,
        samples={"train": len(session.x_tr[names[0]]), "val": len(session.x_va[names[0]])},
        config=session.config,
        ops=session.graph.ops,
        seconds=clock(session.config)() - session.start,
    )
    return FinetuneResult(model, report, export_report)


def finetune(
    candidate: str | Path | onnx.ModelProto,
    teacher: str | Path,
    train_data: Path | Data,
    *,
    val: Path | Data | None = None,
    config: FinetuneConfig | None = None,
    labels_key: str = "labels",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    tolerance: float = 1e-4,
    on_teacher: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``candidate`` to imitate ``teacher`` on ``train_data``; export and verify it.

    Args:
        candidate: the compressed model (file or proto); it must have the teacher's interface.
        teacher: the original model's file (its sha256 keys the output cache).
        train_data: ``.npz`` or arrays: inputs keyed by input name, optional ``labels_key``.
        val: validation data (default: a seeded 10% of ``train_data``).
        config: hyper-parameters (:class:`FinetuneConfig`).
        cache_dir: teacher-output cache (default ``~/.cache/onnxsqueeze/teacher``).
        tolerance: max abs error allowed for the conversion (relative to the outputs' scale when
            it exceeds 1) and for the export.

    Raises:
        UnsupportedModelError: an op has no PyTorch converter (named), or the conversion differs.
        InputError: interfaces or data do not match.
        VerificationError: the export differs from PyTorch beyond ``tolerance``.
    """
    session = prepare(
        candidate,
        teacher,
        train_data,
        val=val,
        config=config,
        labels_key=labels_key,
        cache_dir=cache_dir,
        use_cache=use_cache,
        tolerance=tolerance,
        on_teacher=on_teacher,
    )
    zeros_before = session.graph.zeros()
    before = session.score(session.norm)
    summary = session.train(on_epoch=on_epoch)
    return finish(session, summary, before, zeros_before, tolerance)


def _interface_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    return [vi.name for vi in shapes.graph_inputs(model)], [o.name for o in model.graph.output]


def _conversion_error(
    graph: TorchGraph, model: onnx.ModelProto, data: Mapping[str, np.ndarray], tolerance: float
) -> float:
    """Max abs difference of the converted module and the candidate on (up to 64) samples.

    Raises:
        UnsupportedModelError: beyond ``tolerance`` (scaled by the outputs' magnitude above 1).
    """
    import torch

    from onnxsqueeze.errors import UnsupportedModelError

    feeds = {n: np.ascontiguousarray(data[n][:64]) for n in graph.input_names}
    sess = runtime.session(model, optimize=False, threads=2)
    ref = runtime.run_batched(sess, feeds, batch_size=64)
    graph.module.eval()
    with torch.no_grad():
        out = graph.module(*(torch.from_numpy(feeds[n]) for n in graph.input_names))
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    worst, scale = 0.0, 1.0
    for name, value in zip(graph.output_names, outs, strict=True):
        r = ref[name]
        if not np.issubdtype(r.dtype, np.floating):
            continue
        worst = max(worst, float(np.abs(value.numpy().astype(np.float64) - r).max()))
        scale = max(scale, float(np.abs(r).max()))
    if worst > tolerance * scale:
        raise UnsupportedModelError(
            f"cannot fine-tune: the PyTorch conversion differs from the model by {worst:.3g} "
            f"(allowed {tolerance * scale:.3g})"
        )
    return worst


def _weight_zeros(model: onnx.ModelProto) -> int:
    from onnx import numpy_helper

    total = 0
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) > 1:
            total += int((numpy_helper.to_array(init) == 0).sum())
    return total


def _provenance(
    model: onnx.ModelProto,
    teacher_sha: str,
    config: FinetuneConfig,
    summary: TrainSummary,
    torch_version: str,
) -> None:
    from onnxsqueeze.distill.export import stamp_provenance

    stamp_provenance(
        model,
        "finetune",
        {
            "teacher_sha256": teacher_sha,
            "config": json.dumps(dataclasses.asdict(config), sort_keys=True),
            "best_epoch": str(summary.best_epoch),
            "torch": torch_version,
        },
    )


__all__ = [
    "FinetuneConfig",
    "FinetuneReport",
    "FinetuneResult",
    "finetune",
    "finish",
    "missing_ops",
    "normalize",
    "prepare",
    "score",
    "to_onnx",
    "to_torch",
]
