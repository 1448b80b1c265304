"""Bootstrap statistics on corpus WER, resampling utterances (the unit that is independent).

    from ctclab.eval.stats import bootstrap_wer, paired_bootstrap
    ci = bootstrap_wer(errors, words)                    # per-utterance word errors and ref words
    t = paired_bootstrap(errors_a, errors_b, words)      # t.p_value: is the WER difference real?

Each resample draws N utterances with replacement and recomputes the corpus WER as
sum(errors) / sum(words) of the draw (Bisani & Ney 2004; Koehn 2004 for the paired test).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# 1000 resamples put the Monte-Carlo error of a 95% interval's ends well below the interval's
# own width for corpora of a few hundred utterances, and cost milliseconds.
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
# Fixed seed: re-running an evaluation must print the same interval.
DEFAULT_SEED = 0
# Resamples drawn per block, bounding memory at ~BLOCK * N int64 indices.
_BLOCK = 256


@dataclass(frozen=True)
class ConfidenceInterval:
    """Percentile bootstrap interval of a corpus WER (fractions, not percent)."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int


@dataclass(frozen=True)
class PairedTest:
    """Paired bootstrap comparison of systems A and B on the same utterances.

    delta = WER(B) - WER(A) (positive: A is better), with its percentile interval.
    p_value: two-sided; twice the share of resamples whose difference lies at or beyond zero on
    the minority side, add-one smoothed: 2 (k + 1) / (resamples + 1), at most 1. It is never 0
    (smallest 2 / (resamples + 1)), and exactly 1 when both systems make the same number of
    errors on every utterance.
    """

    wer_a: float
    wer_b: float
    delta: float
    delta_low: float
    delta_high: float
    p_value: float
    level: float
    resamples: int

    @property
    def significant(self) -> bool:
        """True when the two-sided p-value is below 1 - level (e.g. 0.05)."""
        return self.p_value < 1.0 - self.level


def _as_counts(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of per-utterance counts, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all()
                     or (arr < 0).any()):
        raise ValueError(f"{name} must hold finite non-negative counts")
    return arr.astype(np.float64)


def _check(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def _resampled_sums(columns: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """For each column (N,), its sums over ``resamples`` draws of N indices with replacement."""
    n = len(columns[0])
    rng = np.random.default_rng(seed)
    out = [np.empty(resamples) for _ in columns]
    for start in range(0, resamples, _BLOCK):
        stop = min(start + _BLOCK, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        for col, dest in zip(columns, out, strict=True):
            dest[start:stop] = col[idx].sum(axis=1)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def bootstrap_wer(errors: Sequence[int], words: Sequence[int],
                  resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                  seed: int = DEFAULT_SEED) -> ConfidenceInterval:
    """Percentile bootstrap interval of corpus WER = sum(errors) / sum(words).

    errors: (N,) word errors (S + D + I) per utterance. words: (N,) reference words per utterance.
    """
    _check(level, resamples)
    e, w = _as_counts(errors, "errors"), _as_counts(words, "words")
    if len(e) != len(w):
        raise ValueError(f"errors has {len(e)} utterances but words has {len(w)}")
    if len(e) == 0 or w.sum() == 0:
        raise ValueError("bootstrap needs at least one utterance with reference words")
    estimate = float(e.sum() / w.sum())
    se, sw = _resampled_sums([e, w], resamples, seed)
    rates = _ratio(se, sw)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(rates, [tail, 100 - tail])
    return ConfidenceInterval(estimate, float(low), float(high), level, resamples)


def paired_bootstrap(errors_a: Sequence[int], errors_b: Sequence[int], words: Sequence[int],
                     resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                     seed: int = DEFAULT_SEED) -> PairedTest:
    """Paired bootstrap test of WER(A) vs WER(B) over the same N utterances.

    The same utterance draws are used for both systems, so per-utterance difficulty cancels out.
    errors_a, errors_b: (N,) word errors of each system; words: (N,) reference words.
    """
    _check(level, resamples)
    a, b = _as_counts(errors_a, "errors_a"), _as_counts(errors_b, "errors_b")
    w = _as_counts(words, "words")
    if not len(a) == len(b) == len(w):
        raise ValueError(f"paired test needs the same utterances: got {len(a)}, {len(b)} and "
                         f"{len(w)} counts (decode both systems on the same split)")
    if len(w) == 0 or w.sum() == 0:
        raise ValueError("paired test needs at least one utterance with reference words")
    wer_a, wer_b = float(a.sum() / w.sum()), float(b.sum() / w.sum())
    sa, sb, sw = _resampled_sums([a, b, w], resamples, seed)
    deltas = _ratio(sb - sa, sw)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(deltas, [tail, 100 - tail])
    if np.all(a == b):
        p = 1.0
    else:
        # Two-sided: how often the resampled difference falls on the other side of zero.
        at_most = int((deltas <= 0).sum())
        at_least = int((deltas >= 0).sum())
        p = min(1.0, 2.0 * (min(at_most, at_least) + 1) / (resamples + 1))
    return PairedTest(wer_a, wer_b, wer_b - wer_a, float(low), float(high), p, level, resamples)
