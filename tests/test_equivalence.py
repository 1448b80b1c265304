"""Our beam search and pyctcdecode agree at matched settings; greedy equals width-1 beams.

Matched settings: same beam width, token_min_logp, beam_prune_logp; our beam's extra shortcuts
(top-k tokens, blank-frame skipping) off; the width is generous (32) because pyctcdecode counts a
prefix ending in blank and the same prefix ending in a label as two beams, so at small widths the
two searches prune different candidates; with an LM the same alpha, beta and soft lexicon penalty
(our unknown_prefix_penalty = pyctcdecode's unk_score_offset).
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import decoder_params, needs_pyctcdecode
from decoding_fixtures import BEAM_BACKENDS, log_softmax, quartznet_vocab, write_arpa

from ctclab.decoders import create_decoder
from ctclab.decoders.base import registered_decoders

SEARCH = {"beam_width": 32, "token_min_logp": -5.0, "beam_prune_logp": -10.0}
OURS_ONLY = {"token_top_k": None, "blank_skip_threshold": None}
LM_WORDS = {"the": 0.2, "cat": 0.08, "cap": 0.01, "sat": 0.06, "set": 0.01, "on": 0.1,
            "mat": 0.04, "map": 0.01, "a": 0.1}
BIGRAMS = {("the", "cat"): 0.3, ("cat", "sat"): 0.4, ("sat", "on"): 0.5, ("on", "the"): 0.4,
           ("the", "mat"): 0.2, ("on", "a"): 0.2, ("a", "mat"): 0.3}


def ours(vocab, **options):
    return create_decoder("beam", vocab, **SEARCH, **OURS_ONLY, **options)


def theirs(vocab, **options):
    return create_decoder("pyctcdecode", vocab, **SEARCH, **options)


def ambiguous_peaky(vocab, rng: np.random.Generator, runs: int) -> np.ndarray:
    """Peaky frames in runs of 1-3 per label; in 20% of label runs blank rivals the label, where
    summing over alignments (prefix merging) can beat the best path."""
    hot, split = [], []
    for _ in range(runs):
        label = vocab.blank if rng.random() < 0.4 else int(rng.integers(0, vocab.size))
        size = int(rng.integers(1, 4))
        hot += [label] * size
        split += [label != vocab.blank and rng.random() < 0.2] * size
    hot, split = np.array(hot), np.array(split)
    logits = rng.normal(size=(len(hot), vocab.size))
    logits[np.arange(len(hot)), hot] += 6.0
    logits[split, vocab.blank] = logits[split, hot[split]] + rng.uniform(-0.3, 0.6, split.sum())
    return log_softmax(logits)


@needs_pyctcdecode
@pytest.mark.parametrize("backend", BEAM_BACKENDS)
def test_same_text_on_random_peaky_logits_without_lm(backend):
    v = quartznet_vocab()
    rng = np.random.default_rng(11)
    emissions = [ambiguous_peaky(v, rng, int(rng.integers(5, 16))) for _ in range(120)]
    a = [h.text for h in ours(v, **BEAM_BACKENDS[backend]).decode_many(emissions)]
    b = [h.text for h in theirs(v).decode_many(emissions)]
    same = np.mean([x == y for x, y in zip(a, b, strict=True)])
    assert same >= 0.99, [(x, y) for x, y in zip(a, b, strict=True) if x != y][:5]
    # not vacuous: the search matters on these inputs (beam differs from greedy somewhere)
    greedy = [h.text for h in create_decoder("greedy", v).decode_many(emissions)]
    assert any(x != g for x, g in zip(a, greedy, strict=True))


def spoken(vocab, words: list[str], rng: np.random.Generator) -> np.ndarray:
    """Peaky frames spelling ``words``. Letters whose swap makes another LM word (cat/cap, sat/set)
    get that rival at about the same strength, so the LM has to decide; others now and then get
    a random rival."""
    path, rivals = [vocab.blank], {}
    for index, word in enumerate(words):
        if index:
            path += [vocab.delimiter, vocab.blank]
        for pos, ch in enumerate(word):
            swaps = [c for c in "abcdefghijklmnopqrstuvwxyz" if c != ch
                     and word[:pos] + c + word[pos + 1:] in LM_WORDS]
            if swaps and rng.random() < 0.7:
                rivals[len(path)] = (vocab.label_to_id[str(rng.choice(swaps))], 0.6)
            elif rng.random() < 0.15:
                rivals[len(path)] = (int(rng.choice(vocab.emitting_ids)), 1.5)
            path += [vocab.label_to_id[ch], vocab.blank]
    logits = rng.normal(size=(len(path), vocab.size)) * 0.5
    logits[np.arange(len(path)), path] += 7.0
    for t, (rival, spread) in rivals.items():
        logits[t, rival] = logits[t, path[t]] + rng.uniform(-spread, 0.3)
    return log_softmax(logits)


@needs_pyctcdecode
@pytest.mark.parametrize("backend", BEAM_BACKENDS)
def test_same_text_with_a_small_lm(tmp_path, backend):
    v = quartznet_vocab()
    arpa = write_arpa(tmp_path / "small.arpa", LM_WORDS, BIGRAMS)
    rng = np.random.default_rng(5)
    words = sorted(LM_WORDS)
    emissions = [spoken(v, list(rng.choice(words, rng.integers(2, 6))), rng) for _ in range(100)]
    lm = {"lm_path": str(arpa), "alpha": 0.5, "beta": 1.5}
    a = [h.text for h in ours(v, **lm, lexicon_mode="soft", unknown_prefix_penalty=-10.0,
                              **BEAM_BACKENDS[backend]).decode_many(emissions)]
    b = [h.text for h in theirs(v, **lm, unk_score_offset=-10.0).decode_many(emissions)]
    same = np.mean([x == y for x, y in zip(a, b, strict=True)])
    assert same >= 0.98, [(x, y) for x, y in zip(a, b, strict=True) if x != y][:5]
    # not vacuous: the LM decides many answers (the confusable letters are made to need it)
    no_lm = [h.text for h in theirs(v).decode_many(emissions)]
    assert sum(x != y for x, y in zip(b, no_lm, strict=True)) >= 20


@pytest.mark.parametrize("name", decoder_params([d for d in registered_decoders()
                                                 if d != "greedy"]))
def test_greedy_equals_width_one_on_one_dominant_label_per_frame(name):
    v = quartznet_vocab()
    rng = np.random.default_rng(2)
    greedy = create_decoder("greedy", v)
    dec = create_decoder(name, v, beam_width=1)
    for _ in range(60):
        length = int(rng.integers(1, 80))
        path = np.where(rng.random(length) < 0.5, v.blank, rng.integers(0, v.size, length))
        probs = rng.dirichlet(np.ones(v.size), size=length) * 0.1   # 10% spread at random
        probs[np.arange(length), path] += 0.9                       # one label holds >= 90%
        x = np.log(probs).astype(np.float32)
        assert dec.decode(x).text == greedy.decode(x).text
