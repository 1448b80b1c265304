"""Bootstrap interval and paired test on cases with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ctclab.eval.stats import bootstrap_wer, paired_bootstrap


def test_constant_rate_gives_a_point_interval():
    # Every utterance has exactly 1 error in 10 words: every resample has WER 0.1.
    ci = bootstrap_wer([1] * 50, [10] * 50, resamples=300)
    assert ci.estimate == pytest.approx(0.1)
    assert ci.low == pytest.approx(0.1) and ci.high == pytest.approx(0.1)


def test_interval_matches_binomial_standard_error():
    # One word per utterance, 20 % wrong: the bootstrap distribution of the mean has standard
    # error sqrt(p (1 - p) / n); a 95 % interval is about +-1.96 of it.
    n, p = 2000, 0.2
    errors = np.zeros(n, dtype=int)
    errors[: int(n * p)] = 1
    ci = bootstrap_wer(errors, np.ones(n, dtype=int), resamples=2000, seed=1)
    half_width = 1.96 * math.sqrt(p * (1 - p) / n)
    assert ci.low < p < ci.high
    assert (ci.high - ci.low) / 2 == pytest.approx(half_width, rel=0.12)


def test_same_seed_same_interval_and_validation():
    a = bootstrap_wer([0, 2, 1, 3], [5, 6, 7, 8], seed=3)
    b = bootstrap_wer([0, 2, 1, 3], [5, 6, 7, 8], seed=3)
    assert a == b
    with pytest.raises(ValueError, match="utterances"):
        bootstrap_wer([1, 2], [3])
    with pytest.raises(ValueError, match="reference words"):
        bootstrap_wer([1], [0])


def test_paired_identical_systems_p_is_one():
    t = paired_bootstrap([1, 0, 2], [1, 0, 2], [5, 5, 5])
    assert t.delta == 0 and t.p_value == 1.0 and not t.significant


def test_paired_consistent_improvement_is_significant():
    rng = np.random.default_rng(0)
    words = rng.integers(5, 30, size=200)
    errors_b = rng.integers(1, 4, size=200)
    errors_a = errors_b - 1            # A makes one error fewer on every utterance
    t = paired_bootstrap(errors_a, errors_b, words, resamples=1000)
    assert t.delta == pytest.approx((errors_b.sum() - errors_a.sum()) / words.sum())
    assert t.delta_low > 0
    assert t.p_value == pytest.approx(2 / 1001)   # never a crossing: the smallest reportable p
    assert t.significant


def test_paired_noise_is_not_significant():
    # A and B trade the same errors on different utterances: no real difference.
    errors_a = np.array([1, 0] * 50)
    errors_b = np.array([0, 1] * 50)
    t = paired_bootstrap(errors_a, errors_b, np.full(100, 10), resamples=1000)
    assert t.delta == 0
    assert t.p_value > 0.5 and not t.significant


def test_paired_length_mismatch_names_fix():
    with pytest.raises(ValueError, match="same split"):
        paired_bootstrap([1, 2], [1], [3, 3])
