"""Pronunciation lexicons (lm/lexicon.py): the format, several pronunciations, and bad input."""
from __future__ import annotations

import pytest
from decoding_fixtures import quartznet_vocab

from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders import create_decoder
from ctclab.lm.lexicon import read_lexicon

PHONEMES = ["<pad>", "<wb>", "k", "æ", "t", "ð", "ə", "i", "d", "ɔ", "g", "u", "<blank>"]


def phoneme_vocab() -> Vocabulary:
    return Vocabulary.from_labels(PHONEMES, blank="<blank>", delimiter="<wb>", unused=["<pad>"],
                                  units="phonemes")


def write(tmp_path, text: str, name: str = "lex.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_several_pronunciations_are_one_word(tmp_path):
    v = phoneme_vocab()
    lex = read_lexicon(write(tmp_path, "the\tð ə\nthe\tð i\ncat\tk æ t\n\n"), v)
    assert lex.words == ("the", "cat")
    assert lex.owners == (0, 0, 1) and lex.lines == (1, 2, 3)
    assert lex.spellings[1] == (v.label_to_id["ð"], v.label_to_id["i"])
    assert not lex.reads_as_words(v)


def test_letter_lexicon_with_flashlights_trailing_delimiter(tmp_path):
    v = quartznet_vocab()   # space delimiter: flashlight writes it '|'
    lex = read_lexicon(write(tmp_path, "cat\tc a t |\nhello\th e l l o |\n"), v)
    assert [v.decode_tokens(s) for s in lex.spellings] == ["cat", "hello"]
    assert lex.reads_as_words(v)


def test_unknown_token_names_word_token_and_line(tmp_path):
    path = write(tmp_path, "cat\tk æ t\ndog\td ɒ g\n")
    with pytest.raises(ValueError, match=r"line 2: word 'dog' uses token 'ɒ'.*skip") as err:
        read_lexicon(path, phoneme_vocab())
    assert str(path) in str(err.value)
    lex = read_lexicon(path, phoneme_vocab(), skip_unknown_tokens=True)
    assert lex.words == ("cat",) and lex.skipped == 1


@pytest.mark.parametrize("text, message", [
    ("cat k æ t\n", r"lex.tsv:1: no tab"),
    ("cat\t\n", "empty spelling"),
    ("\tk æ t\n", "empty word"),
    ("cat\tk æ t\ncat\tk æ t\n", r"lex.tsv:2: repeats line 1"),
    ("", "no usable line"),
    ("\n\n", "no usable line"),
    ("cat\tk <blank> t\n", "never emits"),
    ("cat\tk <pad> t\n", "never emits"),
    ("cat\tk <wb> t\n", "delimiter"),
    ("a cat\tk æ t\n", r"lex.tsv:1: no tab|whitespace"),
])
def test_malformed_lexicons_are_clear_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_lexicon(write(tmp_path, text), phoneme_vocab())


def test_all_lines_unknown_is_an_error_even_when_skipping(tmp_path):
    with pytest.raises(ValueError, match="no usable line.*2 lines use tokens"):
        read_lexicon(write(tmp_path, "x\tq\ny\tq q\n"), phoneme_vocab(), skip_unknown_tokens=True)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--lexicon"):
        read_lexicon(tmp_path / "nope.tsv", phoneme_vocab())


def test_letter_lexicon_given_to_a_word_piece_model(tmp_path):
    pieces = Vocabulary.from_labels(["<blank>", "▁the", "▁c", "at", "t", "h", "e", "▁"],
                                    blank=0)
    assert pieces.units == "word_pieces"
    with pytest.raises(ValueError, match="not spelled in word pieces.*--tokenizer"):
        read_lexicon(write(tmp_path, "the\tt h e\n"), pieces)
    lex = read_lexicon(write(tmp_path, "the\t▁the\ncat\t▁c at\n", "ok.tsv"), pieces)
    assert lex.reads_as_words(pieces)


def test_lexicon_without_any_word_of_the_lm(tmp_path):
    from decoding_fixtures import write_arpa

    arpa = write_arpa(tmp_path / "lm.arpa", {"hund": 0.5, "katze": 0.5})
    lexicon = write(tmp_path, "cat\tk æ t\nthe\tð ə\n")
    with pytest.raises(ValueError, match="none of its 2 words.*language model"):
        create_decoder("beam", phoneme_vocab(), lexicon_path=str(lexicon), lm_path=str(arpa))


def test_phonemes_without_a_lexicon_and_lexicon_mode_none_are_refused(tmp_path):
    with pytest.raises(ValueError, match="pronunciation lexicon"):
        create_decoder("beam", phoneme_vocab())
    lexicon = write(tmp_path, "cat\tk æ t\n")
    with pytest.raises(ValueError, match="lexicon_mode='none'"):
        create_decoder("beam", phoneme_vocab(), lexicon_path=str(lexicon), lexicon_mode="none")
