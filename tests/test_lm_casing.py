"""lm.casing: acoustic word -> LM word mapping, all-OOV detection, OOV rate."""
from __future__ import annotations

import string

import numpy as np
import pytest
from conftest import require_shared

from ctclab.decoders import Vocabulary
from ctclab.lm.casing import OovReport, WordMapper, make_word_mapper, oov_rate, word_casing

LOWER_LM = ["<s>", "</s>", "<unk>", "hello", "world", "don't", "the", "cat"]


@pytest.fixture
def lower_vocab():
    """NeMo/QuartzNet layout: space delimiter first, a-z, apostrophe, blank last."""
    return Vocabulary.from_labels([" ", *string.ascii_lowercase, "'", "<blank>"], blank="<blank>")


def test_upper_labels_with_lower_case_lm_map_to_lower(wav2vec2_vocab):
    mapper = make_word_mapper(wav2vec2_vocab, LOWER_LM)
    assert mapper == WordMapper("lower") and not mapper.identity
    assert mapper("DON'T") == "don't"


def test_matching_casings_keep_identity(wav2vec2_vocab, lower_vocab):
    assert make_word_mapper(lower_vocab, LOWER_LM).identity
    upper_lm = [w.upper() if not w.startswith("<") else w for w in LOWER_LM]
    assert make_word_mapper(wav2vec2_vocab, upper_lm).identity


def test_lower_labels_with_upper_case_lm_map_to_upper(lower_vocab):
    mapper = make_word_mapper(lower_vocab, ["HELLO", "WORLD", "<s>"])
    assert mapper.mode == "upper" and mapper("hello") == "HELLO"


def test_a_few_proper_nouns_do_not_confuse_detection(wav2vec2_vocab):
    words = [*LOWER_LM, "John", "Paris"]
    assert word_casing(words) == "mixed"  # 2 of 7 words: too many to ignore
    many = LOWER_LM + [c * 3 for c in string.ascii_lowercase] * 4 + ["John"]
    assert word_casing(many) == "lower"
    assert make_word_mapper(wav2vec2_vocab, many).mode == "lower"


def test_sample_words_break_ties(wav2vec2_vocab):
    # Labels with both cases: every lower-case LM word is spellable with or without lowering.
    mixed = Vocabulary.from_labels(["<pad>", "|", *string.ascii_uppercase, *string.ascii_lowercase])
    assert make_word_mapper(mixed, LOWER_LM).identity
    assert make_word_mapper(mixed, LOWER_LM, sample_words=["HELLO", "World"]).mode == "lower"


def test_lm_that_can_never_match_stops_with_clear_error(wav2vec2_vocab):
    with pytest.raises(ValueError) as info:
        make_word_mapper(wav2vec2_vocab, ["καλημέρα", "κόσμε", "123"])
    message = str(info.value)
    assert "upper case" in message and "lm/build.py" in message and "καλημέρα" in message


def test_invalid_mode_lists_valid_ones():
    with pytest.raises(ValueError, match="identity"):
        WordMapper("title")


def test_oov_rate_counts_running_words(wav2vec2_vocab):
    report = oov_rate(["HELLO WORLD", "HELLO ZORG ZORG", ""], {"hello", "world"},
                      WordMapper("lower"))
    assert report == OovReport(words=5, oov=2, rate=0.4, top_oov=(("ZORG", 2),))
    identity = oov_rate(["HELLO WORLD"], {"hello", "world"}, WordMapper())
    assert identity.rate == 1.0  # the casing mismatch a wrong mapping causes
    assert oov_rate([], {"x"}, WordMapper()).rate == 0.0


def test_real_lm_against_real_transcripts(wav2vec2_vocab):
    from ctclab.lm.unigrams import read_unigrams

    lm_file = require_shared("lm", "en-us-70k-3gram.arpa.gz")
    corpus = require_shared("librispeech-mini", "LibriSpeech")
    words = read_unigrams(lm_file)
    mapper = make_word_mapper(wav2vec2_vocab, words)
    assert mapper.mode == "lower"
    texts = [line.split(" ", 1)[1] for trans in sorted(corpus.rglob("*.trans.txt"))
             for line in trans.read_text().splitlines() if " " in line]
    report = oov_rate(texts, set(words), mapper)
    assert report.words > 400
    # A 70k general-English vocabulary covers read books well but not every name in them.
    assert 0.0 < report.rate < 0.05
    assert oov_rate(texts, set(words), WordMapper()).rate == 1.0


def test_oov_command_on_a_text_file_and_a_cache(tmp_path, lower_vocab, capsys):
    from ctclab.emission.cache import CacheMeta, CacheWriter
    from ctclab.eval.oov import main

    lm_words = tmp_path / "words.txt"
    lm_words.write_text("hello\nworld\ndon't\n")
    refs = tmp_path / "refs.txt"
    refs.write_text("HELLO, WORLD!\nHELLO ZORG 42\n")  # default vocabulary: upper-case English
    assert main(["--lm", str(lm_words), "--texts", str(refs)]) == 0
    out = capsys.readouterr().out
    assert "'lower'" in out and "1 word(s) the labels cannot spell" in out  # 42
    assert out.splitlines()[2].split() == ["4", "1", "25.00"] and "ZORG (1)" in out
    # A cache with lower-case labels and upper-case references (as the QuartzNet import has).
    with CacheWriter(tmp_path / "cache", CacheMeta(
            model="m", revision="r", source="s", split="x", vocabulary=lower_vocab.to_dict(),
            frame_shift_s=0.02, dtype="float32")) as writer:
        writer.add_batch([("u", "DON'T HELLO QUUX", 1.0,
                           np.zeros((1, lower_vocab.size), np.float32))])
        writer.finish()
    assert main(["--lm", str(lm_words), "--texts", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "'identity'" in out and out.splitlines()[2].split() == ["3", "1", "33.33"]
    assert main(["--lm", str(lm_words), "--texts", str(tmp_path / "nope")]) == 2
    assert "--texts" in capsys.readouterr().err
