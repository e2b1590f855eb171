"""The timing harness: sessions, interleaved rounds, latency statistics, memory, environment.

Method (after onnxruntime's perf test, trtexec, Triton's perf_analyzer and MLPerf's single-stream
rules):

- One onnxruntime session per model, with deployment settings (all graph optimizations, the
  requested intra-op threads), created once; its creation time and the RSS it adds are recorded.
  TensorRT builds its engine at session creation (one optimization profile spanning the batch
  sizes) or at the first run; both are reported, neither is in the timed runs.
- Inputs are generated once per shape (seeded; models with the same input shapes get the same
  arrays) or taken from ``data``, cycling its samples to fill a batch.
- Per batch size, every model is warmed up (``warmup`` runs, excluded; the first one is reported
  as the cold first-run latency), then measured in ``rounds`` rounds. The models are interleaved,
  the order reversed every round (A B, B A, A B, ...) so that a linear drift of the machine hits
  every model equally. In each round each model runs until it has met both its share of the
  minimum count and of the minimum duration (MLPerf: both minimums).
- A sample is the wall time of one synchronous run, ``perf_counter_ns`` around ``session.run``,
  with the garbage collector paused while timing.
- On CUDA and TensorRT, with IO binding (the default there): the inputs live in a bound device
  buffer, outputs stay on the device; each call times the host->device copy of the inputs, the
  run itself (device compute, onnxruntime synchronizes the stream at the end of a run) and the
  device->host copy of the outputs separately, as trtexec does. The latency is their sum.
- Statistics per model and batch: count, mean, std, min, p50, p90, p95, p99, max (percentiles
  by linear interpolation between order statistics, numpy's default), throughput in items per
  second (batch / mean latency: single stream, one request in flight).
- Ratios to the baseline (the first model) are computed from the pooled samples; their spread
  is the min-max of the same ratio computed round by round.

Memory: ``session_rss_bytes`` is the RSS growth across session creation; ``rss_growth_bytes`` the
growth during a model's warm-up at a batch size (arena and activations); ``peak_rss_bytes`` the
process's peak RSS while that model ran at that batch (Linux: VmHWM, reset before each segment;
elsewhere the process's lifetime peak). The process holds every model's session (interleaving
needs them), so the peak includes the others' weights. On CUDA, ``device_memory_bytes`` is this
process's GPU memory after warm-up, from nvidia-smi.

# NOTE: this module imports nothing from cli/; progress goes out through ``on_progress``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsqueeze import io as sio
from onnxsqueeze import runtime, shapes
from onnxsqueeze.bench.cost import Price, resolve_price, usd_per_million
from onnxsqueeze.bench.timing import interleaved_rounds, latency_stats, ratio_with_spread, sample
from onnxsqueeze.errors import InputError, ModelLoadError, one_line

SCHEMA = "onnxsqueeze.bench/1"
STAT_KEYS = ("count", "mean", "std", "min", "p50", "p90", "p95", "p99", "max")
LATENCY_METRICS = ("mean", "min", "p50", "p90", "p95", "p99", "max")
GPU_PROVIDERS = ("cuda", "tensorrt")
BINDING_DEVICE = "cuda"
"""Where IO binding puts inputs and outputs (onnxruntime's device name; "cpu" in tests without a GPU)."""

ProgressFn = Callable[[str, int, int, int], None]
"""``on_progress(model, batch, done, total)``: a segment (a warm-up or a round) of ``model`` at
``batch`` starts, ``done`` of ``total`` segments are finished; a last call has done == total."""


# --------------------------------------------------------------------------------------------
# statistics


# --------------------------------------------------------------------------------------------
# memory and environment


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            m = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        if m:
            return int(m.group(1)) * 1024
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024
    except ImportError:  # Windows
        return _rss()


def _nvidia_smi(*query: str) -> list[list[str]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, *query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return [[cell.strip() for cell in line.split(",")] for line in proc.stdout.splitlines() if line.strip()]


def device_memory(device_id: int = 0) -> tuple[int, str] | None:
    """GPU memory in bytes held by this process, else used on the whole device; with its scope."""
    apps = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if apps:
        mine = [int(row[1]) for row in apps if row and row[0] == str(os.getpid()) and row[1].isdigit()]
        if mine:
            return sum(mine) * 2**20, "process"
    gpus = _nvidia_smi(f"--id={device_id}", "--query-gpu=memory.used")
    if gpus and gpus[0] and gpus[0][0].isdigit():
        return int(gpus[0][0]) * 2**20, "device"
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(provider: str = "cpu", device_id: int = 0) -> dict[str, Any]:
    """A fingerprint of the machine and software a benchmark ran on."""
    import onnxruntime as ort
    import psutil

    from onnxsqueeze import __version__

    gpu = None
    if provider in GPU_PROVIDERS:
        rows = _nvidia_smi(f"--id={device_id}", "--query-gpu=name,driver_version,memory.total")
        if rows and len(rows[0]) >= 3:
            name, driver, total = rows[0][:3]
            gpu = {"name": name, "driver": driver, "memory_mib": int(total) if total.isdigit() else None}
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cores": affinity,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_device": ort.get_device(),
        "onnxsqueeze": __version__,
        "gpu": gpu,
        "peak_rss_method": "VmHWM reset per segment" if _reset_peak_rss() else "process lifetime peak",
    }


# --------------------------------------------------------------------------------------------
# one model


@dataclasses.dataclass
class _Model:
    """A model under test: its session and how to run it at each batch."""

    name: str
    path: Path
    proto_inputs: list[Any]  # the graph inputs (ValueInfoProto), for shapes and dtypes
    session: Any
    info: dict[str, Any]
    output_names: list[str]

    def fixed_batch(self) -> int | None:
        return runtime.fixed_batch(self.session)


def display_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the file name, with as many parent folders as needed to tell apart."""
    parts = [p.resolve().parts for p in paths]
    names: list[str] = []
    for i, p in enumerate(parts):
        depth = 1
        while depth < len(p) and any(
            j != i and q[-depth:] == p[-depth:] and q != p for j, q in enumerate(parts)
        ):
            depth += 1
        names.append("/".join(p[-depth:]))
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # the same file given twice (an A/A check)
            names[i] = f"{name}#{seen[name]}"
    return names


def provider_options(
    provider: str,
    chain: Sequence[str],
    *,
    trt_fp16: bool,
    device_id: int,
    trt_profile: Mapping[str, tuple[tuple[int, ...], ...]] | None = None,
    trt_cache: str | Path | None = None,
) -> list[dict]:
    """Options for each provider of the chain.

    TensorRT: fp16 when asked; with ``trt_profile`` (min, opt, max shapes per input) one
    optimization profile spans every batch size, so the engine is built once, not once per batch
    shape; ``trt_cache`` keeps built engines and timing caches in a folder across runs.
    """
    options: list[dict[str, Any]] = []
    for full in chain:
        if full == "TensorrtExecutionProvider":
            opts: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": bool(trt_fp16)}
            if trt_profile:
                names = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
                for option, per_input in zip(names, zip(*trt_profile.values(), strict=True), strict=True):
                    opts[option] = ",".join(
                        f"{name}:{'x'.join(str(d) for d in shape)}"
                        for name, shape in zip(trt_profile, per_input, strict=True)
                    )
            if trt_cache is not None:
                opts["trt_engine_cache_enable"] = True
                opts["trt_engine_cache_path"] = str(trt_cache)
                opts["trt_timing_cache_enable"] = True
                opts["trt_timing_cache_path"] = str(trt_cache)
            options.append(opts)
        elif full == "CUDAExecutionProvider":
            options.append({"device_id": device_id})
        else:
            options.append({})
    return options


def _open_model(
    path: Path,
    name: str,
    *,
    provider: str,
    threads: int | None,
    optimize: bool,
    trt_fp16: bool,
    device_id: int,
    batches: Sequence[int] = (1,),
    overrides: Mapping[str, Sequence[int]] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    trt_cache: str | Path | None = None,
) -> _Model:
    proto = sio.load(path, check=False)
    inputs = shapes.graph_inputs(proto)
    info: dict[str, Any] = {
        "name": name,
        "path": str(path),
        "sha256": sio.sha256_file(path),
        "file_bytes": _model_bytes(path, proto),
        "inputs": {vi.name: shapes.declared_shape(vi) for vi in inputs},
    }
    del proto
    gc.collect()
    chain = runtime.resolve_providers(provider)
    profile = None
    if "TensorrtExecutionProvider" in chain and any(
        not isinstance(d, int) for vi in inputs for d in shapes.declared_shape(vi)
    ):
        profile = _trt_profile(name, inputs, batches, overrides or {}, data)
    opts = provider_options(
        provider, chain, trt_fp16=trt_fp16, device_id=device_id, trt_profile=profile, trt_cache=trt_cache
    )
    rss0 = _rss()
    t0 = time.perf_counter()
    sess = runtime.session(path, provider=provider, optimize=optimize, threads=threads, provider_options=opts)
    info["session_create_s"] = time.perf_counter() - t0
    info["session_rss_bytes"] = max(0, _rss() - rss0)
    info["providers"] = list(sess.get_providers())
    info["intra_op_threads"] = sess.get_session_options().intra_op_num_threads
    return _Model(name, path, inputs, sess, info, [o.name for o in sess.get_outputs()])


def _trt_profile(
    name: str,
    inputs: Sequence[Any],
    batches: Sequence[int],
    overrides: Mapping[str, Sequence[int]],
    data: Mapping[str, np.ndarray] | None,
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes per input: smallest, largest and largest batch (opt = max: the
    engine is tuned for the throughput end; latency at small batches may be a little worse than
    with an engine built for them)."""
    lo, hi = min(batches), max(batches)

    def at(batch: int) -> dict[str, tuple[int, ...]]:
        if data is not None:
            return {
                vi.name: (batch, *np.asarray(data[vi.name]).shape[1:]) for vi in inputs if vi.name in data
            }
        return _shapes_for(name, inputs, batch, overrides)

    small, large = at(lo), at(hi)
    return {k: (small[k], large[k], large[k]) for k in small}


def _model_bytes(path: Path, proto: Any) -> int:
    """The model file's size plus its external data files."""
    total = path.stat().st_size
    locations = set()
    for tensor in sio.iter_tensors(proto.graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                locations.add(entry.value)
    for loc in locations:
        with contextlib.suppress(OSError):
            total += (path.parent / loc).stat().st_size
    return total


def _shapes_for(
    name: str, inputs: Sequence[Any], batch: int, overrides: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes at a batch size (the batch from ``batch``, other dims declared or given)."""
    out: dict[str, tuple[int, ...]] = {}
    for vi in inputs:
        declared = shapes.declared_shape(vi)
        if vi.name in overrides:
            dims = list(overrides[vi.name])
            if declared and len(dims) != len(declared):
                raise InputError(
                    f"{name}: --input-shape {vi.name} has rank {len(dims)}, the model declares "
                    f"rank {len(declared)}"
                )
        else:
            dims = []
            for axis, dim in enumerate(declared):
                if isinstance(dim, int):
                    dims.append(dim)
                elif axis == 0:
                    dims.append(batch)
                else:
                    example = ",".join(str(d) if isinstance(d, int) else "N" for d in declared)
                    raise InputError(
                        f"{name}: input '{vi.name}' has a dynamic dimension {axis}; "
                        f"give it with --input-shape {vi.name}:{example}"
                    )
        if declared:
            first = declared[0]
            if isinstance(first, int):
                if first != batch:
                    raise InputError(
                        f"{name}: input '{vi.name}' has a fixed batch of {first}; --batch {batch} "
                        "needs a model with a dynamic batch dimension"
                    )
            else:
                dims[0] = batch  # the batch comes from --batch, whatever --input-shape said
        out[vi.name] = tuple(int(d) for d in dims)
    return out


def _feeds_from_data(model: _Model, data: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    feeds = {}
    for vi in model.proto_inputs:
        if vi.name not in data:
            raise InputError(
                f"{model.name}: the data has no array for input '{vi.name}'; it has {sorted(data)}"
            )
        arr = np.asarray(data[vi.name])
        if arr.ndim == 0 or len(arr) == 0:
            raise InputError(f"{model.name}: data array '{vi.name}' has no samples")
        idx = np.arange(batch) % len(arr)
        feeds[vi.name] = np.ascontiguousarray(arr[idx].astype(shapes.input_dtype(vi), copy=False))
    return feeds


class _InputCache:
    """Inputs generated once per shape: models with the same input signature share the arrays."""

    def __init__(self, seed: int, data: Mapping[str, np.ndarray] | None) -> None:
        self.seed = seed
        self.data = data
        self._cache: dict[tuple, dict[str, np.ndarray]] = {}

    def feeds(
        self, model: _Model, batch: int, overrides: Mapping[str, Sequence[int]]
    ) -> dict[str, np.ndarray]:
        if self.data is not None:
            key: tuple = ("data", model.name, batch)
            if key not in self._cache:
                self._cache[key] = _feeds_from_data(model, self.data, batch)
            return self._cache[key]
        resolved = _shapes_for(model.name, model.proto_inputs, batch, overrides)
        key = tuple((vi.name, resolved[vi.name], shapes.input_dtype(vi).str) for vi in model.proto_inputs)
        if key not in self._cache:
            signature = onnx.ModelProto()  # just the inputs: all make_inputs needs
            signature.graph.input.extend(model.proto_inputs)
            self._cache[key] = shapes.make_inputs(signature, resolved, seed=self.seed)
        return self._cache[key]


# --------------------------------------------------------------------------------------------
# runners: one call of a model, returning the times of its steps in ns


class _CpuRunner:
    """``session.run`` with host arrays: one timed step."""

    device = False

    def __init__(self, model: _Model, feeds: dict[str, np.ndarray]) -> None:
        self._run = model.session.run
        self._names = model.output_names
        self._feeds = feeds

    def segment(self, min_count: int, min_ns: int) -> np.ndarray:
        run, names, feeds, clock = self._run, self._names, self._feeds, time.perf_counter_ns

        def step() -> tuple[int]:
            t0 = clock()
            run(names, feeds)
            return (clock() - t0,)

        return sample(step, min_count, min_ns)


class _IoBindingRunner:
    """IO binding on a CUDA device: host->device copy, run, device->host copy, timed apart.

    ``device="cpu"`` binds host memory instead: the same calls, which is how the tests run
    this path on machines without a GPU.
    """

    device = True

    def __init__(
        self, model: _Model, feeds: dict[str, np.ndarray], device_id: int, device: str = "cuda"
    ) -> None:
        import onnxruntime as ort

        self._sess = model.session
        self._host = feeds
        self._binding = model.session.io_binding()
        self._device: dict[str, Any] = {}
        for name, arr in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(arr, device, device_id)
            self._device[name] = value
            self._binding.bind_ortvalue_input(name, value)
        for name in model.output_names:
            self._binding.bind_output(name, device, device_id)

    def segment(self, min_count: int, min_ns: int) -> np.ndarray:
        clock = time.perf_counter_ns
        items = list(self._host.items())
        device, binding, run = self._device, self._binding, self._sess.run_with_iobinding

        def step() -> tuple[int, int, int]:
            t0 = clock()
            for name, arr in items:
                device[name].update_inplace(arr)  # synchronous cudaMemcpy host->device
            t1 = clock()
            run(binding)  # onnxruntime synchronizes the CUDA stream at the end of the run
            t2 = clock()
            binding.copy_outputs_to_cpu()
            t3 = clock()
            return (t1 - t0, t2 - t1, t3 - t2)

        return sample(step, min_count, min_ns)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --------------------------------------------------------------------------------------------
# the benchmark


@dataclasses.dataclass
class BenchResult:
    """A benchmark's results; ``to_dict()`` is the versioned JSON document (see ``report``)."""

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    @property
    def failed_gates(self) -> list[dict[str, Any]]:
        return [g for g in self.data.get("gates", []) if g["failed"]]

    def result(self, model: int | str, batch: int) -> dict[str, Any]:
        """The result row of a model (index or name) at a batch size."""
        for row in self.data["results"]:
            if row["batch"] == batch and (row["model_index"] == model or row["model"] == model):
                return row
        raise KeyError((model, batch))


def _round(
    opened: Sequence[_Model],
    runners: Sequence[Any],
    rows: Sequence[dict[str, Any]],
    batch: int,
    min_count: int,
    min_ns: int,
    starting: Callable[[_Model, int], None],
    finished: Callable[[], None],
    i: int,
) -> tuple[np.ndarray, int]:
    """One round of model ``i``: its runner's samples with the GC paused, the peak RSS tracked;
    ``(samples [n, steps] ns, wall ns)``."""
    starting(opened[i], batch)
    peak_ok = _reset_peak_rss()
    t0 = time.perf_counter_ns()
    with _gc_paused():
        steps = runners[i].segment(min_count, min_ns)
    wall = time.perf_counter_ns() - t0
    if peak_ok and rows[i]["peak_rss_bytes"] is not None:
        rows[i]["peak_rss_bytes"] = max(rows[i]["peak_rss_bytes"], _peak_rss())
    finished()
    return steps, wall


def benchmark(
    models: Sequence[str | Path],
    *,
    provider: str = "cpu",
    batches: Sequence[int] = (1,),
    threads: int | None = None,
    warmup: int = 10,
    iterations: int = 100,
    duration: float = 1.0,
    rounds: int = 5,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    data: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    data_label: str | None = None,
    price: Price | float | str | None = None,
    gates: Sequence[str] = (),
    io_binding: bool | None = None,
    trt_fp16: bool = False,
    trt_cache: str | Path | None = None,
    optimize: bool = True,
    device_id: int = 0,
    on_progress: ProgressFn | None = None,
) -> BenchResult:
    """Benchmark one or more models; with several, the first is the baseline of the ratios.

    Args:
        models: ONNX files.
        provider: ``cpu``, ``cuda`` or ``tensorrt``.
        batches: batch sizes (the first dimension of every input; models need a dynamic batch
            dimension for sizes other than their fixed one).
        threads: intra-op threads (None: onnxruntime's default, one per physical core).
        warmup: runs per model and batch before timing (at least 1: the first run is reported).
        iterations: minimum timed runs per model and batch.
        duration: minimum timed seconds per model and batch (both minimums are met).
        rounds: interleaved rounds the runs are split into.
        input_shapes: shapes of inputs with dynamic non-batch dimensions (the batch dimension
            comes from ``batches``).
        data: real inputs by input name, first axis = samples (cycled to fill a batch).
        data_label: where ``data`` came from, for the report.
        seed: seed of the generated inputs.
        price: the hourly price for the cost figures: a ``cost.Price``, USD per hour, or an
            instance of the built-in table (``"aws/g5.xlarge"``, ``"g5.xlarge"``).
        gates: ``--fail-if`` expressions evaluated on the result (see ``gates``).
        io_binding: bind inputs and outputs on the device (default: on for cuda/tensorrt).
        trt_fp16: let TensorRT build fp16 engines.
        trt_cache: a folder where TensorRT keeps engines and timing caches between runs (session
            creation then measures loading a cached engine, not building it).
        optimize: onnxruntime graph optimizations (on: what a deployment uses).
        device_id: the CUDA device.
        on_progress: ``on_progress(model, batch, done, total)`` before each warm-up or round, and
            once at the end.

    Raises:
        InputError: bad arguments, an unavailable provider (the message lists the available ones),
            inputs that do not fit a model.
        ModelLoadError: a model file onnxruntime cannot load or run.
    """
    from onnxsqueeze.bench import gates as gates_mod

    if isinstance(price, int | float):
        price = resolve_price(price_per_hour=float(price))
    elif isinstance(price, str):
        price = resolve_price(instance=price)
    paths = [Path(m) for m in models]
    if not paths:
        raise InputError("give at least one model to benchmark")
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: no such model file")
    batches = list(dict.fromkeys(int(b) for b in batches))
    if not batches or any(b <= 0 for b in batches):
        raise InputError(f"batch sizes must be positive integers, got {batches}")
    if rounds < 1 or iterations < 0 or duration < 0 or warmup < 0:
        raise InputError("rounds must be >= 1 and warmup, iterations, duration >= 0")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    provider = provider.lower()
    parsed_gates = gates_mod.parse_gates(gates)
    gates_mod.check_applicable(parsed_gates, n_models=len(paths), priced=price is not None)
    chain = runtime.resolve_providers(provider)  # fails fast with the available providers
    use_binding = provider in GPU_PROVIDERS if io_binding is None else io_binding
    if use_binding and provider not in GPU_PROVIDERS:
        raise InputError(
            "IO binding is for device providers (cuda, tensorrt); the cpu provider runs on host arrays"
        )
    warmup = max(1, warmup)
    min_count = max(1, math.ceil(iterations / rounds))
    min_ns = int(duration / rounds * 1e9)
    overrides = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    known_inputs: set[str] = set()

    env = environment(provider, device_id)
    names = display_names(paths)
    opened: list[_Model] = []
    for path, name in zip(paths, names, strict=True):
        opened.append(
            _open_model(
                path,
                name,
                provider=provider,
                threads=threads,
                optimize=optimize,
                trt_fp16=trt_fp16,
                device_id=device_id,
                batches=batches,
                overrides=overrides,
                data=data,
                trt_cache=trt_cache,
            )
        )
        known_inputs.update(vi.name for vi in opened[-1].proto_inputs)
    unknown = sorted(set(overrides) - known_inputs)
    if unknown:
        raise InputError(f"--input-shape names {unknown}, but the models' inputs are {sorted(known_inputs)}")
    for m in opened:
        if m.info["providers"][0] != chain[0]:
            raise InputError(f"{m.name}: onnxruntime did not enable {chain[0]} (got {m.info['providers']})")

    inputs = _InputCache(seed, data)
    total = len(batches) * len(opened) * (1 + rounds)
    done = 0
    results: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []

    def starting(model: _Model, batch: int) -> None:
        if on_progress:
            on_progress(model.name, batch, done, total)

    def finished() -> None:
        nonlocal done
        done += 1

    for batch in batches:
        runners = []
        rows: list[dict[str, Any]] = []
        for m in opened:
            feeds = inputs.feeds(m, batch, overrides)
            runner = (
                _IoBindingRunner(m, feeds, device_id, BINDING_DEVICE) if use_binding else _CpuRunner(m, feeds)
            )
            starting(m, batch)
            rss0 = _rss()
            peak_ok = _reset_peak_rss()
            try:
                with _gc_paused():
                    first = runner.segment(1, 0)
                    if warmup > 1:
                        runner.segment(warmup - 1, 0)
            except Exception as e:  # onnxruntime's errors have no common base class
                raise ModelLoadError(
                    f"{m.name}: onnxruntime failed to run it at batch {batch}: {one_line(e)}"
                ) from e
            gpu_mem = device_memory(device_id) if provider in GPU_PROVIDERS else None
            rows.append(
                {
                    "model": m.name,
                    "model_index": len(rows),
                    "batch": batch,
                    "input_shapes": {k: list(v.shape) for k, v in feeds.items()},
                    "first_run_ms": float(first.sum()) / 1e6,
                    "rss_growth_bytes": max(0, _rss() - rss0),
                    "peak_rss_bytes": _peak_rss() if peak_ok else None,
                    "device_memory_bytes": gpu_mem[0] if gpu_mem else None,
                    "device_memory_scope": gpu_mem[1] if gpu_mem else None,
                }
            )
            runners.append(runner)
            done += 1

        timed = interleaved_rounds(
            len(opened),
            rounds,
            functools.partial(_round, opened, runners, rows, batch, min_count, min_ns, starting, finished),
        )
        per_round = [[steps for steps, _ in t] for t in timed]
        wall_ns = [sum(wall for _, wall in t) for t in timed]

        for i, row in enumerate(rows):
            steps = np.concatenate(per_round[i])  # [n, steps] in ns
            total_ms = steps.sum(axis=1) / 1e6
            stats = latency_stats(total_ms)
            row["iterations"] = stats["count"]
            row["duration_s"] = wall_ns[i] / 1e9
            row["latency_ms"] = stats
            row["round_p50_ms"] = [float(np.median(s.sum(axis=1)) / 1e6) for s in per_round[i]]
            row["throughput_per_s"] = batch * 1e3 / stats["mean"]
            row["usd_per_million"] = (
                usd_per_million(price.usd_per_hour, row["throughput_per_s"]) if price is not None else None
            )
            if runners[i].device:
                row["device_ms"] = {
                    "h2d": latency_stats(steps[:, 0] / 1e6),
                    "compute": latency_stats(steps[:, 1] / 1e6),
                    "d2h": latency_stats(steps[:, 2] / 1e6),
                }
            else:
                row["device_ms"] = None
            if row["peak_rss_bytes"] is None:
                row["peak_rss_bytes"] = _peak_rss()  # lifetime peak where it cannot be reset

        totals = [[s.sum(axis=1) / 1e6 for s in per_round[i]] for i in range(len(opened))]
        for i in range(1, len(opened)):
            ratios = {k: ratio_with_spread(totals[i], totals[0], k) for k in LATENCY_METRICS}
            ratios["throughput"] = ratio_with_spread(totals[i], totals[0], "mean", inverse=True)
            ratios["cost"] = dict(ratios["mean"])  # cost is proportional to 1 / throughput
            size = opened[i].info["file_bytes"] / opened[0].info["file_bytes"]
            ratios["size"] = {"ratio": size, "low": size, "high": size}
            comparisons.append(
                {
                    "model": opened[i].name,
                    "model_index": i,
                    "baseline": opened[0].name,
                    "batch": batch,
                    "ratios": ratios,
                }
            )
        results.extend(rows)
        del runners

    if on_progress:
        on_progress(opened[-1].name, batches[-1], done, total)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": env,
        "settings": {
            "provider": provider,
            "providers": chain,
            "threads": threads,
            "warmup": warmup,
            "min_iterations": iterations,
            "min_duration_s": duration,
            "rounds": rounds,
            "batches": batches,
            "io_binding": use_binding,
            "trt_fp16": trt_fp16,
            "trt_cache": str(trt_cache) if trt_cache is not None else None,
            "graph_optimization": "all" if optimize else "disabled",
            "seed": seed,
            "data": (data_label or "given") if data is not None else None,
        },
        "cost": price.to_dict() if price is not None else None,
        "models": [m.info for m in opened],
        "results": results,
        "comparisons": comparisons,
        "gates": [],
    }
    doc["gates"] = gates_mod.evaluate(parsed_gates, doc)
    return BenchResult(doc)
