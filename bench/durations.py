"""Utterance durations like LibriSpeech's, for synthetic benchmark sets (no audio needed).

test-clean: 2,620 utterances, 5.4 h (mean 7.4 s, 1.3 s to 35 s); test-other: 2,939, 5.3 h. A
log-normal with median 6 s and sigma 0.6, clipped to that range, has about that mean and tail.
"""
from __future__ import annotations

import numpy as np

DURATION_MEDIAN_S, DURATION_SIGMA, DURATION_RANGE_S = 6.0, 0.6, (1.3, 35.0)
TEST_CLEAN = (2620, 5.4)   # (utterances, hours)
TEST_OTHER = (2939, 5.3)


def draw_durations(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count,) seconds."""
    return np.clip(rng.lognormal(np.log(DURATION_MEDIAN_S), DURATION_SIGMA, count),
                   *DURATION_RANGE_S)


def corpus_durations(rng: np.random.Generator, count: int, hours: float) -> np.ndarray:
    """(count,) seconds drawn as above, scaled to ``hours`` in all (the shape kept)."""
    seconds = draw_durations(rng, count)
    return seconds * (hours * 3600.0 / seconds.sum())
