"""End to end through eval/run.py on the tiny imported cache: word confidence in the JSONL,
calibration fitted on dev and reused on test, the n-best oracle, rescoring with a second KenLM."""
from __future__ import annotations

import json
import math

import pytest
from eval_fixtures import write_tiny_arpa, write_tiny_emissions

from ctclab.eval import run as run_mod
from ctclab.eval.results import ResultsFolder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("conf")
    return {"emissions": write_tiny_emissions(root), "cache": root / "cache",
            "lm": write_tiny_arpa(root / "tiny.arpa")}


def args(tiny, out, *extra):
    return ["--import-emissions", str(tiny["emissions"]), "--cache-dir", str(tiny["cache"]),
            "--out", str(out), "--quiet", "--bootstrap", "100", "--beam-width", "8", *extra]


def test_calibrate_on_dev_then_reuse_on_test(tiny, tmp_path, capsys):
    out = tmp_path / "fit"
    summary = run_mod.run(args(tiny, out, "--decoder", "greedy", "beam", "--lm", "none",
                               str(tiny["lm"]), "--nbest", "4", "--split", "test-a",
                               "--calibrate-split", "dev-a", "dev-b"))
    printed = capsys.readouterr().out
    assert "[calibrate] saved to" in printed and "ECE" in printed
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["split"] == "dev-a+dev-b" and set(cal["systems"]) == {"greedy", "beam",
                                                                      "beam+tiny"}
    for entry in cal["systems"].values():
        assert set(entry["calibrator"]["cv_brier"]) == {"none", "temperature", "platt"}
    rows = {r.system: r for r in summary.confidence}
    assert set(rows) == {"greedy", "beam", "beam+tiny"}
    for r in rows.values():
        assert r.words == 7 and r.wrong == 1 and not r.in_sample     # "dot" for "dog"
        assert 0 <= r.ece <= 1 and r.calibration.startswith("auto: ")   # the default
    for s in summary.systems:       # the oracle is never worse than the 1-best
        assert math.isnan(s.oracle_wer) if s.system == "greedy" else s.oracle_wer <= s.wer
    lines = (out / "test-a" / "beam+tiny.jsonl").read_text().splitlines()
    utt = json.loads(lines[0])
    for w in utt["words"]:
        assert 0 <= w["confidence"] <= 1 and 0 <= w["calibrated"] <= 1
        assert w["end_s"] > w["start_s"] and isinstance(w["correct"], bool)
    assert utt["nbest"] and utt["oracle_errors"] == min(e["errors"] for e in utt["nbest"])
    assert "n-best oracle WER %" in (out / "summary.md").read_text()
    # the same systems on test, with the saved calibration: the same calibrated figures
    again = run_mod.run(args(tiny, tmp_path / "reuse", "--decoder", "greedy", "beam", "--lm",
                             "none", str(tiny["lm"]), "--nbest", "4", "--split", "test-a",
                             "--calibration", str(out / "calibration.json")))
    assert [(r.system, r.ece) for r in again.confidence] == [
        (r.system, r.ece) for r in summary.confidence]
    # another system (other alpha) is refused, naming what differs
    with pytest.raises(ValueError, match="options.alpha: fitted 0.5, now 1.0"):
        run_mod.run(args(tiny, tmp_path / "other", "--decoder", "beam", "--lm",
                         str(tiny["lm"]), "--nbest", "4", "--alpha", "1.0", "--split", "test-a",
                         "--calibration", str(out / "calibration.json")))


def test_bad_confidence_requests_are_clear_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="refusing to calibrate on 'test-a'"):
        run_mod.run(args(tiny, tmp_path / "a", "--decoder", "beam", "--nbest", "2", "--split",
                         "dev-a", "--calibrate-split", "test-a"))
    with pytest.raises(ValueError, match="--nbest 10"):   # beam without n-best lists
        run_mod.run(args(tiny, tmp_path / "b", "--decoder", "beam", "--split", "test-a",
                         "--calibrate-split", "dev-a"))
    with pytest.raises(ValueError, match="--nbest 10"):   # an n-best of one: nothing to re-rank
        run_mod.run(args(tiny, tmp_path / "c", "--decoder", "beam", "--split", "test-a",
                         "--rescore", str(tiny["lm"])))
    with pytest.raises(ValueError, match="without --rescore"):
        run_mod.run(args(tiny, tmp_path / "d", "--decoder", "beam", "--split", "test-a",
                         "--rescore-weight", "0.5"))
    assert run_mod.main(args(tiny, tmp_path / "e", "--decoder", "beam", "--split", "dev-a",
                             "--calibration", str(tmp_path / "missing.json"))) == 2


def test_no_word_confidence_gives_the_same_errors_without_confidences(tiny, tmp_path):
    common = ("--decoder", "greedy", "beam", "--lm", "none", str(tiny["lm"]), "--nbest", "4",
              "--split", "test-a")
    with_conf = run_mod.run(args(tiny, tmp_path / "on", *common))
    without = run_mod.run(args(tiny, tmp_path / "off", *common, "--no-word-confidence"))
    assert [(s.system, s.wer) for s in without.systems] == [
        (s.system, s.wer) for s in with_conf.systems]
    assert with_conf.confidence and not without.confidence
    utt = json.loads((tmp_path / "off" / "test-a" / "beam+tiny.jsonl").read_text().splitlines()[0])
    assert utt["words"] and all(w["confidence"] is None for w in utt["words"])
    with pytest.raises(ValueError, match="--no-word-confidence"):
        run_mod.run(args(tiny, tmp_path / "cal", *common, "--no-word-confidence",
                         "--calibrate-split", "dev-a"))


def test_rescoring_with_a_second_kenlm_tuned_on_dev(tiny, tmp_path):
    out = tmp_path / "rs"
    summary = run_mod.run(args(tiny, out, "--decoder", "beam", "--lm", "none", "--nbest", "4",
                               "--rescore", str(tiny["lm"]), "--tune", "rescore_weight",
                               "--tune-split", "dev-a", "--tune-values",
                               "rescore_weight=0,0.5,2", "--split", "test-a"))
    params = json.loads((out / "params.json").read_text())
    assert set(params["systems"]) == {"beam+rescore-tiny"}
    assert [t["params"]["rescore_weight"] for t in params["trials"]["beam+rescore-tiny"]] == [
        0, 0.5, 2]
    assert [s.system for s in summary.systems] == ["beam", "beam+rescore-tiny"]
    row, = summary.rescoring
    assert (row.base, row.rescored, row.split) == ("beam", "beam+rescore-tiny", "test-a")
    assert row.oracle_wer <= min(row.wer_base, row.wer_rescored)
    assert row.significant == (row.p_value < 0.05)
    settings = json.loads((out / "settings.json").read_text())
    spec = next(s for s in settings["systems"] if s["label"] == "beam+rescore-tiny")
    assert spec["options"]["rescore"]["rescore_weight"] == params["systems"][
        "beam+rescore-tiny"]["rescore_weight"]
    assert "Rescoring" in (out / "summary.md").read_text()
    assert ResultsFolder(out).read_summary().rescoring == summary.rescoring
