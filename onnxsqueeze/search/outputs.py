"""A squeeze's files: the candidates' models, recipes and base models, results.json, report.md
and the plot; :func:`write_outputs` raises when nothing fits or nothing improves."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze.errors import BudgetNotMetError, ObjectiveNotImprovedError, SqueezeError
from onnxsqueeze.search.algorithm import SearchResult
from onnxsqueeze.search.knobs import FT_PREFIX, base_of, base_spec, describe_settings
from onnxsqueeze.search.report import (
    improvement,
    not_improved_message,
    nothing_fits_message,
    plot_pareto,
    render_report,
    results_dict,
)
from onnxsqueeze.search.squeezer import Squeezer, written_form


def write_candidate(
    squeezer: Squeezer,
    settings: Mapping[str, Any],
    folder: Path,
    stem: str,
    *,
    recipe_name: str,
    protect: Sequence[str | Path] = (),
    verify: Callable[[onnx.ModelProto], dict[str, Any]] | None = None,
) -> tuple[onnx.ModelProto, dict[str, Path]]:
    """Write a candidate's model as ``stem.squeezed.onnx`` (its provenance in the sidecar
    manifest beside it, with ``verify(model)`` as its verification), its recipe and its base model
    (a distilled student ``stem.student.onnx`` or a fine-tuned pass output ``stem.finetuned.onnx``)."""
    from onnxsqueeze import recipe as rcp
    from onnxsqueeze.manifest import save_artifact
    from onnxsqueeze.search.streaming import StreamingSqueezer

    if isinstance(squeezer, StreamingSqueezer):  # a model over the streaming threshold: by file
        return squeezer.write_candidate(settings, folder, stem, recipe_name=recipe_name, protect=protect)  # type: ignore[return-value]
    model = squeezer.build_cached(settings)
    art = save_artifact(
        written_form(model),
        folder / f"{stem}.squeezed.onnx",
        source_path=squeezer.model_path,
        verify_report=verify(model) if verify is not None else None,
        protect=protect,
    )
    written = {"model": art.path, "manifest": art.manifest_path}
    base_path = None
    base = base_of(settings, squeezer.knobs)
    if base is not None:
        # The recipe's base model: its exact bytes (their sha256 is in the recipe).
        student, _ = squeezer.base_model(settings)
        kind = "finetuned" if base_spec(base).startswith(FT_PREFIX) else "student"
        written[kind] = sio.write_bytes_atomic(
            folder / f"{stem}.{kind}.onnx", student.SerializeToString(deterministic=True), protect=protect
        )
        base_path = written[kind].name
    written["recipe"] = rcp.save(squeezer.recipe(settings, base_path), folder / recipe_name, protect=protect)
    return model, written


def write_outputs(
    squeezer: Squeezer,
    result: SearchResult,
    out_dir: str | Path,
    *,
    protect: Sequence[str | Path] = (),
    model_name: str = "model",
    elapsed_s: float | None = None,
) -> dict[str, Path]:
    """Write the best model, recipe.toml, report.md, results.json and pareto.png into ``out_dir``.

    When candidates fit the budget but none beats the original on the objective, the Pareto-front
    models within budget (:meth:`SearchResult.improvements`) are written under ``out_dir/pareto/``
    (``NN-<model>.squeezed.onnx`` and ``NN-recipe.toml``), the report says what each improves, and
    ObjectiveNotImprovedError is raised afterwards. When nothing fits, only the report, results
    and plot are written and BudgetNotMetError is raised afterwards, naming the closest candidates.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    best_model = None
    checked: dict[str, Any] = {}  # the best model's verification, made before it is written
    if result.best is not None:

        def check(model: onnx.ModelProto) -> dict[str, Any]:
            checked.update(verify_best(squeezer, model))
            return checked

        best_model, files = write_candidate(
            squeezer, result.best.settings, out, model_name, recipe_name="recipe.toml", protect=protect,
            verify=check,
        )  # fmt: skip
        written |= files
    alternatives: list[dict[str, Any]] = []
    if result.best is None:
        for i, p in enumerate(result.improvements(squeezer.evaluator.metric.higher_is_better), start=1):
            _, files = write_candidate(
                squeezer, p.settings, out / "pareto", f"{i:02d}-{model_name}",
                recipe_name=f"{i:02d}-recipe.toml", protect=protect,
            )  # fmt: skip
            written |= {f"pareto {i} {kind}": path for kind, path in files.items()}
            alternatives.append(
                {"label": describe_settings(p.settings, squeezer.knobs), "settings": p.settings}
                | {kind: str(path.relative_to(out)) for kind, path in files.items()}
                | {"sha256": sio.sha256_file(files["model"])}
                | improvement(result.baseline, p)
            )
    squeezer.timings["outputs"] = time.perf_counter() - t0
    results = results_dict(squeezer, result, elapsed_s=elapsed_s)
    results["not_improved"] = alternatives if result.best is None else None
    if best_model is not None:
        results["best"]["file"] = written["model"].name
        results["best"]["sha256"] = sio.sha256_file(written["model"])
        results["best"]["verify"] = checked or verify_best(squeezer, best_model)  # streamed: its own
    written["results"] = sio.write_bytes_atomic(
        out / "results.json",
        (json.dumps(results, indent=2, default=_json_default) + "\n").encode(),
        protect=protect,
    )
    written["report"] = sio.write_bytes_atomic(
        out / "report.md", render_report(squeezer, result, results).encode(), protect=protect
    )
    plot = out / "pareto.png"
    if plot_pareto(squeezer, result, plot):
        written["plot"] = plot
    if result.best is None and alternatives:
        raise ObjectiveNotImprovedError(not_improved_message(result, alternatives, out / "pareto"))
    if result.best is None:
        raise BudgetNotMetError(nothing_fits_message(squeezer, result))
    return written


def verify_best(squeezer: Squeezer, model: onnx.ModelProto, samples: int = 8) -> dict[str, Any]:
    """The best model against the original on the first evaluation samples (onnxsqueeze.verify)."""
    from onnxsqueeze.search.streaming import StreamingSqueezer
    from onnxsqueeze.verify import verify

    if isinstance(squeezer, StreamingSqueezer):  # verified from its file before it was written
        return squeezer.verified(model)
    ds = squeezer.evaluator.dataset
    data = ds.take(0, min(samples, len(ds))).inputs
    try:
        report = verify(
            squeezer.model,
            model,
            data=data,
            data_label="evaluation samples",
            provider=squeezer.options.provider,
        )
    except SqueezeError as e:  # e.g. an output shape changed on purpose: say so, do not fail
        return {"error": str(e)}
    scored = squeezer.model.graph.output[squeezer.evaluator.output_index].name
    return report.to_dict() | {"min_cosine": report.min_cosine, "scored_output": scored}


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return str(v)
