"""End to end: eval/run.py on a tiny imported cache (synthetic peaky emissions, no model)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_pyctcdecode
from eval_fixtures import GREEDY_ERRORS, UTTERANCES, write_tiny_arpa, write_tiny_emissions

from ctclab.decoders import base
from ctclab.decoders.base import available_decoders
from ctclab.decoders.pyctc import INSTALL_HINT
from ctclab.eval import job as job_mod
from ctclab.eval import run as run_mod
from ctclab.eval import runner
from ctclab.eval.results import ResultsFolder

REPO = Path(__file__).resolve().parents[1]
LM_DECODER = next(d for d in ("beam", "pyctcdecode") if d in available_decoders())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"emissions": write_tiny_emissions(root), "cache": root / "cache",
            "lm": write_tiny_arpa(root / "tiny.arpa"), "root": root}


def base_args(tiny, out, *extra):
    return ["--import-emissions", str(tiny["emissions"]), "--cache-dir", str(tiny["cache"]),
            "--out", str(out), "--quiet", "--bootstrap", "200", *extra]


# Every decoder that runs over the cache; pyctcdecode's run skips with the reason where it is missing.
@pytest.mark.parametrize("decoders", [
    pytest.param(["greedy", "beam"], id="greedy,beam"),
    pytest.param(["greedy", "beam", "pyctcdecode"], id="greedy,beam,pyctcdecode",
                 marks=needs_pyctcdecode),
])
def test_several_decoders_table_and_results_files(tiny, tmp_path, capsys, decoders):
    out = tmp_path / "r"
    summary = run_mod.run(base_args(tiny, out, "--decoder", *decoders, "--split", "dev-a",
                                    "test-a", "--beam-width", "8"))
    printed = capsys.readouterr().out
    assert len(summary.systems) == 2 * len(decoders)
    for s in summary.systems:
        errors, words = GREEDY_ERRORS[s.split]
        # Peaky emissions without an LM: every decoder finds the same best path as greedy.
        assert (s.substitutions + s.deletions + s.insertions, s.words) == (errors, words), s
        assert s.wer == pytest.approx(errors / words)
        assert s.wer_low <= s.wer <= s.wer_high
        assert s.rtf > 0 and s.audio_seconds > 0
        assert f"{100 * s.wer:6.2f}" in printed
    dev = next(s for s in summary.systems if s.split == "dev-a" and s.system == "greedy")
    assert (dev.substitutions, dev.deletions, dev.insertions) == (1, 1, 1)
    assert "paired bootstrap over utterances" in printed
    for name in ("summary.json", "summary.tsv", "summary.md", "settings.json"):
        assert (out / name).is_file()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["versions"]["numpy"] and settings["normalizer"]["name"] == "default"
    assert [s["label"] for s in settings["systems"]] == decoders
    lines = (out / "dev-a" / "greedy.jsonl").read_text().splitlines()
    rows = {r["id"]: r for r in map(json.loads, lines)}
    for utt_id, ref, spoken in UTTERANCES["dev-a"]:      # each id got its own emission's text
        assert (rows[utt_id]["ref"], rows[utt_id]["hyp"]) == (ref, spoken)
    assert rows["d4"]["substitutions"] == 1 and rows["d1"]["deletions"] == 1
    assert "| dev-a | greedy |" in (out / "summary.md").read_text()


def test_resume_decodes_only_missing_utterances(tiny, tmp_path, monkeypatch):
    out = tmp_path / "r"
    first = run_mod.run(base_args(tiny, out, "--decoder", "greedy", "--split", "dev-a"))
    path = out / "dev-a" / "greedy.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # Simulate a kill: two finished lines and a torn third one.
    path.write_text(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])
    finished = {json.loads(x)["id"] for x in lines[:2]}
    decoded = []
    original = runner.decode_records

    def counting(decoder, cache, records, *a, **k):
        decoded.extend(r.id for r in records)
        return original(decoder, cache, records, *a, **k)

    monkeypatch.setattr(runner, "decode_records", counting)
    second = run_mod.run(base_args(tiny, out, "--decoder", "greedy", "--split", "dev-a"))
    assert sorted(decoded) == sorted({u[0] for u in UTTERANCES["dev-a"]} - finished)
    assert second.systems[0].wer == first.systems[0].wer
    assert len(ResultsFolder(out).read_utterances("dev-a", "greedy")) == 4
    # A complete folder decodes nothing.
    decoded.clear()
    run_mod.run(base_args(tiny, out, "--decoder", "greedy", "--split", "dev-a"))
    assert decoded == []


def test_resume_with_other_options_is_refused(tiny, tmp_path):
    out = tmp_path / "r"
    run_mod.run(base_args(tiny, out, "--decoder", LM_DECODER, "--split", "test-a",
                          "--beam-width", "4"))
    with pytest.raises(ValueError, match="new --out"):
        run_mod.run(base_args(tiny, out, "--decoder", LM_DECODER, "--split", "test-a",
                              "--beam-width", "5"))


def test_resume_ignores_options_that_never_change_results(tiny, tmp_path):
    """How the LM is scored (arrays or KenLM: identical results) may change between runs, and a
    folder made before those options existed resumes too."""
    out = tmp_path / "r"
    args = ["--decoder", "beam", "--lm", str(tiny["lm"]), "--split", "test-a", "--beam-width", "4"]
    run_mod.run(base_args(tiny, out, *args))
    run_mod.run(base_args(tiny, out, *args, "--lm-backend", "kenlm"))
    settings = json.loads((out / "settings.json").read_text())
    for system in settings["systems"]:
        del system["options"]["lm_backend"], system["options"]["lm_arrays_max_mib"]
    (out / "settings.json").write_text(json.dumps(settings))
    run_mod.run(base_args(tiny, out, *args))
    with pytest.raises(ValueError, match="new --out"):  # a result-changing option still counts
        run_mod.run(base_args(tiny, out, *args[:-1], "5"))


def test_resume_with_emissions_of_another_model_is_refused(tiny, tmp_path):
    out = tmp_path / "r"
    run_mod.run(base_args(tiny, out, "--decoder", "greedy", "--split", "test-a"))
    with pytest.raises(ValueError, match="from another emission cache: .*tiny-ctc@"):
        run_mod.run(base_args(tiny, out, "--decoder", "greedy", "--split", "test-a",
                              "--model", "other-ctc"))


def test_tune_writes_params_and_params_reuses_them(tiny, tmp_path):
    out = tmp_path / "tuned"
    lm = str(tiny["lm"])
    summary = run_mod.run(base_args(
        tiny, out, "--decoder", LM_DECODER, "--lm", lm, "--split", "test-a", "--beam-width", "8",
        "--tune", "alpha", "beta", "--tune-split", "dev-a", "dev-b",
        "--tune-values", "alpha=0,0.5", "beta=0,2"))
    params = json.loads((out / "params.json").read_text())
    label = f"{LM_DECODER}+tiny"
    assert params["split"] == "dev-a+dev-b" and len(params["trials"][label]) == 4
    # The two dev splits are pooled: with alpha = beta = 0 the LM changes nothing, so that trial's
    # WER is greedy's summed over both splits.
    (no_lm,) = [t for t in params["trials"][label] if t["params"] == {"alpha": 0, "beta": 0}]
    pooled = [sum(x) for x in zip(GREEDY_ERRORS["dev-a"], GREEDY_ERRORS["dev-b"], strict=True)]
    assert no_lm["wer"] == pytest.approx(pooled[0] / pooled[1])
    best = params["systems"][label]
    assert min(t["wer"] for t in params["trials"][label]) == params["wer"][label]
    assert summary.systems[0].system == label
    applied = json.loads((out / "settings.json").read_text())["systems"][0]["options"]
    assert (applied["alpha"], applied["beta"]) == (best["alpha"], best["beta"])
    # Re-use on another run: the file's values replace the defaults.
    out2 = tmp_path / "reused"
    run_mod.run(base_args(tiny, out2, "--decoder", LM_DECODER, "--lm", lm, "--split", "test-a",
                          "--beam-width", "8", "--params", str(out / "params.json")))
    reused = json.loads((out2 / "settings.json").read_text())["systems"][0]["options"]
    assert (reused["alpha"], reused["beta"]) == (best["alpha"], best["beta"])
    # A params file that matches none of the run's systems is an error, not silently unused.
    with pytest.raises(ValueError, match="none of this run's systems"):
        run_mod.run(base_args(tiny, tmp_path / "unused", "--decoder", LM_DECODER, "--split",
                              "test-a", "--params", str(out / "params.json")))


def test_tuning_on_test_is_refused(tiny, tmp_path, capsys):
    code = run_mod.main(base_args(tiny, tmp_path / "x", "--decoder", LM_DECODER, "--lm",
                                  str(tiny["lm"]), "--tune", "alpha", "--tune-split", "test-a"))
    assert code == 2
    assert "refusing to tune on 'test-a'" in capsys.readouterr().err


def test_missing_split_fails_before_tuning(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(job_mod, "tune_systems", lambda *a, **k: pytest.fail("tuned first"))
    with pytest.raises(ValueError, match="no utterances of split 'no-such-split'"):
        run_mod.run(base_args(tiny, tmp_path / "x", "--decoder", LM_DECODER, "--lm",
                              str(tiny["lm"]), "--tune", "alpha", "--tune-split", "dev-a",
                              "--split", "no-such-split"))


def test_missing_cache_error_names_the_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "eval" / "run.py"), "--model", "no/such-model",
         "--cache-dir", str(tmp_path), "--split", "test-clean", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "python eval/emit.py --model no/such-model --split test-clean" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_decoder_lists_valid_names(tiny, tmp_path, capsys):
    assert run_mod.main(base_args(tiny, tmp_path / "x", "--decoder", "nope")) == 2
    assert "valid names: " in capsys.readouterr().err


def test_pyctcdecode_missing_is_an_install_hint_before_any_work(tiny, tmp_path, capsys,
                                                                monkeypatch):
    """As in the numpy-2 environment (simulated here, so it runs in both): no traceback, no
    "unknown decoder", nothing decoded, but what to install."""
    monkeypatch.setitem(base._REQUIREMENTS, "pyctcdecode", ("ctclab_no_such_package", INSTALL_HINT))
    out = tmp_path / "x"
    code = run_mod.main(base_args(tiny, out, "--decoder", "greedy", "pyctcdecode", "--split",
                                  "dev-a"))
    err = capsys.readouterr().err
    assert code == 2 and "decoder 'pyctcdecode' needs ctclab_no_such_package" in err
    assert INSTALL_HINT in err and "unknown" not in err and "Traceback" not in err
    assert not out.exists()   # refused before greedy decoded anything


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")  # a tiny model: one thread is faster
def test_missing_cache_is_made_by_the_emission_stage(tmp_path, capsys):
    from fixtures_audio import make_openslr_corpus, make_tiny_model

    model = make_tiny_model(tmp_path / "tiny-model")
    corpus = make_openslr_corpus(tmp_path / "corpus", "test-clean", num_utterances=3,
                                 stereo_8k=False, bad_files=False)
    args = ["--model", str(model), "--data-dir", str(tmp_path / "corpus"), "--cache-dir",
            str(tmp_path / "cache"), "--split", "test-clean", "--quiet", "--bootstrap", "50"]
    summary = run_mod.run([*args, "--out", str(tmp_path / "o1")])
    assert "[emit]" in capsys.readouterr().out
    (s,) = summary.systems
    assert s.utterances == len(corpus.texts)
    assert s.words == sum(len(t.split()) for t in corpus.texts.values())
    # Second run: the cache is found, no emission.
    again = run_mod.run([*args, "--out", str(tmp_path / "o2")])
    assert "[emit]" not in capsys.readouterr().out
    assert again.systems[0].wer == s.wer


def test_parallel_jobs_give_the_same_results(tiny, tmp_path):
    one = run_mod.run(base_args(tiny, tmp_path / "j1", "--decoder", "greedy", "--split", "dev-a"))
    two = run_mod.run(base_args(tiny, tmp_path / "j2", "--decoder", "greedy", "--split", "dev-a",
                                "--jobs", "2"))
    assert one.systems[0].wer == two.systems[0].wer
    hyps = [[r.hyp for r in ResultsFolder(tmp_path / j).read_utterances("dev-a", "greedy")]
            for j in ("j1", "j2")]
    assert hyps[0] == hyps[1]


def test_optuna_method_runs_its_trials_within_the_ranges(tiny, tmp_path, capsys):
    pytest.importorskip("optuna", reason="optuna is not installed (pip install optuna, or the "
                        "ray extra)")
    args = ("--decoder", LM_DECODER, "--lm", str(tiny["lm"]), "--tune", "alpha", "beta",
            "--tune-split", "dev-a", "--tune-values", "alpha=0,4", "beta=-12,2",
            "--tune-method", "optuna", "--tune-trials", "5", "--split", "test-a")
    run_mod.run(base_args(tiny, tmp_path / "o1", *args))
    run_mod.run([a for a in base_args(tiny, tmp_path / "o2", *args) if a != "--quiet"])
    assert "trial 5/5 alpha=" in capsys.readouterr().out     # a count on each trial's line
    p1, p2 = (json.loads((tmp_path / d / "params.json").read_text()) for d in ("o1", "o2"))
    label = next(iter(p1["trials"]))
    trials = p1["trials"][label]
    assert p1["method"] == "optuna" and len(trials) == 5
    assert all(0 <= t["params"]["alpha"] <= 4 and -12 <= t["params"]["beta"] <= 2
               for t in trials)
    assert len({(t["params"]["alpha"], t["params"]["beta"]) for t in trials}) == 5
    best = min(trials, key=lambda t: t["wer"])
    assert p1["systems"][label] == best["params"]
    assert p1["trials"] == p2["trials"]                      # seeded: the same search again


def test_optuna_method_without_optuna_gives_install_hint(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)   # `import optuna` fails, as if missing
    code = run_mod.main(base_args(tiny, tmp_path / "x", "--decoder", LM_DECODER, "--lm",
                                  str(tiny["lm"]), "--tune", "alpha", "--tune-split", "dev-a",
                                  "--tune-method", "optuna", "--split", "test-a"))
    assert code == 2 and "pip install optuna" in capsys.readouterr().err


def test_tune_values_and_params_file_errors(tmp_path):
    from ctclab.eval.tune import load_params, parse_tune_values

    assert parse_tune_values(["alpha=0,1"], ["alpha", "beta"])["alpha"] == (0.0, 1.0)
    assert parse_tune_values([], ["beta"])["beta"][0] == 0.0           # the default grid
    with pytest.raises(ValueError, match="NAME=V1,V2"):
        parse_tune_values(["alpha"], ["alpha"])
    with pytest.raises(ValueError, match="no default grid"):
        parse_tune_values([], ["hotword_weight"])
    bad = tmp_path / "p.json"
    bad.write_text('{"alpha": 1}')
    with pytest.raises(ValueError, match="not a ctclab params file"):
        load_params(bad)
    bad.write_text('{"schema": "ctclab-params/1", "systems": {}}')
    with pytest.raises(ValueError, match="malformed params file"):
        load_params(bad)
    with pytest.raises(FileNotFoundError, match="--tune alpha beta"):
        load_params(tmp_path / "missing.json")


def test_option_no_chosen_decoder_takes_is_an_error(tiny, tmp_path, capsys):
    code = run_mod.main(base_args(tiny, tmp_path / "x", "--decoder", "greedy", "--split", "dev-a",
                                  "--beam-width", "4"))
    assert code == 2 and "--beam-width: not an option of any chosen decoder" in \
        capsys.readouterr().err


def test_without_bootstrap_summary_reads_back_as_floats(tiny, tmp_path):
    out = tmp_path / "nb"
    run_mod.run(base_args(tiny, out, "--decoder", "greedy", "--split", "dev-a",
                          "--bootstrap", "0"))
    (s,) = ResultsFolder(out).read_summary().systems
    assert math.isnan(s.wer_low) and math.isnan(s.wer_high)   # JSON null -> NaN, not None
    assert s.wer == pytest.approx(GREEDY_ERRORS["dev-a"][0] / GREEDY_ERRORS["dev-a"][1])
    assert "nan" not in (out / "summary.md").read_text()


def test_find_cache_picks_a_revision_among_several(tmp_path):
    import shutil

    from ctclab.emission.cache import cache_dir_for
    from ctclab.emission.importer import import_emissions
    from ctclab.emission.locate import find_cache

    emissions = write_tiny_emissions(tmp_path / "em")
    first = import_emissions(emissions, tmp_path / "root", split="test-a", model="m").path
    second = cache_dir_for(tmp_path / "root", "m", "rev2", "imported", "test-a")
    shutil.copytree(first, second)
    with pytest.raises(ValueError, match="--revision"):
        find_cache(tmp_path / "root", "m", "test-a")
    assert find_cache(tmp_path / "root", "m", "test-a", revision="rev2") == second
    assert find_cache(tmp_path / "root", "m", "test-a", revision="imported") == first
    assert find_cache(tmp_path / "root", "m", "test-a", revision="nope") is None


def test_integer_options_can_be_tuned(tiny, tmp_path):
    out = tmp_path / "width"
    run_mod.run(base_args(tiny, out, "--decoder", "beam", "--lm", str(tiny["lm"]), "--split",
                          "test-a", "--tune", "beam_width", "--tune-split", "dev-a",
                          "--tune-values", "beam_width=1,4"))
    params = json.loads((out / "params.json").read_text())
    (label,) = params["systems"]
    assert [t["params"]["beam_width"] for t in params["trials"][label]] == [1, 4]
    applied = json.loads((out / "settings.json").read_text())["systems"][0]["options"]
    assert applied["beam_width"] in (1, 4) and isinstance(applied["beam_width"], int)
