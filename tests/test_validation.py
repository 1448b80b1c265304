"""validate_log_probs_many: chunks of many utterances checked at once, with reused buffers."""
from __future__ import annotations

import numpy as np
import pytest
from decoding_fixtures import log_softmax

from ctclab.core.validation import VALIDATION_CHUNK_ROWS, validate_log_probs_many


def _emissions(rng: np.random.Generator, sizes: list[int], v: int = 5) -> list[np.ndarray]:
    return [log_softmax(rng.normal(size=(n, v))) for n in sizes]


def test_chunks_of_every_size_pass_and_come_back_unchanged() -> None:
    # small chunks, a chunk of one utterance longer than a chunk, then small ones again: the
    # buffers grow and are reused for smaller chunks (stale rows must not be read)
    rng = np.random.default_rng(0)
    sizes = [300] * 120 + [VALIDATION_CHUNK_ROWS + 500] + [50] * 30 + [0, 7]
    emissions = _emissions(rng, sizes)
    emissions[3] = emissions[3].astype(np.float64)      # converted to float32
    out = validate_log_probs_many(emissions, 5)
    assert [len(a) for a in out] == sizes
    for a, e in zip(out, emissions, strict=True):
        assert a.dtype == np.float32 and a.flags.c_contiguous
        assert np.array_equal(a, e.astype(np.float32))


@pytest.mark.parametrize("bad", [5, 120, 150])
def test_a_bad_utterance_after_larger_chunks_is_named(bad: int) -> None:
    rng = np.random.default_rng(1)
    sizes = [300] * 120 + [VALIDATION_CHUNK_ROWS + 500] + [50] * 30
    emissions = _emissions(rng, sizes)
    emissions[bad] = emissions[bad] - 1.0             # rows do not normalise
    with pytest.raises(ValueError, match=rf"emission\[{bad}\].*log_softmax"):
        validate_log_probs_many(emissions, 5)
