"""The ``beam`` decoder's word scoring: LM fusion, casing, lexicon modes, hotwords, caching."""
from __future__ import annotations

import numpy as np
import pytest
from decoding_fixtures import frames, quartznet_vocab, random_peaky, write_arpa

from ctclab.decoders import Hypothesis, Vocabulary, create_decoder
from ctclab.decoders.beam import BeamOptions, BeamSearchDecoder
from ctclab.lm.language_model import KenLMLanguageModel, LanguageModel
from ctclab.lm.loaded import LoadedLM

WORDS = {"the": 0.3, "cat": 0.2, "cap": 0.0005, "sat": 0.1, "a": 0.1}
BIGRAMS = {("the", "cat"): 0.5, ("cat", "sat"): 0.5}


@pytest.fixture
def arpa(tmp_path):
    return str(write_arpa(tmp_path / "tiny.arpa", WORDS, BIGRAMS))


def the_ca_x(vocab: Vocabulary, last: dict[str, float]) -> np.ndarray:
    """Acoustics for 'the ca?' where the last letter is ambiguous: ``last`` = {letter: prob}."""
    up = (lambda s: s.upper()) if vocab.case == "upper" else (lambda s: s)
    d = "|" if vocab.case == "upper" else " "
    spec = ["_", up("t"), up("h"), up("e"), "_", d, up("c"), "_", up("a"), "_",
            {up(k): p for k, p in last.items()}, "_"]
    return frames(vocab, spec)


@pytest.mark.parametrize("vocab", [quartznet_vocab(), Vocabulary.wav2vec2_english()],
                         ids=["lower-labels", "upper-labels"])
def test_lm_flips_the_answer_whatever_the_label_casing(vocab, arpa):
    x = the_ca_x(vocab, {"p": 0.6, "t": 0.38})
    plain = create_decoder("beam", vocab).decode(x)
    fused = create_decoder("beam", vocab, lm_path=arpa, alpha=1.0, beta=0.0).decode(x)
    assert plain.text.lower() == "the cap"
    assert fused.text.lower() == "the cat"
    assert fused.text == fused.text.upper() if vocab.case == "upper" else fused.text.lower()
    assert fused.lm_score < 0 and fused.score == pytest.approx(fused.acoustic_score +
                                                               fused.lm_score)


def test_lm_score_is_the_ngram_log_prob_times_alpha_plus_beta(arpa):
    vocab = quartznet_vocab()
    x = the_ca_x(vocab, {"t": 0.97})
    lm = KenLMLanguageModel(arpa)
    hyp = create_decoder("beam", vocab, lm_path=arpa, alpha=0.7, beta=0.4).decode(x)
    state, total = lm.start_state(), 0.0
    for word in ("the", "cat"):
        ln_p, state = lm.score(state, word)
        total += ln_p
    expected = 0.7 * (total + lm.end_score(state)) + 0.4 * 2
    assert hyp.text == "the cat"
    assert hyp.lm_score == pytest.approx(expected, abs=1e-4)


def test_zero_lm_weight_equals_no_lm(arpa, tmp_path):
    vocab = quartznet_vocab()
    rng = np.random.default_rng(5)
    xs = [random_peaky(rng, 60, vocab.size, vocab.blank, sharpness=3.0) for _ in range(6)]
    plain = create_decoder("beam", vocab, beam_width=24).decode_many(xs)
    zero = create_decoder("beam", vocab, beam_width=24, lm_path=arpa, alpha=0.0, beta=0.0,
                          lexicon_mode="none").decode_many(xs)
    for a, b in zip(plain, zero, strict=True):
        assert (a.text, a.tokens) == (b.text, b.tokens)
        assert a.score == pytest.approx(b.score, abs=1e-9)
    # with the (soft) lexicon on, the LM's own part is still exactly zero
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS), encoding="utf-8")
    lexicon_only = create_decoder("beam", vocab, beam_width=24, unigrams_path=str(words))
    zero_lex = create_decoder("beam", vocab, beam_width=24, lm_path=arpa, alpha=0.0, beta=0.0,
                              unigrams_path=str(words))
    for a, b in zip(lexicon_only.decode_many(xs), zero_lex.decode_many(xs), strict=True):
        assert (a.text, a.tokens) == (b.text, b.tokens)
        assert a.score == pytest.approx(b.score, abs=1e-9)


def test_empty_input_is_the_empty_hypothesis_with_an_lm_too(arpa):
    vocab = quartznet_vocab()
    dec = create_decoder("beam", vocab, lm_path=arpa)
    empty = np.zeros((0, vocab.size), np.float32)
    assert dec.decode(empty) == Hypothesis.empty()
    hyps = dec.decode_many([empty, the_ca_x(vocab, {"t": 0.97}), empty])
    assert [h.text for h in hyps] == ["", "the cat", ""] and hyps[2] == Hypothesis.empty()


def test_hotword_flips_the_answer():
    vocab = quartznet_vocab()
    x = the_ca_x(vocab, {"p": 0.6, "t": 0.38})
    assert create_decoder("beam", vocab).decode(x).text == "the cap"
    hyp = create_decoder("beam", vocab, hotwords=("CAT",), hotword_weight=3.0).decode(x)
    assert hyp.text == "the cat"


def test_a_hotword_typed_in_another_casing_is_scored_as_the_lm_word(arpa, tmp_path):
    vocab = quartznet_vocab()   # lower-case labels and LM; the hotword typed upper case
    words = tmp_path / "words.txt"
    words.write_text("the\nsat\n", encoding="utf-8")  # "cat" known to the LM, not to the list
    hyp = create_decoder("beam", vocab, lm_path=arpa, unigrams_path=str(words), hotwords=("CAT",),
                         hotword_weight=2.0, alpha=1.0, beta=0.0).decode(the_ca_x(vocab, {"t": 0.97}))
    lm = KenLMLanguageModel(arpa)
    state, total = lm.start_state(), 0.0
    for word in ("the", "cat"):
        ln_p, state = lm.score(state, word)
        total += ln_p
    assert hyp.text == "the cat"
    assert hyp.lm_score == pytest.approx(total + lm.end_score(state) + 2.0, abs=1e-4)


def test_hard_lexicon_forbids_an_unknown_word_soft_only_penalises(tmp_path):
    vocab = quartznet_vocab()
    words = tmp_path / "lexicon.txt"
    words.write_text("the\ncat\nsat\n", encoding="utf-8")  # no "cap"
    x = the_ca_x(vocab, {"p": 0.9, "t": 0.08})
    options = {"unigrams_path": str(words)}
    assert create_decoder("beam", vocab, lexicon_mode="none", **options).decode(x).text == "the cap"
    hard = create_decoder("beam", vocab, lexicon_mode="hard", **options).decode(x)
    assert hard.text == "the cat"
    # soft: the unknown word pays the penalty; a mild one leaves the acoustics in charge
    soft = create_decoder("beam", vocab, lexicon_mode="soft", unknown_prefix_penalty=-1.0,
                          **options).decode(x)
    assert soft.text == "the cap"
    none = create_decoder("beam", vocab, lexicon_mode="none", **options).decode(x)
    assert soft.score == pytest.approx(none.score - 1.0, abs=0.05)


def test_all_oov_lm_is_an_error_not_a_silent_decode(tmp_path):
    vocab = quartznet_vocab()
    arpa = write_arpa(tmp_path / "digits.arpa", {"123": 0.5, "4567": 0.4})
    with pytest.raises(ValueError, match="(?i)OOV|no LM word"):
        create_decoder("beam", vocab, lm_path=str(arpa))


class CountingLM(LanguageModel):
    """A unigram LM (no word list) that counts its queries: 'the' and 'cat' likely, others not."""

    order = 1

    def __init__(self) -> None:
        self.calls = 0

    def start_state(self):
        return 0

    def score(self, state, word):
        self.calls += 1
        return (np.log(0.4) if word in ("the", "cat") else np.log(1e-3)), 0

    def end_score(self, state):
        return 0.0

    def is_oov(self, word):
        return word not in ("the", "cat")


def test_a_loaded_language_model_can_be_passed_in_and_its_scores_are_cached():
    vocab = quartznet_vocab()
    lm = CountingLM()
    dec = BeamSearchDecoder(vocab, BeamOptions(alpha=1.0, beta=0.0, lexicon_mode="none"),
                            lm=LoadedLM.of(lm))
    x = the_ca_x(vocab, {"p": 0.6, "t": 0.38})
    assert dec.decode(x).text == "the cat"
    first = lm.calls
    assert first > 0
    dec.decode_many([x, x, x])
    assert lm.calls == first  # every (history, word) pair was answered from the cache


def test_lexicon_modes_fall_back_to_the_lms_own_words_without_a_word_list():
    vocab = quartznet_vocab()   # CountingLM has no word list, like a KenLM binary
    x = the_ca_x(vocab, {"p": 0.9, "t": 0.08})

    def text(mode: str) -> str:
        options = BeamOptions(alpha=0.0, beta=0.0, lexicon_mode=mode)  # LM scores play no part
        return BeamSearchDecoder(vocab, options, lm=LoadedLM.of(CountingLM())).decode(x).text

    assert text("none") == "the cap"
    assert text("soft") == "the cat"   # "cap" pays the unknown-word penalty
    assert text("hard") == "the cat"   # "cap" is forbidden


def test_search_state_is_forgotten_between_batches_without_changing_results(arpa, monkeypatch):
    import ctclab.decoders.lm_fusion as fusion

    vocab = quartznet_vocab()
    rng = np.random.default_rng(11)
    xs = [random_peaky(rng, 50, vocab.size, vocab.blank, sharpness=3.0) for _ in range(4)]
    dec = create_decoder("beam", vocab, beam_width=16, lm_path=arpa, batch_size=2)
    before = [h.text for h in dec.decode_many(xs)]
    assert dec.scorer.trie.size > dec.scorer.trie.static_size  # OOV partial words were made
    monkeypatch.setattr(fusion, "SEARCH_NODE_LIMIT", 0)
    after = [h.text for h in dec.decode_many(xs)]
    assert after == before
    dec.scorer.trim()
    assert dec.scorer.trie.size == dec.scorer.trie.static_size


@pytest.mark.parametrize("options", [
    {},
    {"lexicon_mode": "none"},
    {"lexicon_mode": "hard"},
    {"hotwords": ("sat", "dog"), "hotword_weight": 2.0},
    {"unigrams_path": "WORDS", "lexicon_mode": "soft"},
    {"nbest": 4, "alpha": 1.3, "beta": -0.5},
], ids=["default", "no-lexicon", "hard", "hotwords", "word-list", "nbest"])
def test_array_lm_and_kenlm_give_the_same_texts_and_scores(tmp_path, options):
    """The beam's result does not depend on the LM backend: the array LM reproduces KenLM's
    float32 scores, so texts, token paths, scores and n-best lists are equal, not merely close."""
    from arpa_fixtures import random_arpa

    vocab = quartznet_vocab()
    rng = np.random.default_rng(7)
    arpa = random_arpa(tmp_path / "lm.arpa", rng, 3, per_order=40,
                       vocab=["the", "cat", "cap", "sat", "a", "at", "ta", "act", "tea", "eat"])
    (tmp_path / "words.txt").write_text("the\ncat\nsat\n")
    options = {k: (str(tmp_path / "words.txt") if v == "WORDS" else v) for k, v in options.items()}
    xs = [random_peaky(rng, 40, vocab.size, vocab.blank, sharpness=2.5) for _ in range(8)]
    xs.append(the_ca_x(vocab, {"p": 0.6, "t": 0.38}))
    runs = {backend: create_decoder("beam", vocab, beam_width=16, lm_path=str(arpa),
                                    lm_backend=backend, **options).decode_many(xs)
            for backend in ("arrays", "kenlm")}
    for a, k in zip(runs["arrays"], runs["kenlm"], strict=True):
        assert (a.text, a.tokens, a.score, a.lm_score) == (k.text, k.tokens, k.score, k.lm_score)
        assert [(h.text, h.score) for h in a.nbest] == [(h.text, h.score) for h in k.nbest]


def test_the_backend_option_picks_the_lm_form_and_a_given_lm_is_used_as_it_is(arpa):
    from ctclab.lm.array_lm import ArrayLanguageModel

    vocab = quartznet_vocab()
    arrays = create_decoder("beam", vocab, lm_path=arpa)
    kenlm = create_decoder("beam", vocab, lm_path=arpa, lm_backend="kenlm")
    assert isinstance(arrays.lm.model, ArrayLanguageModel)
    assert isinstance(kenlm.lm.model, KenLMLanguageModel)
    given = BeamSearchDecoder(vocab, BeamOptions(), lm=LoadedLM.of(KenLMLanguageModel(arpa)))
    assert isinstance(given.lm.model, KenLMLanguageModel)
    x = the_ca_x(vocab, {"p": 0.6, "t": 0.38})
    assert arrays.decode(x) == kenlm.decode(x)
    with pytest.raises(ValueError, match="lm_backend.*valid: auto, arrays, kenlm"):
        BeamOptions(lm_backend="fast")
    with pytest.raises(ValueError, match="lm_arrays_max_mib"):
        BeamOptions(lm_arrays_max_mib=0)
