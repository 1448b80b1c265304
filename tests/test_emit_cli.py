"""The eval/emit.py command line: run as a script, summary table, bad files, no-op, import."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, require_shared
from fixtures_audio import make_openslr_corpus, make_tiny_model

from ctclab.emission.cache import EmissionCache, cache_dir_for
from ctclab.eval.emit import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is faster


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emit")
    corpus = make_openslr_corpus(tmp / "corpus", num_utterances=3)
    model = make_tiny_model(tmp / "model")
    return tmp, corpus, model


def test_script_runs_end_to_end_with_skip_bad(setup, capsys):
    tmp, corpus, model = setup
    cmd = [sys.executable, "eval/emit.py", "--model", str(model), "--split", corpus.split,
           "--data-dir", str(corpus.root), "--cache-dir", str(tmp / "cache"), "--skip-bad"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, check=False, cwd=REPO_ROOT, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    header, _rule, row = done.stdout.splitlines()[:3]
    assert header.split()[:8] == ["split", "utts", "hours", "frames", "time", "s", "speed", "x"]
    assert row.split()[:2] == ["test-clean", str(len(corpus.good_ids))]
    assert row.split()[6:8] == ["cpu", "2"]  # device, skipped (corrupt + empty)
    assert "44-400-0000" in done.stderr and "audio-s" in done.stderr  # skip log, progress bar
    caches = list((tmp / "cache").rglob("meta.json"))
    assert len(caches) == 1
    cache = EmissionCache.open(caches[0].parent)
    assert sorted(cache.ids) == corpus.good_ids and len(cache.meta.skipped) == 2

    # The same command again: complete cache, nothing recomputed (in-process for speed).
    code = main(cmd[2:] + ["--no-progress"])
    assert code == 0 and "cached (no-op)" in capsys.readouterr().out
    assert EmissionCache.open(caches[0].parent).meta == cache.meta  # untouched


def test_bad_file_without_skip_bad_names_it(setup, capsys):
    tmp, corpus, model = setup
    code = main(["--model", str(model), "--split", corpus.split, "--data-dir", str(corpus.root),
                 "--cache-dir", str(tmp / "cache2"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "44-400-0000.flac" in err and "--skip-bad" in err and "Traceback" not in err


def test_usage_errors_are_clean(setup, capsys):
    tmp, corpus, model = setup
    assert main(["--split", "test-clean", "--data-dir", str(corpus.root)]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(["--model", str(model), "--split", "dev-other", "--data-dir",
                 str(corpus.root), "--cache-dir", str(tmp / "c3")]) == 2
    assert "no split folder" in capsys.readouterr().err


def test_import_emissions_from_the_command_line(tmp_path, capsys):
    src = require_shared("emissions", "quartznet15x5-base-en")
    code = main(["--import-emissions", str(src), "--split", "dev-other", "an4-test",
                 "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "imported" in out
    cache = EmissionCache.open(cache_dir_for(tmp_path, src.name, "imported", "imported",
                                             "an4-test"))
    assert len(cache) == 10 and cache.vocabulary.blank == 28


def test_offline_hub_model_gives_a_clear_message(setup, capsys, monkeypatch):
    import huggingface_hub.constants

    tmp, corpus, _ = setup
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network retries
    code = main(["--model", "facebook/wav2vec2-base-960h", "--split", corpus.split,
                 "--data-dir", str(corpus.root), "--cache-dir", str(tmp / "c4"), "--skip-bad"])
    err = capsys.readouterr().err
    assert code == 2 and "--model DIR" in err and "Traceback" not in err


def test_flags_are_generated_from_the_option_dataclasses():
    import dataclasses

    from ctclab.core.options import flag_of
    from ctclab.emission.options import EmissionSpec, ExtractOptions, SourceOptions
    from ctclab.emission.options import spec_from_flags as from_flags
    from ctclab.eval.emit import build_parser
    from ctclab.eval.run import build_parser as run_parser

    for parser in (build_parser(), run_parser()):  # both commands: the same generated flags
        by_flag = {o: a for a in parser._actions for o in a.option_strings}
        for cls in (EmissionSpec, SourceOptions, ExtractOptions):
            for f in dataclasses.fields(cls):
                if flag_of(f):  # every option field has a flag, helped by its declared text
                    assert by_flag[flag_of(f)].help.startswith(f.metadata["help"]), f.name
    parser = build_parser()
    assert "--import-emissions" in {o for a in parser._actions for o in a.option_strings}
    spec = from_flags(parser.parse_args(["--split", "s", "--model", "m", "--prefetch", "5",
                                         "--skip-bad", "--manifest", "x.tsv"]), "hf")
    assert spec.extract == ExtractOptions(prefetch=5, skip_bad=True)
    assert spec.audio == SourceOptions(manifest="x.tsv") and spec.model == "m"


def test_bad_option_values_are_clean_errors(capsys):
    assert main(["--split", "s", "--model", "m", "--device", "tpu"]) == 2
    assert "error: unknown device 'tpu'" in capsys.readouterr().err
