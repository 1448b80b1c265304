"""Many utterances validated at once: the shapes up front (emission_arrays), the values over a
batch's concatenation from the beam's frame statistics a block at a time (masses_look_valid),
and the beam naming a bad utterance whichever of its batches holds it."""
from __future__ import annotations

import numpy as np
import pytest
from decoding_fixtures import log_softmax, quartznet_vocab

from ctclab.core.validation import emission_arrays, masses_look_valid
from ctclab.decoders import create_decoder
from ctclab.decoders.options import BeamOptions
from ctclab.decoders.search_schedule import _BLOCK_FRAMES, batch_frame_stats


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


def values_look_valid(x: np.ndarray) -> bool:
    """The beam's check of a batch: its frame statistics' masses and maximum."""
    frames = batch_frame_stats(x, quartznet_vocab(), BeamOptions())
    return masses_look_valid(frames.top, frames.mass)


@pytest.mark.parametrize("bad_row", [0, _BLOCK_FRAMES - 1, _BLOCK_FRAMES,
                                     2 * _BLOCK_FRAMES + 17])
def test_values_are_checked_in_every_block(bad_row: int) -> None:
    """A row that does not normalise, probabilities, a logit (above 1e-3 but within the mass
    tolerance), a huge logit (its exponential overflows), NaN, +inf: each fails wherever it
    sits among the blocks; -inf values (p = 0) and no rows at all pass."""
    rng = np.random.default_rng(1)
    v = quartznet_vocab().size
    x = log_softmax(rng.normal(size=(2 * _BLOCK_FRAMES + 100, v)))
    x[5] = log_softmax(np.r_[-np.inf, x[5, 1:]][None])[0]   # p = 0: valid
    assert values_look_valid(x)
    breaks = [lambda r: r - 1.0, np.exp, lambda r: np.r_[0.01, np.full(v - 1, -np.inf)],
              lambda r: np.r_[100.0, r[1:]], lambda r: np.r_[np.nan, r[1:]],
              lambda r: np.r_[np.inf, r[1:]]]
    for brk in breaks:
        y = x.copy()
        y[bad_row] = brk(y[bad_row])
        with np.errstate(all="raise"):   # (no warning escapes either)
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
