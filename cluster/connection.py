"""Ray, the engine ctclab scales out with: which cluster to use, and the connection to it.

    options = ray_options(args)                      # --ray ADDRESS (or $RAY_ADDRESS), --ray-*
    with open_cluster(options, logs=Path("results/x/logs")) as cluster:
        if cluster is None: ...                      # no address: one machine, Ray not imported
        pool = cluster.workers(MyWorker, role="decode", count=4, num_cpus=1)   # cluster.workers

Ray is imported only here (and in the workers it starts), and only once work runs on the cluster:
a run without ``--ray`` neither needs nor loads it, and one with nothing to compute (a complete
cache, a finished results folder) does not connect. The connection:

- ``--ray local`` starts a cluster on this machine (ray.init(address="local"));
- ``HOST:PORT`` (a ``ray start --head``), ``ray://HOST:10001`` (Ray Client) or ``auto`` connect to
  a running one. A HOST:PORT that does not answer is an error within CONNECT_TIMEOUT_S: Ray's own
  connect retries for minutes without saying why;
- a process that already called ``ray.init`` (a notebook, a test) keeps its connection.

Workers must see the same files as the driver at the same paths (caches, LMs, audio, models: a
shared filesystem); they start in the driver's working directory when it exists there, so relative
paths mean the same on every node, and they get the driver's CTCLAB_*, HF_* and TRANSFORMERS_*
environment variables. Leaving the block kills every worker it started (no orphaned actors) and
disconnects, unless the connection was the caller's.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctclab.cluster.workers import WorkerPool
from ctclab.core.options import given_options, option

ADDRESS_ENV = "RAY_ADDRESS"
# --ray value that starts a cluster on this machine.
LOCAL = "local"
# Seconds to wait for a HOST:PORT to accept a TCP connection before calling it unreachable (a
# head node on the same network answers in milliseconds).
CONNECT_TIMEOUT_S = 10.0
# Driver environment variables the workers get (where caches and LMs live, hub settings).
FORWARDED_ENV_PREFIXES = ("CTCLAB_", "HF_", "TRANSFORMERS_")


@dataclass(frozen=True)
class RayOptions:
    """Where and how work runs on a Ray cluster (eval/emit.py and eval/run.py)."""

    ray: str | None = option(
        None, "Ray cluster to run on: HOST:PORT of a running cluster (ray start --head), "
        "ray://HOST:10001, auto, or local (start one on this machine); none: $RAY_ADDRESS when "
        "set, else no Ray (this machine only; Ray is not imported)")
    ray_workers: int | None = option(
        None, "workers (Ray actors); none: eval/emit.py one per GPU (one per CPU when the cluster "
        "has no GPU), eval/run.py one per CPU")
    ray_cpus: float | None = option(
        None, "CPUs each worker holds (its decoding threads); none: 1 for decoding and CPU "
        "emission, up to 8 per GPU emission worker (they decode the audio)")
    ray_logs: str | None = option(
        None, "folder for one log file per worker (read it when a worker fails); none: "
        "<out>/ray-logs (eval/run.py) or <cache root>/ray-logs/<UTC time> (eval/emit.py)")

    def __post_init__(self) -> None:
        if self.ray_workers is not None and self.ray_workers < 1:
            raise ValueError(f"--ray-workers must be >= 1, got {self.ray_workers}")
        if self.ray_cpus is not None and not self.ray_cpus > 0:
            raise ValueError(f"--ray-cpus must be positive, got {self.ray_cpus}")

    @property
    def enabled(self) -> bool:
        return bool(self.ray)


def ray_options(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> RayOptions:
    """The RayOptions of parsed flags (made by add_option_flags from RayOptions); without --ray
    the address comes from $RAY_ADDRESS, and ``--ray none`` turns Ray off even when it is set."""
    values = given_options(args, {"ray": RayOptions})
    if "ray" not in values:
        values["ray"] = (env if env is not None else os.environ).get(ADDRESS_ENV) or None
    return RayOptions(**values)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``; None for other forms (auto)."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """RuntimeError naming ``address`` when its HOST:PORT does not accept a TCP connection."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            return
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
    raise RuntimeError(
        f"cannot reach the Ray cluster at {address} ({reason} after at most {timeout:g} s): start "
        "it with `ray start --head` on the head node (the address is the one it prints), check "
        "the host and port, or pass --ray local to start a cluster on this machine")


def import_ray() -> Any:
    """The ray module; ImportError with the install command when it is missing."""
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install -e '.[ray]' (or pip install "
                          "'ray[tune,client]')") from None
    return ray


def forwarded_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's environment variables that workers get (FORWARDED_ENV_PREFIXES)."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


class Cluster:
    """A Ray cluster to run on (made by :func:`open_cluster`). It connects on first use (``ray``),
    so a run with nothing to compute (a complete cache, a finished results folder) never starts
    or joins a cluster. ``logs``: the folder of the workers' log files."""

    def __init__(self, address: str, options: RayOptions, logs: Path):
        self.address, self.options, self.logs = address, options, Path(logs).resolve()
        self.cwd = os.getcwd()
        self._ray: Any = None
        self._mine = False
        self._pools: list[WorkerPool] = []
        self._started: dict[str, int] = {}   # pools started per role (their logs' names)

    @property
    def ray(self) -> Any:
        """The ray module, connected (ImportError without Ray, RuntimeError when the cluster
        cannot be reached)."""
        if self._ray is None:
            ray = import_ray()
            if ray.is_initialized():
                print("[ray] using this process's existing Ray connection", file=sys.stderr)
            else:
                _connect(ray, self.address)
                self._mine = True
            self._ray = ray
        return self._ray

    def resources(self) -> dict[str, float]:
        """The cluster's total resources (CPU, GPU, memory, ...)."""
        return {k: float(v) for k, v in self.ray.cluster_resources().items()}

    def describe(self) -> str:
        """``2 nodes, 16 CPUs, 2 GPUs`` (for log lines and errors)."""
        res = self.resources()
        nodes = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        gpus = f", {res['GPU']:g} GPUs" if res.get("GPU") else ", no GPU"
        return f"{nodes} node{'s' if nodes != 1 else ''}, {res.get('CPU', 0):g} CPUs{gpus}"

    def workers(self, cls: type, *, role: str, count: int, num_cpus: float,
                num_gpus: float = 0.0, setup: tuple = (), start_timeout: float | None = None
                ) -> WorkerPool:
        """Start ``count`` actors of ``cls`` (a cluster.workers.Worker) holding ``num_cpus`` CPUs
        and ``num_gpus`` GPUs each; returns their WorkerPool (closed with the cluster)."""
        self._started[role] = self._started.get(role, 0) + 1
        pool = WorkerPool(self, cls, role=role, count=count, num_cpus=num_cpus,
                          num_gpus=num_gpus, setup=setup, start_timeout=start_timeout,
                          number=self._started[role] - 1)
        self._pools.append(pool)
        return pool

    def close(self) -> None:
        """Kill every worker started here, and disconnect when this made the connection
        (idempotent)."""
        try:
            while self._pools:
                self._pools.pop().close()
        finally:
            if self._mine:
                self._ray.shutdown()
                self._mine = False


@contextmanager
def open_cluster(options: RayOptions, logs: Path) -> Iterator[Cluster | None]:
    """The cluster ``options.ray`` names (None without one: Ray untouched), connected on first
    use; on leaving, the workers started are killed and the connection made is closed.

    Errors at the first use: ImportError (Ray missing), RuntimeError (an address that does not
    answer, or one Ray refuses, with its reason)."""
    if not options.enabled:
        yield None
        return
    assert options.ray is not None
    cluster = Cluster(options.ray, options, logs)
    try:
        yield cluster
    finally:
        cluster.close()


def _connect(ray: Any, address: str) -> None:
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address == LOCAL:
        kwargs["address"] = "local"
    else:
        check_reachable(address)
        kwargs["address"] = address
        # Remote workers do not inherit this shell's environment.
        kwargs["runtime_env"] = {"env_vars": forwarded_env()}
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        reason = _root_cause(exc)
        hint = ""
        if "client" in reason.lower():
            hint = " (ray:// needs Ray Client: pip install 'ray[client]')"
        elif "auth" in reason.lower():
            hint = (" (the cluster uses token authentication: set RAY_AUTH_MODE=token here and "
                    "give the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN)")
        raise RuntimeError(f"cannot connect to the Ray cluster at {address}: {reason}{hint}"
                           ) from None


def _root_cause(exc: BaseException) -> str:
    """Why Ray could not connect: the innermost ``SomeError: message`` line of the exceptions it
    chained, some of which carry an inner traceback as text (the outer ones say only that the
    connection failed)."""
    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    lines = [line.strip() for e in chain for line in str(e).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return (named[-1] if named else lines[0] if lines else type(exc).__name__)[:400]
