"""Readers that the analysis notebooks use: results folders, tuning trials, emission statistics.

    rows = system_rows("results")           # every (split, system) of every run under a folder
    trials = tuning_trials("results")       # alpha/beta grid points from params.json files
    stats = emission_stats(cache)           # per-utterance blank ratio, peakiness, confidence
    front = pareto_front([(rtf, wer), ...]) # indices of the speed/accuracy trade-off curve
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.emission.cache import EmissionCache
from ctclab.emission.locate import open_cache
from ctclab.eval.records import SystemSummary
from ctclab.eval.results import ResultsFolder
from ctclab.eval.tune import load_params

__all__ = ["EmissionStat", "SystemRow", "TrialRow", "emission_stats", "find_results_folders",
           "open_cache", "pareto_front", "system_rows", "tuning_trials"]


@dataclass(frozen=True)
class SystemRow:
    """One (split, system) of one run with the options the notebooks group by.

    beam_width / alpha / beta are None for decoders without them (greedy).
    """

    run: str
    summary: SystemSummary
    beam_width: int | None
    alpha: float | None
    beta: float | None
    lm: str | None


@dataclass(frozen=True)
class TrialRow:
    """One evaluated point of a tuning search (WER as a fraction on the tuning split)."""

    params_file: str
    split: str
    system: str
    alpha: float | None
    beta: float | None
    wer: float


@dataclass(frozen=True)
class EmissionStat:
    """Per-utterance emission statistics. All probabilities are of the frame's argmax label.

    blank_ratio: fraction of frames whose argmax is the blank.
    peakiness: mean argmax probability over non-blank-argmax frames (1.0 = one-hot spikes).
    confidence: mean argmax probability over all frames; min_confidence: its minimum.
    """

    id: str
    frames: int
    audio_seconds: float
    blank_ratio: float
    peakiness: float
    confidence: float
    min_confidence: float


def find_results_folders(root: str | Path) -> list[Path]:
    """``root`` itself when it holds summary.json, else every folder below it that does (sorted
    by path). FileNotFoundError, saying how to make one, when there is none."""
    root = Path(root)
    if (root / "summary.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob("summary.json")) if root.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no results folder (summary.json) at or under {root}; run "
                                f"eval/run.py --out {root} first (or point the notebook's "
                                "environment variable at an existing one)")
    return found


def system_rows(root: str | Path) -> list[SystemRow]:
    """Every SystemSummary of every results folder under ``root``, joined with its options."""
    rows = []
    for folder_path in find_results_folders(root):
        folder = ResultsFolder(folder_path)
        settings = folder.read_settings()
        options = {s.label: s.options for s in settings.systems} if settings else {}
        for s in folder.read_summary().systems:
            opts: dict[str, Any] = options.get(s.system, {})
            rows.append(SystemRow(str(folder_path), s, opts.get("beam_width"),
                                  opts.get("alpha") if opts.get("lm_path") else None,
                                  opts.get("beta") if opts.get("lm_path") else None,
                                  opts.get("lm_path")))
    return rows


def tuning_trials(root: str | Path) -> list[TrialRow]:
    """All trials of every params.json (written by ``--tune``) under ``root``."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(root.rglob("params.json"))
    out: list[TrialRow] = []
    for file in files:
        tuned = load_params(file)
        for system, trials in tuned.trials.items():
            out.extend(TrialRow(str(file), tuned.split, system, t.params.get("alpha"),
                                t.params.get("beta"), t.wer) for t in trials)
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (cost, error), both lower-is-better; sorted by
    cost. A point is dominated when another is no worse in both and better in one."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def emission_stats(cache: EmissionCache, limit: int | None = None) -> list[EmissionStat]:
    """Statistics of the first ``limit`` (default all) utterances of ``cache``."""
    blank = cache.vocabulary.blank
    out = []
    for n, (record, log_probs) in enumerate(cache):
        if limit is not None and n >= limit:
            break
        lp = np.asarray(log_probs, dtype=np.float32)
        if lp.shape[0] == 0:
            out.append(EmissionStat(record.id, 0, record.audio_seconds, float("nan"),
                                    float("nan"), float("nan"), float("nan")))
            continue
        best = lp.argmax(axis=1)
        conf = np.exp(lp.max(axis=1))
        is_blank = best == blank
        peak = float(conf[~is_blank].mean()) if (~is_blank).any() else float("nan")
        out.append(EmissionStat(record.id, int(lp.shape[0]), float(record.audio_seconds),
                                float(is_blank.mean()), peak, float(conf.mean()),
                                float(conf.min())))
    return out
