"""Tuning decoder weights (LM weight alpha, word bonus beta, ...) on a dev split.

    check_tune_split("dev-clean")                       # ValueError for test* splits
    best, trials = grid_search(objective, {"alpha": (0, .5, 1), "beta": (0, 1, 2)})
    save_params("params.json", TunedParams(...));  load_params("params.json").systems["beam+lm"]

``objective(params) -> corpus WER`` is supplied by the caller (eval/run.py decodes the dev split
with those option values). The best values are saved to JSON and applied with ``--params FILE``.
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from ctclab.core.atomic import atomic_write_text

# Grids that bracket the usual optimum for character CTC + word n-gram LMs (alpha ~0.3-1.5,
# beta ~0-3; pyctcdecode's defaults 0.5 / 1.5 sit inside) at a cost of 7 x 6 = 42 decodes.
DEFAULT_GRIDS: dict[str, tuple[float, ...]] = {
    "alpha": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
    # Second-pass LM weight (eval/rescore.py), on alpha's scale; 0 = the first pass unchanged, so
    # tuning can say that rescoring does not help.
    "rescore_weight": (0.0, 0.1, 0.25, 0.5, 0.75, 1.0),
}
TUNE_METHODS = ("grid", "optuna")
# optuna's TPE needs a few dozen trials to beat a coarse grid on two parameters.
DEFAULT_OPTUNA_TRIALS = 30
PARAMS_SCHEMA = "ctclab-params/1"


@dataclass(frozen=True)
class Trial:
    """One evaluated setting and its corpus WER (fraction)."""

    params: dict[str, float]
    wer: float


@dataclass(frozen=True)
class TunedParams:
    """What a params file holds: per system label, the best values found on ``split`` (the
    tuning split's name; several pooled splits are joined with "+", e.g. dev-clean+dev-other)."""

    split: str
    method: str
    systems: dict[str, dict[str, float]]
    wer: dict[str, float]
    trials: dict[str, list[Trial]] = field(default_factory=dict)
    lm: dict[str, str | None] = field(default_factory=dict)
    created: str = ""
    schema: str = PARAMS_SCHEMA
    # per system label: the input files tuned with (field -> path as given) and what they were
    # (field -> lm.files.file_fingerprint); the values are refused for other files
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)


def check_tune_split(split: str) -> None:
    """Refuse to tune on a test split: tuned figures on it would no longer be held-out results."""
    if split.lower().startswith("test"):
        raise ValueError(f"refusing to tune on {split!r}: tuning on a test split makes its WER "
                         "optimistic; tune on a dev split (--tune-split dev-clean) and apply the "
                         "values to test with --params FILE")


def _number(text: str) -> int | float:
    """"8" -> 8 (integer options such as beam_width stay integers), "0.5" -> 0.5."""
    text = text.strip()
    return int(text) if text.lstrip("+-").isdigit() else float(text)


def parse_tune_values(specs: Sequence[str], names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """Grids for ``names`` from ``["alpha=0,0.5,1", ...]``, defaults from DEFAULT_GRIDS.

    A name without a given grid and without a default raises ValueError naming the fix.
    """
    grids: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not values:
            raise ValueError(f"--tune-values {spec!r}: write NAME=V1,V2,... (e.g. alpha=0,0.5,1)")
        try:
            grids[name.strip()] = tuple(_number(v) for v in values.split(","))
        except ValueError:
            raise ValueError(f"--tune-values {spec!r}: values must be numbers") from None
    extra = sorted(set(grids) - set(names))
    if extra:
        raise ValueError(f"--tune-values gives {extra}, which are not tuned (--tune {' '.join(names)})")
    out = {}
    for name in names:
        if name in grids:
            out[name] = grids[name]
        elif name in DEFAULT_GRIDS:
            out[name] = DEFAULT_GRIDS[name]
        else:
            raise ValueError(f"no default grid for {name!r}; give one: --tune-values {name}=V1,V2")
    return out


def grid_search(objective: Callable[[dict[str, float]], float],
                grids: Mapping[str, Sequence[float]],
                on_trial: Callable[[Trial], None] | None = None) -> tuple[Trial, list[Trial]]:
    """Evaluate every combination; returns (best trial, all trials in order).

    Ties go to the earlier trial (grids listed from small to large weights prefer the smaller).
    """
    names = list(grids)
    trials = []
    for values in itertools.product(*(grids[n] for n in names)):
        params = dict(zip(names, values, strict=True))
        trial = Trial(params, float(objective(params)))
        trials.append(trial)
        if on_trial:
            on_trial(trial)
    if not trials:
        raise ValueError("empty tuning grid: give at least one value per parameter")
    return min(trials, key=lambda t: t.wer), trials


def optuna_search(objective: Callable[[dict[str, float]], float],
                  grids: Mapping[str, Sequence[float]], n_trials: int = DEFAULT_OPTUNA_TRIALS,
                  seed: int = 0,
                  on_trial: Callable[[Trial], None] | None = None) -> tuple[Trial, list[Trial]]:
    """TPE search (optuna) over [min, max] of each grid; returns (best trial, all trials)."""
    try:
        import optuna
    except ImportError as exc:
        raise ImportError("--tune-method optuna needs optuna: pip install optuna "
                          "(or use the default --tune-method grid)") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials: list[Trial] = []

    def run(trial) -> float:
        params = {n: trial.suggest_float(n, min(v), max(v)) for n, v in grids.items()}
        result = Trial(params, float(objective(params)))
        trials.append(result)
        if on_trial:
            on_trial(result)
        return result.wer

    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(run, n_trials=n_trials)
    return min(trials, key=lambda t: t.wer), trials


def save_params(path: str | Path, tuned: TunedParams) -> None:
    """Write a params file atomically (JSON)."""
    if not tuned.created:
        tuned = replace(tuned, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    atomic_write_text(Path(path), json.dumps(asdict(tuned), indent=2) + "\n")


def load_params(path: str | Path) -> TunedParams:
    """Read a params file written by :func:`save_params`; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} not found; make one with "
                                "python eval/run.py --tune alpha beta --tune-split dev-clean ...")
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc}); pass a file written by --tune") from exc
    if not isinstance(data, dict) or data.get("schema") != PARAMS_SCHEMA:
        raise ValueError(f"{path} is not a ctclab params file (schema {PARAMS_SCHEMA!r}); pass a "
                         "file written by eval/run.py --tune")
    systems = data.get("systems")
    if not isinstance(systems, dict) or not all(
            isinstance(p, dict) and all(isinstance(v, (int, float)) and math.isfinite(v)
                                        for v in p.values()) for p in systems.values()):
        raise ValueError(f"{path}: 'systems' must map system labels to {{name: number}}")
    try:
        trials = {k: [Trial(**t) for t in v] for k, v in data.get("trials", {}).items()}
        return TunedParams(split=data["split"], method=data["method"], systems=systems,
                           wer=data.get("wer", {}), trials=trials, lm=data.get("lm", {}),
                           created=data.get("created", ""), files=data.get("files", {}),
                           inputs=data.get("inputs", {}))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: incomplete or malformed params file ({exc!r}); pass a file "
                         "written by eval/run.py --tune") from exc
