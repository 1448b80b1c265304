"""Calibrating word confidence on dev data, saving it like ``--params`` and reusing it on test.

    cal = fit_calibrator("temperature", raw_confidences, correct)   # on dev words, never test
    cal.apply(raw)                                                   # calibrated probabilities
    save_calibration("calibration.json", CalibrationFile(split="dev-clean", systems={...}))
    load_calibration(path).for_system("beam+lm", identity)           # ValueError if refitted for another

Methods (few parameters: dev sets are small and wrong words fewer still):
- ``temperature``: p = sigmoid(logit(c) / T), one parameter fitted by maximum likelihood. It keeps
  the order of the words (AUC unchanged) and only says how much to trust the raw value.
- ``isotonic``: the monotone step function of pool-adjacent-violators, each step's accuracy
  smoothed as (right + 1) / (words + 2) so that no step claims certainty from a few words.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.core.atomic import atomic_write_text

CALIBRATION_METHODS = ("temperature", "isotonic")
DEFAULT_CALIBRATION_METHOD = "temperature"
CALIBRATION_SCHEMA = "ctclab-calibration/1"
# Raw confidences are clipped to [EPS, 1 - EPS] before the logit: a raw 1.0 (every n-best entry
# agrees, every label certain) stays finite, and no calibrated value is ever exactly 0 or 1.
EPS = 1e-6
# Search range of ln T for the temperature (T from 0.05 to 20 covers any sane correction).
_LOG_T_RANGE = (-3.0, 3.0)


def _logit(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), EPS, 1 - EPS)
    return np.log(c) - np.log1p(-c)


@dataclass(frozen=True)
class Calibrator:
    """A fitted map raw confidence -> calibrated probability.

    method: 'temperature' (params {'temperature': T}) or 'isotonic' (params {'x': step starts,
    'y': step values}). fitted_on: the dev split(s) it was fitted on ('+'-joined).
    """

    method: str
    params: dict[str, Any]
    fitted_on: str = ""

    def describe(self) -> str:
        """E.g. 'temperature (T=1.88) fit on dev-clean+dev-other'."""
        detail = f" (T={self.params['temperature']:.2f})" if self.method == "temperature" else ""
        return f"{self.method}{detail} fit on {self.fitted_on or '?'}"

    def apply(self, confidence: Sequence[float] | np.ndarray) -> np.ndarray:
        """(n,) calibrated probabilities; NaN stays NaN (a word without confidence)."""
        c = np.asarray(confidence, np.float64)
        out = np.full(c.shape, np.nan)
        ok = np.isfinite(c)
        if self.method == "temperature":
            out[ok] = 1.0 / (1.0 + np.exp(-_logit(c[ok]) / float(self.params["temperature"])))
        elif self.method == "isotonic":
            xs, ys = np.asarray(self.params["x"]), np.asarray(self.params["y"])
            out[ok] = ys[np.maximum(np.searchsorted(xs, c[ok], side="right") - 1, 0)]
        else:
            raise ValueError(f"unknown calibration method {self.method!r}; valid: "
                             f"{', '.join(CALIBRATION_METHODS)}")
        return out


def fit_calibrator(method: str, confidence: Sequence[float] | np.ndarray,
                   correct: Sequence[bool] | np.ndarray) -> Calibrator:
    """Fit ``method`` on raw confidences and right/wrong labels of dev words.

    ValueError for an unknown method, no words, or words that are all right or all wrong (the fit
    would then say nothing: calibrate on more dev data).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; valid: "
                         f"{', '.join(CALIBRATION_METHODS)}")
    c = np.asarray(confidence, np.float64)
    y = np.asarray(correct, bool)
    keep = np.isfinite(c)
    c, y = c[keep], y[keep]
    if len(c) == 0 or y.all() or not y.any():
        raise ValueError(f"calibration needs dev words that are right and words that are wrong; "
                         f"got {len(c)} words, {int((~y).sum())} wrong: add dev splits "
                         "(--calibrate-split dev-clean dev-other ...)")
    if method == "temperature":
        return Calibrator("temperature", {"temperature": _fit_temperature(_logit(c), y)})
    return Calibrator("isotonic", _fit_isotonic(c, y))


def _fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """T minimising the log loss of sigmoid(z / T): a grid over ln T, then golden-section."""
    def loss(log_t: float) -> float:
        s = z / math.exp(log_t)
        # -log sigmoid(s) for right words, -log sigmoid(-s) for wrong ones, stably
        return float(np.logaddexp(0.0, np.where(y, -s, s)).mean())

    grid = np.linspace(*_LOG_T_RANGE, 61)
    k = int(np.argmin([loss(g) for g in grid]))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
    return math.exp((lo + hi) / 2)


def _fit_isotonic(c: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    """Pool adjacent violators; steps start at each block's lowest confidence."""
    order = np.argsort(c, kind="stable")
    blocks: list[list[float]] = []   # [right, words, lowest confidence]
    for ci, yi in zip(c[order].tolist(), y[order].tolist(), strict=True):
        blocks.append([float(yi), 1.0, ci])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            right, words, _ = blocks.pop()
            blocks[-1][0] += right
            blocks[-1][1] += words
    values = np.maximum.accumulate([(r + 1) / (n + 2) for r, n, _ in blocks])
    starts = [0.0] + [b[2] for b in blocks[1:]]
    return {"x": starts, "y": values.tolist()}


# ----------------------------------------------------------------------------- files
@dataclass(frozen=True)
class SystemCalibration:
    """One system's calibrator and what it was fitted for.

    identity: what made the confidences (decoder name and options, rescoring): a calibrator is
    valid only for the same. words / wrong: dev words it saw; ece_before / ece_after: on them.
    """

    calibrator: Calibrator
    identity: dict[str, Any]
    words: int
    wrong: int
    ece_before: float
    ece_after: float


@dataclass(frozen=True)
class CalibrationFile:
    """What calibration.json holds: per system label, its calibration, fitted on ``split``
    (several pooled dev splits joined with '+')."""

    split: str
    systems: dict[str, SystemCalibration]
    created: str = ""
    schema: str = CALIBRATION_SCHEMA

    def for_system(self, label: str, identity: Mapping[str, Any]) -> Calibrator:
        """The calibrator of ``label``; ValueError when the file has none for it or it was fitted
        for another system (other decoder or options), naming what differs."""
        entry = self.systems.get(label)
        if entry is None:
            raise ValueError(f"the calibration file has no system {label!r} (it has "
                             f"{sorted(self.systems)}); fit one with --calibrate-split on dev data "
                             "for this system")
        now, then = _flat(_plain(dict(identity))), _flat(_plain(entry.identity))
        if now != then:
            keys = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
            diff = "; ".join(f"{k}: fitted {then.get(k)!r}, now {now.get(k)!r}" for k in keys)
            raise ValueError(f"the calibration of {label!r} was fitted for another system ({diff}); "
                             "a calibration holds only for the system that made the confidences: "
                             "refit it with --calibrate-split on dev data")
        return replace(entry.calibrator, fitted_on=self.split)


def _flat(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'options': {'alpha': 1}} -> {'options.alpha': 1} (so a difference names the option)."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _plain(value: Any) -> Any:
    """JSON round trip, so tuples and lists (and a loaded file) compare equal."""
    return json.loads(json.dumps(value, default=str))


def save_calibration(path: str | Path, data: CalibrationFile) -> None:
    """Write a calibration file atomically (JSON)."""
    if not data.created:
        data = replace(data, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    atomic_write_text(Path(path), json.dumps(_plain(asdict(data)), indent=2) + "\n")


def load_calibration(path: str | Path) -> CalibrationFile:
    """Read a file written by :func:`save_calibration`; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} not found; make one with eval/run.py "
                                "--calibrate-split dev-clean ... (it saves <out>/calibration.json)")
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc}); pass a calibration.json from "
                         "--calibrate-split") from exc
    if not isinstance(data, dict) or data.get("schema") != CALIBRATION_SCHEMA:
        raise ValueError(f"{path} is not a ctclab calibration file (schema {CALIBRATION_SCHEMA!r}); "
                         "pass a calibration.json written by --calibrate-split")
    try:
        systems = {label: SystemCalibration(Calibrator(**s["calibrator"]), s["identity"],
                                            s["words"], s["wrong"], s["ece_before"],
                                            s["ece_after"])
                   for label, s in data["systems"].items()}
        for s in systems.values():
            s.calibrator.apply([0.5])   # an unknown method fails here, not on test
        return CalibrationFile(data["split"], systems, data.get("created", ""))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: incomplete or malformed calibration file ({exc!r}); pass a file "
                         "written by --calibrate-split") from exc

