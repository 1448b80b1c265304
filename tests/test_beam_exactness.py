"""The beam search with a wide beam finds the most probable text, checked against brute force.

Brute force: enumerate every labelling up to length T, sum over all its alignments with the CTC
forward algorithm, add up labellings that read as the same text, take the best text.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from decoding_fixtures import BEAM_BACKENDS, log_softmax
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctclab.decoders import Vocabulary, create_decoder

EXACT = {"beam_width": 10_000, "beam_prune_logp": -math.inf, "token_min_logp": -math.inf,
             "blank_skip_threshold": None}


def ctc_log_prob(log_probs: np.ndarray, labels: tuple[int, ...], blank: int) -> float:
    """ln P(labels | log_probs) summed over all CTC alignments (forward algorithm)."""
    ext = [blank]
    for lab in labels:
        ext += [lab, blank]
    alpha = np.full(len(ext), -np.inf)
    alpha[0] = log_probs[0, blank]
    if len(ext) > 1:
        alpha[1] = log_probs[0, ext[1]]
    for t in range(1, len(log_probs)):
        new = np.full(len(ext), -np.inf)
        for s, lab in enumerate(ext):
            acc = alpha[s]
            if s >= 1:
                acc = np.logaddexp(acc, alpha[s - 1])
            if s >= 2 and lab != blank and ext[s - 2] != lab:
                acc = np.logaddexp(acc, alpha[s - 2])
            new[s] = acc + log_probs[t, lab]
        alpha = new
    return float(np.logaddexp(alpha[-1], alpha[-2]) if len(ext) > 1 else alpha[-1])


def brute_force_texts(log_probs: np.ndarray, vocab: Vocabulary) -> dict[str, float]:
    """text -> ln P(text): every labelling of length <= T, grouped by the text it reads as."""
    labels = [i for i in range(vocab.size) if i != vocab.blank]
    totals: dict[str, float] = {}
    for length in range(len(log_probs) + 1):
        for seq in itertools.product(labels, repeat=length):
            if any(a == b for a, b in itertools.pairwise(seq)):
                needed = length + sum(a == b for a, b in itertools.pairwise(seq))
                if needed > len(log_probs):
                    continue
            lp = ctc_log_prob(log_probs, seq, vocab.blank)
            if lp > -np.inf:
                text = vocab.decode_tokens(seq)
                totals[text] = float(np.logaddexp(totals.get(text, -np.inf), lp))
    return totals


def _vocab(size: int, with_delimiter: bool, blank_last: bool) -> Vocabulary:
    labels = list("|ABC"[: size - 1]) if with_delimiter else list("ABCD"[: size - 1])
    labels = [*labels, "<pad>"] if blank_last else ["<pad>", *labels]
    return Vocabulary.from_labels(labels, blank="<pad>",
                                  delimiter="|" if with_delimiter else None)


@pytest.mark.parametrize("backend", BEAM_BACKENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), num_frames=st.integers(1, 6), size=st.integers(2, 4),
       with_delimiter=st.booleans(), blank_last=st.booleans(),
       sharpness=st.sampled_from([0.0, 1.0, 3.0, 8.0]))
def test_wide_beam_finds_the_brute_force_best_text(backend, seed, num_frames, size,
                                                   with_delimiter, blank_last, sharpness):
    if with_delimiter and size < 3:
        with_delimiter = False
    vocab = _vocab(size, with_delimiter, blank_last)
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(num_frames, size)) * (1 + sharpness)
    x = log_softmax(logits)
    truth = brute_force_texts(x, vocab)
    best_text = max(truth, key=truth.get)
    ranked = sorted(truth.values(), reverse=True)
    if len(ranked) > 1 and ranked[0] - ranked[1] < 1e-6:
        return  # a tie: either text is right
    hyp = create_decoder("beam", vocab, **EXACT, **BEAM_BACKENDS[backend],
                         nbest=min(5, len(truth))).decode(x)
    assert hyp.text == best_text
    assert hyp.score == pytest.approx(truth[best_text], abs=1e-4)
    for alt in hyp.nbest:  # every alternative carries its exact text probability
        assert alt.score == pytest.approx(truth[alt.text], abs=1e-4)


@pytest.mark.parametrize("backend", BEAM_BACKENDS)
def test_repeated_label_needs_a_blank_in_between(backend):
    vocab = _vocab(3, False, False)  # <pad> A B
    a, blank = 1, 0
    options = {**EXACT, **BEAM_BACKENDS[backend]}
    x = np.log(np.array([[0.05, 0.9, 0.05], [0.05, 0.9, 0.05], [0.05, 0.9, 0.05]]))
    assert create_decoder("beam", vocab, **options).decode(x.astype(np.float32)).text == "A"
    y = np.log(np.array([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]]))
    hyp = create_decoder("beam", vocab, **options).decode(y.astype(np.float32))
    assert hyp.text == "AA" and hyp.tokens == (a, a) and blank not in hyp.tokens
