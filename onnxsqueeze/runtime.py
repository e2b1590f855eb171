"""onnxruntime sessions: creation with clear errors, providers, batched runs over data, timing.

onnxruntime is imported inside functions so that importing onnxsqueeze stays fast.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze.errors import InputError, ModelLoadError, one_line

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    names = {v: k for k, v in PROVIDERS.items()}
    return [names.get(p, p) for p in ort.get_available_providers()]


def resolve_providers(provider: str = "cpu") -> list[str]:
    """onnxruntime provider names for a short name, falling back to CPU for unsupported nodes.

    Raises:
        InputError: the provider is not available in this onnxruntime build.
    """
    import onnxruntime as ort

    key = provider.lower()
    full = PROVIDERS.get(key, provider)
    if full not in ort.get_available_providers():
        raise InputError(
            f"provider '{provider}' is not available; available: {', '.join(available_providers())}"
            + ("" if key == "cpu" else " (install onnxsqueeze[gpu] for cuda/tensorrt)")
        )
    chain = [full]
    if key == "tensorrt" and "CUDAExecutionProvider" in ort.get_available_providers():
        chain.append("CUDAExecutionProvider")
    if full != "CPUExecutionProvider":
        chain.append("CPUExecutionProvider")
    return chain


# Intra-op threads of sessions created without ``threads`` in this process (None: onnxruntime's
# default, one per core). A worker of a scaled-out search sets 1 (search.executor): it shares
# the cores with other workers, and a pool of spinning threads per session steals them.
_default_threads: int | None = None


def set_default_threads(threads: int | None) -> None:
    """The intra-op threads of this process's sessions created without ``threads``."""
    global _default_threads
    _default_threads = threads


# Whether the intra-op threads of sessions created without ``threads`` spin while waiting for
# work (onnxruntime's default). A search's driver turns it off while its workers use the cores.
_default_spinning = True


def set_default_spinning(spinning: bool) -> bool:
    """Whether this process's sessions created without ``threads`` spin; returns the previous
    setting. Spinning is scheduling only: outputs are the same either way."""
    global _default_spinning
    before, _default_spinning = _default_spinning, spinning
    return before


def session(
    model: onnx.ModelProto | str | Path,
    *,
    provider: str = "cpu",
    optimize: bool = False,
    threads: int | None = None,
    provider_options: list[dict[str, Any]] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession``.

    Args:
        model: a ModelProto or a path.
        provider: ``cpu``, ``cuda`` or ``tensorrt``.
        optimize: enable all graph optimizations (deployment); off gives reference semantics,
            the right setting for verification.
        threads: intra-op threads (None: this process's default, see :func:`set_default_threads`;
            0: onnxruntime's own default, one per core, whatever the process's default).
        provider_options: per-provider options, in the order of the provider chain.

    Raises:
        ModelLoadError: onnxruntime refuses the model (the message is onnxruntime's first line).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads is None:
        threads = _default_threads
        if not _default_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    providers = resolve_providers(provider)
    label = str(model) if isinstance(model, (str, Path)) else f"model '{model.graph.name}'"

    def create(source: str | bytes) -> Any:
        try:
            if provider_options is not None:
                return ort.InferenceSession(
                    source, opts, providers=providers, provider_options=provider_options
                )
            return ort.InferenceSession(source, opts, providers=providers)
        except Exception as e:
            raise ModelLoadError(f"{label}: onnxruntime cannot load it: {one_line(e)}") from e

    if isinstance(model, (str, Path)):
        return create(str(model))
    if model.ByteSize() < sio.PROTO_LIMIT:
        return create(model.SerializeToString())
    # Over protobuf's 2 GB limit the model cannot travel as one buffer: onnxruntime loads it from a
    # file with its weights in external data beside it (staged in a temp folder, removed after).
    with tempfile.TemporaryDirectory(prefix="onnxsqueeze-session-") as tmp:
        path = Path(tmp) / "model.onnx"
        sio.save(model, path, external_data=True)
        return create(str(path))


def with_outputs(
    model: onnx.ModelProto, names: Sequence[str], *, infer_types: bool = False
) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the intermediate tensors ``names``, for onnxruntime.

    The one way a module reads intermediate values (calibration statistics, re-fitting inputs,
    per-node precision errors, teacher features): run this copy. Names that already are graph
    outputs are not repeated; the model itself is not modified.

    Args:
        model: the model.
        names: tensor names of the main graph.
        infer_types: give the new outputs the types and shapes onnx's shape inference finds (when
            it can); otherwise they are left untyped and onnxruntime infers them on load.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    types: dict[str, onnx.TypeProto] = {}
    if infer_types:
        try:
            types = {vi.name: vi.type for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
        except Exception:  # a model shape inference cannot follow: onnxruntime types the outputs
            types = {}
    present = {o.name for o in out.graph.output}
    for name in names:
        if name in present:
            continue
        vi = out.graph.output.add()
        vi.name = name
        if name in types:
            vi.type.CopyFrom(types[name])
        present.add(name)
    return out


def fixed_batch(sess: Any) -> int | None:
    """The static batch size of a session's first input, or None when it is dynamic."""
    shape = sess.get_inputs()[0].shape
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return int(shape[0])
    return None


def run_batched(
    sess: Any,
    data: Mapping[str, np.ndarray],
    *,
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run a session over arrays whose first axis indexes samples; concatenate the outputs.

    A model with a static batch dimension is fed in chunks of that size (the last chunk must be
    full, so a remainder is rejected). ``on_batch(done, total)`` reports progress.
    """
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"the data has no array for model input(s) {missing}; it has {sorted(data)}")
    batched = [k for k in names if np.ndim(data[k])]  # scalar inputs (a sample rate) go whole
    n = len(data[batched[0]]) if batched else 1
    if n < 1:
        raise InputError("the data holds 0 samples; at least 1 is needed")
    static = fixed_batch(sess) if batched else None
    step = static or batch_size
    if static and n % static:
        raise InputError(f"{n} samples do not split into the model's fixed batch of {static}")
    outputs: dict[str, list[np.ndarray]] = {o.name: [] for o in sess.get_outputs()}
    sizes: list[int] = []
    for start in range(0, n, step):
        feeds = {
            k: np.ascontiguousarray(data[k][start : start + step]) if k in batched else np.asarray(data[k])
            for k in names
        }
        sizes.append(min(step, n - start))
        try:
            values = sess.run(None, feeds)
        except Exception as e:  # onnxruntime's errors: bad dims or types, a kernel refusing an input
            detail = " ".join(str(e).split())
            raise InputError(f"onnxruntime cannot run the model on these inputs: {detail[:400]}") from e
        for o, value in zip(sess.get_outputs(), values, strict=True):
            outputs[o.name].append(np.asarray(value))
        if start == 0 and n > sizes[0]:
            _check_outputs_fit(outputs, sizes[0], n)
        if on_batch:
            on_batch(min(start + step, n), n)
    return {k: _concat(v, sizes) for k, v in outputs.items()}


def _check_outputs_fit(outputs: Mapping[str, list[np.ndarray]], done: int, total: int) -> None:
    """Refuse, after the first batch, outputs that would pass the allocation limit over all samples.

    The outputs of every sample are kept (and joined, a second copy) for verification and metrics:
    a dense per-pixel output over many samples can need more memory than the inputs did. The limit
    is the inputs' (``data.MAX_INPUT_BYTES``, ``ONNXSQUEEZE_MAX_INPUT_BYTES``).
    """
    from onnxsqueeze import data
    from onnxsqueeze.units import human_bytes

    # the chunks and their concatenation, for every output (intermediate tensors read for
    # calibration or re-fitting come through here too, many at once)
    each = {name: 2 * chunks[0].nbytes * total // max(done, 1) for name, chunks in outputs.items()}
    estimate = sum(each.values())
    if estimate > data.MAX_INPUT_BYTES:
        name = max(each, key=lambda k: each[k])
        what = f"output '{name}'" if len(each) == 1 else f"{len(each)} outputs (the largest '{name}')"
        raise InputError(
            f"{what} over {total} samples would take about {human_bytes(estimate)} (kept to compare), "
            f"over the {human_bytes(data.MAX_INPUT_BYTES)} limit (set ONNXSQUEEZE_MAX_INPUT_BYTES to "
            "raise it); use fewer samples"
        )


def _concat(chunks: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """Join per-chunk outputs along their sample axis (``sizes``: the samples in each chunk).

    That is axis 0, except for outputs whose axis 1 follows the chunk sizes and axis 0 does not:
    sequence outputs ``[T, N, C]`` (CTC recognisers return time first).
    """
    if not chunks or not chunks[0].ndim:
        return np.asarray(chunks)
    if len(chunks) > 1 and chunks[0].ndim >= 2:
        first = all(c.shape[0] == n for c, n in zip(chunks, sizes, strict=True))
        second = all(c.shape[1] == n for c, n in zip(chunks, sizes, strict=True))
        if second and not first:
            return np.concatenate(chunks, axis=1)
    return np.concatenate(chunks, axis=0)


def time_sessions(
    sessions: Sequence[Any], feeds: Sequence[Mapping[str, np.ndarray]], *, rounds: int = 5, runs: int = 10
) -> list[float]:
    """Median latency (ms) of one run of each session on its feeds, for side-by-side comparisons.

    Three warm-up runs each, then ``rounds`` rounds that visit every session in turn (order
    reversed every other round, so machine noise hits all alike); a round's figure is the median
    of its ``runs`` timed runs, and the result the median over rounds
    (:func:`onnxsqueeze.bench.timing.interleaved`). For full benchmarks (percentiles, IO binding,
    memory) use :mod:`onnxsqueeze.bench.harness`.
    """
    from onnxsqueeze.bench.timing import interleaved

    fns = [lambda s=sess, f=dict(feed): s.run(None, f) for sess, feed in zip(sessions, feeds, strict=True)]
    timings = interleaved(fns, warmup=3, burst=runs, min_rounds=rounds, max_runs=rounds * runs)
    return [t.round_median_ms for t in timings]
