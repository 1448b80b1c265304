"""Per-utterance and per-word readers for the error-analysis, emission-statistics and
word-confidence notebooks (eval/analysis.py reads runs and systems).

    substitution_table({system: alignments})   # the most frequent substitutions, counted per system
    utterance_errors("results", split, model)  # per-utterance errors of every configuration
    identical_groups(errors)                   # configurations with the same per-utterance errors
    confidence_sets(run)                       # held-out words with confidence, per system
    choose_cache(list_caches(root), split)     # an explicit emission-cache choice, and why
    emission_stats(cache)                      # per-utterance blank ratio, peakiness, confidence
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.emission.cache import EmissionCache
from ctclab.emission.locate import CacheInfo, list_caches
from ctclab.eval.analysis import RunInfo, list_runs, rate_name
from ctclab.eval.metrics import WordAlignment, substitution_counts
from ctclab.eval.results import ResultsFolder
from ctclab.eval.word_records import word_table

__all__ = ["CacheInfo", "ConfidenceSet", "EmissionStat", "UtteranceErrors", "choose_cache",
           "confidence_sets", "decoded_models", "emission_stats", "identical_groups",
           "list_caches", "substitution_table", "utterance_errors"]


# ------------------------------------------------------------------------------------- errors
def substitution_table(alignments: Mapping[str, Iterable[WordAlignment]],
                       top: int | None = None
                       ) -> tuple[list[tuple[str, str]], list[str], np.ndarray]:
    """(pairs, systems, counts): the (ref, hyp) substitutions, most frequent over all systems
    first (ties by text), the first ``top`` of them (None: all), and counts[i, j] = how often
    system j made pairs[i] (int)."""
    per_system = {name: substitution_counts(a) for name, a in alignments.items()}
    total: Counter = sum(per_system.values(), Counter())
    pairs = sorted(total, key=lambda p: (-total[p], p))[:top]
    counts = np.array([[per_system[s][p] for s in per_system] for p in pairs], dtype=int)
    return pairs, list(per_system), counts.reshape(len(pairs), len(per_system))


@dataclass(frozen=True)
class UtteranceErrors:
    """One configuration's errors per utterance of a split: errors[id] = (word errors,
    reference words) (phonemes when unit is 'phonemes')."""

    run: str
    system: str
    label: str
    unit: str
    errors: dict[str, tuple[int, int]]

    def rates(self) -> dict[str, float]:
        """Utterance error rate (fraction) by id; NaN for an empty reference."""
        return {i: e / w if w else float("nan") for i, (e, w) in self.errors.items()}


def utterance_errors(root: str | Path, split: str, model: str,
                     revision: str | None = None) -> list[UtteranceErrors]:
    """Every configuration's per-utterance errors on ``split`` in the results folders under
    ``root`` whose ``split`` was decoded from ``model``'s emissions (another model's ids would
    join the wrong statistics); the newest run per configuration; [] when there is none."""
    try:
        runs = list_runs(root)
    except FileNotFoundError:
        return []
    newest: dict[str, UtteranceErrors] = {}
    for run in runs:
        made = run.settings.splits.get(split, {}) if run.settings else {}
        if made.get("model") != model or (revision and made.get("revision") != revision):
            continue
        folder = ResultsFolder(run.path)
        for s in run.summary.systems:
            if s.split != split:
                continue
            label = run.label(s.system)
            label = label if s.unit == "words" else f"{label} [{rate_name(s.unit)}]"
            errors = {r.id: (r.word_errors, r.ref_words)
                      for r in folder.read_utterances(split, s.system)}
            newest[label] = UtteranceErrors(str(run.path), s.system, label, s.unit, errors)
    return list(newest.values())


def identical_groups(items: Sequence[UtteranceErrors]) -> list[list[UtteranceErrors]]:
    """``items`` grouped where the per-utterance errors are identical (same ids, errors, words
    and unit): such configurations would draw exactly on top of each other. First-seen order."""
    groups: dict[tuple, list[UtteranceErrors]] = {}
    for item in items:
        groups.setdefault((item.unit, tuple(sorted(item.errors.items()))), []).append(item)
    return list(groups.values())


@dataclass(frozen=True)
class ConfidenceSet:
    """The held-out words of one system of a run, its splits pooled. confidence: calibrated
    where the run applied a calibration, else the decoder's own (words without one are left
    out); right: the WER alignment marks the word equal. splits: the pooled splits; in_sample:
    splits left out because the calibration was fitted on them. calibration: what the
    confidences went through (ConfidenceRow.calibration)."""

    system: str
    label: str
    calibration: str
    splits: tuple[str, ...]
    in_sample: tuple[str, ...]
    confidence: np.ndarray
    right: np.ndarray


def confidence_sets(run: RunInfo) -> list[ConfidenceSet]:
    """One ConfidenceSet per system of ``run`` with word-confidence rows and held-out words,
    in the summary's order."""
    folder = ResultsFolder(run.path)
    rows: dict[str, list[Any]] = {}
    for row in run.summary.confidence:
        rows.setdefault(row.system, []).append(row)
    out = []
    for system, found in rows.items():
        held = [r for r in found if not r.in_sample]
        conf, right = [np.zeros(0)], [np.zeros(0, bool)]
        for r in held:
            words = word_table(folder.read_utterances(r.split, system))
            c = np.where(np.isnan(words["calibrated"]), words["confidence"], words["calibrated"])
            keep = np.isfinite(c)
            conf.append(c[keep])
            right.append(words["correct"][keep])
        c, y = np.concatenate(conf), np.concatenate(right)
        if len(c):
            out.append(ConfidenceSet(system, run.label(system), found[0].calibration,
                                     tuple(r.split for r in held),
                                     tuple(r.split for r in found if r.in_sample), c, y))
    return out


# ---------------------------------------------------------------------------------- emissions
def decoded_models(root: str | Path) -> list[str]:
    """The models whose emissions the runs under ``root`` decoded, newest run first; [] when
    there is no results folder."""
    try:
        runs = list_runs(root)
    except FileNotFoundError:
        return []
    found = [str(s.get("model")) for r in reversed(runs) if r.settings
             for s in r.settings.splits.values() if s.get("model")]
    return list(dict.fromkeys(found))


def choose_cache(caches: Sequence[CacheInfo], split: str | None = None, model: str | None = None,
                 default_split: str = "test-clean", prefer: Sequence[str] = ()
                 ) -> tuple[CacheInfo, str]:
    """The cache of ``split`` and ``model`` among ``caches``, and a sentence saying how it was
    chosen and what else there is. Unset, the split is the only one there, else
    ``default_split``; the model is the only one with that split, else the first of ``prefer``
    that has it (e.g. the models some results decoded), else the first by name (the sentence
    says so). ValueError listing the caches when none fits."""
    listing = "; ".join(f"{c.model} / {c.split}" for c in caches) or "none"
    if not caches:
        raise ValueError("no complete emission cache there; make one with eval/emit.py or "
                         "eval/run.py --import-emissions DIR")
    how = []
    splits = sorted({c.split for c in caches if model is None or c.model == model})
    if split is None:
        split = splits[0] if len(splits) == 1 else default_split
        how.append(f"split {split} ({'the only one' if len(splits) == 1 else 'the default'}"
                   f"{'' if len(splits) == 1 else '; CTCLAB_SPLIT=' + '|'.join(splits)})")
    else:
        how.append(f"split {split} (as asked)")
    pool = [c for c in caches if c.split == split and (model is None or c.model == model)]
    if not pool:
        raise ValueError(f"no cache of split {split!r}" + (f" and model {model!r}" if model
                         else "") + f"; the caches there are: {listing}")
    models = sorted({c.model for c in pool})
    if model is None:
        model = next((m for m in prefer if m in models), models[0])
        why = "its emissions have results" if model in prefer else "the first by name"
        how.append(f"model {model}" + (f" ({why}; there are {', '.join(models)}: choose with "
                                       "CTCLAB_MODEL)" if len(models) > 1 else ""))
        pool = [c for c in pool if c.model == model]
    else:
        how.append(f"model {model} (as asked)")
    if len(pool) > 1:
        raise ValueError(f"several caches of {pool[0].model} / {split}: "
                         f"{[str(c.path) for c in pool]}; point CTCLAB_CACHE at one of them")
    return pool[0], ", ".join(how)


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
