"""The emission cache: round trip, crash safety, resume, mismatch errors, load speed, import."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared

from ctclab.decoders import Vocabulary
from ctclab.decoders.greedy import GreedyDecoder
from ctclab.emission.cache import (
    MANIFEST_FILE,
    SHARD_DIR,
    CacheMeta,
    CacheWriter,
    EmissionCache,
    SkippedItem,
    cache_dir_for,
    default_cache_root,
)
from ctclab.emission.importer import import_emissions

VOCAB = Vocabulary.wav2vec2_english()


def _log_probs(rng: np.random.Generator, frames: int, v: int = 32) -> np.ndarray:
    logits = rng.standard_normal((frames, v)).astype(np.float32) * 3
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def _meta(**changes) -> CacheMeta:
    base = {"model": "m", "revision": "r", "source": "openslr", "split": "test-clean",
                "vocabulary": VOCAB.to_dict(), "frame_shift_s": 0.02}
    return CacheMeta(**{**base, **changes})


def test_round_trip_records_arrays_and_order(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"u{i}": _log_probs(rng, 5 + 3 * i) for i in range(5)}
    with CacheWriter(tmp_path / "c", _meta()) as writer:
        writer.add_batch([(k, f"TEXT {k}", 0.1 * (i + 1), arrays[k])
                          for i, k in enumerate(list(arrays)[:3])])
        writer.add_batch([(k, "TAB\tAND\nNEWLINE", 1.0, arrays[k]) for k in list(arrays)[3:]])
        writer.add_skipped([SkippedItem("bad", "/x/bad.flac", "empty")])
        cache = writer.finish()
    cache = EmissionCache.open(tmp_path / "c")
    assert cache.is_complete and len(cache) == 5 and cache.ids == list(arrays)
    assert cache.vocabulary == VOCAB and cache.frame_shift_s == 0.02
    assert cache.meta.skipped == (SkippedItem("bad", "/x/bad.flac", "empty"),)
    assert cache.skipped == cache.meta.skipped  # (a skipped id that got cached is not listed)
    identity = cache.identity  # stable across opens; what a results folder records
    assert identity == EmissionCache.open(tmp_path / "c").identity
    assert (identity.model, identity.split, len(identity.content_key)) == ("m", "test-clean", 32)
    assert cache.record("u3").text == "TAB AND NEWLINE"
    assert cache.records[1].num_frames == 8 and cache.records[1].audio_seconds == pytest.approx(0.2)
    assert cache.total_audio_seconds == pytest.approx(0.1 + 0.2 + 0.3 + 2.0)
    for (record, lp), key in zip(cache, arrays, strict=True):
        assert record.id == key and lp.dtype == np.float32 and lp.shape == arrays[key].shape
        np.testing.assert_allclose(lp, arrays[key], rtol=2e-3, atol=2e-3)  # float16 storage
    assert len(list((tmp_path / "c" / SHARD_DIR).glob("*.npy"))) == 2
    with pytest.raises(KeyError, match="nope"):
        cache.log_probs("nope")


def test_incomplete_cache_is_refused_unless_allowed(tmp_path):
    with pytest.raises(FileNotFoundError, match="no emission cache"):
        EmissionCache.open(tmp_path / "missing")
    writer = CacheWriter(tmp_path / "c", _meta())
    writer.add_batch([("a", "A", 1.0, _log_probs(np.random.default_rng(1), 4))])
    writer.close()
    with pytest.raises(FileNotFoundError, match="incomplete.*resume"):
        EmissionCache.open(tmp_path / "c")
    assert EmissionCache.open(tmp_path / "c", allow_incomplete=True).ids == ["a"]


def test_resume_after_kill_ignores_torn_line_and_orphan_shard(tmp_path):
    rng = np.random.default_rng(2)
    a, b, c = (_log_probs(rng, n) for n in (3, 4, 5))
    path = tmp_path / "c"
    writer = CacheWriter(path, _meta(dtype="float32"))
    writer.add_batch([("a", "A", 1.0, a)])
    writer.close()
    # A kill between renaming shard 000001 and finishing its manifest lines:
    np.save(path / SHARD_DIR / "000001.npy", np.zeros((9, 32), np.float32))
    with open(path / MANIFEST_FILE, "a") as fh:
        fh.write("b\t4\t1.0\t000001.np")
    with CacheWriter(path, _meta(dtype="float32")) as writer:
        assert writer.done_ids == {"a"}
        writer.add_batch([("a", "A", 1.0, a), ("b", "B", 1.0, b)])  # "a" is ignored: done
        writer.add_batch([("c", "C", 1.0, c)])
        cache = writer.finish()
    assert cache.ids == ["a", "b", "c"]
    for key, arr in zip("abc", (a, b, c), strict=True):
        np.testing.assert_array_equal(cache.log_probs(key), arr)


def test_meta_mismatch_is_a_clear_error(tmp_path):
    with CacheWriter(tmp_path / "c", _meta()) as writer:
        writer.add_batch([("a", "A", 1.0, _log_probs(np.random.default_rng(3), 4))])
    other = Vocabulary.from_labels(["<pad>", "|", *"abc"])
    with pytest.raises(ValueError, match="different vocabulary.*refusing to mix"):
        CacheWriter(tmp_path / "c", _meta(vocabulary=other.to_dict()))
    with pytest.raises(ValueError, match="different dtype"):
        CacheWriter(tmp_path / "c", _meta(dtype="float32"))
    with pytest.raises(ValueError, match="different revision"):
        CacheWriter(tmp_path / "c", _meta(revision="other"))
    with pytest.raises(ValueError, match="different data_key.*other.tsv") as refused:
        CacheWriter(tmp_path / "c", _meta(data_key="/data/other.tsv"))  # another manifest
    assert refused.value  # the error is still held, and the refused writer left no lock behind:
    with CacheWriter(tmp_path / "c", _meta()) as writer:
        assert writer.done_ids == {"a"}


def test_compute_dtype_is_part_of_the_identity_and_old_metas_read_as_float32(tmp_path):
    rng = np.random.default_rng(4)
    arr = _log_probs(rng, 4)
    for name, compute in (("f32", "float32"), ("bf16", "bfloat16")):
        with CacheWriter(tmp_path / name, _meta(compute_dtype=compute)) as writer:
            writer.add_batch([("a", "A", 1.0, arr)])
            writer.finish()
    f32, bf16 = EmissionCache.open(tmp_path / "f32"), EmissionCache.open(tmp_path / "bf16")
    assert (f32.meta.compute_dtype, bf16.meta.compute_dtype) == ("float32", "bfloat16")
    assert f32.identity.content_key != bf16.identity.content_key
    with pytest.raises(ValueError, match="computed with --dtype bfloat16.*--dtype float32"
                                         ".*Run with --dtype bfloat16.*another --cache-dir"
                                         ) as refused:
        CacheWriter(tmp_path / "bf16", _meta(compute_dtype="float32"))
    assert str(tmp_path / "bf16") in str(refused.value)
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        _meta(compute_dtype="int8")

    # A meta.json from before the field: read as float32, with the content key it had then.
    file = tmp_path / "f32" / "meta.json"
    data = json.loads(file.read_text())
    del data["compute_dtype"]
    file.write_text(json.dumps(data))
    old = EmissionCache.open(tmp_path / "f32")
    assert old.meta.compute_dtype == "float32" and old.identity == f32.identity
    with pytest.raises(ValueError, match="computed with --dtype float32"):
        CacheWriter(tmp_path / "f32", _meta(compute_dtype="bfloat16"))


def test_one_writer_at_a_time_and_wrong_shapes(tmp_path):
    with CacheWriter(tmp_path / "c", _meta()) as writer:
        with pytest.raises(RuntimeError, match="another process"):
            CacheWriter(tmp_path / "c", _meta())
        with pytest.raises(ValueError, match=r"\(T, 32\)"):
            writer.add_batch([("a", "A", 1.0, np.zeros((4, 29), np.float32))])


def test_bad_options_and_paths(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="dtype"):
        _meta(dtype="int8")
    monkeypatch.setenv("CTCLAB_CACHE_DIR", str(tmp_path / "root"))
    assert default_cache_root() == tmp_path / "root"
    path = cache_dir_for("R", "facebook/wav2vec2-base-960h", "abc123", "hf-openslr/x", "test-clean")
    assert path == Path("R/facebook--wav2vec2-base-960h/abc123/hf-openslr--x/test-clean")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid ctclab cache meta"):
        EmissionCache.open(tmp_path / "broken")
    (tmp_path / "broken" / "meta.json").write_text(_meta(complete=True).to_json())
    (tmp_path / "broken" / MANIFEST_FILE).write_text("header\nu1\tmany\t1.0\t000000.npy\t0\tHI\n")
    with pytest.raises(ValueError, match=r"manifest.tsv:2 is malformed.*extract again"):
        EmissionCache.open(tmp_path / "broken")


def test_loading_a_test_clean_sized_cache_is_fast(tmp_path):
    """~2,620 utterances, ~1M frames, V=32, float16: open + read every utterance as float32."""
    rng = np.random.default_rng(4)
    lengths = rng.integers(80, 700, size=2620)
    lengths = (lengths * (1_000_000 / lengths.sum())).astype(int)
    row = _log_probs(rng, 1)[0]
    with CacheWriter(tmp_path / "big", _meta()) as writer:
        start = 0
        for batch in np.array_split(np.arange(len(lengths)), 40):  # ~40 shards, like a GPU run
            block = np.broadcast_to(row, (int(lengths[batch].sum()), 32))
            items, offset = [], 0
            for i in batch:
                items.append((f"utt{i:05d}", "SOME WORDS", lengths[i] * 0.02,
                              block[offset:offset + lengths[i]]))
                offset += lengths[i]
            writer.add_batch(items)
            start += offset
        writer.finish()
    tick = time.perf_counter()
    cache = EmissionCache.open(tmp_path / "big")
    frames = sum(lp.shape[0] for _, lp in cache)
    elapsed = time.perf_counter() - tick
    print(f"\nopen + read {len(cache)} utterances / {frames} frames: {elapsed * 1000:.0f} ms")
    assert frames == start and len(cache) == 2620
    assert elapsed < 1.0, f"loading took {elapsed:.2f} s"


def test_import_quartznet_emissions_and_greedy_wer(tmp_path):
    src = require_shared("emissions", "quartznet15x5-base-en")
    import jiwer

    cache = import_emissions(src, tmp_path, split="test-clean")
    assert cache.path == cache_dir_for(tmp_path, "quartznet15x5-base-en", "imported", "imported",
                                       "test-clean")
    vocab = cache.vocabulary
    assert (vocab.size, vocab.blank, vocab.delimiter, vocab.case) == (29, 28, 0, "lower")
    assert len(cache) == 15 and cache.frame_shift_s == 0.02 and cache.meta.dtype == "float32"
    np.testing.assert_array_equal(cache.log_probs(cache.ids[0]),
                                  np.load(src / "test-clean" / f"{cache.ids[0]}.npy"))
    decoder = GreedyDecoder(vocab, frame_shift_s=cache.frame_shift_s)
    refs, hyps = [], []
    for record, lp in cache:
        refs.append(record.text.lower())
        hyps.append(decoder.decode(lp).text)
    wer = jiwer.wer(refs, hyps)
    assert round(100 * wer, 2) == 2.42  # the figure in ../shared/README.md (289 words)
    stamp = (cache.path / "meta.json").stat().st_mtime_ns
    again = import_emissions(src, tmp_path, split="test-clean")  # complete: a no-op
    assert again.ids == cache.ids and (cache.path / "meta.json").stat().st_mtime_ns == stamp


def test_import_errors_name_the_problem(tmp_path):
    src = tmp_path / "em"
    (src / "s").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="labels.json"):
        import_emissions(src, tmp_path / "out", split="s")
    (src / "labels.json").write_text(json.dumps({"labels": [" ", "a", "b", "_"],
                                                 "blank_index": 3}))
    (src / "manifest.tsv").write_text("split\tid\treference\ns\tx\tA B\n")
    np.save(src / "s" / "x.npy", np.full((4, 4), 0.25, np.float32))  # probabilities, not logs
    with pytest.raises(ValueError, match="probabilities"):
        import_emissions(src, tmp_path / "out", split="s", frame_shift_s=0.02)
    with pytest.raises(ValueError, match="splits present"):
        import_emissions(src, tmp_path / "out", split="other", frame_shift_s=0.02)
    (src / "s" / "x.npy").write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(ValueError, match=r"x\.npy is not a readable \.npy array"):
        import_emissions(src, tmp_path / "out", split="s", frame_shift_s=0.02)
    (src / "manifest.tsv").write_text("split\tid\treference\ns\tx\tA B\ns\tx\tA\n")
    with pytest.raises(ValueError, match="manifest.tsv:3 repeats the id 'x' of line 2"):
        import_emissions(src, tmp_path / "out", split="s", frame_shift_s=0.02)
    (src / "labels.json").write_text("{labels")
    with pytest.raises(ValueError, match="labels.json is not valid JSON"):
        import_emissions(src, tmp_path / "out", split="s", frame_shift_s=0.02)


def test_a_shard_written_elsewhere_is_published_like_add_batch(tmp_path):
    """CacheWriter.add_shard_file (what emission.distributed's driver commits): the same files
    as add_batch; a wrong or missing file, or an id stored twice, is refused."""
    from ctclab.emission.cache import shard_array, write_shard

    rng = np.random.default_rng(1)
    batches = [[(f"u{b}{i}", f"T {b}{i}", 0.5, _log_probs(rng, 4 + i)) for i in range(3)]
               for b in range(2)]
    with CacheWriter(tmp_path / "a", _meta()) as writer:
        for batch in batches:
            writer.add_batch(batch)
        writer.finish()
    with CacheWriter(tmp_path / "b", _meta()) as writer, writer.staging("x") as staging:
        shards = tmp_path / "b" / SHARD_DIR
        assert staging.parent == shards
        for number, batch in enumerate(batches):
            staged = staging / f"0-{number:06d}.tmp"
            with open(staged, "wb") as handle:
                write_shard(handle, shard_array([a for *_, a in batch], "float16"))
            writer.add_shard_file(staged, [(u, t, s, len(a)) for u, t, s, a in batch])
        with pytest.raises(ValueError, match="already in the cache"):
            writer.add_shard_file(staged, [("u00", "T", 0.5, 4)])
        with open(staging / "bad.tmp", "wb") as handle:
            write_shard(handle, shard_array([_log_probs(rng, 3)], "float32"))
        with pytest.raises(ValueError, match=r"needs \(3, 32\) float16"):
            writer.add_shard_file(staging / "bad.tmp", [("new", "T", 0.1, 3)])
        with pytest.raises(FileNotFoundError, match="every node mounts at the same path"):
            writer.add_shard_file(staging / "gone.tmp", [("new", "T", 0.1, 3)])
        writer.finish()
    for name in (MANIFEST_FILE, f"{SHARD_DIR}/000000.npy", f"{SHARD_DIR}/000001.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # the staging folder went with what was left in it
    assert sorted(p.name for p in shards.iterdir()) == ["000000.npy", "000001.npy"]


def test_no_late_write_lands_once_a_run_has_ended(tmp_path):
    """A worker of an interrupted distributed run may write on for a moment (Ray kills
    asynchronously). CacheWriter.staging removes the run's folder for good: a process still
    creating files in it while the run ends leaves nothing behind, and its next file fails.
    A killed driver's staging folder is removed when a writer next opens the cache."""
    created, failed = [], []

    def late_worker(folder: Path) -> None:
        for k in range(200_000):   # bounded: a broken removal must not fill the disk
            try:
                (folder / f"0-{k:06d}.tmp").write_bytes(b"x" * 64)
                created.append(k)
            except FileNotFoundError:   # the folder is gone
                failed.append(k)
                return

    with CacheWriter(tmp_path / "c", _meta()) as writer:
        with writer.staging("run1") as staging:
            worker = threading.Thread(target=late_worker, args=(staging,), daemon=True)
            worker.start()
            while len(created) < 50 and worker.is_alive():
                time.sleep(0.001)
        worker.join(timeout=10)
        assert not worker.is_alive() and failed and len(created) >= 50
        assert not staging.exists()
        assert list((tmp_path / "c" / SHARD_DIR).iterdir()) == []
        leftover = tmp_path / "c" / SHARD_DIR / ".stage-killed"
        leftover.mkdir()
        (leftover / "0-000000.tmp").write_bytes(b"x")
    with CacheWriter(tmp_path / "c", _meta()):
        assert list((tmp_path / "c" / SHARD_DIR).iterdir()) == []
