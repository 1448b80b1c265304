"""WER/CER arithmetic against hand-counted cases, and the shared normaliser."""
from __future__ import annotations

import math

import jiwer
import pytest

from ctclab.core.normalize import DEFAULT_NORMALIZER, TextNormalizer, get_normalizer
from ctclab.eval.metrics import (
    ErrorCounts,
    align_words,
    corpus_score,
    score_utterance,
    substitution_counts,
)


def test_hand_counted_substitution_deletion_insertion():
    # ref: the cat sat on the mat ; hyp: uh the bat sat on mat
    # uh (I), the=, cat->bat (S), sat=, on=, the (D), mat=  -> S1 D1 I1 over 6 words
    u = score_utterance("the cat sat on the mat", "uh the bat sat on mat")
    assert (u.words.substitutions, u.words.deletions, u.words.insertions) == (1, 1, 1)
    assert u.words.ref_len == 6
    assert u.words.rate == pytest.approx(3 / 6)
    assert u.alignment.substitutions() == [("CAT", "BAT")]


def test_perfect_match_and_case_apostrophes_whitespace_ignored():
    u = score_utterance("Don’t  stop, the MUSIC!", "DON'T stop the music")
    assert u.words.errors == 0 and u.chars.errors == 0
    assert u.ref == "DON'T STOP THE MUSIC"


def test_empty_hypothesis_is_all_deletions():
    u = score_utterance("one two three", "")
    assert (u.words.substitutions, u.words.deletions, u.words.insertions) == (0, 3, 0)
    assert u.words.rate == 1.0
    assert u.chars.deletions == len("ONE TWO THREE")


def test_empty_reference_is_all_insertions():
    u = score_utterance("", "uh huh")
    assert (u.words.substitutions, u.words.deletions, u.words.insertions) == (0, 0, 2)
    assert math.isinf(u.words.rate)
    assert score_utterance("", "").words.rate == 0.0
    # In a corpus the empty reference only adds its insertions to the numerator.
    total = corpus_score([u, score_utterance("a b c d", "a b c d")])
    assert total.words.errors == 2 and total.words.ref_len == 4
    assert total.wer == pytest.approx(0.5)


def test_corpus_wer_is_ratio_of_sums_not_mean_of_rates():
    short = score_utterance("yes", "no")                       # 1/1 = 100 %
    long = score_utterance(" ".join(["w"] * 9), " ".join(["w"] * 9))  # 0/9
    total = corpus_score([short, long])
    assert total.wer == pytest.approx(1 / 10)                  # not (1.0 + 0) / 2
    assert total.sentence_errors == 1 and total.ser == 0.5


def test_matches_jiwer_on_mixed_cases():
    refs = ["the quick brown fox", "jumps over the lazy dog", "a b c d e f", "hello world"]
    hyps = ["the quick brown box jumps", "jumps the lazy dogs", "a c d x e f g", "world hello"]
    total = corpus_score(score_utterance(r, h) for r, h in zip(refs, hyps, strict=True))
    out = jiwer.process_words([r.upper() for r in refs], [h.upper() for h in hyps])
    assert total.words.substitutions == out.substitutions
    assert total.words.deletions == out.deletions
    assert total.words.insertions == out.insertions
    assert total.wer == pytest.approx(out.wer)
    assert total.cer == pytest.approx(jiwer.cer([r.upper() for r in refs],
                                                [h.upper() for h in hyps]))


def test_cer_hand_counted():
    u = score_utterance("abc", "axcd")     # b->x (S), +d (I) over 3 chars
    assert (u.chars.substitutions, u.chars.deletions, u.chars.insertions) == (1, 0, 1)
    assert u.chars.rate == pytest.approx(2 / 3)


def test_diff_and_substitution_counter():
    a = align_words(["THE", "CAT", "SAT"], ["THE", "BAT"])
    lines = a.diff().splitlines()
    assert lines[0].split() == ["REF:", "THE", "CAT", "SAT"]
    assert lines[1].split() == ["HYP:", "THE", "BAT", "***"]
    assert lines[2].split() == ["S", "D"]
    c = substitution_counts([a, align_words(["CAT"], ["BAT"])])
    assert c.most_common(1) == [(("CAT", "BAT"), 2)]


def test_error_counts_validation():
    with pytest.raises(ValueError, match="negative"):
        ErrorCounts(-1, 0, 0, 3)
    with pytest.raises(ValueError, match="exceeds"):
        ErrorCounts(2, 2, 0, 3)


def test_normalizer_steps_and_composition():
    n = DEFAULT_NORMALIZER
    assert n("  'Hello,' said   the—man's dog.  ") == "HELLO SAID THE MAN'S DOG"
    assert get_normalizer("no-apostrophes")("don't") == "DONT"
    assert get_normalizer("whitespace")("A  b ") == "A b"
    combined = get_normalizer("whitespace") + TextNormalizer("lower", ("lower",))
    assert combined("A  B") == "a b" and combined.name == "whitespace+lower"
    assert n.to_dict()["steps"][0] == "unify_apostrophes"


def test_normalizer_errors_name_valid_choices():
    with pytest.raises(ValueError, match="valid: default"):
        get_normalizer("nope")
    with pytest.raises(ValueError, match="collapse_whitespace"):
        TextNormalizer("x", ("shout",))
