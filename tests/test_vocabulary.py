"""Vocabulary layouts (wav2vec2, blank-last lower case) and their validation."""
import numpy as np
import pytest
from decoding_fixtures import QUARTZNET_LABELS

from ctclab.decoders import Vocabulary


def test_wav2vec2_layout():
    vocab = Vocabulary.wav2vec2_english()
    assert vocab.size == 32
    assert vocab.labels[vocab.blank] == "<pad>" and vocab.blank == 0
    assert vocab.labels[vocab.delimiter] == "|"
    assert {vocab.labels[i] for i in vocab.unused} == {"<s>", "</s>", "<unk>"}
    assert vocab.case == "upper"
    assert 0 not in vocab.emitting_ids and 1 not in vocab.emitting_ids
    assert len(vocab.emitting_ids) == 32 - 1 - 3


def test_blank_last_lower_case_layout():
    vocab = Vocabulary.from_labels(QUARTZNET_LABELS, blank=-1)
    assert vocab.blank == 28 and vocab.delimiter == 0 and vocab.case == "lower"
    assert vocab.decode_tokens([8, 9, 0, 0, 9]) == "hi i"


def test_encode_decode_round_trip(wav2vec2_vocab):
    ids = wav2vec2_vocab.encode_text("HELLO WORLD'S")
    assert wav2vec2_vocab.decode_tokens(ids) == "HELLO WORLD'S"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        wav2vec2_vocab.encode_text("hello")


def test_dict_round_trip(wav2vec2_vocab):
    assert Vocabulary.from_dict(wav2vec2_vocab.to_dict()) == wav2vec2_vocab


@pytest.mark.parametrize("data", [{"labels": ["a", "b"]}, ["a", "b"], {"labels": 3, "blank": 0}])
def test_malformed_dict_is_a_value_error(data):
    with pytest.raises(ValueError, match="vocabulary dict"):
        Vocabulary.from_dict(data)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": ("a",), "blank": 0}, "at least 2"),
        ({"labels": ("a", "b"), "blank": 5}, "blank index"),
        ({"labels": ("a", "b"), "blank": 0, "delimiter": 0}, "delimiter cannot be the blank"),
        ({"labels": ("a", "a", "b"), "blank": 2}, "duplicate"),
    ],
)
def test_invalid_vocabularies(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Vocabulary(**kwargs)


def test_unknown_blank_must_be_explicit():
    with pytest.raises(ValueError, match="blank=<index>"):
        Vocabulary.from_labels(["a", "b", "c"])
    assert Vocabulary.from_labels(["a", "b", "c"], blank=2).blank == 2


def test_emitting_ids_are_int_array(wav2vec2_vocab):
    assert wav2vec2_vocab.emitting_ids.dtype == np.int64
