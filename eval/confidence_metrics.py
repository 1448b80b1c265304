"""Is a word confidence worth anything? Which words were right, ECE, AUC and reliability bins.

    correct = word_correctness(["the", "cat"], score.alignment, normalizer)  # [True, False]
    stats = confidence_stats(confidences, correct, utterance_of_word)        # ECE, AUC, intervals

A decoded word is *right* when the one word alignment of the WER (eval.metrics.align_words) marks
it EQUAL; a substituted or inserted word is wrong. Deletions have no decoded word, so no
confidence: a confidence measure flags wrong words, it cannot flag missing ones.

ECE (expected calibration error): words binned by confidence into ``bins`` equal-width bins over
[0, 1] (the last bin includes 1); ECE = sum over bins of (words in bin / words) x |mean confidence -
accuracy|. AUC: the probability that a random right word has a higher confidence than a random
wrong one (Mann-Whitney, ties count one half): 0.5 is chance, 1 perfect. Intervals: percentile
bootstrap resampling *utterances* (words of one utterance are not independent), as eval.stats does.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctclab.core.normalize import TextNormalizer
from ctclab.eval.metrics import EQUAL, WordAlignment
from ctclab.eval.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED

# Equal-width confidence bins of the ECE and the reliability diagram: 10 is the usual choice
# (Guo et al. 2017 use 15); with a few hundred words per split more bins would be mostly empty.
DEFAULT_BINS = 10
# Resamples per block in the bootstrap (bounds memory at BLOCK x words floats).
_BLOCK = 64


def word_correctness(words: Sequence[str], alignment: WordAlignment,
                     normalizer: TextNormalizer) -> list[bool | None]:
    """Per decoded word: True (aligned EQUAL), False (substituted / inserted), or None when the
    word normalises to nothing (it is then not scored at all).

    words: the decoder's words in order; alignment: of the normalised reference and of these words
    normalised (what eval.metrics.score_utterance made). A word that the normaliser splits is right
    only when all its pieces are. ValueError when the words do not normalise to alignment.hyp.
    """
    pieces = [normalizer(w).split() for w in words]
    flat = [p for ps in pieces for p in ps]
    if tuple(flat) != tuple(alignment.hyp):
        raise ValueError(f"the words {list(words)[:10]} do not normalise to the scored hypothesis "
                         f"{list(alignment.hyp)[:10]}; pass the words of the scored text")
    equal = np.zeros(len(flat), bool)
    for span in alignment.spans:
        if span.op == EQUAL:
            equal[span.hyp_start:span.hyp_end] = True
    out: list[bool | None] = []
    at = 0
    for ps in pieces:
        out.append(bool(equal[at:at + len(ps)].all()) if ps else None)
        at += len(ps)
    return out


@dataclass(frozen=True)
class ReliabilityBin:
    """Words whose confidence fell in [low, high): their count, mean confidence and accuracy."""

    low: float
    high: float
    words: int
    confidence: float
    accuracy: float


@dataclass(frozen=True)
class ConfidenceStats:
    """How well confidences tell right words from wrong ones (fractions; NaN when undefined:
    AUC needs both right and wrong words). Intervals are 95% bootstrap over utterances."""

    words: int
    wrong: int
    mean_confidence: float
    accuracy: float
    ece: float
    ece_low: float
    ece_high: float
    auc: float
    auc_low: float
    auc_high: float
    bins: int


def _arrays(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, np.float64)
    y = np.asarray(correct, bool)
    if c.shape != y.shape or c.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-D and of one length, got {c.shape} "
                         f"and {y.shape}")
    if len(c) and (not np.isfinite(c).all() or c.min() < 0 or c.max() > 1):
        raise ValueError("confidences must be probabilities in [0, 1] (no NaN)")
    return c, y


def bin_index(confidence: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """(n,) bin of each confidence: equal-width bins over [0, 1], 1.0 in the last."""
    return np.minimum((np.asarray(confidence) * bins).astype(np.int64), bins - 1)


def reliability(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                bins: int = DEFAULT_BINS) -> list[ReliabilityBin]:
    """The reliability diagram's bins (empty bins included, with NaN confidence and accuracy)."""
    c, y = _arrays(confidence, correct)
    idx = bin_index(c, bins)
    out = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        out.append(ReliabilityBin(b / bins, (b + 1) / bins, n,
                                  float(c[m].mean()) if n else math.nan,
                                  float(y[m].mean()) if n else math.nan))
    return out


def _weighted_ece(c: np.ndarray, y: np.ndarray, w: np.ndarray, bins: int) -> np.ndarray:
    """(R,) ECE under word weights w (R, n)."""
    onehot = np.zeros((len(c), bins))
    onehot[np.arange(len(c)), bin_index(c, bins)] = 1.0
    gap = onehot * (c - y)[:, None]                      # (n, bins)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(w @ gap).sum(axis=1) / total


def _weighted_auc(c: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(R,) Mann-Whitney AUC of right (y) over wrong words under word weights w (R, n)."""
    order = np.argsort(c, kind="stable")
    cs, ys, ws = c[order], y[order], w[:, order]
    neg = ws * ~ys
    cum = np.cumsum(neg, axis=1)
    # tie groups: first and last index of each run of equal confidences
    new = np.r_[True, cs[1:] != cs[:-1]]
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(cs)] - 1
    zero = np.zeros((len(w), 1))
    below = np.hstack([zero, cum])[:, starts[group]]      # wrong weight strictly below
    tied = cum[:, ends[group]] - below                    # wrong weight at the same confidence
    pos = ws * ys
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * tied)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def expected_calibration_error(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                               bins: int = DEFAULT_BINS) -> float:
    """ECE with ``bins`` equal-width bins (NaN for no words)."""
    c, y = _arrays(confidence, correct)
    return float(_weighted_ece(c, y, np.ones((1, len(c))), bins)[0]) if len(c) else math.nan


def auc(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray) -> float:
    """Rank AUC of confidence for right vs wrong words (NaN without both kinds)."""
    c, y = _arrays(confidence, correct)
    if y.all() or not y.any():
        return math.nan
    return float(_weighted_auc(c, y, np.ones((1, len(c))))[0])


def confidence_stats(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                     utterance: Sequence[int] | np.ndarray, bins: int = DEFAULT_BINS,
                     resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                     seed: int = DEFAULT_SEED) -> ConfidenceStats:
    """ECE and AUC with bootstrap intervals. utterance: (n,) utterance index of each word (the
    resampled unit). resamples = 0 gives no intervals (NaN)."""
    c, y = _arrays(confidence, correct)
    u = np.unique(np.asarray(utterance, np.int64), return_inverse=True)[1]
    if len(u) != len(c):
        raise ValueError(f"utterance gives {len(u)} words, confidence {len(c)}")
    n = len(c)
    if n == 0:
        nan = math.nan
        return ConfidenceStats(0, 0, nan, nan, nan, nan, nan, nan, nan, nan, bins)
    ece, auc_value = expected_calibration_error(c, y, bins), auc(c, y)
    ece_ci: tuple[float, ...] = (math.nan, math.nan)
    auc_ci: tuple[float, ...] = (math.nan, math.nan)
    if resamples > 0:
        rng = np.random.default_rng(seed)
        n_utt = int(u.max()) + 1
        eces, aucs = [], []
        for start in range(0, resamples, _BLOCK):
            size = min(_BLOCK, resamples - start)
            counts = np.zeros((size, n_utt))
            draws = rng.integers(0, n_utt, size=(size, n_utt))
            np.add.at(counts, (np.repeat(np.arange(size), n_utt), draws.ravel()), 1.0)
            w = counts[:, u]                               # (size, words)
            eces.append(_weighted_ece(c, y, w, bins))
            aucs.append(_weighted_auc(c, y, w))
        tail = (1 - level) / 2 * 100
        e, a = np.concatenate(eces), np.concatenate(aucs)
        e, a = e[np.isfinite(e)], a[np.isfinite(a)]
        if len(e):
            ece_ci = tuple(np.percentile(e, [tail, 100 - tail]).tolist())
        if len(a) and math.isfinite(auc_value):
            auc_ci = tuple(np.percentile(a, [tail, 100 - tail]).tolist())
    return ConfidenceStats(n, int((~y).sum()), float(c.mean()), float(y.mean()), ece, ece_ci[0],
                           ece_ci[1], auc_value, auc_ci[0], auc_ci[1], bins)
