"""Where candidates are measured: in this process, a local process pool, or a Ray cluster.

What runs where:

- **The driver** (the ``squeeze`` process) runs the search algorithm
  (:func:`onnxsqueeze.search.algorithm.search`), decides which candidate to measure next, and
  owns the on-disk evaluation cache, the source of truth: every finished evaluation is written
  there atomically as it arrives, so an interrupted distributed run resumes like a local one, and
  only the driver writes it (two workers never write the same entry).
- **A worker** holds a replica of the :class:`~onnxsqueeze.search.squeezer.Squeezer`, built once
  per worker from a :class:`WorkerSpec` (the model's bytes, the evaluation, calibration and
  training arrays, the options). The spec is shipped once, as the run starts (before the plans):
  as a file in the node's temp folder for the local pool, through Ray's object store for Ray
  (workers need no shared filesystem). A request is a candidate's settings, the knobs' plans (a
  few hundred bytes) and the students the driver already has (their exact bytes, so a worker
  never retrains a different student); the reply is the measured document (metric, size, MACs,
  latency), any student the worker trained, and when and where it ran (``trace``).
- **Students train from time zero**: with several workers, the distilled students (the longest
  tasks, and they need only the teacher and the training data) are sent to the workers as the
  run starts, largest first, while the driver makes the plans and measures the original; a
  candidate built on a student waits for its training (see ``Squeezer.train_ahead``).
- **One core per worker**: a worker's onnxruntime sessions run one intra-op thread
  (:func:`onnxsqueeze.runtime.set_default_threads`), as does its torch training; latency is
  still timed with the run's ``--latency-threads`` (default: onnxruntime's, one per core),
  alone on the node, in the timing slot. The driver's own sessions (plans, the original) do
  not spin between runs while workers exist (scheduling only: the same outputs).
- **Timing** is not corrupted by parallelism: scoring runs in parallel, but latency is measured
  while holding the node's one timing slot (:func:`timing_slot`, a lock file in the node's temp
  folder shared by every onnxsqueeze process there), with the interleaved A/B method of
  :mod:`onnxsqueeze.bench.timing`.

- **Warm workers**: the executor starts its workers when it is made, and each imports what
  measuring needs (onnxruntime, the search; torch too when students will be trained:
  ``preload``), while the driver loads the data, makes the plans and measures the original
  model in its own process; workers then live for the whole run (every knob, every model of a
  fleet) and keep their replicas. The pool's fork server, and ``--ray``'s local Ray instance
  (:mod:`onnxsqueeze.rayhead`: in a thread that also ends it, killed as the command exits), are
  started by the command line's first lines (:mod:`onnxsqueeze.forkserver`), before the CLI's
  own imports.
- **Nothing waited for in vain**: a search that ends while candidates it ran ahead of its path
  are still out (none of them asked for) stops them (:meth:`Executor.abandon`: the pool kills
  those workers and forks fresh ones, Ray cancels the tasks) instead of waiting for results it
  will not use; they are not cached. As the command exits, the pool's fork server is killed
  (:func:`onnxsqueeze.forkserver.stop`), not left to tear torch down while holding the output.
- **The path first**: a gate in front of the workers (:class:`_Gate`) hands a freed worker to
  the search's path before the evaluations run ahead of it, and keeps a student's worker a
  moment for the candidates on that student; the driver's sessions do not spin while workers
  run, and it imports the outputs' plotting library while it waits.

A worker that raises gives that candidate an error (reported per candidate); the search goes on.
A worker process that dies is replaced and its candidate reported as failed, not cached.
"""

# NOTE: ray is imported only inside RayExecutor, so that `onnxsqueeze --help` stays instant and
# the package works without the `ray` extra.

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxsqueeze import scratch
from onnxsqueeze.errors import InputError, one_line
from onnxsqueeze.forkserver import preloads
from onnxsqueeze.forkserver import warm as _warm

if TYPE_CHECKING:
    from onnxsqueeze.search.squeezer import Squeezer

TIMING_LOCK_NAME = "onnxsqueeze-timing.lock"


@contextlib.contextmanager
def timing_slot() -> Iterator[None]:
    """Hold this node's one timing slot while latency is measured (a lock file in the temp dir).

    Every onnxsqueeze process on the node (pool workers, Ray workers, another ``squeeze``) waits
    for it, so no two candidates are timed at once on the same cores.
    """
    path = Path(tempfile.gettempdir()) / TIMING_LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to rebuild the driver's Squeezer (picklable, no file paths)."""

    model: bytes
    model_sha256: str
    eval_inputs: dict[str, np.ndarray]
    eval_labels: np.ndarray | None
    metric: str
    output: str | None
    threshold: float
    calibration_inputs: dict[str, np.ndarray] | None
    calibration_labels: np.ndarray | None
    train_inputs: dict[str, np.ndarray] | None
    train_labels: np.ndarray | None
    options: Any  # SqueezeOptions
    # Builds the worker's replica from this spec (Squeezer.from_spec): pickled by reference, so
    # this module needs no import of the Squeezer, which imports it.
    build: Callable[[WorkerSpec], Squeezer]
    class_axis: int | None = None
    input_shapes: dict[str, tuple[int, ...]] | None = None  # --input-shape

    def spec_id(self) -> str:
        """A content id: the same spec shipped twice is built once per worker."""
        return hashlib.sha256(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()[:32]


def _failed(e: BaseException, transient: bool = False) -> dict[str, Any]:
    return {
        "doc": {"error": f"worker failed: {type(e).__name__}: {one_line(e)}"[:300], "seconds": 0.0},
        "students": {},
        "transient": transient,
    }


def _measure_on(replica: Squeezer, request: dict[str, Any]) -> dict[str, Any]:
    start, cpu = time.time(), time.process_time()
    try:
        reply = replica.measure_request(request)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # any bug or crash in one candidate: reported on that candidate
        reply = _failed(e)
    # Wall-clock times (comparable between the processes of a node): results.json's ``trace``.
    # ``cpu``: this process's CPU seconds meanwhile (a worker runs one request at a time).
    reply["trace"] = {
        "worker": os.getpid(),
        "start": start,
        "end": time.time(),
        "cpu": time.process_time() - cpu,
    }
    return reply


def _worker_process() -> None:
    """Set up this worker process (idempotent): one intra-op thread per onnxruntime session, and
    the original's layer outputs kept between the channels candidates it re-fits.

    Two workers share two cores: a session's default pool (one spinning thread per core) would
    take the other worker's core. Latency is timed with explicit threads, so it is unchanged.
    """
    from onnxsqueeze import runtime
    from onnxsqueeze.passes.reconstruct import keep_original_outputs

    runtime.set_default_threads(1)
    keep_original_outputs()  # as the serial search does for its whole run


# A worker process's replicas, by spec id (module state: it lives as long as the worker process).
_REPLICAS: dict[str, Squeezer] = {}
_REPLICAS_LOCK = threading.Lock()


def _replica(spec_id: str, load: Any) -> Squeezer:
    with _REPLICAS_LOCK:
        if spec_id not in _REPLICAS:
            _worker_process()
            spec = load()
            _REPLICAS[spec_id] = spec.build(spec)
        return _REPLICAS[spec_id]


def _orphan_watch() -> None:
    """A pool worker exits when its parent (the fork server, or the driver) is gone."""
    from onnxsqueeze import orphans

    orphans.watch()  # a forked worker does not inherit the fork server's watching thread


def _pool_measure(handle: tuple[str, str], request: dict[str, Any]) -> dict[str, Any]:
    spec_id, path = handle

    def load() -> WorkerSpec:
        with open(path, "rb") as f:
            spec = pickle.load(f)
        assert isinstance(spec, WorkerSpec)
        return spec

    return _measure_on(_replica(spec_id, load), request)


def _ray_measure(handle: tuple[str, list[Any]], request: dict[str, Any]) -> dict[str, Any]:
    import ray

    spec_id, refs = handle
    return _measure_on(_replica(spec_id, lambda: ray.get(refs[0])), request)


class _Gate:
    """At most ``slots`` requests out to the workers at once; when a worker frees, the search's
    path goes before the evaluations run ahead of it (``algorithm.speculative``), first come
    first served within each; the worker of a student whose training just returned waits a
    moment (:data:`HOLD_S`) for the path's request on that student. Without it, a speculative
    request queued in the pool while both workers trained took the worker a finished student
    freed, and the candidates on that student (the critical path) waited for the other worker.
    Only the order changes: every request runs as before (decisions and results unchanged)."""

    # After a student's training returns, its worker is kept this long for the path's request on
    # that student (the driver sends it ~0.1 s later), not given to a speculative one.
    HOLD_S = 0.5

    def __init__(self, slots: int) -> None:
        self.slots, self.out = slots, 0
        self.cond = threading.Condition()
        self.waiting: list[tuple[object, threading.Event | None]] = []
        self.held_until = 0.0

    def _next(self) -> object | None:
        for me, flag in self.waiting:  # the path's (or claimed by it), oldest first
            if flag is None or flag.is_set():
                return me
        return self.waiting[0][0] if time.monotonic() >= self.held_until else None

    @contextlib.contextmanager
    def slot(self, hold: bool = False) -> Iterator[None]:
        """Wait for a worker, then hold it for the block; ``hold``: a student's training (its
        worker stays for the path's next request a moment, :data:`HOLD_S`)."""
        from onnxsqueeze.search.algorithm import speculative

        me = object()
        with self.cond:
            self.waiting.append((me, speculative.get()))
            # Timed waits: the path may claim a waiting speculative request (its Event) meanwhile.
            while self.out >= self.slots or self._next() is not me:
                self.cond.wait(0.05)
            self.waiting = [w for w in self.waiting if w[0] is not me]
            self.out += 1
            self.held_until = 0.0
            self.cond.notify_all()  # a slot may still be free for the next in line
        try:
            yield
        finally:
            with self.cond:
                self.out -= 1
                if hold:
                    self.held_until = time.monotonic() + self.HOLD_S
                self.cond.notify_all()


def _import_for_outputs() -> None:
    """What writing the outputs imports (matplotlib for pareto.png: ~0.5 CPU s, the file the run
    writes last), imported while the driver waits for its workers instead of after the search."""
    with contextlib.suppress(Exception):  # not installed, or broken: the plot says so later
        import matplotlib

        matplotlib.use("Agg")  # what the report's plot sets (search.report.plot_pareto)
        import matplotlib.pyplot


def _quiet_driver(spinning: bool = False) -> bool:
    """Whether the driver's own sessions (plans, the original) spin while waiting for work;
    returns the previous setting. Off while workers run: a spinning pool thread would take a
    core from the fork server's imports or a student's training. Timing sessions (explicit
    threads) are not affected; outputs are the same either way."""
    from onnxsqueeze import runtime

    return runtime.set_default_spinning(spinning)


class Executor:
    """Runs measurement requests. ``workers`` is how many can run at once.

    ``register(squeezer)`` ships a Squeezer's spec once and returns a handle; ``run(handle,
    request)`` measures one candidate (blocking; called from the search's threads).
    """

    workers = 1
    kind = "in-process"

    def register(self, squeezer: Squeezer) -> Any:
        return squeezer

    def run(self, handle: Any, request: dict[str, Any]) -> dict[str, Any]:
        return _measure_on(handle, request)

    def describe(self) -> str:
        return "in this process, one candidate at a time"

    def abandon(self) -> None:
        """Stop the requests still out if every one of them was sent ahead of the search's path
        and never claimed by it (the search has ended: no one will use their results); each
        then returns a transient failure marked ``abandoned`` (not cached, not counted). Any
        other request out (the path's, a student's training): nothing is stopped. In-process:
        nothing runs ahead."""

    def _driver_waits(self, request: dict[str, Any]) -> None:
        """The first candidate sent out (plans and the original done): from now the driver mostly
        waits, so it imports what the outputs need meanwhile (:func:`_import_for_outputs`)."""
        if request.get("train") is None and not getattr(self, "_waiting", False):
            self._waiting = True
            threading.Thread(target=_import_for_outputs, name="import-outputs", daemon=True).start()

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_method(preload: tuple[str, ...]) -> Any:
    """How the pool's processes start: from a fork server where the platform has one, else spawned.

    The fork server is a fresh process (no state of the driver's onnxruntime or torch is
    forked) that imports ``preload`` (onnxruntime, torch...) once; each worker is then forked
    from it in milliseconds, instead of two spawned interpreters importing torch at once on the
    cores the driver needs for its plans (that put the students' training seconds later).
    """
    import multiprocessing

    from onnxsqueeze import forkserver

    if forkserver.usable():
        forkserver.stop_at_exit()
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))  # used when the server starts (once per driver)
        return ctx
    return multiprocessing.get_context("spawn")


def _unwanted(flags: Collection[threading.Event | None]) -> bool:
    """Whether requests out with these ``speculative`` flags may all be stopped: there are some,
    each runs ahead of the path (a flag) and the path has not claimed it (not set)."""
    return bool(flags) and all(f is not None and not f.is_set() for f in flags)


class ProcessExecutor(Executor):
    """A local pool of ``workers`` processes (forked from a fresh fork server, or spawned: no
    onnxruntime or torch state of the driver is forked)."""

    kind = "processes"

    def __init__(self, workers: int, preload: tuple[str, ...] = ()) -> None:
        if workers < 1:
            raise InputError(f"--workers {workers}: must be at least 1")
        self.workers = workers
        self._preload = preloads(preload)
        self._spinning = _quiet_driver()
        self._gate = _Gate(workers)
        self._folder = Path(tempfile.mkdtemp(prefix="onnxsqueeze-specs-"))
        self._lock = threading.Lock()
        # Requests out (each its ``speculative`` flag) and those abandon() stopped.
        self._out: dict[object, threading.Event | None] = {}
        self._abandoned: set[object] = set()
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=_start_method(self._preload), initializer=_orphan_watch
        )

        def start() -> None:
            for _ in range(self.workers):
                pool.submit(_warm, self._preload)

        # Start every worker now, with onnxruntime (and torch) imported, while the driver loads
        # and plans. In a thread: starting a process waits for the fork server's imports.
        self._starting = threading.Thread(target=start, name="start-workers", daemon=True)
        self._starting.start()
        return pool

    def register(self, squeezer: Squeezer) -> tuple[str, str]:
        spec = squeezer.worker_spec()
        spec_id = spec.spec_id()
        path = self._folder / f"{spec_id}.pkl"
        with self._lock:
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                with open(tmp, "wb") as f:
                    pickle.dump(spec, f, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, path)
        return spec_id, str(path)

    def run(self, handle: Any, request: dict[str, Any]) -> dict[str, Any]:
        from onnxsqueeze.search.algorithm import speculative

        self._driver_waits(request)
        with self._gate.slot(hold=request.get("train") is not None):
            me = object()
            try:
                with self._lock:  # sent, and its place in _out, at once (see abandon)
                    pool = self._pool
                    self._out[me] = speculative.get()
                    future = pool.submit(_pool_measure, handle, request)
                return future.result()
            except (concurrent.futures.process.BrokenProcessPool, concurrent.futures.CancelledError) as e:
                # A worker died (killed, out of memory; cancelled: still queued when abandon()
                # shut its pool down): a fresh pool for the rest.
                with self._lock:
                    if self._pool is pool:
                        self._pool = self._new_pool()
                    if me in self._abandoned:
                        return _failed(e, transient=True) | {"abandoned": True}
                return _failed(e, transient=True)
            finally:
                with self._lock:
                    self._out.pop(me, None)
                    self._abandoned.discard(me)

    def abandon(self) -> None:
        """The pool's workers cannot stop one request: they are killed (SIGKILL), and the next
        request, if any (a fleet's next model), gets a fresh pool forked from the fork server."""
        with self._lock:
            if not _unwanted(list(self._out.values())):
                return
            self._abandoned.update(self._out)
            pool, self._pool = self._pool, self._new_pool()
            killed = list(getattr(pool, "_processes", {}).values())
            for process in killed:
                with contextlib.suppress(OSError, AttributeError):
                    process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        for process in killed:  # gone before their scratch folders are (no finalizer ran)
            with contextlib.suppress(Exception):
                process.join(5)
        scratch.sweep(p.pid for p in killed if p.pid is not None)

    def describe(self) -> str:
        return f"{self.workers} local worker processes"

    def close(self) -> None:
        self._starting.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        _quiet_driver(self._spinning)
        for f in self._folder.glob("*"):
            with contextlib.suppress(OSError):
                f.unlink()
        with contextlib.suppress(OSError):
            self._folder.rmdir()


class RayExecutor(Executor):
    """Ray tasks on a local Ray instance (``address=None``) or an existing cluster.

    Each task asks for one CPU; the spec travels once through the object store and each Ray
    worker process builds its replica on first use and keeps it for later tasks.
    """

    kind = "ray"
    _owns = False  # connected to a cluster by this executor: disconnects in close()

    def __init__(
        self, address: str | None = None, workers: int | None = None, preload: tuple[str, ...] = ()
    ) -> None:
        try:
            import ray
        except ImportError as e:
            raise InputError("--ray needs Ray, which is not installed: pip install 'onnxsqueeze[ray]'") from e
        from onnxsqueeze import rayhead

        self._ray = ray
        # The local instance this executor stops: the one the CLI started as it began (squeeze
        # --ray), else one started now (none when Ray is already initialized in this process).
        cpus = workers or os.cpu_count() or 1
        self._local = rayhead.take(cpus) if address is None else None
        if self._local is None and address is None and not ray.is_initialized():
            self._local = rayhead.LocalRay(cpus, preloads(preload)).start()
        if self._local is not None:
            try:
                self._local.wait()
            except Exception as e:
                raise InputError(f"cannot start a local Ray instance: {one_line(e)}") from e
        elif not ray.is_initialized():
            try:
                ray.init(address=address, **rayhead.INIT_OPTIONS)
            except Exception as e:  # a wrong address, no cluster there, a version mismatch
                raise InputError(f"cannot start or reach Ray at {address}: {one_line(e)}") from e
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers, cpus) if workers else cpus)
        self.address = address
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_measure)
        self._spinning = _quiet_driver()
        self._gate = _Gate(self.workers)
        self._refs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._out: dict[Any, threading.Event | None] = {}  # tasks out: their ``speculative`` flag
        self._abandoned: set[Any] = set()
        # Warm the worker processes (imports) while the driver prepares; not waited for. A local
        # instance's thread submitted them as soon as it was up.
        if self._local is not None:
            self._warming = self._local.warming
        else:
            warm = ray.remote(num_cpus=1, max_retries=0)(_warm)
            self._warming = [warm.remote(preloads(preload)) for _ in range(self.workers)]

    def register(self, squeezer: Squeezer) -> tuple[str, list[Any]]:
        spec = squeezer.worker_spec()
        spec_id = spec.spec_id()
        if spec_id not in self._refs:
            self._refs[spec_id] = self._ray.put(spec)
        return spec_id, [self._refs[spec_id]]  # in a list: Ray passes it on unresolved

    def run(self, handle: Any, request: dict[str, Any]) -> dict[str, Any]:
        from onnxsqueeze.search.algorithm import speculative

        ray = self._ray
        self._driver_waits(request)
        with self._gate.slot(hold=request.get("train") is not None):
            ref = None
            try:
                with self._lock:  # sent and in _out at once (see abandon)
                    ref = self._remote.remote(handle, request)
                    self._out[ref] = speculative.get()
                return ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                return _failed(e)
            except ray.exceptions.RayError as e:  # a worker or node died: not the candidate's fault
                with self._lock:
                    stopped = ref is not None and ref in self._abandoned
                return _failed(e, transient=True) | ({"abandoned": True} if stopped else {})
            finally:
                if ref is not None:
                    with self._lock:
                        self._out.pop(ref, None)
                        self._abandoned.discard(ref)

    def abandon(self) -> None:
        """Each task still out is cancelled (``force``: its worker process is killed; Ray starts
        another when a task needs one)."""
        with self._lock:
            if not _unwanted(list(self._out.values())):
                return
            refs = list(self._out)
            self._abandoned.update(refs)
            for ref in refs:
                with contextlib.suppress(Exception):  # finished meanwhile
                    self._ray.cancel(ref, force=True)

    def describe(self) -> str:
        where = self.address or "a local Ray instance"
        return f"Ray ({where}), {self.workers} tasks at a time"

    def close(self) -> None:
        _quiet_driver(self._spinning)
        if self._local is not None and not self._local.detached:
            self._local.stop()  # a library caller's: stopped now. The CLI's: as the process exits.
        elif self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(
    workers: int | None = None,
    ray: bool = False,
    ray_address: str | None = None,
    preload: tuple[str, ...] = (),
) -> Executor:
    """The executor for ``--workers N`` / ``--ray`` / ``--ray-address ADDRESS`` (default: in-process).

    ``preload``: modules the workers import as they start, besides :data:`onnxsqueeze.forkserver.PRELOAD` (``torch``
    when students will be trained).
    """
    if ray or ray_address:
        return RayExecutor(ray_address, workers, preload)
    if workers is not None and workers > 1:
        return ProcessExecutor(workers, preload)
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    return Executor()
