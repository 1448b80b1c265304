"""eval/confidence_metrics.py and eval/calibration.py: right/wrong words, ECE, AUC, calibrators."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ctclab.core.normalize import DEFAULT_NORMALIZER
from ctclab.eval.calibration import (
    CalibrationFile,
    SystemCalibration,
    cross_validated_brier,
    fit_calibrator,
    load_calibration,
    save_calibration,
    word_features,
)
from ctclab.eval.confidence_metrics import (
    auc,
    confidence_stats,
    expected_calibration_error,
    reliability,
    word_correctness,
)
from ctclab.eval.metrics import score_utterance
from ctclab.eval.oracle import oracle_errors


def test_word_correctness_uses_the_wer_alignment():
    s = score_utterance("THE CAT SAT DOWN", "the cap sat down now")
    assert word_correctness(["the", "cap", "sat", "down", "now"], s.alignment,
                            DEFAULT_NORMALIZER) == [True, False, True, True, False]
    with pytest.raises(ValueError, match="do not normalise"):
        word_correctness(["the", "cap"], s.alignment, DEFAULT_NORMALIZER)
    # a word the normaliser drops is not scored
    s = score_utterance("A B", "a - b")
    assert word_correctness(["a", "-", "b"], s.alignment, DEFAULT_NORMALIZER) == [True, None, True]


def test_ece_and_auc_by_hand():
    conf = [0.95, 0.95, 0.85, 0.15]
    right = [True, False, True, False]
    # bins: [0.9,1.0]: conf .95 acc .5 -> 2/4*.45; [0.8,.9): |.85-1|*1/4; [.1,.2): .15*1/4
    assert expected_calibration_error(conf, right) == pytest.approx(0.5 * 0.45 + 0.25 * 0.15
                                                                    + 0.25 * 0.15)
    # pairs (right, wrong): (.95,.95) tie .5, (.95,.15) 1, (.85,.95) 0, (.85,.15) 1 -> 2.5/4
    assert auc(conf, right) == pytest.approx(2.5 / 4)
    assert math.isnan(auc([0.9, 0.8], [True, True]))
    bins = reliability(conf, right)
    assert bins[9].words == 2 and bins[9].accuracy == 0.5 and bins[0].words == 0
    with pytest.raises(ValueError, match="probabilities"):
        auc([1.5, 0.2], [True, False])


def test_confidence_stats_intervals_contain_the_estimate():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1, 400)
    right = rng.uniform(0, 1, 400) < conf          # calibrated by construction
    utt = np.repeat(np.arange(40), 10)
    s = confidence_stats(conf, right, utt, resamples=200)
    assert s.words == 400 and s.wrong == int((~right).sum())
    # (ECE is biased upward in resamples, so its interval need not hold the estimate)
    assert s.ece < 0.08 and s.ece_low < s.ece_high < 0.1
    assert 0.5 < s.auc_low <= s.auc <= s.auc_high < 1.0
    same = confidence_stats(conf, right, utt, resamples=0)
    assert same.auc == s.auc and math.isnan(same.auc_low)


def test_temperature_recovers_an_overconfident_scale():
    rng = np.random.default_rng(1)
    true_p = rng.uniform(0.3, 0.999, 3000)
    right = rng.uniform(0, 1, 3000) < true_p
    logit = np.log(true_p / (1 - true_p))
    over = 1 / (1 + np.exp(-2.0 * logit))          # twice as sure as it should be
    cal = fit_calibrator("temperature", over, right)
    assert cal.params["temperature"] == pytest.approx(2.0, rel=0.15)
    fixed = cal.apply(over)
    assert expected_calibration_error(fixed, right) < expected_calibration_error(over, right)
    assert auc(fixed, right) == pytest.approx(auc(over, right))   # order kept
    iso = fit_calibrator("isotonic", over, right)
    out = iso.apply(np.sort(over))
    assert (np.diff(out) >= 0).all() and out.max() < 1.0
    assert expected_calibration_error(iso.apply(over), right) < 0.03
    assert math.isnan(cal.apply([math.nan])[0])


def test_platt_weighs_frame_and_posterior_separately():
    rng = np.random.default_rng(0)
    n = 2000
    frame, post = rng.uniform(0.5, 0.9999, n), rng.uniform(0.3, 0.999, n)
    # right words follow mostly the n-best posterior, a little the frame part; the decoder's
    # confidence (their product) over-trusts the frame part
    truth = 1 / (1 + np.exp(-(0.2 * _logit(frame) + 1.0 * _logit(post))))
    right = rng.uniform(0, 1, n) < truth
    raw = frame * post
    cal = fit_calibrator("auto", raw, right, frame, np.arange(n) // 10)
    assert cal.method == "platt" and cal.params["features"] == ["frame", "posterior"]
    assert cal.params["weights"] == pytest.approx([0.2, 1.0], abs=0.15)
    assert cal.cv_brier["platt"] < min(cal.cv_brier["none"], cal.cv_brier["temperature"])
    fixed = cal.apply(raw, frame)
    assert expected_calibration_error(fixed, right) < expected_calibration_error(raw, right) / 2
    assert auc(fixed, right) > auc(raw, right)
    assert cal.describe().startswith("auto: platt frame 0.")
    with pytest.raises(ValueError, match="frame confidences"):
        cal.apply(raw)


def test_auto_keeps_the_raw_confidence_unless_calibrating_helps_on_held_out_folds():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.3, 0.999, 2000)
    right = rng.uniform(0, 1, 2000) < p                     # calibrated already
    utterance = np.arange(2000) // 10
    cal = fit_calibrator("auto", p, right, np.ones(2000), utterance)
    assert set(cal.cv_brier) == {"none", "temperature", "platt"}
    assert np.abs(cal.apply(p, np.ones(2000)) - p).max() < 0.02
    over = 1 / (1 + np.exp(-2.0 * _logit(p)))              # twice as sure as it should be
    cal = fit_calibrator("auto", over, right, np.ones(2000), utterance)
    assert cal.method == "temperature" and cal.params["temperature"] == pytest.approx(2, rel=0.2)
    none = fit_calibrator("none", over, right)
    assert none.apply(over) == pytest.approx(over) and not none.cv_brier
    # a fold whose training part has no wrong word keeps the raw values instead of failing
    few = np.r_[np.ones(50, bool), False]
    assert math.isfinite(cross_validated_brier("temperature", np.full(51, 0.9), few,
                                               np.ones(51), np.arange(51)))


def test_word_features_split_the_confidence_into_frame_and_posterior():
    f = word_features(np.array([0.45, 0.8, 0.3]), np.array([0.9, 0.8, math.nan]))
    assert f["frame"] == pytest.approx([0.9, 0.8, 1.0])        # unknown frame part: 1
    assert f["posterior"] == pytest.approx([0.5, 1.0, 0.3])


def _logit(p):
    return np.log(p / (1 - p))


def test_fit_needs_right_and_wrong_words():
    with pytest.raises(ValueError, match="right and words that are wrong"):
        fit_calibrator("temperature", [0.9, 0.8], [True, True])
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibrator("histogram", [0.9, 0.1], [True, False])


def test_calibration_file_round_trip_and_system_check(tmp_path):
    cal = fit_calibrator("temperature", [0.9, 0.8, 0.3, 0.95], [True, True, False, False])
    identity = {"decoder": "beam", "options": {"alpha": 0.5, "hotwords": ()}}
    path = tmp_path / "calibration.json"
    save_calibration(path, CalibrationFile("dev-clean", {
        "beam+lm": SystemCalibration(cal, identity, 4, 2, 0.3, 0.2)}))
    loaded = load_calibration(path)
    assert loaded.for_system("beam+lm", identity).apply([0.7]) == pytest.approx(cal.apply([0.7]))
    assert loaded.for_system("beam+lm", identity).fitted_on == "dev-clean"
    platt = fit_calibrator("auto", [0.9, 0.8, 0.3, 0.95, 0.2, 0.99], [True, True, False, True,
                                                                     False, True],
                           [0.95, 0.9, 0.6, 0.96, 0.5, 0.99])
    save_calibration(path, CalibrationFile("dev-clean", {
        "beam+lm": SystemCalibration(platt, identity, 6, 2, 0.1, 0.1)}))
    again = load_calibration(path).for_system("beam+lm", identity)
    assert again.cv_brier == pytest.approx(platt.cv_brier) and again.method == platt.method
    assert again.apply([0.7], [0.8]) == pytest.approx(platt.apply([0.7], [0.8]))
    with pytest.raises(ValueError, match="alpha.*fitted 0.5, now 1.0"):
        loaded.for_system("beam+lm", {"decoder": "beam", "options": {"alpha": 1.0,
                                                                     "hotwords": ()}})
    with pytest.raises(ValueError, match="no system 'greedy'"):
        loaded.for_system("greedy", {})
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "x"}))
    with pytest.raises(ValueError, match="not a ctclab calibration file"):
        load_calibration(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="--calibrate-split"):
        load_calibration(tmp_path / "missing.json")


def test_oracle_picks_the_entry_with_fewest_errors():
    assert oracle_errors("THE CAT SAT", ["the cap sat", "the cat sat", "a cat sat"],
                         DEFAULT_NORMALIZER) == (0, 1)
    assert oracle_errors("A B", ["x y", "x y"], DEFAULT_NORMALIZER) == (2, 0)
    with pytest.raises(ValueError):
        oracle_errors("A", [], DEFAULT_NORMALIZER)


def test_word_records_of_words_that_do_not_spell_the_text_are_not_scored():
    from ctclab.core.hypothesis import Hypothesis, WordTimestamp
    from ctclab.eval.word_records import word_records

    hyp = Hypothesis("ab c", 0.0, words=(WordTimestamp("abc", 0, 2, 0.0, 0.04, 0.9, 0.9),))
    rec, = word_records(hyp, score_utterance("AB C", hyp.text), DEFAULT_NORMALIZER)
    assert rec["correct"] is None and rec["confidence"] == 0.9 and rec["end_frame"] == 2
