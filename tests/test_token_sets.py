"""The beam over token sets other than letters: phonemes through a lexicon, word pieces.

Exactness against the brute-force CTC forward runs for each token set (letters: in
test_beam_exactness.py); words, timestamps, n-best, homophones, several pronunciations, hotwords
and the hard lexicon on phonemes; pyctcdecode as the peer for word pieces.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from conftest import needs_pyctcdecode
from decoding_fixtures import BEAM_BACKENDS, log_softmax, peaky, write_arpa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_beam_exactness import EXACT, ctc_log_prob
from test_lexicon import phoneme_vocab

from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders import create_decoder

LEXICON = "the\tð ə\nthe\tð i\ncat\tk æ t\ndog\td ɔ g\nto\tt u\ntwo\tt u\na\tə\n"


@pytest.fixture
def lexicon(tmp_path):
    path = tmp_path / "lexicon.tsv"
    path.write_text(LEXICON, encoding="utf-8")
    return str(path)


def say(vocab: Vocabulary, phonemes: str, peak: float = 0.95) -> np.ndarray:
    """Peaky log-probs of a phoneme string ('|' = word boundary), blanks around each token."""
    path = [vocab.blank]
    for p in phonemes.split():
        path += [vocab.delimiter if p == "|" else vocab.label_to_id[p], vocab.blank]
    return peaky(path, vocab.size, peak)


def test_phonemes_become_lexicon_words_with_timestamps(lexicon):
    v = phoneme_vocab()
    x = say(v, "ð i | d ɔ g")
    hyp = create_decoder("beam", v, lexicon_path=lexicon, frame_shift_s=0.02).decode(x)
    assert hyp.text == "the dog"
    assert [v.labels[t] for t in hyp.tokens] == ["ð", "i", "<wb>", "d", "ɔ", "g"]
    (w1, w2) = hyp.words
    assert (w1.word, w1.start_frame, w1.end_frame) == ("the", 1, 4)   # ð at 1, i ends at 4
    assert (w2.word, w2.start_frame) == ("dog", 7) and w2.end_frame <= len(x)
    assert w2.start_s == pytest.approx(0.14)
    # greedy knows no words: its text is the phonemes
    assert create_decoder("greedy", v).decode(x).text == "ði dɔg"


def test_several_pronunciations_are_one_text_in_nbest(lexicon):
    v = phoneme_vocab()
    x = log_softmax(np.log(np.maximum(np.exp(say(v, "ð ə | k æ t")), 1e-9)))
    i = v.label_to_id["i"]
    x[2] = np.log(np.full(v.size, 0.02))   # the vowel of "the": ə or i, equally likely
    x[2, v.label_to_id["ə"]] = x[2, i] = np.log(0.4)
    x = log_softmax(x)
    hyp = create_decoder("beam", v, lexicon_path=lexicon, nbest=5, beam_width=16).decode(x)
    texts = [h.text for h in hyp.nbest]
    assert texts[0] == "the cat" and len(texts) == len(set(texts))


@pytest.mark.parametrize("backend", BEAM_BACKENDS)
def test_homophones_are_told_apart_by_the_lm(tmp_path, lexicon, backend):
    v = phoneme_vocab()
    x = say(v, "t u | d ɔ g")
    for first, rival in (("two", "to"), ("to", "two")):
        arpa = write_arpa(tmp_path / f"{first}.arpa", {"to": 0.2, "two": 0.2, "dog": 0.2,
                                                        "cat": 0.1, "the": 0.2, "a": 0.1},
                          {(first, "dog"): 0.5, (rival, "dog"): 0.001})
        hyp = create_decoder("beam", v, lexicon_path=lexicon, lm_path=str(arpa),
                             **BEAM_BACKENDS[backend]).decode(x)
        assert hyp.text == f"{first} dog"


def test_hard_lexicon_turns_unknown_phonemes_into_known_words(lexicon):
    v = phoneme_vocab()
    x = say(v, "g æ t | d ɔ g", peak=0.99)     # "gat" is no word: the nearest known one wins
    hyp = create_decoder("beam", v, lexicon_path=lexicon).decode(x)
    assert hyp.text == "cat dog"
    soft = create_decoder("beam", v, lexicon_path=lexicon, lexicon_mode="soft").decode(x)
    assert soft.text == "gæt dog"   # soft: an unknown word is written as its phonemes


def test_hotwords_are_spelled_through_the_lexicon(lexicon):
    v = phoneme_vocab()
    x = say(v, "t u | d ɔ g")
    plain = create_decoder("beam", v, lexicon_path=lexicon).decode(x).text
    boosted = create_decoder("beam", v, lexicon_path=lexicon, hotwords=("to",)).decode(x).text
    other = create_decoder("beam", v, lexicon_path=lexicon, hotwords=("two",)).decode(x).text
    assert {boosted, other} == {"to dog", "two dog"} and plain in (boosted, other)
    with pytest.raises(ValueError, match="not in the lexicon"):
        create_decoder("beam", v, lexicon_path=lexicon, hotwords=("fitzooth",))


@needs_pyctcdecode
def test_pyctcdecode_refuses_phonemes():
    with pytest.raises(ValueError, match="phonemes.*lexicon"):
        create_decoder("pyctcdecode", phoneme_vocab())


# ----------------------------------------------------------------------------- exactness
def brute_force(x: np.ndarray, vocab: Vocabulary, read) -> dict[str, float]:
    """text -> ln P(text) over every labelling of length <= T; read(labels) -> text or None."""
    labels = [i for i in range(vocab.size) if i != vocab.blank and i not in vocab.unused]
    totals: dict[str, float] = {}
    for length in range(len(x) + 1):
        for seq in itertools.product(labels, repeat=length):
            text = read(seq)
            if text is None:
                continue
            lp = ctc_log_prob(x, seq, vocab.blank)
            if lp > -np.inf:
                totals[text] = float(np.logaddexp(totals.get(text, -np.inf), lp))
    return totals


def check_exact(x, vocab, truth, backend="numpy", **options):
    best = max(truth, key=truth.get)
    ranked = sorted(truth.values(), reverse=True)
    if len(ranked) > 1 and ranked[0] - ranked[1] < 1e-6:
        return False  # a tie: either text is right
    hyp = create_decoder("beam", vocab, **EXACT, **BEAM_BACKENDS[backend],
                         nbest=min(4, len(truth)), **options).decode(x)
    assert hyp.text == best
    assert hyp.score == pytest.approx(truth[best], abs=1e-4)
    for alt in hyp.nbest:
        assert alt.score == pytest.approx(truth[alt.text], abs=1e-4)
    return True


@pytest.mark.parametrize("backend", BEAM_BACKENDS)
def test_phoneme_lexicon_search_is_exact(tmp_path, backend):
    """Hard lexicon, no LM: P(words) sums every labelling that reads as those words, all
    pronunciations included (x: 'a'; y: 'a b' or 'b a'; z: 'b b')."""
    vocab = Vocabulary.from_labels(["|", "a", "b", "<blank>"], blank="<blank>", delimiter="|",
                                   units="phonemes")
    spell = {("a",): "x", ("a", "b"): "y", ("b", "a"): "y", ("b", "b"): "z"}
    path = tmp_path / "lex.tsv"
    path.write_text("x\ta\ny\ta b\ny\tb a\nz\tb b\n", encoding="utf-8")

    def read(seq):
        groups = [tuple(g) for k, g in itertools.groupby(
            (vocab.labels[t] for t in seq), key=lambda s: s == "|") if not k]
        words = [spell.get(g) for g in groups]
        return None if None in words else " ".join(words)

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(25):
        x = log_softmax(rng.normal(size=(int(rng.integers(2, 6)), vocab.size)) * 2)
        truth = brute_force(x, vocab, read)
        checked += check_exact(x, vocab, truth, backend, lexicon_path=str(path))
    assert checked >= 15


@pytest.mark.parametrize("backend", BEAM_BACKENDS)
def test_word_piece_search_is_exact(backend):
    """No lexicon: texts join pieces; '▁a' and '▁' + 'a' read the same and are one text."""
    vocab = Vocabulary.from_labels(["<blank>", "▁a", "▁", "a", "b"], blank=0)
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(25):
        x = log_softmax(rng.normal(size=(int(rng.integers(2, 5)), vocab.size)) * 2)
        truth = brute_force(x, vocab, vocab.decode_tokens)
        checked += check_exact(x, vocab, truth, backend, lexicon_mode="none")
    assert checked >= 15


# ----------------------------------------------------------------------------- word pieces
PIECES = ["<blank>", "▁the", "▁c", "at", "▁s", "▁m", "▁on", "▁a", "a", "t", "p", "e"]
PIECE_WORDS = {"the": 0.2, "cat": 0.08, "cap": 0.01, "sat": 0.06, "set": 0.01, "on": 0.1,
               "mat": 0.04, "map": 0.01, "a": 0.1}


def piece_vocab() -> Vocabulary:
    return Vocabulary.from_labels(PIECES, blank=0)


def test_word_pieces_words_timestamps_and_lm(tmp_path):
    v = piece_vocab()
    assert v.word_start == "▁" and v.delimiter is None
    ids = v.encode_text("the cat sat on the mat")
    x = peaky([0, *[t for tok in ids for t in (tok, 0)]], v.size, 0.99)
    hyp = create_decoder("beam", v).decode(x)
    assert hyp.text == "the cat sat on the mat" and list(hyp.tokens) == ids
    assert [w.word for w in hyp.words] == hyp.text.split()
    assert all(w.start_frame < w.end_frame for w in hyp.words)
    assert hyp.words[1].start_frame == 3   # ▁c at frame 3 (blank, ▁the, blank, ▁c)
    # an LM picks between words whose pieces are equally likely: c|at vs s|at at one frame
    arpa = write_arpa(tmp_path / "lm.arpa", PIECE_WORDS, {("the", "cat"): 0.5})
    y = x.copy()
    c, s = v.label_to_id["▁c"], v.label_to_id["▁s"]
    y[3] = np.log(np.full(v.size, 0.01))
    y[3, c] = y[3, s] = np.log(0.45)
    y = log_softmax(y)
    assert create_decoder("beam", v, lm_path=str(arpa)).decode(y).text.startswith("the cat")


@needs_pyctcdecode
def test_word_pieces_match_pyctcdecode_without_and_with_an_lm(tmp_path):
    """No lone '▁' piece here: pyctcdecode 0.5 reads it as bounded on both sides and then
    breaks the word after it for whatever beam extends next (one flag for all beams)."""
    v = piece_vocab()
    rng = np.random.default_rng(3)
    words = sorted(PIECE_WORDS)
    emissions = []
    for _ in range(60):
        ids = v.encode_text(" ".join(rng.choice(words, rng.integers(2, 6))))
        path = [0, *[t for tok in ids for t in (tok, 0)]]
        logits = rng.normal(size=(len(path), v.size)) * 0.5
        logits[np.arange(len(path)), path] += 5.0
        emissions.append(log_softmax(logits))
    search = {"beam_width": 32, "token_min_logp": -5.0, "beam_prune_logp": -10.0}
    ours = create_decoder("beam", v, **search, token_top_k=None, blank_skip_threshold=None)
    theirs = create_decoder("pyctcdecode", v, **search)
    a = [h.text for h in ours.decode_many(emissions)]
    b = [h.text for h in theirs.decode_many(emissions)]
    assert np.mean([x == y for x, y in zip(a, b, strict=True)]) >= 0.95
    arpa = str(write_arpa(tmp_path / "lm.arpa", PIECE_WORDS))
    lm = {"lm_path": arpa, "alpha": 0.5, "beta": 1.5}
    a = [h.text for h in create_decoder("beam", v, **search, **lm, token_top_k=None,
                                        blank_skip_threshold=None).decode_many(emissions)]
    b = [h.text for h in create_decoder("pyctcdecode", v, **search, **lm
                                        ).decode_many(emissions)]
    assert np.mean([x == y for x, y in zip(a, b, strict=True)]) >= 0.95


def test_word_pieces_spelled_by_a_hugging_face_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=40, special_tokens=["<unk>"], show_progress=False)
    text = ["the cat sat on the mat", "a cat and a hat", "the map"] * 20
    tok.train_from_iterator(text, trainer)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    labels = [*sorted(tok.get_vocab(), key=tok.get_vocab().get), "<blank>"]
    v = Vocabulary.from_labels(labels, blank="<blank>")
    assert v.units == "word_pieces" and "<unk>" in {v.labels[i] for i in v.unused}
    ids = [v.label_to_id[p] for p in tok.encode("the cat sat").tokens]
    x = peaky([v.blank, *[t for i in ids for t in (i, v.blank)]], v.size, 0.9)
    arpa = write_arpa(tmp_path / "lm.arpa", {"the": 0.3, "cat": 0.3, "sat": 0.3})
    dec = create_decoder("beam", v, lm_path=str(arpa), tokenizer_path=str(path),
                         lexicon_mode="hard")
    assert dec.decode(x).text == "the cat sat"
    assert dec.scorer.trie.find(ids[: len(tok.encode("the").tokens)]) > 0
    with pytest.raises(ValueError, match="no word pieces"):
        create_decoder("beam", phoneme_vocab(), tokenizer_path=str(path))


def test_sentencepiece_tokenizer_spells_words(tmp_path):
    spm = pytest.importorskip("sentencepiece", reason="pip install sentencepiece (dev extra)")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the cat sat on the mat", "a cat and a hat"] * 50))
    prefix = tmp_path / "sp"
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), vocab_size=30,
                                   model_type="bpe", minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    labels = [sp.id_to_piece(i) for i in range(sp.get_piece_size())] + ["<blank>"]
    v = Vocabulary.from_labels(labels, blank="<blank>", unused=["<unk>", "<s>", "</s>"])
    ids = sp.encode("the cat", out_type=int)
    x = peaky([v.blank, *[t for i in ids for t in (i, v.blank)]], v.size, 0.9)
    arpa = write_arpa(tmp_path / "lm.arpa", {"the": 0.5, "cat": 0.5})
    dec = create_decoder("beam", v, lm_path=str(arpa), tokenizer_path=f"{prefix}.model")
    assert dec.decode(x).text == "the cat"


def test_greedy_and_contract_on_word_pieces():
    v = piece_vocab()
    ids = v.encode_text("a cat")
    x = peaky([0, *[t for tok in ids for t in (tok, 0)]], v.size, 0.9)
    for name in ("greedy", "beam"):
        hyp = create_decoder(name, v).decode(x)
        assert hyp.text == "a cat" == v.decode_tokens(hyp.tokens)
        assert [w.word for w in hyp.words] == ["a", "cat"]
        assert math.isfinite(hyp.score)


def test_lm_at_zero_weight_equals_the_lexicon_alone_on_phonemes(tmp_path, lexicon):
    v = phoneme_vocab()
    rng = np.random.default_rng(5)
    arpa = write_arpa(tmp_path / "lm.arpa", {"to": 0.3, "two": 0.01, "dog": 0.2, "cat": 0.2,
                                             "the": 0.2, "a": 0.1})
    emissions = []
    for _ in range(20):
        words = rng.choice(["ð ə", "ð i", "k æ t", "d ɔ g", "t u", "ə"], rng.integers(1, 4))
        x = say(v, " | ".join(words), peak=0.8)
        emissions.append(log_softmax(x + rng.normal(size=x.shape)))
    alone = create_decoder("beam", v, lexicon_path=lexicon, beam_width=16)
    zero = create_decoder("beam", v, lexicon_path=lexicon, beam_width=16, lm_path=str(arpa),
                          alpha=0.0, beta=0.0)
    for a, b in zip(alone.decode_many(emissions), zero.decode_many(emissions), strict=True):
        assert a.text == b.text
        assert a.score == pytest.approx(b.score, abs=1e-6)


@pytest.mark.parametrize("backend", BEAM_BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(num_frames=st.integers(0, 40), sharpness=st.sampled_from([0.0, 2.0, 8.0]),
       mode=st.sampled_from(["soft", "hard"]), seed=st.integers(0, 2**31 - 1))
def test_contract_on_phonemes_through_a_lexicon(lexicon, backend, num_frames, sharpness, mode,
                                                seed):
    v = phoneme_vocab()
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(num_frames, v.size))
    logits[np.arange(num_frames), rng.integers(0, v.size, num_frames)] += sharpness
    x = log_softmax(logits) if num_frames else np.zeros((0, v.size), np.float32)
    hyp = create_decoder("beam", v, lexicon_path=lexicon, lexicon_mode=mode, nbest=3,
                         beam_width=8, **BEAM_BACKENDS[backend]).decode(x)
    assert hyp.text == " ".join(w.word for w in hyp.words) == " ".join(hyp.text.split())
    assert all(0 <= t < v.size and t != v.blank and t not in v.unused for t in hyp.tokens)
    known = {"the", "cat", "dog", "to", "two", "a"}
    if mode == "hard":
        assert set(hyp.text.split()) <= known
    assert math.isfinite(hyp.score)
    end = 0
    for w in hyp.words:
        assert end <= w.start_frame < w.end_frame <= num_frames
        end = w.end_frame
    for alt in hyp.nbest:
        assert alt.text == " ".join(w.word for w in alt.words)
