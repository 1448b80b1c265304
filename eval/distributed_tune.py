"""Tuning on a Ray cluster: every trial of the search is a Ray Tune trial.

    search = RayTuneSearch(cluster, dev_caches, settings, storage=out / "tune")
    tuned = tune_systems(plan, dev_caches, "grid", 30, factory, settings, search=search)

Each trial decodes the dev splits with its option values where Ray Tune places it (one CPU each,
as many at once as the cluster has CPUs) and reports the corpus WER: the objective is
eval.tuning.objective_for, the same as a local search, over the caches read from the shared
filesystem. Trial actors are reused, so a worker process loads an LM once (ctclab.lm.loaded) for
all the trials it runs.

- grid (``--tune-method grid``): one trial per grid point. Points are numbered in the order
  eval.tune.grid_search visits them and ties go to the lower number, so the best values are those
  the local grid search picks.
- optuna (``--tune-method optuna``): Ray Tune's OptunaSearch (TPE, seed 0) over each grid's
  [min, max], ``--tune-trials`` trials, several at once. Needs optuna (the ray extra has it), like
  the local search; TPE's first 10 trials are its seeded random start-up, so they are the points
  the local search tries, whichever trial finishes first.

A trial whose worker dies is run again (FAILURE_RETRIES); a trial that fails is an error naming
its values. Ray Tune keeps its files (one folder per trial) under ``storage``.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctclab.cluster.connection import Cluster
from ctclab.emission.cache import EmissionCache
from ctclab.eval.distributed_decode import check_cpu_search
from ctclab.eval.runner import EvalSettings
from ctclab.eval.systems import DecoderFactory, System
from ctclab.eval.tune import Trial
from ctclab.eval.tuning import objective_for

METRIC = "wer"
# Ray Tune's switch between its output engines ("0": the older one).
OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
# Runs of a trial whose worker died before it is an error.
FAILURE_RETRIES = 2
# CPUs a trial holds: a decoder runs on one core.
TRIAL_CPUS = 1.0

# One decoder factory and the caches it read, per trial worker process (reused across trials).
_FACTORY: DecoderFactory | None = None
_CACHES: dict[str, EmissionCache] = {}


def grid_points(grids: dict[str, tuple[float, ...]]) -> list[dict[str, float]]:
    """Every combination, in the order eval.tune.grid_search evaluates them."""
    names = list(grids)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grids[n] for n in names))]


def run_trial(config: dict[str, Any], *, system: System, caches: list[str],
              settings: EvalSettings, points: list[dict[str, float]] | None, cwd: str,
              units: str | None) -> None:
    """One Ray Tune trial: the corpus WER of ``system`` with the trial's values on ``caches``
    (paths), reported as METRIC."""
    global _FACTORY
    from ray import tune

    if os.path.isdir(cwd):  # Ray Tune starts trials in their own folder; paths are the driver's
        os.chdir(cwd)
    params = points[int(config["point"])] if points is not None else {
        k: float(v) for k, v in config.items()}
    if _FACTORY is None or _FACTORY.units != units:
        _FACTORY = DecoderFactory(units)
    for path in caches:
        if path not in _CACHES:
            _CACHES[path] = EmissionCache.open(path)
    opened = [_CACHES[path] for path in caches]
    wer = objective_for(system, opened, _FACTORY, settings)(params)
    tune.report({METRIC: wer})


class RayTuneSearch:
    """eval.tuning's ``search``: the trials of one system run as Ray Tune trials."""

    def __init__(self, cluster: Cluster, caches: list[EmissionCache], settings: EvalSettings,
                 storage: Path, units: str | None = None):
        self.cluster, self.units = cluster, units
        self.caches = [str(c.path.resolve()) for c in caches]
        # Trials draw no progress bars (they run elsewhere) and use one process each.
        self.settings = dataclasses.replace(settings, progress=False, jobs=1)
        self.storage = Path(storage).resolve()

    def __call__(self, system: System, grids: dict[str, tuple[float, ...]], method: str,
                 trials: int, on_trial: Callable[[Trial], None]) -> tuple[Trial, list[Trial]]:
        check_cpu_search(system.options, system.label)
        self.cluster.ray  # noqa: B018 - connect first: Ray Tune would start a cluster of its own
        from ray import tune

        points = grid_points(grids) if method != "optuna" else None
        if points is not None:
            if not points:
                raise ValueError("empty tuning grid: give at least one value per parameter")
            space: dict[str, Any] = {"point": tune.grid_search(list(range(len(points))))}
            search_alg, samples = None, 1
        else:
            space = {n: tune.uniform(min(v), max(v)) for n, v in grids.items()}
            search_alg, samples = _optuna(), trials
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, system=system, caches=self.caches,
                                 settings=self.settings, points=points, cwd=self.cluster.cwd,
                                 units=self.units),
            {"cpu": TRIAL_CPUS})
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric=METRIC, mode="min", num_samples=samples,
                                        search_alg=search_alg, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"tune-{_safe(system.label)}", storage_path=str(self.storage), verbose=0,
                failure_config=tune.FailureConfig(max_failures=FAILURE_RETRIES),
                callbacks=[_reporter(points, on_trial)]))
        with _legacy_output():
            results = tuner.fit()
        found: list[tuple[int, Trial]] = []
        for number in range(len(results)):
            result = results[number]
            config = result.config or {}
            params = _params(config, points)
            if result.error is not None:
                shown = " ".join(f"{k}={v:.3g}" for k, v in params.items())
                raise RuntimeError(f"tuning {system.label}: the trial with {shown} failed: "
                                   f"{str(result.error).strip().splitlines()[-1][:400]} "
                                   f"(Ray Tune's files: {result.path})")
            order = int(config["point"]) if points is not None else number
            found.append((order, Trial(params, float((result.metrics or {})[METRIC]))))
        ordered = [t for _, t in sorted(found, key=lambda x: x[0])]
        if not ordered:
            raise RuntimeError(f"tuning {system.label}: Ray Tune ran no trial")
        return min(ordered, key=lambda t: t.wer), ordered


@contextmanager
def _legacy_output() -> Iterator[None]:
    """Ray Tune's older output engine, which verbose=0 silences (the newer one still prints its
    tables); our callback prints a line per trial instead."""
    before = os.environ.get(OUTPUT_ENV)
    os.environ[OUTPUT_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(OUTPUT_ENV, None)
        else:
            os.environ[OUTPUT_ENV] = before


def _params(config: dict[str, Any], points: list[dict[str, float]] | None) -> dict[str, float]:
    if points is not None:
        return dict(points[int(config["point"])])
    return {k: float(v) for k, v in config.items()}


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _optuna() -> Any:
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        raise ImportError("--tune-method optuna needs optuna: pip install optuna "
                          "(or use the default --tune-method grid)") from exc
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=0)


def _reporter(points: list[dict[str, float]] | None, on_trial: Callable[[Trial], None]) -> Any:
    """A Ray Tune callback (it runs on the driver) that hands each finished trial to
    ``on_trial``."""
    from ray.tune import Callback

    class Reporter(Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any
                              ) -> None:
            result = trial.last_result or {}
            if METRIC in result:
                on_trial(Trial(_params(trial.config, points), float(result[METRIC])))

    return Reporter()
