"""Word confidence of every decoder (decoders/confidence.py): frame posterior, n-best posterior."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import decoder_params, needs_pyctcdecode
from decoding_fixtures import frames, log_softmax, quartznet_vocab
from test_lexicon import phoneme_vocab
from test_token_sets import LEXICON, piece_vocab

from ctclab.core.hypothesis import Hypothesis, WordTimestamp
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.base import create_decoder
from ctclab.decoders.confidence import (
    token_peak_probs,
    with_confidence,
    with_confidence_many,
    word_frame_confidence,
    word_posteriors,
    word_posteriors_many,
)


def test_token_peak_probs_takes_the_max_over_each_range():
    probs = np.full((6, 3), 0.1)
    probs[:, 0] = [0.2, 0.9, 0.3, 0.1, 0.6, 0.5]
    lp = np.log(probs)
    peaks = token_peak_probs(lp, np.array([0, 0, 1]), np.array([0, 2, 3]), np.array([2, 6, 3]))
    # [0, 2) -> 0.9; [2, 6) -> 0.6; the empty range [3, 3) reads frame 3
    assert peaks == pytest.approx([0.9, 0.6, 0.1])


def test_word_frame_confidence_is_the_least_certain_label():
    probs = np.full((4, 3), 0.05)
    probs[:, 1] = [0.9, 0.2, 0.1, 0.1]
    probs[:, 2] = [0.05, 0.7, 0.8, 0.1]
    conf = word_frame_confidence(np.log(probs), [[1, 2], [2], []], [(0, 3), (3, 4), (0, 4)])
    assert conf[:2] == pytest.approx([0.8, 0.1])
    assert math.isnan(conf[2])           # no labels: unknown


def _entry(words, score):
    ws = tuple(WordTimestamp(w, s, e, s * 0.02, e * 0.02, frame_confidence=f)
               for w, s, e, f in words)
    return Hypothesis(" ".join(w.word for w in ws), score, words=ws)


def test_nbest_posterior_sums_entries_with_the_same_word_at_overlapping_times():
    a = _entry([("the", 0, 5, 1.0), ("cat", 5, 10, 0.9)], math.log(0.6))
    b = _entry([("the", 0, 5, 1.0), ("cap", 5, 10, 0.5)], math.log(0.3))
    # "the" again, but far later: not the same word occurrence
    c = _entry([("a", 0, 5, 1.0), ("the", 20, 25, 1.0)], math.log(0.1))
    posts = word_posteriors([a, b, c])
    assert posts[0] == pytest.approx([0.9, 0.6])
    assert posts[1] == pytest.approx([0.9, 0.3])
    assert posts[2] == pytest.approx([0.1, 0.1])
    hyp = with_confidence(Hypothesis(a.text, a.score, words=a.words, nbest=(a, b, c)))
    assert [w.confidence for w in hyp.words] == pytest.approx([0.9, 0.6 * 0.9])
    assert [w.confidence for w in hyp.nbest[1].words] == pytest.approx([0.9, 0.3 * 0.5])


def _posteriors_by_hand(entries):
    """Per word of every entry: the summed posterior of the entries (each once) holding the
    same word over overlapping frames."""
    scores = np.array([e.score for e in entries])
    post = np.exp(scores - scores.max())
    post /= post.sum()
    return [[min(1.0, sum(post[k] for k, f in enumerate(entries) if any(
        v.word == w.word and v.start_frame < w.end_frame and w.start_frame < v.end_frame
        for v in f.words))) for w in e.words] for e in entries]


def test_many_lists_in_one_pass_match_the_definition():
    rng = np.random.default_rng(3)
    lists = []
    for _ in range(30):   # random lists over a small vocabulary: many repeats and overlaps
        entries = []
        for _ in range(int(rng.integers(1, 7))):
            at, words = 0, []
            for _ in range(int(rng.integers(0, 6))):
                start = at + int(rng.integers(0, 3))
                at = start + int(rng.integers(1, 5))
                words.append((str(rng.choice(["a", "b", "ab", "the"])), start, at, 1.0))
            entries.append(_entry(words, float(rng.normal(0, 2))))
        lists.append(entries)
    lists.append([_entry([], 0.0), _entry([], -1.0)])        # empty entries
    for entries, got in zip(lists, word_posteriors_many(lists), strict=True):
        for mine, theirs in zip(got, _posteriors_by_hand(entries), strict=True):
            assert mine == pytest.approx(theirs, abs=1e-12)
    hyps = [Hypothesis(es[0].text, es[0].score, words=es[0].words, nbest=tuple(es))
            for es in lists]
    for one, many in zip(map(with_confidence, hyps), with_confidence_many(hyps), strict=True):
        assert [w.confidence for e in one.nbest for w in e.words] == [
            w.confidence for e in many.nbest for w in e.words]


def test_bad_inputs_are_clear_errors():
    a = _entry([("the", 0, 5, 1.0)], 0.0)
    with pytest.raises(ValueError, match="nbest >= 2"):
        with_confidence(a)                       # not an n-best hypothesis
    untimed = Hypothesis("the", 0.0, words=(WordTimestamp("the", -1, -1, -0.02, -0.02),))
    with pytest.raises(ValueError, match="no timestamps"):
        with_confidence(Hypothesis("the", 0.0, words=untimed.words, nbest=(untimed, a)))


# "ab ba" with the second word's "a" in doubt (0.55 against "b" 0.4)
DOUBT = ["_", "a", "_", "b", "_", " ", "_", "b", "_", {"a": 0.55, "b": 0.4}, "_"]


@pytest.mark.parametrize("name", decoder_params(["greedy", "beam", "pyctcdecode"]))
def test_every_decoder_gives_probabilities_and_a_doubtful_word_scores_lower(name):
    vocab = quartznet_vocab()
    lp = frames(vocab, DOUBT)
    options = {} if name == "greedy" else {"nbest": 4, "beam_width": 8}
    hyp = create_decoder(name, vocab, **options).decode(lp)
    assert [w.word for w in hyp.words] == ["ab", "ba"]
    conf = [w.confidence for w in hyp.words]
    assert all(0.0 <= c <= 1.0 for c in conf)
    assert conf[0] > 0.9 and conf[1] < 0.6
    assert conf[1] <= 0.55 + 1e-6           # never surer than the doubtful label
    if name != "greedy":   # the alternative "bb" takes posterior mass from "ba"
        assert len(hyp.nbest) >= 2 and conf[1] < hyp.words[1].frame_confidence
        assert all(0 <= w.confidence <= 1 for e in hyp.nbest for w in e.words)


@needs_pyctcdecode
def test_beam_and_pyctcdecode_agree_on_confidence():
    vocab = quartznet_vocab()
    lp = frames(vocab, ["_", "a", {"b": 0.6, "c": 0.3}, "c", "_", " ", "c", "a", "_",
                        {"b": 0.5, "a": 0.3}])
    hyps = [create_decoder(n, vocab, nbest=5, beam_width=16).decode(lp)
            for n in ("beam", "pyctcdecode")]
    assert hyps[0].text == hyps[1].text
    for wa, wb in zip(hyps[0].words, hyps[1].words, strict=True):
        assert wa.frame_confidence == pytest.approx(wb.frame_confidence, abs=1e-6)
        assert wa.confidence == pytest.approx(wb.confidence, abs=0.05)


def test_nbest_of_one_leaves_the_posterior_unset():
    vocab = quartznet_vocab()
    lp = frames(vocab, ["_", "a", "_", "b"])
    hyp = create_decoder("beam", vocab).decode(lp)
    assert math.isnan(hyp.words[0].confidence) and hyp.words[0].frame_confidence > 0.9


def _words(hyps: list[Hypothesis]) -> list[WordTimestamp]:
    """Every word of ``hyps`` and of their n-best entries."""
    return [w for h in hyps for e in (h, *h.nbest) for w in e.words]


def _decoded_both_ways(name: str, vocab: Vocabulary, batch: list[np.ndarray], **options
                       ) -> tuple[list[Hypothesis], list[Hypothesis]]:
    return tuple(create_decoder(name, vocab, word_confidence=on, **options).decode_many(batch)
                 for on in (True, False))  # type: ignore[return-value]


@pytest.mark.parametrize("name", decoder_params())
@pytest.mark.parametrize("nbest", [1, 4])
def test_word_confidence_off_leaves_them_nan_and_changes_nothing_else(name, nbest):
    """word_confidence=False (--no-word-confidence), every decoder: the same texts, scores,
    tokens, word times and n-best lists (Hypothesis equality leaves confidences out), and every
    word's confidence and frame confidence NaN, where they are computed otherwise."""
    vocab = quartznet_vocab()
    rng = np.random.default_rng(5)
    batch = [frames(vocab, DOUBT), *(log_softmax(rng.normal(size=(n, vocab.size)) * 3)
                                     for n in (7, 30, 0))]
    options = {} if name == "greedy" else {"nbest": nbest, "beam_width": 8}
    on, off = _decoded_both_ways(name, vocab, batch, **options)
    assert off == on and [h.nbest for h in off] == [h.nbest for h in on]
    assert on[0].text == "ab ba" and len(_words(off)) > 4
    assert all(math.isnan(w.confidence) and math.isnan(w.frame_confidence) for w in _words(off))
    assert all(0.0 <= w.frame_confidence <= 1.0 for w in on[0].words)
    if name == "greedy" or nbest > 1:
        assert all(0.0 <= w.confidence <= 1.0 for w in on[0].words)


def test_word_confidence_off_on_phonemes_and_word_pieces(tmp_path):
    """The beam's other ways to words (a pronunciation lexicon, word pieces) honour it alike."""
    lexicon = tmp_path / "lexicon.tsv"
    lexicon.write_text(LEXICON, encoding="utf-8")
    rng = np.random.default_rng(6)
    for vocab, options in ((phoneme_vocab(), {"lexicon_path": str(lexicon)}), (piece_vocab(), {})):
        batch = [log_softmax(rng.normal(size=(n, vocab.size)) * 4) for n in (12, 40)]
        on, off = _decoded_both_ways("beam", vocab, batch, nbest=3, beam_width=8, **options)
        assert off == on and len(_words(off)) > 2
        assert all(math.isnan(w.confidence) and math.isnan(w.frame_confidence)
                   for w in _words(off))
        assert all(0.0 <= w.frame_confidence <= 1.0 for w in _words(on))
