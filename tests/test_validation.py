"""Many utterances validated at once: the shapes up front (emission_arrays), the values over a
concatenation a chunk at a time (values_look_valid), and the beam naming a bad utterance
whichever of its batches holds it."""
from __future__ import annotations

import numpy as np
import pytest
from decoding_fixtures import log_softmax, quartznet_vocab

from ctclab.core.validation import VALIDATION_CHUNK_ROWS, emission_arrays, values_look_valid
from ctclab.decoders import create_decoder


def _emissions(rng: np.random.Generator, sizes: list[int], v: int = 5) -> list[np.ndarray]:
    return [log_softmax(rng.normal(size=(n, v))) for n in sizes]


def test_emission_arrays_come_back_float32_contiguous_and_unchanged() -> None:
    rng = np.random.default_rng(0)
    sizes = [300, 0, 7, 40]
    emissions = _emissions(rng, sizes)
    emissions[0] = emissions[0].astype(np.float64)          # converted to float32
    emissions[3] = np.asfortranarray(emissions[3])           # made C-contiguous
    out = emission_arrays(emissions, 5)
    for a, e in zip(out, emissions, strict=True):
        assert a.dtype == np.float32 and a.flags.c_contiguous
        assert np.array_equal(a, e.astype(np.float32))
    with pytest.raises(ValueError, match=r"emission\[2\] has V=4"):
        emission_arrays([emissions[0], emissions[1], emissions[2][:, :4]], 5)
    with pytest.raises(ValueError, match=r"emission\[1\] must be floating"):
        emission_arrays([emissions[0], np.zeros((3, 5), np.int64)], 5)


@pytest.mark.parametrize("bad_row", [0, VALIDATION_CHUNK_ROWS - 1, VALIDATION_CHUNK_ROWS,
                                     2 * VALIDATION_CHUNK_ROWS + 17])
def test_values_are_checked_in_every_chunk(bad_row: int) -> None:
    rng = np.random.default_rng(1)
    x = log_softmax(rng.normal(size=(2 * VALIDATION_CHUNK_ROWS + 100, 5)))
    assert values_look_valid(x)
    for breaks in (lambda r: r - 1.0, lambda r: np.exp(r), lambda r: np.r_[np.nan, r[1:]]):
        y = x.copy()
        y[bad_row] = breaks(y[bad_row])   # a row that does not normalise, probabilities, NaN
        assert not values_look_valid(y)
    assert values_look_valid(x[:0])


@pytest.mark.parametrize("bad", [0, 5, 11])
def test_the_beam_names_a_bad_utterance_in_any_batch(bad: int) -> None:
    vocab = quartznet_vocab()
    rng = np.random.default_rng(2)
    emissions = _emissions(rng, [20 + 3 * k for k in range(12)], vocab.size)
    emissions[bad] = emissions[bad] - 1.0             # rows do not normalise
    decoder = create_decoder("beam", vocab, batch_size=4)
    with pytest.raises(ValueError, match=rf"emission\[{bad}\].*log_softmax"):
        decoder.decode_many(emissions)
    emissions[bad] = emissions[bad] + 1.0
    assert len(decoder.decode_many(emissions)) == 12
