"""The squeeze of a model whose weights pass ``io.STREAM_BYTES``: the same search, on files.

The in-memory search holds the model, its normalized forms and every candidate (several copies
of the weights). Here no copy of the weights is held between steps:

- **Knobs**: only those whose passes replace one weight at a time (:data:`STREAMED`): ``fp16``,
  ``sparsity`` (magnitude alone, no least-squares re-fit: that reads every layer's activations)
  and ``int8-weights`` (per-channel scales are per-tensor work). The others are skipped, and
  the report says so. No normalization (cleanup, onnxslim): the passes run on the model as given.
- **Build**: the passes run on an ``onnx_ir`` model whose weights stay memory-mapped until each is
  replaced; the candidate is written tensor by tensor (:func:`onnxsqueeze.io.stage_streamed`) into
  a temp folder of the squeeze folder, and the in-memory result is released before scoring.
- **Score and time**: onnxruntime sessions are created from the candidate's path, one at a time
  (released before the next); latency is timed per model, not interleaved with a session of the
  original held alongside. Sizes are the files' bytes. The temp folder is removed after each.
- **Write**: the best is rebuilt into the output's temp folder, verified from there against the
  original and renamed into place with its manifest (:func:`onnxsqueeze.manifest.commit_streamed`).

:func:`onnxsqueeze.search.run.make_squeezer` picks this mode by the model's weight bytes.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsqueeze import io as sio
from onnxsqueeze.errors import InputError
from onnxsqueeze.evaluate import Dataset, Evaluator
from onnxsqueeze.recipe import Step
from onnxsqueeze.search.executor import Executor
from onnxsqueeze.search.knobs import KNOBS, Knob, Settings
from onnxsqueeze.search.squeezer import Squeezer, rejected

# The knobs with a streaming build: their passes read and replace one weight at a time.
STREAMED: dict[str, dict[str, Any]] = {
    "fp16": {},
    # the least-squares re-fit needs every layer's activations at once: magnitude alone
    "sparsity": {
        "step": lambda s: Step.of("sparsity", {"sparsity": s, "reconstruction": "none"}),
        "help": "zero-weight magnitude pruning, no re-fit (PruneWeightsPass, streamed)",
    },
    "int8-weights": {},
}


def streaming_knobs(knobs: Sequence[Knob] = KNOBS) -> list[Knob]:
    """``knobs`` with the streamed forms of :data:`STREAMED` (the others unchanged: the caller
    skips them, so that ``--techniques`` still knows every name)."""
    return [dataclasses.replace(k, **STREAMED[k.name]) if STREAMED.get(k.name) else k for k in knobs]


class FileEvaluator(Evaluator):
    """An :class:`Evaluator` whose reference is a model file: onnxruntime reads it from its path
    (its weights from beside it) and the session goes once the reference outputs are kept."""

    def __init__(self, path: Path, dataset: Dataset, metric: str = "accuracy", **kwargs: Any) -> None:
        super().__init__(sio.load_interface(path), dataset, metric, **kwargs)
        self.path = Path(path)

    def reference_outputs(self) -> np.ndarray:
        if self._reference_out is None:
            self._reference_out = self.outputs(self.path)
        return self._reference_out


class StreamingSqueezer(Squeezer):
    """A :class:`Squeezer` over a model file too large to hold in copies (see the module docstring).

    Args:
        path: the original model file (weights in external data beside it, or inline).
        evaluator: a :class:`FileEvaluator` of ``path``.
        scratch: the folder candidates are written to (the squeeze folder), one at a time.
        kwargs: :class:`Squeezer`'s (``model`` is the graph without its weights).
    """

    def __init__(self, path: Path, evaluator: FileEvaluator, *, scratch: Path, **kwargs: Any) -> None:
        interface = sio.load_interface(path)
        kwargs.setdefault("model_sha256", sio.sha256_file(path))
        super().__init__(interface, evaluator, knobs=streaming_knobs(), model_path=path, **kwargs)
        self.scratch = Path(scratch)
        gib = sio.weight_bytes(interface) / 2**30
        why = f"no streaming build (weights of {gib:.2f} GiB, over the streaming threshold)"
        for k in [k for k in self.knobs if k.name not in STREAMED]:
            self.skipped[k.name] = why
            self.knobs.remove(k)
        self.notes.append(
            f"weights of {gib:.2f} GiB: streamed search (knobs {', '.join(STREAMED)} only, no "
            "normalization, sparsity without re-fit, candidates built tensor by tensor into files and "
            "scored from them, latency timed per model, not interleaved)"
        )
        self._verified: dict[Path, dict[str, Any]] = {}

    # ------------------------------------------------------------------ building
    def _normalized(
        self, base: onnx.ModelProto, base_sha: str
    ) -> tuple[onnx.ModelProto, list[bool], tuple[Step, ...]]:
        return base, [], ()  # no normalization: its passes hold whole copies

    def build(self, settings: Mapping[str, Any]) -> onnx.ModelProto:
        raise InputError(f"{self.model_path}: the model is over the streaming threshold; not built in memory")

    def build_lazy(self, settings: Mapping[str, Any]) -> tuple[ir.Model, list[str]]:
        """The candidate as an ``onnx_ir`` model (unchanged weights still on disk) and the passes
        that had nothing to do."""
        from onnxsqueeze.pipeline import run_passes
        from onnxsqueeze.recipe import make_passes

        assert self.model_path is not None
        steps = self.steps(settings)
        model = sio.load_lazy(self.model_path, check=False)
        trace: list[bool] = []
        run_passes(model, make_passes(steps, None), source_sha256=self.model_sha256, trace=trace)
        return model, [s.pass_name for s, m in zip(steps, trace, strict=True) if not m]

    def _stage(
        self, settings: Mapping[str, Any], out: Path, protect: Sequence[str | Path]
    ) -> tuple[Any, Path, list[str]]:
        """Build ``settings`` straight into ``out``'s temp folder; the in-memory result is released."""
        model, idle = self.build_lazy(settings)
        staged, staged_model = sio.stage_streamed(
            model, out, protect=[p for p in (self.model_path, *protect) if p]
        )
        del model
        gc.collect()  # the built weights go before onnxruntime loads them from the file
        return staged, staged_model, idle

    # ------------------------------------------------------------------ measuring
    @property
    def executor(self) -> Executor:
        return self._executor

    @executor.setter
    def executor(self, executor: Executor) -> None:
        # Each worker would hold its own sessions of the weights: refused before any work.
        if executor.workers > 1:
            executor.close()
            self.worker_spec()
        self._executor = executor

    def worker_spec(self) -> Any:
        raise InputError(
            f"{self.model_path}: a model over the streaming threshold is squeezed in this process "
            "(no --workers or --ray)"
        )

    def _measure(self, settings: Settings) -> dict[str, Any]:
        import time

        from onnxsqueeze.search.executor import timing_slot
        from onnxsqueeze.summary import count_macs

        assert self.model_path is not None
        t0 = time.perf_counter()
        doc: dict[str, Any] = {}
        staged = None
        try:
            path = self.model_path
            files = [f for f in sio.referenced_files(path) if f.is_file()]
            if settings:
                staged, path, idle = self._stage(settings, self.scratch / "candidate.onnx", ())
                files = [Path(tmp) for tmp, _ in staged.moves]
                doc["build_s"] = time.perf_counter() - t0
                if idle:
                    return doc | {"error": f"nothing to do for {', '.join(idle)}", "seconds": doc["build_s"]}
            t1 = time.perf_counter()
            metric, samples = self._score(path, baseline=not settings)  # type: ignore[arg-type]
            doc |= {"metric": metric, "samples": samples, "score_s": time.perf_counter() - t1}
            doc["size"] = sum(f.stat().st_size for f in files)
            interface = sio.load_interface(path)
            try:
                doc["macs"] = count_macs(interface, self.shapes_of(interface))[0]
            except Exception:  # MACs are informative
                doc["macs"] = None
            if not settings or (samples is None and self._fits_metric(metric)):
                t2 = time.perf_counter()
                with timing_slot():
                    doc["latency_ms"], doc["latency_ratio"] = self._time_file(path, interface)
                doc["time_s"] = time.perf_counter() - t2
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # a refused or crashing candidate is a rejected point
            return rejected(doc, e, t0)
        finally:
            if staged is not None:
                staged.abort()  # the candidate's temp folder
        return doc | {"seconds": time.perf_counter() - t0}

    def _time_file(self, path: Path, interface: onnx.ModelProto) -> tuple[float, float]:
        """(median ms at batch 1, ratio to the original's): one session, from the file."""
        from onnxsqueeze import runtime
        from onnxsqueeze.search.latency import time_sessions

        opts = self.options
        sess = runtime.session(path, provider=opts.provider, optimize=True, threads=opts.latency_threads)
        ms, _ = time_sessions(sess, self._feeds_one(interface), None, None, min_seconds=opts.latency_seconds)
        del sess
        base = self._baseline_latency
        return ms, (ms / base if base else 1.0)

    def latency_method(self) -> str:
        """How this search timed candidates (the report's line)."""
        threads = self.options.latency_threads
        return (
            "batch 1, the original and each candidate within budget timed alone, one session at a "
            f"time from its file ({threads or 'default'} intra-op thread{'s' if threads != 1 else ''}, "
            "median; not interleaved: the original's session is not held beside a candidate's), so "
            "the ratios carry the machine's drift between timings"
        )

    # ------------------------------------------------------------------ writing
    def write_candidate(
        self,
        settings: Mapping[str, Any],
        folder: Path,
        stem: str,
        *,
        recipe_name: str,
        protect: Sequence[str | Path] = (),
    ) -> tuple[Path, dict[str, Path]]:
        """Build ``settings`` into ``folder/stem.squeezed.onnx`` (external data beside it),
        verify it from its temp folder against the original and rename it into place with its
        manifest; then its recipe. Returns the model's path and the files written."""
        from onnxsqueeze import manifest
        from onnxsqueeze import recipe as rcp
        from onnxsqueeze.verify import compare, run

        assert self.model_path is not None
        out = folder / f"{stem}.squeezed.onnx"
        sio.refuse_overwrite(out, [self.model_path, *protect])
        feeds = self._check_feeds(self.model)
        reference = run(self.model_path, feeds)  # that session is gone before the candidate's
        staged, staged_model, _ = self._stage(settings, out, protect)
        try:
            report = compare(reference, run(staged_model, feeds), feeds=feeds, source="evaluation samples")
            art = manifest.commit_streamed(
                staged, staged_model, out, source_path=self.model_path, verify_report=report
            )
        except BaseException:
            staged.abort()
            raise
        scored = self.model.graph.output[self.evaluator.output_index].name
        self._verified[out] = report.to_dict() | {"min_cosine": report.min_cosine, "scored_output": scored}
        written = {"model": out, "manifest": art.manifest_path}
        written["recipe"] = rcp.save(self.recipe(settings), folder / recipe_name, protect=protect)
        return out, written

    def verified(self, path: Path) -> dict[str, Any]:
        """The verification :meth:`write_candidate` made of the model it wrote at ``path``."""
        return self._verified[Path(path)]
