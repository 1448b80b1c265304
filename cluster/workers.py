"""Workers on a Ray cluster: the actor base class, its log file, and a pool that runs jobs on the
actors in order and survives workers that die.

    class Squarer(Worker):
        def setup(self, power):            # runs once per actor (load a model, an LM, ...)
            self.power = power
        def run(self, x):
            return x ** self.power

    pool = cluster.workers(Squarer, role="square", count=2, num_cpus=1, setup=(2,))
    for y in pool.map_ordered([1, 2, 3], lambda actor, x, attempt: actor.run.remote(x)):
        ...                                # 1, 4, 9: in job order, whichever worker ran them

The pool hands each worker at most IN_FLIGHT jobs and yields results in job order, running at
most AHEAD jobs past the oldest unfinished one (so the results held back stay bounded). When a
worker dies (killed, out of memory, its node lost) its jobs go back to the queue for the others,
a replacement is started, and the pool says so on stderr with the worker's log file; a job whose
workers died MAX_ATTEMPTS times is an error (an input that kills every worker, e.g. by running it
out of memory). An exception raised by a job (bad input) is raised here with its own type.
Leaving ``map_ordered`` early (an error, an interrupt) kills the workers (WorkerPool.close: those
on this node have exited when it returns; Ray kills asynchronously, so one on another node may run
on for a moment).
"""
from __future__ import annotations

import os
import resource
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from ctclab.core.memory import keep_freed_memory

J = TypeVar("J")
R = TypeVar("R")

# Jobs queued on one worker: one running, one waiting, so a worker never idles between jobs.
IN_FLIGHT = 2
# Jobs that may run past the oldest unfinished one, per worker (bounds the results held back).
AHEAD_PER_WORKER = 4
# A job whose worker died this many times is an error, not retried again.
MAX_ATTEMPTS = 3
# Replacements for dead workers, per pool size (a cluster losing nodes one after another).
REPLACEMENTS_PER_WORKER = 2
# Seconds to wait for the first worker to start (a model or LM loading on a cold node); no
# worker ready by then is an error that names the resources asked for.
DEFAULT_START_TIMEOUT_S = 900.0
# Seconds close() waits for killed workers to be gone.
CLOSE_WAIT_S = 15.0
# Exception types whose message gets the worker's name appended when re-raised on the driver.
_RENAMED = (ValueError, RuntimeError, OSError, ImportError)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class WorkerLog:
    """One worker's log file: timestamped lines, appended and flushed one by one (readable while
    the worker runs, and after it died)."""

    def __init__(self, path: str | Path, name: str):
        self.path, self.name = Path(path), name
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{_now()} {self.name} pid {os.getpid()}: {message}\n")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process in bytes (Linux ru_maxrss is in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass(frozen=True)
class WorkerInfo:
    """Where a worker runs: index in its pool, node address, process id, GPU ids Ray gave it,
    seconds its setup took, and its log file."""

    index: int
    node: str
    pid: int
    gpus: tuple[str, ...]
    setup_seconds: float
    log: str

    def where(self) -> str:
        gpu = f", GPU {','.join(self.gpus)}" if self.gpus else ""
        return f"worker {self.index} (node {self.node}, pid {self.pid}{gpu}; log {self.log})"


class Worker:
    """Base of the actors a :class:`WorkerPool` starts. Subclasses implement :meth:`setup` (run
    once: load what every job needs) and their job methods. The actor starts in the driver's
    working directory (when that exists on its node), with a log file; an error in setup is kept
    and raised by :meth:`ready`, so the driver gets it with its own type."""

    def __init__(self, index: int, log_path: str, cwd: str, setup: tuple):
        self.index = index
        self.log = WorkerLog(log_path, f"worker {index}")
        self._error: BaseException | None = None
        start = time.perf_counter()
        try:
            if os.path.isdir(cwd):
                os.chdir(cwd)
            else:
                self.log(f"the driver's working directory {cwd} does not exist on this node: "
                         "relative paths will not resolve")
            self.log(f"starting on {socket.gethostname()}")
            keep_freed_memory()   # an actor is a process of ours: as eval/run.py's
            self.setup(*setup)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver by ready()
            self.log("setup failed:\n" + traceback.format_exc())
            self._error = exc
        self._setup_seconds = time.perf_counter() - start
        if self._error is None:
            self.log(f"ready after {self._setup_seconds:.1f} s")

    def setup(self, *args: Any) -> None:
        """Load what every job needs (once per worker)."""

    def ready(self) -> WorkerInfo:
        """Where this worker runs; raises the error its setup had."""
        if self._error is not None:
            raise self._error
        import ray

        gpus = tuple(str(g) for g in ray.get_gpu_ids())
        return WorkerInfo(self.index, ray.util.get_node_ip_address(), os.getpid(), gpus,
                          self._setup_seconds, str(self.log.path))

    def peak_memory(self) -> int:
        """Peak resident memory of this worker process, bytes."""
        return peak_rss_bytes()


class WorkerPool:
    """Actors of one Worker class on a cluster; made by cluster.connection.Cluster.workers."""

    def __init__(self, cluster: Any, cls: type, *, role: str, count: int, num_cpus: float,
                 num_gpus: float = 0.0, setup: tuple = (), start_timeout: float | None = None,
                 number: int = 0):
        if count < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {count}")
        self.cluster, self.ray = cluster, cluster.ray
        self.role, self.count, self.setup = role, count, setup
        self.log_name = role if not number else f"{role}-{number + 1}"
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.start_timeout = DEFAULT_START_TIMEOUT_S if start_timeout is None else start_timeout
        self._remote = self.ray.remote(cls)
        self._actors: dict[int, Any] = {}          # index -> handle, live or starting
        self._starting: dict[Any, int] = {}        # ready() ref -> index
        self._info: dict[int, WorkerInfo] = {}     # index -> info, ready workers
        self._next_index = 0
        self._replacements = REPLACEMENTS_PER_WORKER * count
        self._last_death = ""
        self._token = f"{os.getpid()}-{int(time.time() * 1000) % 10**9}"
        self.closed = False
        print(f"[ray] starting {count} {role} worker{'s' if count != 1 else ''} ({num_cpus:g} CPU"
              + (f", {num_gpus:g} GPU" if num_gpus else "") + f" each) on {cluster.describe()}; "
              f"logs: {cluster.logs}", file=sys.stderr)
        for _ in range(count):
            self._start_one()

    # ----------------------------------------------------------------------------- workers
    def _log(self, index: int) -> Path:
        """The log file of worker ``index``: ``<role>-<index>.log``, ``<role>-<pool>-<index>.log``
        for a later pool of the same role on the cluster."""
        return self.cluster.logs / f"{self.log_name}-{index}.log"

    def _start_one(self) -> None:
        index = self._next_index
        self._next_index += 1
        log = self._log(index)
        actor = self._remote.options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=0,
            name=f"ctclab-{self.role}-{self._token}-{index}",
        ).remote(index, str(log), self.cluster.cwd, self.setup)
        self._actors[index] = actor
        self._starting[actor.ready.remote()] = index

    def _started(self, ref: Any) -> None:
        """A ready() answer: the worker joins, or its setup error is raised (every worker would
        fail the same way)."""
        index = self._starting.pop(ref)
        try:
            self._info[index] = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            self._lost(index, exc)
        except self.ray.exceptions.RayTaskError as exc:
            self.close()  # the others would fail the same way
            raise _unwrap(exc, f"{self.role} worker {index} failed to start (log: "
                          f"{self._log(index)})") from None

    def _lost(self, index: int, exc: BaseException) -> None:
        """Worker ``index`` died: say so, forget it, and start a replacement if allowed."""
        info = self._info.pop(index, None)
        where = info.where() if info else f"{self.role} worker {index} (log {self._log(index)})"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self._last_death = f"{where}: {reason[:300]}"
        actor = self._actors.pop(index, None)
        if actor is not None:
            self.ray.kill(actor, no_restart=True)
        again = self._replacements > 0
        print(f"[ray] {where} died: {reason[:300]}"
              + ("; its work goes to the others and a replacement starts" if again else ""),
              file=sys.stderr)
        if again:
            self._replacements -= 1
            self._start_one()

    @property
    def ready_workers(self) -> list[WorkerInfo]:
        return [self._info[i] for i in sorted(self._info)]

    def wait_ready(self) -> list[WorkerInfo]:
        """Block until at least one worker is ready (others keep starting); RuntimeError when
        none is within the start timeout (resources the cluster lacks, a hung setup)."""
        deadline = time.monotonic() + self.start_timeout
        while not self._info:
            if not self._starting:
                raise RuntimeError(f"no {self.role} worker could start (last: {self._last_death}"
                                   f"); see the logs in {self.cluster.logs}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"no {self.role} worker started within {self.start_timeout:g} s: each asks "
                    f"for {self.num_cpus:g} CPU" + (f" and {self.num_gpus:g} GPU" if self.num_gpus
                                                    else "")
                    + f"; the cluster has {self.cluster.describe()}. Lower --ray-workers / "
                    f"--ray-cpus, add nodes, or see the logs in {self.cluster.logs}")
            done, _ = self.ray.wait(list(self._starting), num_returns=1, timeout=min(left, 5.0))
            for ref in done:
                self._started(ref)
        return self.ready_workers

    # ----------------------------------------------------------------------------- jobs
    def map_ordered(self, jobs: Sequence[J], call: Callable[[Any, J, int], Any],
                    describe: Callable[[J], str] = str) -> Generator[Any, None, None]:
        """Results of ``call(actor, job, attempt)`` (an ObjectRef of an actor method) for every
        job, yielded in job order. attempt: 0, then 1, 2 when a job is run again after its
        worker died (so it can write to fresh temporary names)."""
        self.wait_ready()
        queue: deque[int] = deque(range(len(jobs)))
        attempts = [0] * len(jobs)
        running: dict[Any, tuple[int, int]] = {}    # ref -> (job, worker index)
        done: dict[int, Any] = {}
        next_out = 0
        finished = False
        try:
            while next_out < len(jobs):
                self._submit(jobs, queue, running, attempts, call, next_out)
                if not running and not self._starting:
                    raise RuntimeError(f"every {self.role} worker died (last: {self._last_death}"
                                       f"); see the logs in {self.cluster.logs}")
                # Only replacements starting: they must come up within the start timeout.
                timeout = None if running else self.start_timeout
                ready, _ = self.ray.wait([*running, *self._starting], num_returns=1,
                                         timeout=timeout)
                if not ready:
                    raise RuntimeError(
                        f"every {self.role} worker died and no replacement started within "
                        f"{self.start_timeout:g} s (the cluster has {self.cluster.describe()}); "
                        f"see the logs in {self.cluster.logs}")
                for ref in ready:
                    if ref in self._starting:
                        self._started(ref)
                        continue
                    job, worker = running.pop(ref)
                    try:
                        done[job] = self.ray.get(ref)
                    except self.ray.exceptions.RayActorError as exc:
                        self._requeue(worker, exc, job, running, queue, attempts, jobs, describe)
                    except self.ray.exceptions.RayTaskError as exc:
                        where = self._info[worker].where() if worker in self._info else \
                            f"{self.role} worker {worker}"
                        raise _unwrap(exc, f"{describe(jobs[job])} on {where}") from None
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
            finished = True
        finally:
            if not finished:  # an error or an interrupt: stop what still runs
                self.close()

    def _submit(self, jobs: Sequence[J], queue: deque[int], running: dict[Any, tuple[int, int]],
                attempts: list[int], call: Callable[[Any, J, int], Any], next_out: int) -> None:
        load = {i: 0 for i in self._info}
        for _, worker in running.values():
            load[worker] = load.get(worker, 0) + 1
        limit = next_out + AHEAD_PER_WORKER * max(1, len(self._info))
        for worker in sorted(self._info, key=lambda i: load[i]):
            while load[worker] < IN_FLIGHT and queue and queue[0] < limit:
                job = queue.popleft()
                running[call(self._actors[worker], jobs[job], attempts[job])] = (job, worker)
                load[worker] += 1

    def _requeue(self, worker: int, exc: BaseException, job: int,
                 running: dict[Any, tuple[int, int]], queue: deque[int], attempts: list[int],
                 jobs: Sequence[J], describe: Callable[[J], str]) -> None:
        """The worker of ``job`` died: its jobs (this one and any others it held) go back to the
        front of the queue, in order."""
        lost = [job]
        for ref, (other, holder) in list(running.items()):
            if holder == worker:
                del running[ref]
                lost.append(other)
        if worker in self._actors:
            self._lost(worker, exc)
        for j in sorted(lost, reverse=True):
            attempts[j] += 1
            if attempts[j] >= MAX_ATTEMPTS:
                raise RuntimeError(f"{describe(jobs[j])}: {MAX_ATTEMPTS} {self.role} workers died "
                                   f"running it (last: {str(exc).strip()[:300]}); see the logs in "
                                   f"{self.cluster.logs}")
            queue.appendleft(j)

    def broadcast(self, call: Callable[[Any], Any]) -> list[Any]:
        """``call(actor)`` (an ObjectRef) on every ready worker; their results. A worker that dies
        meanwhile is dropped (and replaced); its answer is missing."""
        self.wait_ready()
        refs = {call(self._actors[i]): i for i in sorted(self._info)}
        out = []
        for ref, index in refs.items():
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.RayActorError as exc:
                self._lost(index, exc)
            except self.ray.exceptions.RayTaskError as exc:
                where = self._info[index].where() if index in self._info else f"worker {index}"
                raise _unwrap(exc, where) from None
        if not out:
            raise RuntimeError(f"every {self.role} worker died; see the logs in "
                               f"{self.cluster.logs}")
        return out

    def close(self) -> None:
        """Kill every worker of the pool and wait (up to CLOSE_WAIT_S) until Ray knows they are
        dead and those on this node have exited (idempotent). Ray kills asynchronously: a
        worker on another node may still run for a moment after this returns, so work that
        shares files with workers must not count on it (emission.distributed stages its files
        in a folder of the run, removed when the run ends)."""
        here = self.ray.util.get_node_ip_address() if self._info else ""
        local = [info.pid for info in self._info.values() if info.node == here]
        deadline = time.monotonic() + CLOSE_WAIT_S
        pings = []
        for actor in self._actors.values():
            try:
                self.ray.kill(actor, no_restart=True)
                pings.append(actor.peak_memory.remote())
            except Exception:  # noqa: BLE001, S110 - already gone
                pass
        if pings:  # a killed actor's calls fail once Ray knows it is dead
            self.ray.wait(pings, num_returns=len(pings), timeout=CLOSE_WAIT_S)
        # ... which may come before its process ends (measured: files written after it)
        while any(map(_running, local)) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._actors.clear()
        self._starting.clear()
        self._info.clear()
        self.closed = True


def _running(pid: int) -> bool:
    """Whether process ``pid`` of this machine is running (a zombie, killed and not yet reaped,
    is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except FileNotFoundError:   # gone
        return False
    except OSError:   # no /proc (macOS): signal 0 tells whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _unwrap(exc: BaseException, where: str) -> BaseException:
    """The exception a worker raised (Ray wraps it), its message naming ``where``."""
    cause = getattr(exc, "cause", None)
    if not isinstance(cause, BaseException):
        return RuntimeError(f"{where}: {str(exc).strip().splitlines()[-1][:500]}")
    if type(cause) in _RENAMED:
        return type(cause)(f"{cause} [{where}]")
    return cause
