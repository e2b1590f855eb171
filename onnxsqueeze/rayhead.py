"""The local Ray instance of ``squeeze --ray``, started as the CLI starts and stopped off the path.

Starting a local instance (``ray.init``) takes ~2.5-4 s of wall time but little CPU: most of it
waits for Ray's processes (the GCS, its API server, the raylet) to come up one after another.
:func:`start_early` starts it from the command line's first lines, in a thread of the driver,
so that wait overlaps the CLI's imports; the workers' warm-up tasks
(imports of onnxruntime, torch...) are submitted as soon as it is up. The executor
(:class:`onnxsqueeze.search.executor.RayExecutor`) then takes that instance (:func:`take`).

**One thread starts and stops it** (:class:`LocalRay`): Ray starts its node's processes with
``PR_SET_PDEATHSIG`` (SIGKILL) on Linux, and the kernel sends that signal when the *thread* that
started them ends, not the process: a thread that called ``ray.init`` and returned killed the GCS
under the driver ("Failed to connect to GCS within 60 seconds"). So the thread stays until it
is asked to stop, then stops it itself. The same rule makes a killed driver (SIGKILL, out of
memory) leave almost nothing behind: its threads end, the GCS and the raylet get SIGKILL, the
raylet's workers exit when it is gone; its two agents hang on, and a guard process kills them
(:func:`onnxsqueeze.killguard.guard`).

**Shutdown off the path**: ``ray.shutdown()`` takes 1.1-1.4 s (it sends each process a SIGTERM
and waits for it). The CLI's instance is left to the process's exit (:func:`_join_at_exit`): the
driver disconnects, then the node's processes, the raylet's agents and workers are SIGKILLed
(:mod:`onnxsqueeze.killguard`), so the command still leaves no Ray process behind. A library
caller's executor shuts its instance down as before, in ``close()``.
"""

# NOTE: standard library only at the top (killguard is too): this runs before the CLI is
# imported; ray is imported in the instance's thread.

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from onnxsqueeze import killguard, scratch

# ray.init's options for a local instance: no dashboard (its modules cost ~1 CPU s), and the
# workers' output is not copied to the driver's terminal.
INIT_OPTIONS: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}


class LocalRay:
    """A local Ray instance with ``num_cpus`` CPUs, run by one thread from start to shutdown.

    ``preload``: modules each of ``num_cpus`` workers imports in a warm-up task as soon as the
    instance is up (:func:`onnxsqueeze.forkserver.preloads`'s list).
    """

    def __init__(self, num_cpus: int, preload: tuple[str, ...] = ()) -> None:
        self.num_cpus, self.preload = num_cpus, preload
        self.error: BaseException | None = None
        self.warming: list[Any] = []
        self.detached = False  # True: started by the CLI, whose exit kills it (_join_at_exit)
        self._up = threading.Event()
        self._stop = threading.Event()
        self._kill = False
        self._thread = threading.Thread(target=self._run, name="onnxsqueeze-ray", daemon=True)

    def start(self) -> LocalRay:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            import ray

            # After ray's own exit hook (a shutdown in the main thread), so it runs before it.
            atexit.register(_join_at_exit if self.detached else self.stop)
            # Ray's own lines off the CLI's stderr: "SIGTERM handler is not set because current
            # thread is not the main thread" (the CLI has its own), the local instance's token.
            # address="local": a new instance even where RAY_ADDRESS or a `ray start` cluster's
            # /tmp/ray/ray_current_cluster (also a stale one) would make ray.init connect to it.
            ray.init(address="local", num_cpus=self.num_cpus, logging_level=logging.ERROR, **INIT_OPTIONS)
            from onnxsqueeze.forkserver import warm as warm_up

            warm = ray.remote(num_cpus=1, max_retries=0)(warm_up)
            self.warming = [warm.remote(self.preload) for _ in range(self.num_cpus)]
        except BaseException as e:  # reported by wait(), in the thread that asks for the instance
            self.error = e
            self._up.set()
            return
        self._up.set()
        guard = killguard.guard(_processes(ray))
        self._stop.wait()
        if self._kill:
            # The process is exiting: the driver disconnects (ray.shutdown() without its node),
            # then the node's processes are SIGKILLed, instead of ray.shutdown()'s SIGTERM and
            # wait for each (~1.1-1.4 s in all).
            pids = killguard.stamp(_processes(ray))
            if pids:  # else another Ray's layout: the plain shutdown below
                ray._private.worker._global_node = None
            ray.shutdown()
            killguard.kill(pids)
            # The workers' scratch folders: no exit hook of theirs ran (onnxsqueeze.scratch).
            scratch.sweep(int(p.partition(":")[0]) for p in pids)
        else:
            ray.shutdown()  # in this thread: the node's processes were started by it
        if guard is not None:
            guard.kill()
            guard.wait()

    def wait(self) -> None:
        """Until the instance is up; raises what starting it raised."""
        self._up.wait()
        if self.error is not None:
            raise self.error

    def stop(self, wait: bool = True, kill: bool = False) -> None:
        """Shut the instance down (``wait``: until its processes are gone; ``kill``: SIGKILL them,
        as the process exits, instead of ``ray.shutdown()``)."""
        self._kill = kill
        self._stop.set()
        if wait and self._thread.is_alive():
            self._thread.join()


def _processes(ray: Any) -> list[int]:
    """The local instance's processes: the node's (GCS, raylet, API server, monitors) and the
    raylet's children (its two agents and the workers)."""
    try:  # Ray's private layout (ray 2.x): none found if it changes
        node = ray._private.worker._global_node
        pids = [p.process.pid for infos in node.all_processes.values() for p in infos]
        raylets = [p.process.pid for p in node.all_processes.get("raylet", [])]
    except AttributeError:
        return []
    return pids + [c for r in raylets for c in killguard.children(r)]


_EARLY: LocalRay | None = None


def _join_at_exit() -> None:
    if _EARLY is not None:
        _EARLY.stop(wait=True, kill=True)


def take(num_cpus: int, any_cpus: bool = False) -> LocalRay | None:
    """The instance :func:`start_early` started, if it has ``num_cpus`` CPUs and still runs."""
    early = _EARLY
    if early is None or (early.num_cpus != num_cpus and not any_cpus) or early._stop.is_set():
        return None
    return early


def start_early(argv: Sequence[str]) -> bool:
    """Start the local Ray instance now if ``argv`` is a ``squeeze --ray`` (not ``--ray-address``:
    an existing cluster); True if started. Its CPUs: ``--workers``, else one per core (as the
    executor's).

    A command line that turns out to be bad input stops the instance at exit.
    """
    global _EARLY
    args = list(argv)
    if not args or args[0] != "squeeze" or "--ray" not in args or take(0, any_cpus=True):
        return False
    if any(a.startswith("--ray-address") for a in args) or any(a in ("--help", "-h") for a in args):
        return False
    from onnxsqueeze.forkserver import preloads, trains, workers

    cpus = workers(args, None)
    _EARLY = LocalRay(cpus or os.cpu_count() or 1, preloads(("torch",) if trains(args) else ()))
    _EARLY.detached = True
    _EARLY.start()
    return True
