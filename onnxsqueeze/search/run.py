"""The squeeze's front door: :func:`make_squeezer` loads the model and data and sets up the
search; :func:`squeeze` is the whole run (search, then :func:`write_outputs`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxsqueeze import io as sio
from onnxsqueeze.errors import InputError
from onnxsqueeze.evaluate import Budget, Dataset, Evaluator, Preprocess
from onnxsqueeze.recipe import CalibrationSource
from onnxsqueeze.search.algorithm import Point, SearchResult
from onnxsqueeze.search.options import SqueezeOptions
from onnxsqueeze.search.outputs import write_outputs
from onnxsqueeze.search.squeezer import Squeezer


def make_squeezer(
    model: str | Path,
    data: str | Path,
    *,
    options: SqueezeOptions,
    out_dir: str | Path,
    metric: str | None = None,
    calibration_data: str | Path | None = None,
    calibration_samples: int = 64,
    samples: int | None = None,
    output: str | None = None,
    threshold: float = 0.5,
    preprocess: Preprocess | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    on_image: Callable[[int, int], None] | None = None,
    train_data: str | Path | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    class_axis: int | None = None,
) -> Squeezer:
    """Load the model and data, split off calibration samples and set up the search.

    A model with at least ``io.STREAM_BYTES`` of weights gets the streaming search
    (:class:`onnxsqueeze.search.streaming.StreamingSqueezer`: its graph alone is loaded here).

    Args:
        model: the original ``.onnx`` file.
        data: an ``.npz`` (inputs and optional ``labels``) or an image folder (with ``preprocess``).
        options: budget, objective, provider...
        out_dir: the output folder (the default cache lives in ``out_dir/.cache``; image-folder
            calibration arrays are written to ``out_dir/calibration.npz`` for ``apply``).
        metric: a name in ``evaluate.METRICS`` (default: accuracy with labels, else agreement, or
            cosine for L2-normalized embeddings, judged on the original's outputs for 8 samples).
        calibration_data: an ``.npz`` to calibrate on; by default the first
            ``calibration_samples`` of ``train_data`` when given, else the first
            ``calibration_samples`` (at most a quarter) of ``data`` are held out for calibration
            and the rest is evaluated.
        samples: use at most this many samples of ``data``.
        output: the scored model output (default: the first).
        threshold: binarization threshold of ``iou``.
        preprocess: image preprocessing (default :class:`Preprocess`'s).
        cache_dir: evaluation cache (default ``out_dir/.cache``); ``use_cache=False`` for none.
        on_image: progress of image loading.
        train_data: an ``.npz`` of training inputs (and optional ``labels``): offers the
            ``distill`` knob (the model is the teacher) and is the default calibration data.
        input_shapes: ``--input-shape`` (``{name: dims}``): must fit the model and agree with the
            data's samples; an image folder is read at its H and W unless ``preprocess`` sets a
            size. Dynamic inputs are planned, counted and checked at these shapes.
        class_axis: the class axis of accuracy/agreement (default: 1, or 2 for a ``[T, N, C]``
            sequence output; see :mod:`onnxsqueeze.metrics`).

    Raises:
        ModelLoadError, InputError: bad model, data or options.
    """
    from onnxsqueeze import evaluate as E
    from onnxsqueeze import shapes

    t0 = time.perf_counter()
    model, data, out_dir = Path(model), Path(data), Path(out_dir)
    # Weights over io.STREAM_BYTES: the streaming search (search.streaming) reads the graph alone
    # here; onnxruntime and the passes read the weights from the file.
    streamed = sio.streams(model)
    original = sio.load_interface(model) if streamed else sio.load(model)
    given = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    if given:
        shapes.resolve_input_shapes(original, given)  # InputError: unknown input, wrong rank...
    if data.is_dir():
        first_input = shapes.graph_inputs(original)[0].name
        preprocess = preprocess or E.Preprocess()
        preprocess = _sized(preprocess, given.get(first_input))
        ds = E.load_image_folder(data, preprocess, input_name=first_input, limit=samples, on_image=on_image)
    else:
        ds = E.load_npz_dataset(data)
        if samples is not None and samples < len(ds):
            ds = ds.take(0, samples)
    _check_data_shapes(given, ds, data)
    named_metric = metric is not None
    metric = metric or ("accuracy" if ds.labels is not None else "agreement")
    train = E.load_npz_dataset(train_data) if train_data is not None else None
    if calibration_data is None and train_data is not None:
        calibration_data = train_data
    if calibration_data is not None:
        calibration_data = Path(calibration_data)
        cal = E.load_npz_dataset(calibration_data)
        cal = cal.take(0, min(calibration_samples, len(cal)))
        evalset = ds
        source = CalibrationSource(str(calibration_data.resolve()), 0, len(cal), cal.sha256())
    else:
        k = min(calibration_samples, len(ds) // 4)
        if k < 1:
            raise InputError(f"{data}: {len(ds)} samples are too few to hold out calibration data")
        cal, evalset = ds.take(0, k), ds.take(k, len(ds))
        if data.is_dir():
            # The images were preprocessed here: keep the calibration arrays beside the recipe so
            # that `apply` replays without the image folder or its preprocessing options.
            sio.save_npz(out_dir / "calibration.npz", cal.inputs, protect=[model])
            source = CalibrationSource("calibration.npz", 0, k, Dataset(cal.inputs).sha256())
        else:
            source = CalibrationSource(str(data.resolve()), 0, k, cal.sha256())
    # The original's outputs (teacher of label-free metrics) are computed on the first evaluation
    # that is not in the cache, so a rerun served from the cache runs no inference over the data
    # (without --metric and labels, 8 samples tell an embedding from class scores).
    how: dict[str, Any] = dict(
        output=output, threshold=threshold, class_axis=class_axis, provider=options.provider
    )
    if streamed:
        from onnxsqueeze.search.streaming import FileEvaluator

        evaluator: E.Evaluator = FileEvaluator(model, evalset, metric, **how)
    else:
        if not named_metric and metric == "agreement" and len(evalset):
            probe = evalset.take(0, min(8, len(evalset)))
            metric = _label_free_metric(E.Evaluator(original, probe, "agreement", **how))
        evaluator = E.Evaluator(original, evalset, metric, **how)
    common: dict[str, Any] = dict(
        calibration=cal,
        calibration_source=source,
        options=options,
        cache_dir=(cache_dir or out_dir / ".cache") if use_cache else None,
        model_sha256=sio.sha256_file(model),
        train=train,
        input_shapes=given or None,
    )
    if streamed:
        from onnxsqueeze.search.streaming import StreamingSqueezer

        assert isinstance(evaluator, FileEvaluator)
        squeezer: Squeezer = StreamingSqueezer(model, evaluator, scratch=out_dir, **common)
    else:
        squeezer = Squeezer(original, evaluator, model_path=model, **common)
    squeezer.timings["load"] = time.perf_counter() - t0
    squeezer.started -= squeezer.timings["load"]  # the time budget includes loading
    squeezer.wall_started -= squeezer.timings["load"]
    return squeezer


def _label_free_metric(probe: Evaluator) -> str:
    """The default metric without labels, from the original's outputs on a few samples: top-1
    agreement, except the cosine for L2-normalized ``[N, D]`` rows (sentence or face embeddings,
    whose argmax means nothing), as every other command judges them (:func:`metrics.unit_rows`)."""
    from onnxsqueeze import metrics

    try:
        out = probe.reference_outputs()
    except Exception:  # the original does not run here: the search's baseline says why, in one line
        return "agreement"
    return "cosine" if metrics.unit_rows(out) else "agreement"


def _sized(preprocess: Preprocess, dims: Sequence[int] | None) -> Preprocess:
    """An image folder read at the H and W of ``--input-shape`` when the preprocessing names none."""
    if dims is None or len(dims) != 4 or preprocess.size != Preprocess().size:
        return preprocess
    h, w = (dims[1], dims[2]) if preprocess.layout == "NHWC" else (dims[2], dims[3])
    return dataclasses.replace(preprocess, size=(int(h), int(w)))


def _check_data_shapes(given: Mapping[str, Sequence[int]], ds: Dataset, source: Path) -> None:
    """``--input-shape`` must agree with the samples the search runs on (batch aside)."""
    for name, dims in given.items():
        if name in ds.inputs and tuple(np.shape(ds.inputs[name])[1:]) != tuple(dims[1:]):
            raise InputError(
                f"--input-shape {name}:{','.join(map(str, dims))} disagrees with {source}, whose "
                f"'{name}' samples are {list(np.shape(ds.inputs[name])[1:])}"
            )


def squeeze(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    max_drop: float,
    relative: bool = False,
    objective: str = "latency",
    on_point: Callable[[Point], None] | None = None,
    **kwargs: Any,
) -> tuple[SearchResult, dict[str, Path]]:
    """The whole squeeze: search, then write the best model, recipe, report, results and plot.

    ``kwargs`` go to :func:`make_squeezer`, except the :class:`SqueezeOptions` fields
    (provider, time_budget_s, techniques, price_per_hour, instance, latency_seconds,
    distill_time_s).

    Raises:
        BudgetNotMetError: nothing fits (the report is written all the same).
    """
    fields = {f.name for f in dataclasses.fields(SqueezeOptions)}
    opts = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
    options = SqueezeOptions(budget=Budget(max_drop, relative), objective=objective, **opts)
    t0 = time.perf_counter()
    squeezer = make_squeezer(model, data, options=options, out_dir=out_dir, **kwargs)
    result = squeezer.run(on_point=on_point)
    files = write_outputs(
        squeezer,
        result,
        out_dir,
        protect=[model, data],
        model_name=Path(model).name.removesuffix(".onnx"),
        elapsed_s=time.perf_counter() - t0,
    )
    return result, files
