"""Partial words off the known words share one trie node per length (WordTrie.
share_unknown_prefixes) only where that cannot change a score: the results equal those of one node
per spelling, and the sharing is off where an off-trie spelling could be a word the LM knows."""
from __future__ import annotations

import numpy as np
import pytest
from decoding_fixtures import quartznet_vocab, random_peaky, write_arpa

import ctclab.decoders.lm_fusion as fusion
from ctclab.decoders import Vocabulary, create_decoder
from ctclab.decoders.lm_fusion import WordScorer
from ctclab.lm.array_lm import load_array_lm
from ctclab.lm.casing import WordMapper
from ctclab.lm.spelling import Spelling, spelled_words

WORDS = {"the": 0.3, "cat": 0.2, "cap": 0.0005, "sat": 0.1, "a": 0.1}
BIGRAMS = {("the", "cat"): 0.5, ("cat", "sat"): 0.5}


@pytest.fixture
def arpa(tmp_path):
    return str(write_arpa(tmp_path / "tiny.arpa", WORDS, BIGRAMS))


def _fields(hyps):
    return [(h.text, h.score, h.tokens, h.acoustic_score, h.lm_score,
             [(w.word, w.start_frame, w.end_frame) for w in h.words],
             [(n.text, n.score) for n in h.nbest]) for h in hyps]


def _decode_both(monkeypatch, vocab, xs, **options):
    """(shared, one node per spelling) hypotheses of the same decoder options."""
    shared = create_decoder("beam", vocab, **options)
    assert shared.scorer.trie.shares_unknown_prefixes
    with monkeypatch.context() as m:
        m.setattr(fusion.WordScorer, "_unknown_prefixes_alike", lambda *a: False)
        apart = create_decoder("beam", vocab, **options)
    assert not apart.scorer.trie.shares_unknown_prefixes
    return shared, shared.decode_many(xs), apart, apart.decode_many(xs)


@pytest.mark.parametrize("options", [
    {"beam_width": 16, "nbest": 3},
    {"beam_width": 16, "hotwords": ("cat", "zebra"), "nbest": 2},
    {"beam_width": 8, "unknown_prefix_penalty": -3.0, "batch_size": 2},
])
def test_shared_unknown_prefixes_score_exactly_like_one_node_per_spelling(arpa, monkeypatch,
                                                                          options):
    vocab = quartznet_vocab()
    rng = np.random.default_rng(3)
    # long noisy stretches: off-lexicon partial words longer than AVG_WORD_LABELS (penalty
    # scaled by length) and unknown words finished at delimiters and at the end
    xs = [random_peaky(rng, 90, vocab.size, vocab.blank, sharpness=2.5, blank_rate=0.3)
          for _ in range(5)]
    shared, a, apart, b = _decode_both(monkeypatch, vocab, xs, lm_path=arpa, **options)
    assert _fields(a) == _fields(b)
    # the search made a handful of shared nodes instead of one per noisy spelling
    made = shared.scorer.trie.size - shared.scorer.trie.static_size
    assert 0 < made < apart.scorer.trie.size - apart.scorer.trie.static_size


def test_shared_unknown_prefixes_without_an_lm_score_like_one_node_per_spelling(tmp_path,
                                                                                monkeypatch):
    vocab = quartznet_vocab()
    words = tmp_path / "words.txt"
    words.write_text("the\ncat\nsat\n", encoding="utf-8")
    rng = np.random.default_rng(4)
    xs = [random_peaky(rng, 70, vocab.size, vocab.blank, sharpness=2.5) for _ in range(4)]
    _, a, _, b = _decode_both(monkeypatch, vocab, xs, unigrams_path=str(words), beam_width=16,
                              nbest=2)
    assert _fields(a) == _fields(b)


def test_not_shared_when_an_off_list_spelling_is_a_word_the_lm_knows(arpa, tmp_path):
    # "cat" is known to the LM but not to the word list: spelled, it must score as "cat" (its LM
    # probability), not as <unk>, so unknown partial words cannot all be one node
    vocab = quartznet_vocab()
    words = tmp_path / "words.txt"
    words.write_text("the\nsat\n", encoding="utf-8")
    dec = create_decoder("beam", vocab, lm_path=arpa, unigrams_path=str(words))
    assert not dec.scorer.trie.shares_unknown_prefixes
    # the same list plus "cat" (every LM word the labels spell): shared
    words.write_text("the\nsat\ncat\ncap\na\n", encoding="utf-8")
    assert create_decoder("beam", vocab, lm_path=arpa,
                          unigrams_path=str(words)).scorer.trie.shares_unknown_prefixes


def test_not_shared_where_unknown_words_can_differ(arpa, tmp_path):
    vocab = quartznet_vocab()
    assert create_decoder("beam", vocab, lm_path=arpa).scorer.trie.shares_unknown_prefixes
    # hard mode, no lexicon, the KenLM backend (ids by text)
    for options in ({"lexicon_mode": "hard"}, {"lexicon_mode": "none"}, {"lm_backend": "kenlm"}):
        dec = create_decoder("beam", vocab, lm_path=arpa, **options)
        assert not dec.scorer.trie.shares_unknown_prefixes, options
    # a label of several characters: two spellings can read as one text
    labels = (" ", *"abcdefghijklmnopqrstuvwxyz", "'", "th", "<blank>")
    multi = Vocabulary.from_labels(labels, blank=len(labels) - 1, delimiter=" ")
    assert not create_decoder("beam", multi, lm_path=arpa).scorer.trie.shares_unknown_prefixes
    # mixed-case labels read through a lower-casing mapper: "Cat" and "cat" are one LM word
    mixed = (" ", *"abcdefghijklmnopqrstuvwxyz", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "<blank>")
    vocab_mixed = Vocabulary.from_labels(mixed, blank=len(mixed) - 1, delimiter=" ")
    lm = load_array_lm(arpa, cache_root=tmp_path, progress=False)

    def shares(mapper: WordMapper) -> bool:
        known = spelled_words(Spelling(vocab_mixed), lm.unigrams(), mapper)
        return WordScorer(vocab_mixed, lm, known, mapper, alpha=0.5, beta=1.0,
                          lexicon_mode="soft", unknown_prefix_penalty=-10.0
                          ).trie.shares_unknown_prefixes

    assert not shares(WordMapper("lower"))
    assert shares(WordMapper("identity"))   # "Cat" is then no LM word: exact


def test_forgetting_search_nodes_forgets_the_shared_ones(arpa, monkeypatch):
    vocab = quartznet_vocab()
    rng = np.random.default_rng(11)
    xs = [random_peaky(rng, 50, vocab.size, vocab.blank, sharpness=3.0) for _ in range(4)]
    dec = create_decoder("beam", vocab, beam_width=16, lm_path=arpa, batch_size=2)
    before = _fields(dec.decode_many(xs))
    trie = dec.scorer.trie
    assert trie.size > trie.static_size
    monkeypatch.setattr(fusion, "SEARCH_NODE_LIMIT", 0)
    dec.scorer.trim()
    assert trie.size == trie.static_size
    assert int(trie.children_table.host_rows(trie.static_size).max()) < trie.static_size
    assert _fields(dec.decode_many(xs)) == before
