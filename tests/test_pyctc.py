"""The pyctcdecode adapter: vocabulary layouts, unused specials, LM casing, unigrams, hotwords,
n-best, LM sharing. Each test that decodes skips with the reason where pyctcdecode is missing
(the numpy-2 environment); the options are checked everywhere."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import needs_pyctcdecode, require_shared
from decoding_fixtures import frames, quartznet_vocab, spell, write_arpa

from ctclab.decoders import Vocabulary, create_decoder
from ctclab.decoders.pyctc import PyctcdecodeDecoder, PyctcdecodeOptions
from ctclab.lm.loaded import LoadedLM, load_lm, load_word_list

LM_WORDS = {"hello": 0.3, "world": 0.3, "word": 0.001, "cat": 0.05}


@pytest.fixture
def tiny_arpa(tmp_path):
    return write_arpa(tmp_path / "tiny.arpa", LM_WORDS, {("hello", "world"): 0.6})


def hello_wor_l_d(vocab: Vocabulary) -> np.ndarray:
    """'HELLO WORD' acoustically, with a weak L that an LM preferring 'world' can restore."""
    spec = ["_", "H", "_", "E", "_", "L", "_", "L", "_", "O", "_", "|", "_", "W", "_", "O", "_",
            "R", "_", {"L": 0.4, "_": 0.58}, "_", "D", "_"]
    return frames(vocab, spec)


@needs_pyctcdecode
def test_wav2vec2_layout_maps_blank_delimiter_and_drops_specials(wav2vec2_vocab):
    v = wav2vec2_vocab
    dec = create_decoder("pyctcdecode", v, frame_shift_s=0.02)
    labels = dec.pyctc_labels
    assert labels[0] == "" and " " in labels and "|" not in labels
    assert not {"<s>", "</s>", "<unk>"} & set(labels) and len(labels) == v.size - 3
    hyp = dec.decode(spell(v, "HI THERE"))
    assert hyp.text == "HI THERE"
    assert hyp.tokens == tuple(v.encode_text("HI THERE"))
    assert [w.word for w in hyp.words] == ["HI", "THERE"]
    # spell(): blank, H, blank, I, blank, |, ... so HI covers frames 1..4 (end exclusive)
    assert (hyp.words[0].start_frame, hyp.words[0].end_frame) == (1, 4)
    assert hyp.words[1].start_s == pytest.approx(7 * 0.02)
    assert hyp.acoustic_score < 0 and hyp.score == pytest.approx(hyp.acoustic_score)


@needs_pyctcdecode
def test_unused_specials_are_never_emitted(wav2vec2_vocab):
    v = wav2vec2_vocab
    # <unk> and <s> dominate whole frames: a decoder that kept their columns would emit them.
    spec = ["_", "H", {"<unk>": 0.9}, {"<s>": 0.95}, "I", {"</s>": 0.9}, "_"]
    hyp = create_decoder("pyctcdecode", v, nbest=4, beam_width=8).decode(frames(v, spec))
    assert hyp.text == "HI"
    for alt in hyp.nbest:
        assert not set(alt.tokens) & v.unused
        assert "<" not in alt.text


@needs_pyctcdecode
def test_blank_last_lowercase_layout():
    v = quartznet_vocab()
    hyp = create_decoder("pyctcdecode", v).decode(spell(v, "hello world it's"))
    assert hyp.text == "hello world it's"
    assert hyp.tokens == tuple(v.encode_text("hello world it's"))
    assert v.blank not in hyp.tokens


@needs_pyctcdecode
def test_lm_casing_is_mapped_and_lm_flips_the_answer(wav2vec2_vocab, tiny_arpa):
    v = wav2vec2_vocab                      # upper-case labels, lower-case LM
    x = hello_wor_l_d(v)
    assert create_decoder("pyctcdecode", v).decode(x).text == "HELLO WORD"
    dec = create_decoder("pyctcdecode", v, lm_path=str(tiny_arpa), alpha=1.0, beta=0.0)
    assert "h" in dec.pyctc_labels and "H" not in dec.pyctc_labels   # labels in the LM's casing
    hyp = dec.decode(x)
    assert hyp.text == "HELLO WORLD"
    assert [w.word for w in hyp.words] == ["HELLO", "WORLD"]
    assert hyp.lm_score == pytest.approx(hyp.score - hyp.acoustic_score)
    assert hyp.lm_score < 0                 # ln P(hello world </s>) with alpha 1, beta 0


@needs_pyctcdecode
def test_all_oov_lm_is_reported(wav2vec2_vocab, tmp_path):
    arpa = write_arpa(tmp_path / "digits.arpa", {"123": 0.5, "456": 0.4})
    with pytest.raises(ValueError, match="(?i)oov|match|spell"):
        create_decoder("pyctcdecode", wav2vec2_vocab, lm_path=str(arpa))


@needs_pyctcdecode
def test_binary_lm_without_word_list_gets_its_casing_probed(wav2vec2_vocab, tmp_path):
    from ctclab.lm.build import build_binary

    # a KenLM binary keeps no word list: the lower-case LM's casing must still be found (probe
    # words), not every upper-case word silently scored as <unk>
    arpa = write_arpa(tmp_path / "tiny.arpa", {**LM_WORDS, "the": 0.1}, {("hello", "world"): 0.6})
    binary = build_binary(arpa, tmp_path / "tiny.binary")
    with pytest.warns(UserWarning, match="no word list.*--unigrams FILE"):
        dec = create_decoder("pyctcdecode", wav2vec2_vocab, lm_path=str(binary), alpha=1.0,
                             beta=0.0)
    assert dec.decode(hello_wor_l_d(wav2vec2_vocab)).text == "HELLO WORLD"
    unknown = write_arpa(tmp_path / "digits.arpa", {"123": 0.5, "456": 0.4})
    with pytest.raises(ValueError, match="unigrams_path"):
        create_decoder("pyctcdecode", wav2vec2_vocab,
                       lm_path=str(build_binary(unknown, tmp_path / "digits.binary")))


@needs_pyctcdecode
def test_unigrams_from_arpa_gz_and_lexicon(tiny_arpa, tmp_path, wav2vec2_vocab, monkeypatch):
    monkeypatch.setenv("CTCLAB_CACHE_DIR", str(tmp_path / "cache"))  # the .gz is decompressed there
    assert sorted(load_lm(tiny_arpa).unigrams) == sorted(LM_WORDS)
    gz = tmp_path / "tiny.arpa.gz"
    gz.write_bytes(gzip.compress(tiny_arpa.read_bytes()))
    assert sorted(load_lm(gz).unigrams) == sorted(LM_WORDS)
    renamed = tmp_path / "tiny.lm"   # an ARPA is known by its content, not by its name
    renamed.write_bytes(tiny_arpa.read_bytes())
    assert sorted(load_lm(renamed).unigrams) == sorted(LM_WORDS)
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("hello HH AH L OW\nword W ER D\ncat K AE T\n", encoding="utf-8")
    assert load_lm(tiny_arpa, str(lexicon)).unigrams == ["hello", "word", "cat"]
    # Without "world" among the known words pyctcdecode charges it the OOV offset: no flip.
    dec = create_decoder("pyctcdecode", wav2vec2_vocab, lm_path=str(gz), alpha=1.0, beta=0.0,
                         unigrams_path=str(lexicon))
    assert dec.decode(hello_wor_l_d(wav2vec2_vocab)).text == "HELLO WORD"
    assert dec.lm.path.parent == tmp_path / "cache" / "lm" and dec.lm.path.suffix == ".arpa"
    # an edited word list is read again, and pyctcdecode's shared LM wrapper rebuilt with it
    lexicon.write_text("hello HH AH L OW\nworld W ER L D\n", encoding="utf-8")
    dec = create_decoder("pyctcdecode", wav2vec2_vocab, lm_path=str(gz), alpha=1.0, beta=0.0,
                         unigrams_path=str(lexicon))
    assert dec.decode(hello_wor_l_d(wav2vec2_vocab)).text == "HELLO WORLD"


@needs_pyctcdecode
def test_hotword_flips_the_answer(wav2vec2_vocab):
    v = wav2vec2_vocab
    x = frames(v, ["_", {"C": 0.55, "K": 0.43}, "_", "A", "_", "T", "_"])
    assert create_decoder("pyctcdecode", v).decode(x).text == "CAT"
    # hotwords may be written in either casing; they are spelled in the labels' casing
    assert create_decoder("pyctcdecode", v, hotwords=("kat",)).decode(x).text == "KAT"
    assert create_decoder("pyctcdecode", v, hotwords=("kat",), hotword_weight=0.0
                          ).decode(x).text == "CAT"
    with pytest.raises(ValueError, match="hotword"):
        create_decoder("pyctcdecode", v, hotwords=("k4t",))


@needs_pyctcdecode
def test_nbest_lists_distinct_alternatives_best_first(wav2vec2_vocab):
    v = wav2vec2_vocab
    x = frames(v, ["_", {"C": 0.5, "K": 0.4}, "_", {"A": 0.6, "O": 0.35}, "_", "T", "_"])
    hyp = create_decoder("pyctcdecode", v, nbest=3).decode(x)
    texts = [h.text for h in hyp.nbest]
    assert texts[:3] == ["CAT", "KAT", "COT"] and len(set(texts)) == 3
    scores = [h.score for h in hyp.nbest]
    assert scores == sorted(scores, reverse=True) and hyp.nbest[0].text == hyp.text
    assert create_decoder("pyctcdecode", v).decode(x).nbest == ()


@pytest.mark.parametrize("options, error", [
    ({"beam_width": 0}, ValueError),
    ({"beam_width": 4, "nbest": 5}, ValueError),
    ({"nbest": True}, ValueError),
    ({"token_min_logp": 1.0}, ValueError),
    ({"beam_prune_logp": float("nan")}, ValueError),
    ({"alpha": -1.0}, ValueError),
    ({"unigrams_path": "words.txt"}, ValueError),
    ({"hotwords": "ravi"}, TypeError),
    ({"hotwords": ("",)}, ValueError),
])
def test_bad_options_are_rejected(options, error):
    with pytest.raises(error):
        PyctcdecodeOptions(**options)


@needs_pyctcdecode
def test_missing_lm_file_names_the_path(wav2vec2_vocab, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.arpa"):
        create_decoder("pyctcdecode", wav2vec2_vocab, lm_path=str(tmp_path / "nope.arpa"))


@needs_pyctcdecode
def test_parallel_decoding_with_lm_matches_serial(wav2vec2_vocab, tiny_arpa):
    v = wav2vec2_vocab
    dec = create_decoder("pyctcdecode", v, lm_path=str(tiny_arpa), alpha=1.0)
    emissions = [hello_wor_l_d(v), spell(v, "CAT"), frames(v, ["_"] * 5)] * 3
    serial = dec.decode_many(emissions, jobs=1)
    assert [h.text for h in dec.decode_many(emissions, jobs=2)] == [h.text for h in serial]
    assert serial[0].text == "HELLO WORLD" and serial[2].text == ""


@needs_pyctcdecode
def test_real_quartznet_emissions_match_greedy_without_lm():
    root = require_shared("emissions", "quartznet15x5-base-en")
    meta = json.loads((root / "labels.json").read_text())
    v = Vocabulary.from_labels(meta["labels"], blank=meta["blank_index"],
                               delimiter=meta["word_delimiter"])
    rows = [line.split("\t") for line in (root / "manifest.tsv").read_text().splitlines()[1:]]
    emissions = [np.load(root / split / f"{utt}.npy") for split, utt, *_ in rows[:6]]
    greedy = create_decoder("greedy", v).decode_many(emissions)
    beam = create_decoder("pyctcdecode", v).decode_many(emissions)
    assert [h.text for h in beam] == [h.text for h in greedy]
    for hyp, (_, _, frames_n, *_rest) in zip(beam, rows[:6], strict=True):
        assert all(0 <= w.start_frame < w.end_frame <= int(frames_n) for w in hyp.words)


@needs_pyctcdecode
def test_lm_is_loaded_once_and_shared(wav2vec2_vocab, tiny_arpa):
    from pyctcdecode import BeamSearchDecoderCTC

    from ctclab.lm.language_model import KenLMLanguageModel

    v, x = wav2vec2_vocab, hello_wor_l_d(wav2vec2_vocab)
    a = create_decoder("pyctcdecode", v, lm_path=str(tiny_arpa), alpha=1.0, beta=0.0)
    b = create_decoder("pyctcdecode", v, lm_path=str(tiny_arpa), alpha=0.0, beta=0.0)
    lm_a, lm_b = a._decoder._language_model, b._decoder._language_model
    assert lm_a._kenlm_model is lm_b._kenlm_model and lm_a._char_trie is lm_b._char_trie
    assert (lm_a.alpha, lm_b.alpha) == (1.0, 0.0)          # weights are per decoder
    assert (a.decode(x).text, b.decode(x).text) == ("HELLO WORLD", "HELLO WORD")
    # an LM loaded by the caller is used as given, not reloaded
    shared = KenLMLanguageModel(tiny_arpa)
    c = PyctcdecodeDecoder(v, PyctcdecodeOptions(alpha=1.0, beta=0.0),
                           lm=LoadedLM.of(shared, load_word_list(tiny_arpa)))
    assert c._decoder._language_model._kenlm_model is shared.kenlm_model
    assert c.decode(x).text == "HELLO WORLD"
    # pyctcdecode's class-level LM container does not keep dropped decoders' LMs
    before = len(BeamSearchDecoderCTC.model_container)
    del a, b, c
    assert len(BeamSearchDecoderCTC.model_container) == before - 3
