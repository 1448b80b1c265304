"""The decoder contract, checked for every registered decoder (greedy, beam, pyctcdecode, ...).

Any decoder registered with ``@register`` is picked up here automatically and must pass all of it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import decoder_params
from decoding_fixtures import log_softmax, peaky
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctclab.decoders import Hypothesis, Vocabulary
from ctclab.decoders import create_decoder as create_registered

# Every registered decoder (one whose optional package is missing here skips with the reason),
# and the beam once more on its torch backend (the GPU's code path).
DECODERS = [*decoder_params(), "beam[torch]"]


def create_decoder(name: str, vocab: Vocabulary, **options) -> object:
    """create_decoder, with "beam[torch]" = the beam on the torch backend (CPU)."""
    if name == "beam[torch]":
        return create_registered("beam", vocab, device="cpu", array_backend="torch", **options)
    return create_registered(name, vocab, **options)
SHIFT = 0.02
LETTERS = "ABCDEFGHIJ"


def make_vocab(size: int, blank_last: bool = False) -> Vocabulary:
    """V = size labels: blank, '|' delimiter (when V > 2) and letters; blank first or last."""
    labels = ["|", *LETTERS[: size - 2]] if size > 2 else ["A"]
    labels = [*labels, "<pad>"] if blank_last else ["<pad>", *labels]
    return Vocabulary.from_labels(labels, blank="<pad>", delimiter="|" if size > 2 else None)


def check_invariants(hyp: Hypothesis, vocab: Vocabulary, num_frames: int) -> None:
    """What every decoder's result must satisfy for a (num_frames, V) input."""
    assert isinstance(hyp, Hypothesis)
    assert hyp.text == vocab.decode_tokens(hyp.tokens)
    assert hyp.text == " ".join(hyp.text.split())            # single spaces, no edge spaces
    assert " ".join(w.word for w in hyp.words) == hyp.text
    assert all(0 <= t < vocab.size and t != vocab.blank and t not in vocab.unused
               for t in hyp.tokens)
    assert math.isfinite(hyp.score)
    previous_end = 0
    for word in hyp.words:
        assert previous_end <= word.start_frame < word.end_frame <= num_frames
        assert word.start_s == pytest.approx(word.start_frame * SHIFT, abs=1e-4)
        assert word.end_s == pytest.approx(word.end_frame * SHIFT, abs=1e-4)
        assert 0 <= word.start_s <= word.end_s <= num_frames * SHIFT + 1e-6
        previous_end = word.end_frame
    for alt in hyp.nbest:
        assert alt.text == vocab.decode_tokens(alt.tokens)


@pytest.mark.parametrize("name", DECODERS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_frames=st.integers(0, 40), size=st.integers(2, 8), blank_last=st.booleans(),
       sharpness=st.sampled_from([0.0, 2.0, 8.0]), seed=st.integers(0, 2**31 - 1))
def test_random_inputs_keep_the_invariants(name, num_frames, size, blank_last, sharpness, seed):
    vocab = make_vocab(size, blank_last)
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(num_frames, size))
    logits[np.arange(num_frames), rng.integers(0, size, num_frames)] += sharpness
    x = log_softmax(logits) if num_frames else np.zeros((0, size), np.float32)
    hyp = create_decoder(name, vocab, frame_shift_s=SHIFT).decode(x)
    check_invariants(hyp, vocab, num_frames)


@pytest.mark.parametrize("name", DECODERS)
def test_empty_input_gives_the_empty_hypothesis(name, wav2vec2_vocab):
    empty = np.zeros((0, wav2vec2_vocab.size), np.float32)
    hyp = create_decoder(name, wav2vec2_vocab).decode(empty)
    assert (hyp.text, hyp.tokens, hyp.words) == ("", (), ())


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("peak", [0.6, 0.99])
def test_all_blank_gives_empty_text(name, peak, wav2vec2_vocab):
    v = wav2vec2_vocab
    hyp = create_decoder(name, v).decode(peaky([v.blank] * 30, v.size, peak))
    assert hyp.text == "" and hyp.words == ()
    check_invariants(hyp, v, 30)


@pytest.mark.parametrize("name", DECODERS)
def test_repeats_collapse_unless_a_blank_separates_them(name, wav2vec2_vocab):
    v = wav2vec2_vocab
    a, bar, dec = v.label_to_id["A"], v.delimiter, create_decoder(name, v)
    assert dec.decode(peaky([0, a, a, a, 0], v.size)).text == "A"
    assert dec.decode(peaky([0, a, a, 0, a, 0], v.size)).text == "AA"
    assert dec.decode(peaky([a, bar, bar, a, 0, bar, a], v.size)).text == "A A A"
    hyp = dec.decode(peaky([a, a, 0, a], v.size))
    assert hyp.tokens == (a, a)
    check_invariants(hyp, v, 4)


@pytest.mark.parametrize("name", DECODERS)
def test_two_label_vocabulary(name):
    v = make_vocab(2)
    hyp = create_decoder(name, v).decode(peaky([0, 1, 1, 0, 1, 0, 0], 2, 0.95))
    assert hyp.text == "AA" and hyp.tokens == (1, 1)
    check_invariants(hyp, v, 7)


@pytest.mark.parametrize("name", DECODERS)
def test_long_input(name, wav2vec2_vocab):
    v = wav2vec2_vocab
    rng = np.random.default_rng(7)
    path = np.where(rng.random(3000) < 0.6, v.blank, rng.choice(v.emitting_ids, 3000))
    x = peaky(path, v.size, 0.999)
    hyp = create_decoder(name, v).decode(x)
    check_invariants(hyp, v, 3000)
    # one label holds 99.9% of every frame: the best labelling is the best path's
    assert hyp.text == create_decoder("greedy", v).decode(x).text
    assert len(hyp.words) > 30   # ~1200 labels, 1 in 28 a delimiter


@pytest.mark.parametrize("name", DECODERS)
def test_minus_inf_entries_are_zero_probabilities(name, wav2vec2_vocab):
    v = wav2vec2_vocab
    rng = np.random.default_rng(4)
    x = log_softmax(rng.normal(size=(60, v.size)) * 3)
    x[rng.random(x.shape) < 0.3] = -np.inf          # impossible labels, blank included
    x[np.arange(60), rng.integers(0, v.size, 60)] = 0.0
    x = log_softmax(x)                               # rows still normalised
    hyp = create_decoder(name, v).decode(x)
    check_invariants(hyp, v, 60)
    assert hyp.text == create_decoder(name, v).decode(np.maximum(x, -1e3)).text


BAD_INPUTS = {
    "rank 1": (lambda v: np.zeros(v.size, np.float32), "shape"),
    "rank 3": (lambda v: np.zeros((1, 4, v.size), np.float32), "shape"),
    "V mismatch": (lambda v: log_softmax(np.zeros((5, v.size + 1))), "vocabulary"),
    "NaN": (lambda v: np.where(np.eye(5, v.size) > 0, np.nan, log_softmax(np.zeros((5, v.size)))),
            "NaN"),
    "+inf": (lambda v: np.where(np.eye(5, v.size) > 0, np.inf, -3.0).astype(np.float32), "inf"),
    "probabilities": (lambda v: np.full((5, v.size), 1.0 / v.size, np.float32), "probabilities"),
    "logits": (lambda v: np.random.default_rng(0).normal(size=(5, v.size)).astype(np.float32),
               "logits"),
    "unnormalised": (lambda v: np.full((5, v.size), -1.0, np.float32), "log_softmax"),
    "integers": (lambda v: np.zeros((5, v.size), np.int64), "floating"),
}


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_value_error(name, case, wav2vec2_vocab):
    make, words = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=words):
        create_decoder(name, wav2vec2_vocab).decode(make(wav2vec2_vocab))


@pytest.mark.parametrize("name", DECODERS)
def test_decode_many_equals_decode_one_by_one(name, wav2vec2_vocab):
    v = wav2vec2_vocab
    rng = np.random.default_rng(3)
    emissions = [log_softmax(rng.normal(size=(n, v.size)) * 3) for n in (0, 1, 9, 25, 4, 30)]
    dec = create_decoder(name, v)
    single = [dec.decode(x) for x in emissions]
    for jobs in (1, 2):
        many = dec.decode_many(emissions, jobs=jobs)
        assert [h.text for h in many] == [h.text for h in single]
        assert np.allclose([h.score for h in many], [h.score for h in single], atol=1e-3)
