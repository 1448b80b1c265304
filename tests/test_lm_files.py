"""lm.files (resolve_lm_path, gzip cache) and lm.fetch (download, resume, checksum, offline).

No network: downloads use file:// URLs or a fake opener. The real English 3-gram is loaded once
per module (it takes seconds in KenLM) from the shared decompression cache.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import urllib.error

import numpy as np
import pytest
from conftest import require_shared
from decoding_fixtures import arpa_text

from ctclab.lm import fetch
from ctclab.lm import files as lm_files
from ctclab.lm.files import decompressed_name, resolve_lm_path

ARPA_TEXT = arpa_text({"<unk>": (-1.0, 0), "<s>": (0, 0), "</s>": (-0.5, 0)})


@pytest.fixture
def gz_lm(tmp_path):
    path = tmp_path / "src" / "tiny.arpa.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(ARPA_TEXT.encode()))
    return path


def test_plain_files_are_returned_as_is(tmp_path):
    arpa = tmp_path / "a.arpa"
    arpa.write_text(ARPA_TEXT)
    assert resolve_lm_path(arpa, cache_root=tmp_path / "cache") == arpa
    assert resolve_lm_path(str(arpa)) == arpa
    assert not (tmp_path / "cache").exists()


def test_gzip_is_decompressed_once_into_the_cache(tmp_path, gz_lm):
    cache = tmp_path / "cache"
    first = resolve_lm_path(gz_lm, cache_root=cache)
    assert first.parent == cache / "lm" and first.name.endswith(".arpa")
    assert first.read_text() == ARPA_TEXT
    stamp = first.stat().st_mtime_ns
    assert resolve_lm_path(gz_lm, cache_root=cache) == first
    assert first.stat().st_mtime_ns == stamp  # reused, not rewritten
    assert sorted(p.name for p in (cache / "lm").iterdir()) == [first.name]  # no temp leftovers
    # A changed source (new mtime/size) gets a new cache entry.
    gz_lm.write_bytes(gzip.compress((ARPA_TEXT + "\n").encode()))
    os.utime(gz_lm, ns=(stamp + 10**9, stamp + 10**9))
    assert resolve_lm_path(gz_lm, cache_root=cache) != first


def test_cache_root_defaults_to_env(tmp_path, gz_lm, monkeypatch):
    monkeypatch.setenv("CTCLAB_CACHE_DIR", str(tmp_path / "envcache"))
    assert resolve_lm_path(gz_lm).parent == tmp_path / "envcache" / "lm"


def test_cache_key_depends_on_source_identity(tmp_path, gz_lm):
    other = tmp_path / "other" / gz_lm.name
    other.parent.mkdir()
    other.write_bytes(gz_lm.read_bytes())
    assert decompressed_name(gz_lm) != decompressed_name(other)


@pytest.mark.parametrize("damage", ["truncated", "flipped bits"])
def test_damaged_gzip_is_a_clear_error_and_leaves_no_file(tmp_path, gz_lm, damage):
    data = bytearray(gzip.compress((ARPA_TEXT * 200).encode()))
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # corrupt deflate data: zlib.error, not an OSError
        data[30:60] = bytes(b ^ 0x55 for b in data[30:60])
    gz_lm.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="damaged or truncated"):
        resolve_lm_path(gz_lm, cache_root=cache)
    assert list((cache / "lm").iterdir()) == []


def test_kenlm_model_refuses_gzip_by_content(tmp_path, gz_lm):
    from ctclab.lm.language_model import KenLMLanguageModel

    disguised = tmp_path / "lm.arpa"  # gzip data under a plain name
    disguised.write_bytes(gz_lm.read_bytes())
    with pytest.raises(ValueError, match="cannot read gzip.*load_language_model"):
        KenLMLanguageModel(disguised)


@pytest.mark.parametrize("name", ["random.binary", "random.arpa"])
def test_kenlm_model_of_random_bytes_names_the_file(tmp_path, name):
    from ctclab.lm.language_model import KenLMLanguageModel

    path = tmp_path / name
    # KenLM quotes the first bad line in its error, which is then not UTF-8 (UnicodeDecodeError).
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(ValueError, match=f"{name}: KenLM could not load it.*corrupt"):
        KenLMLanguageModel(path)


def test_unknown_name_lists_known_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="librispeech-4gram"):
        resolve_lm_path("librispeech-5gram", cache_root=tmp_path)


def test_known_name_is_fetched_then_resolved(tmp_path, gz_lm, monkeypatch):
    calls = []

    def fake_fetch(name, dest_dir, progress):
        calls.append((name, dest_dir, progress))
        return gz_lm

    monkeypatch.setattr(lm_files, "fetch_resource", fake_fetch)
    resolved = resolve_lm_path("librispeech-4gram", cache_root=tmp_path / "c", progress=False)
    assert calls == [("librispeech-4gram", tmp_path / "c" / "lm", False)]
    assert resolved.read_text() == ARPA_TEXT


# ----------------------------------------------------------------------------- fetch
def test_download_from_file_url_records_and_verifies_checksum(tmp_path):
    payload = os.urandom(5000)
    src = tmp_path / "server" / "4-gram.arpa.gz"
    src.parent.mkdir()
    src.write_bytes(payload)
    dest_dir = tmp_path / "dest"
    path = fetch.fetch_resource("librispeech-4gram", dest_dir,
                                base_urls=(src.parent.as_uri() + "/",), min_fraction=0)
    assert path.read_bytes() == payload
    digest = hashlib.sha256(payload).hexdigest()
    assert (dest_dir / "4-gram.arpa.gz.sha256").read_text().split()[0] == digest
    assert sorted(p.name for p in dest_dir.iterdir()) == ["4-gram.arpa.gz", "4-gram.arpa.gz.sha256"]
    # Second call: verified against the recorded digest, no download (the server is gone).
    src.unlink()
    assert fetch.fetch_resource("librispeech-4gram", dest_dir, base_urls=("file:///nowhere/",),
                                min_fraction=0) == path
    path.write_bytes(payload[:-1] + b"x")  # corrupted after download
    with pytest.raises(fetch.ChecksumError, match="does not match the recorded"):
        fetch.fetch_resource("librispeech-4gram", dest_dir, min_fraction=0)


def test_pinned_checksum_mismatch_discards_the_download(tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc" * 100)
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(fetch.ChecksumError, match="pinned"):
        fetch.download(src.as_uri(), dest, sha256="0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    good = hashlib.sha256(b"abc" * 100).hexdigest()
    assert fetch.download(src.as_uri(), dest, sha256=good).read_bytes() == b"abc" * 100


def test_an_error_page_from_one_mirror_falls_back_to_the_next(tmp_path):
    payload = os.urandom(5000)
    for mirror, data in (("a", b"<html>busy</html>"), ("b", payload)):
        (tmp_path / mirror).mkdir()
        (tmp_path / mirror / "librispeech-lexicon.txt").write_bytes(data)
    bases = tuple((tmp_path / m).as_uri() + "/" for m in "ab")
    path = fetch.fetch_resource("librispeech-lexicon", tmp_path / "dest", base_urls=bases,
                                min_fraction=1000 / fetch.KNOWN_RESOURCES["librispeech-lexicon"]
                                .nominal_bytes)
    assert path.read_bytes() == payload


def test_short_download_is_rejected(tmp_path):
    src = tmp_path / "page.html"
    src.write_text("<html>not found</html>")
    with pytest.raises(ValueError, match="error page"):
        fetch.download(src.as_uri(), tmp_path / "x.arpa.gz", min_bytes=10_000)


class _Response(io.BytesIO):
    def __init__(self, data: bytes, status: int):
        super().__init__(data)
        self.status = status
        self.headers = {"Content-Length": str(len(data))}


def _range_server(full: bytes, honour_range: bool, seen: list):
    def opener(request, timeout):
        header = request.get_header("Range")
        seen.append(header)
        if header and honour_range:
            start = int(header.split("=")[1].rstrip("-"))
            return _Response(full[start:], 206)
        return _Response(full, 200)
    return opener


@pytest.mark.parametrize("honour_range", [True, False])
def test_interrupted_download_resumes_with_http_range(tmp_path, honour_range):
    full = os.urandom(10_000)
    dest = tmp_path / "lexicon.txt"
    (tmp_path / "lexicon.txt.part").write_bytes(full[:4000])
    seen: list = []
    fetch.download("https://example.invalid/lexicon.txt", dest,
                   opener=_range_server(full, honour_range, seen))
    assert seen == ["bytes=4000-"]
    assert dest.read_bytes() == full
    assert not (tmp_path / "lexicon.txt.part").exists()


def test_offline_gives_a_clear_error(tmp_path):
    def offline(request, timeout):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    with pytest.raises(ConnectionError) as info:
        fetch.fetch_resource("librispeech-lexicon", tmp_path, opener=offline)
    message = str(info.value)
    assert "offline" in message and "librispeech-lexicon.txt" in message
    assert "by hand" in message and "name resolution" in message
    assert list(tmp_path.iterdir()) == []


def test_unknown_resource_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="librispeech-vocab"):
        fetch.fetch_resource("librispeech-6gram", tmp_path)


# ----------------------------------------------------------------------------- real LM
@pytest.fixture(scope="module")
def real_lm():
    from ctclab.lm.language_model import load_language_model

    path = require_shared("lm", "en-us-70k-3gram.arpa.gz")
    return load_language_model(path)  # .arpa.gz: resolved through the cache


def test_real_english_3gram_scores_a_sentence(real_lm, wav2vec2_vocab):
    from ctclab.lm.casing import make_word_mapper

    mapper = make_word_mapper(wav2vec2_vocab, ["the", "cat"])
    sentence = [mapper(w) for w in ["THE", "CAT", "SAT", "ON", "THE", "MAT"]]
    state, total = real_lm.start_state(), 0.0
    for word in sentence:
        assert not real_lm.is_oov(word)
        ln_prob, state = real_lm.score(state, word)
        assert ln_prob < 0
        total += ln_prob
    total += real_lm.end_score(state)
    reference = real_lm.kenlm_model.score(" ".join(sentence), bos=True, eos=True)
    assert math.isclose(total, reference * math.log(10), rel_tol=1e-6)
    assert real_lm.order == 3 and real_lm.is_oov("zzzqqq")
    # A fluent sentence outscores the same words shuffled.
    shuffled, s2 = 0.0, real_lm.start_state()
    for word in ["mat", "the", "on", "sat", "cat", "the"]:
        p, s2 = real_lm.score(s2, word)
        shuffled += p
    assert total > shuffled + real_lm.end_score(s2)


@pytest.mark.parametrize("progress", [True, False])
def test_download_progress_is_shown_only_when_asked(tmp_path, capsys, progress):
    """--quiet reaches the download: progress=False prints nothing, True names the file."""
    src = tmp_path / "server" / "4-gram.arpa.gz"
    src.parent.mkdir()
    src.write_bytes(os.urandom(5000))
    fetch.fetch_resource("librispeech-4gram", tmp_path / "dest", min_fraction=0,
                         base_urls=(src.parent.as_uri() + "/",), progress=progress)
    err = capsys.readouterr().err
    assert ("4-gram.arpa.gz" in err) == progress
