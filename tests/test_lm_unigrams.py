"""lm.unigrams and lm.arpa: unigram lists from ARPA / word lists / lexicons, ARPA validation."""
from __future__ import annotations

import gzip
import time

import pytest
from conftest import require_shared
from decoding_fixtures import arpa_text

from ctclab.lm.arpa import ArpaFormatError, read_arpa_header, validate_arpa
from ctclab.lm.unigrams import read_unigrams, write_unigrams

# Line numbers matter to the tests below: line 9 is "hello", line 14 "hello world".
SMALL_ARPA = arpa_text({"<unk>": (-1.0, 0), "<s>": (0, -0.3), "</s>": (-0.5, 0),
                        "hello": (-0.6, -0.2), "world": (-0.7, -0.1)},
                       {"<s> hello": -0.2, "hello world": -0.3, "world </s>": -0.1})


@pytest.fixture
def arpa(tmp_path):
    path = tmp_path / "small.arpa"
    path.write_text(SMALL_ARPA)
    return path


def test_arpa_unigrams_in_file_order_without_sentence_markers(arpa):
    assert read_unigrams(arpa) == ["hello", "world"]


def test_gzip_arpa_detected_by_content(tmp_path):
    path = tmp_path / "lm.arpa.gz"
    path.write_bytes(gzip.compress(SMALL_ARPA.encode()))
    assert read_unigrams(path) == ["hello", "world"]


def test_reading_unigrams_stops_after_the_unigram_section(tmp_path):
    # Garbage after the 1-grams would fail a full parse: reading unigrams must not touch it.
    broken_tail = SMALL_ARPA.split("\\2-grams:")[0] + "\\2-grams:\nnot an entry at all\n"
    path = tmp_path / "tail.arpa"
    path.write_text(broken_tail)
    assert read_unigrams(path) == ["hello", "world"]
    with pytest.raises(ArpaFormatError, match="tail.arpa"):
        validate_arpa(path)


def test_word_list_and_lexicon_take_first_column_deduplicated(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("HELLO\n\nWORLD\nHELLO\n<unk>\n")
    assert read_unigrams(words) == ["HELLO", "WORLD"]
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("READ\tR EH D\nREAD\tR IY D\nA  AH0\nDON'T D OW1 N T\n")
    assert read_unigrams(lexicon) == ["READ", "A", "DON'T"]


def test_write_then_read_round_trip_and_atomic_failure(tmp_path):
    out = tmp_path / "sub" / "unigrams.txt"
    write_unigrams(["hello", "don't", "world"], out)
    assert out.read_text() == "hello\ndon't\nworld\n"
    assert read_unigrams(out) == ["hello", "don't", "world"]
    with pytest.raises(ValueError, match="whitespace"):
        write_unigrams(["fine", "two words"], out)
    assert out.read_text() == "hello\ndon't\nworld\n"  # the earlier file survives
    assert [p.name for p in out.parent.iterdir()] == ["unigrams.txt"]


def test_missing_and_empty_sources_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.arpa"):
        read_unigrams(tmp_path / "nothere.arpa")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no words found"):
        read_unigrams(empty)


def test_header_counts_and_validation_of_a_good_file(arpa):
    assert read_arpa_header(arpa).counts == (5, 3)
    assert validate_arpa(arpa).order == 2


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.replace("ngram 1=5", "ngram 1=6"), "declares 6 1-grams but the section holds 5"),
    (lambda s: s.replace("-0.6\thello", "x.6\thello"), "line 9: non-numeric"),
    (lambda s: s.replace("-0.3\thello world", "-0.3\thello"), "line 14: a 2-gram entry"),
    (lambda s: s[: s.index("-0.3\thello world")], "truncated"),
    (lambda s: s.replace("\\data\\", "DATA"), "line 1: expected '\\data\\' to open"),
    (lambda s: s[:40], "truncated"),
])
def test_corrupt_or_truncated_arpa_names_file_and_problem(tmp_path, mutate, message):
    path = tmp_path / "bad.arpa"
    path.write_text(mutate(SMALL_ARPA))
    with pytest.raises(ArpaFormatError) as info:
        validate_arpa(path)
    assert "bad.arpa" in str(info.value) and message in str(info.value)
    assert "rebuild it" in str(info.value)


def test_truncated_unigram_section_fails_reading_unigrams(tmp_path):
    path = tmp_path / "cut.arpa"
    path.write_text(SMALL_ARPA[: SMALL_ARPA.index("-0.7\tworld")])
    with pytest.raises(ArpaFormatError, match="truncated"):
        read_unigrams(path)


def test_truncated_gzip_is_reported_not_raised_from_zlib(tmp_path):
    data = gzip.compress((SMALL_ARPA * 1).encode())
    path = tmp_path / "cut.arpa.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArpaFormatError, match="cut.arpa.gz"):
        read_unigrams(path)


def test_corrupt_gzip_data_is_reported_not_raised_from_zlib(tmp_path):
    data = bytearray(gzip.compress(SMALL_ARPA.encode()))
    data[30:60] = bytes(b ^ 0x55 for b in data[30:60])  # bad deflate data: zlib.error
    path = tmp_path / "bad.arpa.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad.arpa.gz"):
        read_unigrams(path)


def test_real_english_3gram_unigrams_stream_fast():
    path = require_shared("lm", "en-us-70k-3gram.arpa.gz")
    start = time.perf_counter()
    words = read_unigrams(path)
    elapsed = time.perf_counter() - start
    # README: 72,547 unigrams including <s> and </s>.
    assert len(words) == 72_545
    assert "the" in words and "<s>" not in words and "</s>" not in words
    assert all(w == w.lower() for w in words[:1000])
    # Streaming the first section of a 30 MB gzip: well under the time a full parse takes.
    assert elapsed < 20, f"reading unigrams took {elapsed:.1f}s: is it parsing the whole file?"
