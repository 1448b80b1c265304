"""lm.loaded: the LM resolved and loaded once per process (per form: KenLM or arrays) into one
object that decoders share."""
from __future__ import annotations

import pytest
from conftest import decoder_params
from decoding_fixtures import write_arpa

from ctclab.decoders import Vocabulary, create_decoder
from ctclab.lm import loaded
from ctclab.lm.loaded import LoadedLM, load_lm

WORDS = {"hello": 0.3, "world": 0.2, "word": 0.1}


@pytest.fixture
def arpa(tmp_path):
    return write_arpa(tmp_path / "tiny.arpa", WORDS, {("hello", "world"): 0.6})


# A KenLM-form user besides beam_kenlm: pyctcdecode, or (where it is missing: its case skips with
# the reason) another beam on the KenLM backend.
@pytest.mark.parametrize("kenlm_user", decoder_params(["beam", "pyctcdecode"]))
def test_loaded_once_per_form_and_shared_by_every_decoder(arpa, monkeypatch, kenlm_user):
    made, arrays_made = [], []
    real, real_arrays = loaded.KenLMLanguageModel, loaded.load_array_lm
    monkeypatch.setattr(loaded, "KenLMLanguageModel",
                        lambda path, **k: made.append(path) or real(path, **k))
    monkeypatch.setattr(loaded, "load_array_lm",
                        lambda *a, **k: arrays_made.append(a) or real_arrays(*a, **k))
    loaded._LMS.clear()
    loaded._ARRAY_MODELS.clear()
    vocab = Vocabulary.wav2vec2_english()
    beam = create_decoder("beam", vocab, lm_path=str(arpa), alpha=1.0)   # the array form
    backend = {"lm_backend": "kenlm"} if kenlm_user == "beam" else {}
    pyctc = create_decoder(kenlm_user, vocab, lm_path=str(arpa), alpha=0.5, **backend)  # KenLM
    again = create_decoder("beam", vocab, lm_path=str(arpa), alpha=0.0)
    beam_kenlm = create_decoder("beam", vocab, lm_path=str(arpa), lm_backend="kenlm")
    assert len(made) == 1 and len(arrays_made) == 1
    assert beam.lm is again.lm is load_lm(arpa, backend="auto")
    assert pyctc.lm is beam_kenlm.lm is load_lm(arpa)
    assert sorted(beam.lm.unigrams) == sorted(pyctc.lm.unigrams) == sorted(WORDS)
    assert beam.lm.path == pyctc.lm.path == arpa
    assert beam.lm.word_mapper(vocab).mode == "lower"          # upper-case labels, lower-case LM


def test_another_word_list_keeps_the_loaded_model(arpa, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("hello\n", encoding="utf-8")
    plain, listed = load_lm(arpa), load_lm(arpa, words)
    assert listed is not plain and listed.model is plain.model
    assert listed.unigrams == ["hello"]
    words.write_text("hello\nworld\n", encoding="utf-8")    # an edited list is read again
    assert load_lm(arpa, words).unigrams == ["hello", "world"]


def test_a_loaded_lm_and_lm_path_together_are_refused(arpa):
    lm = load_lm(arpa)
    with pytest.raises(ValueError, match="once"):
        from ctclab.decoders.beam import BeamOptions, BeamSearchDecoder

        BeamSearchDecoder(Vocabulary.wav2vec2_english(), BeamOptions(lm_path=str(arpa)), lm=lm)


def test_derived_structures_are_built_once_per_lm(arpa):
    lm = load_lm(arpa)
    calls = []
    assert lm.derived("x", lambda: calls.append(1) or "built") == "built"
    assert lm.derived("x", lambda: calls.append(1) or "again") == "built" and calls == [1]
    assert LoadedLM.of(lm.model).derived("x", lambda: "other") == "other"   # per LM object


def test_missing_files_are_named(tmp_path, arpa):
    with pytest.raises(FileNotFoundError, match="nope.arpa"):
        load_lm(tmp_path / "nope.arpa")
    with pytest.raises(FileNotFoundError, match="nowords.txt"):
        load_lm(arpa, tmp_path / "nowords.txt")
