"""Audio sources: OpenSLR folders, manifests, HF datasets (local), resampling, downmix, bad files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import require_shared
from fixtures_audio import make_openslr_corpus

from ctclab.emission.audio_sources import (
    AudioReadError,
    HFDatasetSource,
    ManifestSource,
    OpenSLRSource,
    open_source,
    read_audio,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_openslr_corpus(tmp_path_factory.mktemp("corpus"), num_utterances=3)


def test_openslr_lists_reads_and_names_bad_files(corpus):
    source = OpenSLRSource(corpus.root, corpus.split)
    with pytest.raises(AudioReadError, match=corpus.bad[0] + r".*44-400-0000\.flac.*--skip-bad"):
        source.entries()
    entries, bad = source.entries(skip_bad=True)
    assert sorted(e.id for e in entries) == corpus.good_ids
    assert sorted(b.utt_id for b in bad) == sorted(corpus.bad)
    assert any("empty" in b.reason for b in bad)
    for entry in entries:
        audio = source.load(entry)
        assert entry.text == corpus.texts[entry.id]
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert len(audio) == pytest.approx(corpus.seconds[entry.id] * 16_000, abs=2)
        assert entry.seconds == pytest.approx(corpus.seconds[entry.id], abs=1e-3)


def test_missing_split_lists_what_is_there(corpus):
    with pytest.raises(FileNotFoundError, match="test-clean"):
        OpenSLRSource(corpus.root, "dev-other")
    with pytest.raises(ValueError, match="valid names: openslr, hf, manifest"):
        open_source("kaldi", "x")


def test_missing_split_under_a_librispeech_parent_lists_the_splits(tmp_path):
    make_openslr_corpus(tmp_path / "LibriSpeech", "dev-clean", num_utterances=1, stereo_8k=False,
                        bad_files=False)
    with pytest.raises(FileNotFoundError, match=r"in .*LibriSpeech: \['dev-clean'\]"):
        OpenSLRSource(tmp_path, "test-other")  # the tarball's parent folder, as unpacked


def test_non_utf8_transcripts_and_manifests_name_the_file(corpus, tmp_path):
    trans = next(corpus.root.rglob("*.trans.txt"))
    saved = trans.read_bytes()
    trans.write_bytes(saved + "11-100-0099 CAF\xc9\n".encode("latin-1"))
    try:
        with pytest.raises(ValueError, match=f"transcript {trans} is not UTF-8.*iconv"):
            OpenSLRSource(corpus.root, corpus.split).listing()
    finally:
        trans.write_bytes(saved)
    for name in ("m.tsv", "m.jsonl"):
        manifest = tmp_path / name
        manifest.write_bytes("id\tpath\ttext\nx\tx.flac\tCAF\xc9\n".encode("latin-1"))
        with pytest.raises(ValueError, match=f"manifest {manifest} is not UTF-8"):
            ManifestSource(manifest).listing()


def test_listing_stats_files_without_decoding(corpus):
    source = OpenSLRSource(corpus.root, corpus.split)
    rows = source.listing()
    assert sorted(r.id for r in rows) == sorted([*corpus.good_ids, *corpus.bad])
    empty = next(r for r in rows if r.id == corpus.bad[1])
    assert empty.size == 0 and empty.mtime_ns > 0
    good, bad = source.probe([r for r in rows if r.id in corpus.bad], skip_bad=True)
    assert good == [] and sorted(b.utt_id for b in bad) == sorted(corpus.bad)


def test_stereo_is_averaged_and_8k_is_resampled(tmp_path):
    rate, seconds = 8000, 1.0
    t = np.arange(int(rate * seconds)) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t + 1.0)
    sf.write(tmp_path / "s.flac", np.stack([left, right], 1), rate, subtype="PCM_16")
    audio = read_audio(tmp_path / "s.flac")
    assert audio.dtype == np.float32 and audio.shape == (16_000,)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16_000 / len(audio) == pytest.approx(440, abs=2)
    expected = np.abs(np.fft.rfft((left + right) / 2)).max() * 2  # twice the samples
    assert spectrum.max() == pytest.approx(expected, rel=0.02)
    sf.write(tmp_path / "m.flac", left, 16_000, subtype="PCM_16")
    np.testing.assert_allclose(read_audio(tmp_path / "m.flac"), left, atol=1e-4)


def test_manifest_tsv_and_jsonl_with_split_and_relative_paths(corpus, tmp_path):
    entries, _ = OpenSLRSource(corpus.root, corpus.split).entries(skip_bad=True)
    rows = [("train" if i % 2 else "test", e.id, str(e.path), e.text) for i, e in enumerate(entries)]
    tsv = corpus.root / "list.tsv"  # paths relative to the manifest's folder
    tsv.write_text("split\tid\taudio_path\ttext\n" + "".join(
        f"{s}\t{i}\t{p.replace(str(corpus.root) + '/', '')}\t{t}\n" for s, i, p, t in rows))
    source = open_source("manifest", "test", manifest=tsv)
    got = list(source)
    assert [g.id for g in got] == [r[1] for r in rows if r[0] == "test"]
    assert source.name == "manifest" and source.data_key == str(tsv.resolve())
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(json.dumps({"utt_id": i, "path": p, "reference": t}) + "\n"
                             for _, i, p, t in rows))
    assert [a.text for a in ManifestSource(jsonl)] == [r[3] for r in rows]
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\twav\ttext\nx\ty.flac\tHI\n")
    with pytest.raises(ValueError, match="no audio path column"):
        list(ManifestSource(bad))
    with pytest.raises(ValueError, match="splits present"):
        list(ManifestSource(tsv, "dev"))
    _, i, p, t = rows[0]
    twice = tmp_path / "twice.jsonl"
    twice.write_text("".join(json.dumps({"id": i, "path": p, "text": t}) + "\n" for _ in "ab"))
    with pytest.raises(ValueError, match=f"id '{i}' appears twice"):
        ManifestSource(twice).entries()
    ragged = tmp_path / "ragged.jsonl"
    ragged.write_text(json.dumps({"id": i, "path": p, "text": t}) + "\n"
                      + json.dumps({"id": "y", "path": p}) + "\n")
    with pytest.raises(ValueError, match=r"utterance 2 lacks \['text'\]"):
        ManifestSource(ragged).entries()


def test_hf_local_dataset_matches_openslr_audio(corpus, tmp_path):
    from datasets import Audio, Dataset, DatasetDict

    entries, _ = OpenSLRSource(corpus.root, corpus.split).entries(skip_bad=True)
    # Hub datasets (parquet) carry the encoded bytes; local ones may carry only a path.
    audio = [{"bytes": Path(e.path).read_bytes(), "path": None} if i % 2 else
             {"bytes": None, "path": e.path} for i, e in enumerate(entries)]
    ds = Dataset.from_dict({"id": [e.id for e in entries], "text": [e.text for e in entries],
                            "audio": audio})
    ds = ds.cast_column("audio", Audio(decode=False))
    DatasetDict({"test": ds}).save_to_disk(tmp_path / "hfds")
    source = HFDatasetSource(tmp_path / "hfds", "test-clean")  # test-clean -> split "test"
    items = list(source)
    assert [i.id for i in items] == [e.id for e in entries]
    assert sum(i.path.endswith("(bytes)") for i in items) == len(entries) // 2
    reference = OpenSLRSource(corpus.root, corpus.split)
    for item, entry in zip(items, entries, strict=True):
        assert item.text == entry.text
        np.testing.assert_array_equal(item.audio, reference.load(entry))
    with pytest.raises(ValueError, match="no split 'dev-other'"):
        HFDatasetSource(tmp_path / "hfds", "dev-other").entries()


def test_hf_hub_name_offline_says_to_use_data_dir(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # Force offline mode so the test is quick (no network retries) wherever it runs.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="--data-dir"):
        HFDatasetSource("openslr/librispeech_asr", "test-clean").entries()


def test_real_librispeech_mini_loads_through_openslr():
    root = require_shared("librispeech-mini")
    source = OpenSLRSource(root, "test-clean")  # finds the LibriSpeech/ folder inside
    entries, bad = source.entries()
    assert len(entries) == 15 and not bad
    entry = next(e for e in entries if e.id == "1089-134686-0001")
    assert entry.text.startswith("STUFF IT INTO YOU")
    audio = source.load(entry)
    assert audio.dtype == np.float32 and len(audio) == pytest.approx(3.275 * 16_000, abs=160)
    assert 0.01 < float(np.abs(audio).mean()) < 0.5  # real speech, not silence or clipping


def test_hf_hub_unreachable_fails_fast_without_offline_mode(monkeypatch):
    # Without HF_HUB_OFFLINE, datasets retries for ~30 s; the probe switches to offline at once.
    import time

    import datasets.config
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves
    # Recorded so that the offline switch the source makes is undone after this test.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="--data-dir"):
        HFDatasetSource("nobody/not-a-cached-dataset", "test-clean").entries()
    assert time.perf_counter() - start < 10
