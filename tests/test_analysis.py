"""The notebooks' readers and helpers (eval/analysis.py, eval/utterance_analysis.py) on labels
written by hand and on tiny results folders made by the evaluation (conftest.analysis_results)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ctclab.emission.locate import list_caches
from ctclab.eval.analysis import (
    MAKE_CONFIDENCE,
    SystemRow,
    alpha_beta_grid,
    axis_limit,
    choose_run,
    config_label,
    env_path,
    latest_rows,
    list_runs,
    pooled_sweeps,
    sweep_rows,
    system_rows,
    tuning_runs,
)
from ctclab.eval.metrics import align_words
from ctclab.eval.records import SystemSummary
from ctclab.eval.tune import Trial
from ctclab.eval.utterance_analysis import (
    UtteranceErrors,
    choose_cache,
    confidence_sets,
    decoded_models,
    identical_groups,
    substitution_table,
    utterance_errors,
)

LM = {"lm_path": "../shared/lm/en-us-70k-3gram.arpa.gz", "alpha": 0.5, "beta": 1.5}


# ------------------------------------------------------------------------------------ labels
def test_config_label_names_the_whole_configuration():
    assert config_label("greedy", {}) == "greedy"
    beam = {**LM, "beam_width": 100, "lexicon_mode": "soft", "hotwords": [], "nbest": 1,
            "lm_backend": "kenlm", "batch_size": 256}
    assert config_label("beam", beam) == \
        "beam + en-us-70k-3gram (α 0.5, β 1.5), width 100, soft lexicon"
    # the hard-lexicon run, hotwords (a JSON list), an n-best, a changed search option
    assert config_label("beam", {**beam, "lexicon_mode": "hard"}).endswith("hard lexicon")
    assert config_label("beam", {**beam, "hotwords": ["fashion", "census"], "hotword_weight": 8,
                                 "nbest": 10, "token_min_logp": -4.0}) == (
        "beam + en-us-70k-3gram (α 0.5, β 1.5), width 100, soft lexicon, hotwords fashion census "
        "(+8), 10-best, token_min_logp=-4.0")
    # what has no effect is left out: alpha/beta and the lexicon without an LM; neutral options;
    # the soft lexicon's penalty under a hard lexicon (the options' own inert())
    assert config_label("beam", {**beam, "lm_path": None}) == "beam, no LM, width 100"
    assert config_label("beam", {**beam, "lexicon_mode": "hard",
                                 "unknown_prefix_penalty": -5.0}).endswith("hard lexicon")
    assert config_label("beam", {**beam, "unknown_prefix_penalty": -5.0}).endswith(
        "soft lexicon, unknown_prefix_penalty=-5.0")
    # unset lexicon mode: soft, or hard with a pronunciation lexicon (named by its file)
    assert config_label("beam", {**beam, "lexicon_mode": None}).endswith("soft lexicon")
    assert config_label("beam", {**beam, "lm_path": None, "lexicon_mode": None,
                                 "lexicon_path": "x/en.ipa-lexicon.tsv"}) == \
        "beam, no LM, width 100, hard lexicon en.ipa-lexicon.tsv"
    assert config_label("beam", {**beam, "rescore": {"rescore_lm": "gpt2",
                                                      "rescore_weight": 0.25}}).endswith(
        "rescored by gpt2 (w 0.25)")
    # the parts a sweep's curve or a heatmap's title leave out
    assert config_label("beam", beam, width=False, weights=False) == \
        "beam + en-us-70k-3gram, soft lexicon"
    assert "width" not in config_label("pyctcdecode", {**LM, "beam_width": 4}, width=False)


def test_labels_come_from_each_runs_settings(analysis_results):
    labels = {(r.run.rsplit("/", 1)[-1], r.summary.system): r.label
              for r in system_rows(analysis_results["results"])}
    assert labels[("demo", "greedy")] == "greedy"
    assert labels[("beam4", "beam")] == "beam, no LM, width 4"
    # the same system label, another configuration: told apart
    assert labels[("hard4", "beam+tiny")] == "beam + tiny (α 0.5, β 1.5), width 4, hard lexicon"
    assert labels[("demo", "beam+tiny")] == "beam + tiny (α 0.5, β 1.5), width 100, soft lexicon"
    tuned = [v for (run, _), v in labels.items() if run == "tuned"]
    assert tuned and all("width 100" in v and "(α 0.5, β 1.5)" not in v for v in tuned)


# ------------------------------------------------------------------------------------- runs
def _row(run, created, split, width, curve="beam, no LM", wer=0.1, unit="words", model="m"):
    s = SystemSummary(split, "beam", "beam", 1, wer, wer, wer, 0.0, 1, 0, 0, 10, 40, 0.0, 2.0,
                      1.0, 0.5, 0.0, unit=unit)
    return SystemRow(run, s, width, None, None, None, "beam", f"{curve}, width {width}", curve,
                     created, model)


def test_latest_rows_keep_the_newest_per_configuration():
    old, new = _row("a", "2026-01-01", "dev", 4, wer=0.2), _row("b", "2026-02-01", "dev", 4)
    other_model = _row("c", "2026-03-01", "dev", 4, model="m2")
    assert latest_rows([new, old, other_model]) == [new, other_model]


def test_sweeps_join_only_widths_of_one_configuration():
    rows = [_row("w4", "1", "dev", 4), _row("w16", "2", "dev", 16),
            _row("hard", "3", "dev", 16, curve="beam + lm, hard lexicon"),   # a lone width
            _row("w16", "2", "test", 16), _row("w4", "1", "test", 4),
            _row("w64", "4", "dev", 64)]                                     # dev only
    assert {(r.run, r.summary.split) for r in sweep_rows(rows)} == {
        ("w4", "dev"), ("w16", "dev"), ("w64", "dev"), ("w4", "test"), ("w16", "test")}
    points = pooled_sweeps(rows)
    assert [(p.beam_width, p.splits) for p in points] == [
        (4, ("dev",)), (16, ("dev",)), (64, ("dev",))]   # pooled over the splits all widths have
    assert points[0].rate == 1 / 10 and points[0].rtf == 0.5
    # pooled where every width has both splits; errors and seconds are summed
    both = pooled_sweeps(rows[:5])
    assert [(p.beam_width, sorted(p.splits), p.errors, p.words) for p in both] == [
        (4, ["dev", "test"], 2, 20), (16, ["dev", "test"], 2, 20)]


def test_sweeps_from_runs(analysis_results):
    points = pooled_sweeps(system_rows(analysis_results["results"]))
    # the demo's beam without LM is the same configuration at width 100; the hard-lexicon run at
    # width 4 and the soft-lexicon ones at 100 are two configurations, no curve
    assert {(p.curve, p.beam_width) for p in points} == {
        ("beam, no LM", 1), ("beam, no LM", 4), ("beam, no LM", 100)}
    assert all(p.splits == ("dev-a", "test-a") and p.words == 18 for p in points)


def test_axis_limit_keeps_an_outlier_off_the_axis():
    assert axis_limit([1.73, 1.73, 2.42, 37.37], [3.4, 3.4, 4.4, 63]) == pytest.approx(4.4 * 1.1)
    assert axis_limit([2.3, 39.4, 10.0], [3.0, 45.0, 15.0]) == pytest.approx(45 * 1.1)
    assert axis_limit([0, 0], [0, 0]) == 1.0
    assert axis_limit([math.nan], [math.nan]) == 1.0


def test_choose_run(analysis_results):
    runs = list_runs(analysis_results["results"])
    assert choose_run(runs, "beam4").name == "beam4"
    assert choose_run(runs).name == runs[-1].name
    assert choose_run(runs, need_confidence=True).name in {"confidence", "demo"}
    with pytest.raises(ValueError, match="there are: .*beam4"):
        choose_run(runs, "nope")
    bare = [r for r in runs if not r.summary.confidence]
    with pytest.raises(ValueError, match="--nbest 10") as err:
        choose_run(bare, need_confidence=True)
    assert MAKE_CONFIDENCE in str(err.value)


def test_env_path_is_relative_to_the_repository_root(tmp_path, monkeypatch):
    (tmp_path / "eval").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.setenv("X_RESULTS", "results/demo")
    assert env_path("X_RESULTS", "other") == tmp_path / "results" / "demo"
    monkeypatch.delenv("X_RESULTS")
    assert env_path("X_RESULTS", "/abs") == Path("/abs")


# ------------------------------------------------------------------------------------ tuning
def test_tuning_runs_are_never_pooled(analysis_results):
    runs = tuning_runs(analysis_results["results"])
    assert sorted((r.name, r.split) for r in runs) == [("tuned", "dev-a"), ("tuned-b", "dev-b")]
    for run in runs:
        (system, trials), = run.trials.items()
        assert len(trials) == 4
        assert run.configs[system] == "beam + tiny, width 100, soft lexicon"
        alphas, betas, grid = alpha_beta_grid(trials)
        assert (alphas, betas) == ([0.0, 0.5], [0.0, 1.0])
        assert np.nanmin(grid) == pytest.approx(run.wer[system])


def test_alpha_beta_grid_leaves_untried_cells_empty_and_takes_the_best_of_other_params():
    trials = [Trial({"alpha": 0.0, "beta": 1.0, "rescore_weight": 0.0}, 0.3),
              Trial({"alpha": 0.0, "beta": 1.0, "rescore_weight": 0.5}, 0.2),
              Trial({"alpha": 1.0, "beta": 0.0, "rescore_weight": 0.0}, 0.4)]
    alphas, betas, grid = alpha_beta_grid(trials)
    assert (alphas, betas) == ([0.0, 1.0], [0.0, 1.0])
    assert grid[0, 1] == 0.2 and grid[1, 0] == 0.4
    assert np.isnan(grid[0, 0]) and np.isnan(grid[1, 1])
    assert alpha_beta_grid([Trial({"alpha": 0.5}, 0.1)]) == ([], [], pytest.approx(
        np.zeros((0, 0))))


# ------------------------------------------------------------------------------------ errors
def test_substitution_table_counts_integers_per_system():
    a = [align_words("the cat sat".split(), "a cat sad".split()),
         align_words("the dog".split(), "a dog".split())]
    b = [align_words("the cat sat".split(), "the cap sat".split())]
    pairs, systems, counts = substitution_table({"x": a, "y": b})
    assert systems == ["x", "y"]
    assert pairs == [("the", "a"), ("cat", "cap"), ("sat", "sad")]
    assert counts.dtype.kind == "i" and counts.tolist() == [[2, 0], [0, 1], [1, 0]]
    top, _, top_counts = substitution_table({"x": a, "y": b}, top=1)
    assert top == [("the", "a")] and top_counts.shape == (1, 2)
    assert substitution_table({"x": []})[2].shape == (0, 1)


def test_identical_errors_share_a_group():
    def errs(label, errors, unit="words"):
        return UtteranceErrors("run", label, label, unit, errors)

    a, b = errs("greedy", {"u1": (1, 5), "u2": (0, 3)}), errs("beam", {"u2": (0, 3), "u1": (1, 5)})
    c = errs("beam+lm", {"u1": (0, 5), "u2": (0, 3)})
    d = errs("greedy [PER]", {"u1": (1, 5), "u2": (0, 3)}, unit="phonemes")
    assert [[g.label for g in group] for group in identical_groups([a, c, b, d])] == [
        ["greedy", "beam"], ["beam+lm"], ["greedy [PER]"]]
    assert a.rates() == {"u1": 0.2, "u2": 0.0}


def test_utterance_errors_of_the_same_models_emissions(analysis_results, tmp_path):
    found = utterance_errors(analysis_results["results"], "dev-a", "tiny-ctc")
    labels = {f.label for f in found}
    assert "greedy" in labels and "beam, no LM, width 4" in labels
    greedy = next(f for f in found if f.label == "greedy")
    assert sum(e for e, _ in greedy.errors.values()) == 3   # the fixture's hand count
    assert utterance_errors(analysis_results["results"], "dev-a", "another-model") == []
    assert utterance_errors(tmp_path, "dev-a", "tiny-ctc") == []    # no results at all
    assert decoded_models(analysis_results["results"]) == ["tiny-ctc"]
    assert decoded_models(tmp_path) == []


def test_confidence_sets_leave_out_the_calibration_splits(analysis_results):
    run = choose_run(list_runs(analysis_results["results"]), "confidence")
    sets = {s.system: s for s in confidence_sets(run)}
    assert set(sets) == {"greedy", "beam", "beam+tiny"}
    for s in sets.values():
        assert s.splits == ("test-a",) and s.in_sample == ("dev-a",)
        assert len(s.confidence) == len(s.right) == 7       # test-a's words, all decoded
        assert np.isfinite(s.confidence).all() and s.right.dtype == bool
    assert sets["beam+tiny"].label.endswith("4-best")
    # a run without n-best lists: beam has no confidence, greedy has its frame posterior
    demo = {s.system for s in confidence_sets(choose_run(list_runs(
        analysis_results["results"]), "demo"))}
    assert demo == {"greedy"}


# --------------------------------------------------------------------------------- emissions
def test_choose_cache_is_explicit(analysis_results):
    caches = list_caches(analysis_results["cache"])
    assert sorted(c.split for c in caches) == ["dev-a", "dev-b", "test-a"]
    assert {c.utterances for c in caches if c.split == "dev-a"} == {4}
    with pytest.raises(ValueError, match="no cache of split 'test-clean'.*dev-a"):
        choose_cache(caches)                        # the default split is not there
    chosen, how = choose_cache(caches, "dev-b")
    assert chosen.split == "dev-b" and "as asked" in how
    one, how = choose_cache([c for c in caches if c.split == "dev-a"])
    assert one.split == "dev-a" and "the only one" in how
    other = [dataclasses.replace(c, model="zz-model") for c in caches]
    chosen, how = choose_cache(caches + other, "dev-a")
    assert chosen.model == "tiny-ctc" and "CTCLAB_MODEL" in how    # the first by name, said so
    chosen, how = choose_cache(caches + other, "dev-a", prefer=["zz-model"])
    assert chosen.model == "zz-model" and "have results" in how
    with pytest.raises(ValueError, match="no complete emission cache"):
        choose_cache([])


def test_settings_without_systems_still_label(analysis_results, tmp_path):
    """A results folder whose settings.json lacks a system keeps that system's own label."""
    src = analysis_results["results"] / "beam4"
    dst = tmp_path / "copy"
    dst.mkdir()
    (dst / "summary.json").write_text((src / "summary.json").read_text())
    settings = json.loads((src / "settings.json").read_text())
    settings["systems"] = []
    (dst / "settings.json").write_text(json.dumps(settings))
    assert {r.label for r in system_rows(dst)} == {"beam"}
