"""Calibrating word confidence on dev data, saving it like ``--params`` and reusing it on test.

    cal = fit_calibrator("auto", confidence, correct, frame, utterance)   # dev words, never test
    cal.apply(confidence, frame)                                          # calibrated probabilities
    save_calibration("calibration.json", CalibrationFile(split="dev-clean", systems={...}))
    load_calibration(path).for_system("beam+lm", identity)     # ValueError if fitted for another

Inputs per word: the decoder's ``confidence`` (n-best posterior x frame posterior,
decoders/confidence.py) and its ``frame`` confidence; the n-best posterior is their ratio.
Methods, all with few parameters (dev sets are small and wrong words fewer still):
- ``none``: the raw confidence, unchanged.
- ``temperature``: p = sigmoid(logit(c) / T), one parameter fitted by maximum likelihood. It keeps
  the order of the words (AUC unchanged) and only says how much to trust the raw value.
- ``platt``: logistic regression p = sigmoid(b + w1 logit(frame) + w2 logit(posterior)), three
  parameters (L2-penalised weights, kept positive: a feature that would rank right words below
  wrong ones is dropped), so the acoustic and the n-best evidence are weighed separately.
- ``isotonic``: the monotone step function of pool-adjacent-violators, each step's accuracy
  smoothed as (right + 1) / (words + 2) so that no step claims certainty from a few words.
- ``auto`` (the default): ``none``, ``temperature`` or ``platt``, whichever predicts held-out dev
  words best: repeated K-fold cross-validation over utterances (words of one utterance stay in
  one fold) scored by the Brier score, a simpler method kept unless a richer one is strictly
  better. The Brier score, (p - right)^2, is a proper score that rewards calibration and
  ranking; unlike the log loss it is bounded per word, so a handful of spelling errors that the
  decoder is sure of (dev's "per adventure") cannot decide the choice alone. When calibrating
  does not help on held-out folds, the raw confidence is kept.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.core.atomic import atomic_write_text

CALIBRATION_METHODS = ("auto", "none", "temperature", "platt", "isotonic")
DEFAULT_CALIBRATION_METHOD = "auto"
# What ``auto`` chooses among, simplest first (a later one must be strictly better to be chosen).
AUTO_CANDIDATES = ("none", "temperature", "platt")
# Cross-validation of ``auto``: folds of utterances, repeated with other splits (seeded) so that
# the choice does not hang on where a few wrong words fall.
CV_FOLDS = 5
CV_REPEATS = 4
CV_SEED = 0
CALIBRATION_SCHEMA = "ctclab-calibration/1"
# Raw confidences are clipped to [EPS, 1 - EPS] before the logit: a raw 1.0 (every n-best entry
# agrees, every label certain) stays finite, and no calibrated value is ever exactly 0 or 1.
EPS = 1e-6
# Search range of ln T for the temperature (T from 0.05 to 20 covers any sane correction).
_LOG_T_RANGE = (-3.0, 3.0)
# L2 penalty on the Platt weights (in units of the summed log loss): keeps them finite when the
# dev words are nearly separable, and small next to a few hundred words.
PLATT_L2 = 1.0
PLATT_FEATURES = ("frame", "posterior")


def _logit(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), EPS, 1 - EPS)
    return np.log(c) - np.log1p(-c)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def word_features(confidence: np.ndarray, frame: np.ndarray) -> dict[str, np.ndarray]:
    """The Platt inputs of each word: ``frame`` (its frame confidence; 1 where unknown, as in
    decoders/confidence.py), ``posterior`` (its n-best posterior = confidence / frame; 1 for a
    decoder without n-best lists, whose confidence is the frame part) and ``confidence``."""
    c = np.asarray(confidence, np.float64)
    f = np.asarray(frame, np.float64)
    f = np.where(np.isfinite(f), f, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        post = np.where(f > 0, np.minimum(1.0, c / np.where(f > 0, f, 1.0)), 1.0)
    return {"frame": f, "posterior": post, "confidence": c}


@dataclass(frozen=True)
class Calibrator:
    """A fitted map raw confidence -> calibrated probability.

    method: 'none' (no params), 'temperature' ({'temperature': T}), 'platt' ({'features': names,
    'weights': one per feature, 'bias': b}) or 'isotonic' ({'x': step starts, 'y': step values}).
    fitted_on: the dev split(s) it was fitted on ('+'-joined). cv_brier: when ``auto`` chose it,
    the cross-validated Brier score of every candidate.
    """

    method: str
    params: dict[str, Any]
    fitted_on: str = ""
    cv_brier: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """E.g. 'temperature T=1.88 (dev-clean+dev-other)', 'auto: none (dev-clean)'."""
        p = self.params
        detail = {
            "temperature": f" T={p.get('temperature', math.nan):.2f}",
            "platt": "".join(f" {n} {w:.2f}" for n, w in zip(
                p.get("features", ()), p.get("weights", ()), strict=True)),
        }.get(self.method, "")
        return f"{'auto: ' if self.cv_brier else ''}{self.method}{detail} ({self.fitted_on or '?'})"

    def apply(self, confidence: Sequence[float] | np.ndarray,
              frame: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """(n,) calibrated probabilities; NaN stays NaN (a word without confidence). ``frame``:
        the words' frame confidences (used by 'platt' only)."""
        c = np.asarray(confidence, np.float64)
        out = np.full(c.shape, np.nan)
        ok = np.isfinite(c)
        if self.method == "none":
            out[ok] = c[ok]
        elif self.method == "temperature":
            out[ok] = _sigmoid(_logit(c[ok]) / float(self.params["temperature"]))
        elif self.method == "platt":
            if frame is None:
                raise ValueError("a 'platt' calibration weighs each word's frame confidence and "
                                 "n-best posterior: pass the frame confidences too")
            feats = word_features(c[ok], np.asarray(frame, np.float64)[ok])
            z = np.full(int(ok.sum()), float(self.params["bias"]))
            for name, w in zip(self.params["features"], self.params["weights"], strict=True):
                z += float(w) * _logit(feats[name])
            out[ok] = _sigmoid(z)
        elif self.method == "isotonic":
            xs, ys = np.asarray(self.params["x"]), np.asarray(self.params["y"])
            out[ok] = ys[np.maximum(np.searchsorted(xs, c[ok], side="right") - 1, 0)]
        else:
            raise ValueError(f"unknown calibration method {self.method!r}; valid: "
                             f"{', '.join(CALIBRATION_METHODS)}")
        return out


def fit_calibrator(method: str, confidence: Sequence[float] | np.ndarray,
                   correct: Sequence[bool] | np.ndarray,
                   frame: Sequence[float] | np.ndarray | None = None,
                   utterance: Sequence[int] | np.ndarray | None = None) -> Calibrator:
    """Fit ``method`` on the raw confidences (and frame confidences) and right/wrong labels of
    dev words. utterance: each word's utterance, the unit of ``auto``'s cross-validation folds
    (default: every word its own).

    ValueError for an unknown method, no words, or words that are all right or all wrong (the fit
    would then say nothing: calibrate on more dev data).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; valid: "
                         f"{', '.join(CALIBRATION_METHODS)}")
    c = np.asarray(confidence, np.float64)
    y = np.asarray(correct, bool)
    f = np.full(c.shape, np.nan) if frame is None else np.asarray(frame, np.float64)
    u = np.arange(len(c)) if utterance is None else np.asarray(utterance, np.int64)
    keep = np.isfinite(c)
    c, y, f, u = c[keep], y[keep], f[keep], u[keep]
    if len(c) == 0 or y.all() or not y.any():
        raise ValueError(f"calibration needs dev words that are right and words that are wrong; "
                         f"got {len(c)} words, {int((~y).sum())} wrong: add dev splits "
                         "(--calibrate-split dev-clean dev-other ...)")
    if method == "auto":
        scores = {m: cross_validated_brier(m, c, y, f, u) for m in AUTO_CANDIDATES}
        best = min(AUTO_CANDIDATES, key=lambda m: (scores[m], AUTO_CANDIDATES.index(m)))
        return replace(_fit(best, c, y, f), cv_brier=scores)
    return _fit(method, c, y, f)


def _fit(method: str, c: np.ndarray, y: np.ndarray, f: np.ndarray) -> Calibrator:
    """One method on finite confidences with both right and wrong words."""
    if method == "none":
        return Calibrator("none", {})
    if method == "temperature":
        return Calibrator("temperature", {"temperature": _fit_temperature(_logit(c), y)})
    if method == "platt":
        return Calibrator("platt", _fit_platt(word_features(c, f), y))
    return Calibrator("isotonic", _fit_isotonic(c, y))


def cross_validated_brier(method: str, c: np.ndarray, y: np.ndarray, f: np.ndarray,
                          utterance: np.ndarray, folds: int = CV_FOLDS,
                          repeats: int = CV_REPEATS, seed: int = CV_SEED) -> float:
    """Mean Brier score of ``method`` on held-out words: the utterances are dealt into ``folds``
    folds (``repeats`` times, seeded: every method sees the same folds), each fold predicted by
    a fit on the others. A fold whose training part has no wrong word keeps the raw values."""
    groups, index = np.unique(utterance, return_inverse=True)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(repeats):
        fold_of = np.empty(len(groups), np.int64)
        fold_of[rng.permutation(len(groups))] = np.arange(len(groups)) % folds
        fold = fold_of[index]
        pred = np.empty(len(c))
        for k in range(folds):
            test, train = fold == k, fold != k
            if not test.any():
                continue
            fitted = _fit(method, c[train], y[train], f[train]) \
                if y[train].any() and not y[train].all() else Calibrator("none", {})
            pred[test] = fitted.apply(c[test], f[test])
        losses.append(float(np.mean((pred - y) ** 2)))
    return float(np.mean(losses))


def _fit_platt(features: Mapping[str, np.ndarray], y: np.ndarray) -> dict[str, Any]:
    """Logistic regression on the logits of the PLATT_FEATURES that vary; a feature whose weight
    comes out negative is dropped and the rest refitted (classic Platt scaling on the
    confidence alone when none is left)."""
    names = [n for n in PLATT_FEATURES if np.ptp(_logit(features[n])) > 0]
    while names:
        weights, bias = _logistic(np.stack([_logit(features[n]) for n in names], 1), y)
        if (weights > 0).all():
            return {"features": names, "weights": weights.tolist(), "bias": bias}
        names.pop(int(np.argmin(weights)))
    weights, bias = _logistic(_logit(features["confidence"])[:, None], y)
    return {"features": ["confidence"], "weights": weights.tolist(), "bias": bias}


def _logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """(weights, bias) minimising the summed log loss + PLATT_L2 / 2 |weights|^2 (Newton)."""
    a = np.hstack([x, np.ones((len(x), 1))])
    beta = np.zeros(a.shape[1])
    penalty = np.full(a.shape[1], PLATT_L2)
    penalty[-1] = 0.0
    t = y.astype(np.float64)
    for _ in range(100):
        p = _sigmoid(a @ beta)
        grad = a.T @ (p - t) + penalty * beta
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return beta[:-1], float(beta[-1])


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
            s.calibrator.apply([0.5], [0.5])   # an unknown method fails here, not on test
        return CalibrationFile(data["split"], systems, data.get("created", ""))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: incomplete or malformed calibration file ({exc!r}); pass a file "
                         "written by --calibrate-split") from exc

