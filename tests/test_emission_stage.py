"""The emission stage's entry point (emission.stage.open_emissions) through eval/emit.py: no-ops
decided before the model loads, sources that change after caching, skipped files that get
fixed, clean errors (disk full, locked cache, offline dataset), warnings, plain progress lines."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO_ROOT
from fixtures_audio import make_openslr_corpus, make_tiny_model

from ctclab.emission import cache as cache_module
from ctclab.emission.cache import CacheWriter, EmissionCache, cache_dir_for
from ctclab.emission.models import resolve_revision
from ctclab.emission.options import EmissionSpec, ExtractOptions, SourceOptions
from ctclab.emission.stage import ModelLoader, open_emissions
from ctclab.eval.emit import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster

RATE = 16_000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("stage-model") / "model")


def _flac(path: Path, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32), RATE,
             format="FLAC", subtype="PCM_16")
    return path


def _manifest(folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    file = folder / "list.tsv"
    file.write_text("id\taudio_path\ttext\n" + "".join(f"{i}\t{a}\t{t}\n" for i, a, t in rows))
    return file


@pytest.fixture()
def corpus(tmp_path):
    """Three short FLAC files and a manifest naming them (split column absent)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = [(f"u{i}", f"u{i}.flac", f"WORD {i}") for i in range(3)]
    for i in range(3):
        _flac(audio / f"u{i}.flac", 0.5 + 0.2 * i, i)
    return audio, rows


def _emit(model: Path, manifest: Path, root: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--split", "s", "--manifest", str(manifest), "--cache-dir",
            str(root), "--no-progress", "--device", "cpu", *extra]


def test_a_complete_cache_is_a_noop_without_torch_or_the_model(model, corpus, tmp_path):
    audio, rows = corpus
    manifest = _manifest(audio, rows)
    assert main(_emit(model, manifest, tmp_path / "c")) == 0
    script = ("import sys, time; t = time.perf_counter(); from ctclab.eval.emit import main; "
              f"rc = main({_emit(model, manifest, tmp_path / 'c')!r}); "
              "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules, "
              "round(time.perf_counter() - t, 2))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "cached (no-op)" in done.stdout
    rc, torch_loaded, transformers_loaded, seconds = done.stdout.splitlines()[-1].split()
    print(f"\nno-op re-run: {seconds} s in-process (imports included)")
    assert (rc, torch_loaded, transformers_loaded) == ("0", "False", "False")


def test_manifest_edits_extend_update_or_refuse(model, corpus, tmp_path, capsys):
    audio, rows = corpus
    root = tmp_path / "c"
    assert main(_emit(model, _manifest(audio, rows), root)) == 0
    path = next(root.rglob("meta.json")).parent
    before = EmissionCache.open(path)
    capsys.readouterr()

    # A corrected reference: updated in place, nothing computed.
    rows[1] = ("u1", "u1.flac", "CORRECTED TEXT")
    assert main(_emit(model, _manifest(audio, rows), root)) == 0
    out, err = capsys.readouterr()
    after = EmissionCache.open(path)
    assert "cached, updated" in out and "1 reference updated" in err and "CORRECTED TEXT" in err
    assert after.record("u1").text == "CORRECTED TEXT"
    np.testing.assert_array_equal(after.log_probs("u1"), before.log_probs("u1"))
    assert after.identity.content_key != before.identity.content_key

    # A new row: the cache is extended by that utterance only.
    _flac(audio / "u3.flac", 0.8, 3)
    rows.append(("u3", "u3.flac", "NEW ONE"))
    assert main(_emit(model, _manifest(audio, rows), root)) == 0
    out, err = capsys.readouterr()
    assert "extended by 1" in out and "1 new utterance" in err
    grown = EmissionCache.open(path)
    assert grown.ids == ["u0", "u1", "u2", "u3"] and grown.is_complete
    np.testing.assert_array_equal(grown.log_probs("u0"), before.log_probs("u0"))

    # Changed audio of a cached utterance, and a removed row: refused, saying which.
    _flac(audio / "u2.flac", 1.3, 99)
    assert main(_emit(model, _manifest(audio, rows), root)) == 2
    err = capsys.readouterr().err
    assert "u2.flac changed size" in err and f"delete {path}" in err and "Traceback" not in err
    assert main(_emit(model, _manifest(audio, rows[:1] + rows[2:]), root)) == 2
    err = capsys.readouterr().err
    assert "no longer listed (u1)" in err
    assert EmissionCache.open(path).ids == grown.ids  # refused runs changed nothing


def test_skipped_files_are_retried_once_fixed_and_reported_once(model, tmp_path, capsys):
    corpus = make_openslr_corpus(tmp_path / "corpus", num_utterances=2, stereo_8k=False)
    args = ["--model", str(model), "--split", corpus.split, "--data-dir", str(corpus.root),
            "--cache-dir", str(tmp_path / "c"), "--no-progress", "--skip-bad"]
    assert main(args) == 0
    err = capsys.readouterr().err
    for bad in corpus.bad:
        assert err.count(f"skipped {bad}:") == 1  # once, not once live and once at the end
    cache = EmissionCache.open(next((tmp_path / "c").rglob("meta.json")).parent)
    assert sorted(s.id for s in cache.skipped) == sorted(corpus.bad)

    assert main(args) == 0  # nothing changed: a no-op, the skips stay
    assert "cached (no-op)" in capsys.readouterr().out

    fixed = next(corpus.root.rglob(f"{corpus.bad[0]}.flac"))
    _flac(fixed, 0.7, 5)
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "extended by 1" in out and "tried again" in err
    cache = EmissionCache.open(cache.path)
    assert corpus.bad[0] in cache and [s.id for s in cache.skipped] == [corpus.bad[1]]
    assert "skipped" not in err.replace("skipped utterance", "")  # the unchanged one: not retried


def test_disk_full_is_a_clean_error_and_the_run_resumes_exactly(model, corpus, tmp_path,
                                                                monkeypatch, capsys):
    audio, rows = corpus
    manifest = _manifest(audio, rows)
    args = _emit(model, manifest, tmp_path / "c", "--batch-seconds", "0.6", "--store-dtype",
                 "float32")
    real_save, calls = cache_module._atomic_save_npy, []

    def full_disk(path, array):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(path, array)

    monkeypatch.setattr(cache_module, "_atomic_save_npy", full_disk)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: [Errno 28] No space left on device" in err and "resume" in err
    assert "Traceback" not in err
    monkeypatch.setattr(cache_module, "_atomic_save_npy", real_save)
    assert main(args) == 0
    assert "computed 2, resumed after 1" in capsys.readouterr().out
    resumed = EmissionCache.open(next((tmp_path / "c").rglob("meta.json")).parent)
    assert main(_emit(model, manifest, tmp_path / "clean", "--store-dtype", "float32")) == 0
    clean = EmissionCache.open(next((tmp_path / "clean").rglob("meta.json")).parent)
    assert resumed.ids == clean.ids
    for utt in clean.ids:
        np.testing.assert_allclose(resumed.log_probs(utt), clean.log_probs(utt),
                                   atol=cache_module.BATCH_TOLERANCE)


def test_another_compute_dtype_never_resumes_or_extends_a_cache(model, corpus, tmp_path, capsys):
    audio, rows = corpus
    manifest = _manifest(audio, rows[:2])
    root = tmp_path / "c"

    class Killed(Exception):
        pass

    def kill(n: int) -> None:
        raise Killed

    spec = EmissionSpec(model=str(model), cache_dir=str(root),
                        audio=SourceOptions(manifest=str(manifest)),
                        extract=ExtractOptions(device="cpu", batch_seconds=0.6))
    with pytest.raises(Killed):  # a float32 run killed after its first batch
        open_emissions(spec, "s", progress=False, on_batch=kill)
    path = next(root.rglob("meta.json")).parent
    partial = EmissionCache.open(path, allow_incomplete=True)
    assert len(partial) == 1 and partial.meta.compute_dtype == "float32"

    # Resuming in bfloat16: refused before the model loads, naming the cache and the fix.
    assert main(_emit(model, manifest, root, "--dtype", "bfloat16")) == 2
    err = capsys.readouterr().err
    assert f"the emission cache at {path} was computed with --dtype float32" in err
    assert "Run with --dtype float32 to resume" in err and "another --cache-dir" in err
    assert "Traceback" not in err
    assert EmissionCache.open(path, allow_incomplete=True).ids == partial.ids

    assert main(_emit(model, manifest, root)) == 0  # the same dtype resumes it
    assert "computed 1, resumed after 1" in capsys.readouterr().out
    done = EmissionCache.open(path)
    assert done.meta.compute_dtype == "float32" and done.ids == ["u0", "u1"]

    # A complete cache is read whatever --dtype says, but not extended in another precision.
    assert main(_emit(model, manifest, root, "--dtype", "bfloat16")) == 0
    assert "cached (no-op)" in capsys.readouterr().out
    assert main(_emit(model, _manifest(audio, rows), root, "--dtype", "bfloat16")) == 2
    err = capsys.readouterr().err
    assert "computed with --dtype float32, but this run asks for --dtype bfloat16" in err
    assert EmissionCache.open(path).ids == done.ids  # untouched: still complete


def test_locked_cache_and_offline_dataset_are_clean_errors(model, corpus, tmp_path, capsys,
                                                           monkeypatch):
    audio, rows = corpus
    manifest = _manifest(audio, rows)
    root = tmp_path / "c"
    path = cache_dir_for(root, str(model), resolve_revision(str(model)) or "", "manifest", "s")
    meta = cache_module.CacheMeta(model=str(model), revision=path.parent.parent.name,
                                  source="manifest", split="s",
                                  vocabulary=ModelLoader()(str(model)).vocabulary.to_dict(),
                                  frame_shift_s=0.02, data_key=str(manifest.resolve()))
    with CacheWriter(path, meta):  # another run holds the (incomplete) cache
        assert main(_emit(model, manifest, root)) == 2
    err = capsys.readouterr().err
    assert "another process is writing" in err and "Traceback" not in err

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves
    start = time.perf_counter()
    assert main(["--model", str(model), "--split", "test-clean", "--source", "hf",
                 "--cache-dir", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "cannot load Hugging Face dataset" in err and "--data-dir" in err
    assert "Traceback" not in err and time.perf_counter() - start < 30


def test_manifest_errors_come_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\taudio_path\ttext\nu0\tx.flac\n")
    args = ["--model", "nobody/not-a-downloaded-model", "--split", "s", "--manifest", str(bad),
            "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "bad.tsv:2 has 2 tab-separated fields" in err  # not the model's offline error
    bad.write_bytes("id\taudio_path\ttext\nu0\tx.flac\tCAF\xc9\n".encode("latin-1"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"manifest {bad} is not UTF-8" in err and "Traceback" not in err


def test_short_clip_warns_and_progress_is_plain_lines_off_a_terminal(model, tmp_path, capsys,
                                                                       monkeypatch):
    from ctclab.core import progress

    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)  # a line per batch
    _flac(tmp_path / "long.flac", 0.9, 1)
    _flac(tmp_path / "tiny.flac", 0.01, 2)  # 160 samples: less than the 400 of the conv stack
    manifest = _manifest(tmp_path, [("long", "long.flac", "A"), ("tiny", "tiny.flac", "B")])
    args = _emit(model, manifest, tmp_path / "c", "--batch-seconds", "0.5")
    args.remove("--no-progress")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "audio-s" in err  # progress lines, no carriage-return redraws
    assert "warning: 1 utterance(s) shorter than the model's receptive field" in err
    assert "tiny" in err
    cache = EmissionCache.open(next((tmp_path / "c").rglob("meta.json")).parent)
    assert cache.record("tiny").num_frames == 0


def test_library_entry_serves_both_commands(model, corpus, tmp_path):
    """eval/run.py's use: no audio source named, the cache found by model and split."""
    audio, rows = corpus
    spec = EmissionSpec(model=str(model), cache_dir=str(tmp_path / "c"),
                        audio=SourceOptions(manifest=str(_manifest(audio, rows))),
                        extract=ExtractOptions(device="cpu"))
    models = ModelLoader()
    made = open_emissions(spec, "s", models=models, progress=False)
    assert made.action == "computed" and made.stats is not None and made.stats.utterances == 3
    reader = EmissionSpec(model=str(model), cache_dir=str(tmp_path / "c"), default_source=None)
    found = open_emissions(reader, "s")
    assert found.action == "cached" and found.cache.path == made.cache.path
    assert found.cache.identity == made.cache.identity
    assert found.cache.identity.to_dict()["model"] == str(model)
    with pytest.raises(FileNotFoundError, match="Make it with:\n  python eval/emit.py"):
        open_emissions(reader, "other-split")
    with pytest.raises(ValueError, match="different dtype"):
        open_emissions(EmissionSpec(model=str(model), cache_dir=str(tmp_path / "c"),
                                    audio=spec.audio,
                                    extract=ExtractOptions(store_dtype="float32")), "s")


def test_float16_caches_from_two_batch_sizes_agree_within_the_documented_tolerance(
        model, tmp_path):
    audio = tmp_path / "a"
    audio.mkdir()
    rows = [(f"u{i}", f"u{i}.flac", "X") for i in range(5)]
    for i in range(5):
        _flac(audio / f"u{i}.flac", 0.4 + 0.3 * i, 10 + i)
    manifest = _manifest(audio, rows)
    models = ModelLoader()
    caches = {}
    for store in ("float16", "float32"):
        for batch in (0.5, 30.0):
            spec = EmissionSpec(model=str(model), cache_dir=str(tmp_path / f"{store}-{batch}"),
                                audio=SourceOptions(manifest=str(manifest)),
                                extract=ExtractOptions(device="cpu", batch_seconds=batch,
                                                       store_dtype=store))
            caches[store, batch] = open_emissions(spec, "s", models=models, progress=False).cache
    for store in ("float16", "float32"):
        one, many = caches[store, 0.5], caches[store, 30.0]
        for utt in one.ids:
            a, b = one.log_probs(utt), many.log_probs(utt)
            assert np.all(np.abs(a - b) <= cache_module.storage_tolerance(store, a))
    assert cache_module.storage_tolerance("float16", np.array([-20.0]))[0] == pytest.approx(
        1 / 64 + cache_module.BATCH_TOLERANCE)


def test_temp_files_of_a_killed_write_are_removed_on_resume(tmp_path):
    from test_cache import _meta

    path = tmp_path / "c"
    with CacheWriter(path, _meta()):
        pass
    leftovers = [path / ".meta.json.abc123.tmp", path / "shards" / ".000003.npy.xyz.tmp",
                 path / ".manifest.tsv.q.tmp"]
    for file in leftovers:
        file.write_bytes(b"partial")
    with CacheWriter(path, _meta()):
        assert not any(file.exists() for file in leftovers)
    assert (path / "meta.json").is_file()


def test_import_folders_are_keyed_by_content(tmp_path, capsys):
    from eval_fixtures import write_tiny_emissions

    from ctclab.emission.importer import import_split

    a = write_tiny_emissions(tmp_path / "a")  # a/tiny-ctc and b/tiny-ctc: the same name
    b = write_tiny_emissions(tmp_path / "b")
    first = next(p for p in sorted((b / "test-a").glob("*.npy")))
    np.save(first, np.load(first)[::-1].copy())  # same ids and texts, other arrays
    root = tmp_path / "root"
    cache, wrote = import_split(a, root, split="test-a")
    assert wrote
    with pytest.raises(ValueError, match="imported from .*/a/tiny-ctc, but .*/b/tiny-ctc holds other "
                                         "emissions.*other arrays.*--model NAME"):
        import_split(b, root, split="test-a")
    assert main(["--import-emissions", str(b), "--split", "test-a", "--cache-dir",
                 str(root)]) == 2
    assert "refusing to mix" in capsys.readouterr().err
    os.rename(tmp_path / "a", tmp_path / "moved")  # the same content elsewhere: the same cache
    again, wrote = import_split(tmp_path / "moved" / a.name, root, split="test-a")
    assert not wrote and again.identity == cache.identity
    other, wrote = import_split(b, root, split="test-a", model="em-b")
    assert wrote and other.identity.content_key != cache.identity.content_key
    with pytest.raises(ValueError, match="different dtype"):  # an accepted option does something
        import_split(b, root, split="test-a", model="em-b", dtype="float16")
    half = import_split(b, tmp_path / "root16", split="test-a", dtype="float16")[0]
    assert half.meta.dtype == "float16" and import_split(b, tmp_path / "root16",
                                                         split="test-a")[0].meta.dtype == "float16"
