"""A results folder never mixes or half-covers its work (issue #11 items 2, 14, 15, 19): the
summary covers every system the folder holds, a resume needs the same emissions (cache identity)
and the same input files, two runs cannot write one folder at once, a repeated line is read once,
and tuned values stay with the LM file they were tuned with."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from eval_fixtures import write_tiny_arpa, write_tiny_emissions

from ctclab.decoders.base import available_decoders
from ctclab.eval import job as job_mod
from ctclab.eval import run as run_mod
from ctclab.eval.results import ResultsFolder

LM_DECODER = next(d for d in ("beam", "pyctcdecode") if d in available_decoders())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-results")
    return {"emissions": write_tiny_emissions(root), "cache": root / "cache", "root": root,
            "lm": write_tiny_arpa(root / "tiny.arpa")}


def args(tiny, out, *extra, cache=None, emissions=None):
    return ["--import-emissions", str(emissions or tiny["emissions"]), "--cache-dir",
            str(cache or tiny["cache"]), "--out", str(out), "--bootstrap", "50", "--quiet",
            *extra]


# ----------------------------------------------------------------------------- item 2
def test_a_run_naming_fewer_systems_is_refused_and_the_folder_stays_whole(tiny, tmp_path, capsys):
    out = tmp_path / "r"
    run_mod.run(args(tiny, out, "--decoder", "greedy", LM_DECODER, "--split", "test-a", "dev-a"))
    before = {name: (out / name).read_text() for name in ("summary.json", "settings.json")}
    for fewer, left in ((["--decoder", "greedy", "--split", "test-a", "dev-a"],
                         f"of systems this run does not name ({LM_DECODER})"),
                        (["--decoder", "greedy", LM_DECODER, "--split", "test-a"],
                         "of splits this run does not name (dev-a)")):
        with pytest.raises(ValueError, match=rf"also holds results {re.escape(left)}.*the "
                                             "folder's last command was: eval/run.py "):
            run_mod.run(args(tiny, out, *fewer))
        assert run_mod.main(args(tiny, out, *fewer)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
    assert {name: (out / name).read_text() for name in before} == before   # nothing rewritten
    # Naming every system again (plus a new split) resumes and covers the whole folder.
    summary = run_mod.run(args(tiny, out, "--decoder", "greedy", LM_DECODER, "--split", "test-a",
                               "dev-a", "dev-b"))
    assert {(s.split, s.system) for s in summary.systems} == {
        (split, system) for split in ("test-a", "dev-a", "dev-b")
        for system in ("greedy", LM_DECODER)}
    stored = ResultsFolder(out).read_settings()
    assert stored is not None and set(stored.splits) == {"test-a", "dev-a", "dev-b"}
    assert [s.label for s in stored.systems] == ["greedy", LM_DECODER]


def test_changed_options_name_the_one_key_and_its_two_values(tiny, tmp_path):
    out = tmp_path / "o"
    run_mod.run(args(tiny, out, "--decoder", LM_DECODER, "--split", "test-a", "--beam-width", "4"))
    with pytest.raises(ValueError) as error:
        run_mod.run([*args(tiny, out, "--decoder", LM_DECODER, "--split", "test-a"),
                     "--beam-width", "5"])
    message = str(error.value)
    assert f"results of {LM_DECODER!r} made with options.beam_width = 4, now 5" in message
    assert "{" not in message           # not two whole option dictionaries


# ----------------------------------------------------------------------------- item 14
def test_another_cache_of_the_same_model_name_is_not_resumed(tiny, tmp_path):
    out = tmp_path / "c"
    first = run_mod.run(args(tiny, out, "--decoder", "greedy", "--split", "test-a", "--model",
                             "m", cache=tmp_path / "cache1"))
    # Same model name, ids and references; other arrays (another seed), in another cache root.
    other = write_tiny_emissions(tmp_path / "other", seed=7)
    with pytest.raises(ValueError, match="from another emission cache"):
        run_mod.run(args(tiny, out, "--decoder", "greedy", "--split", "test-a", "--model", "m",
                         cache=tmp_path / "cache2", emissions=other))
    settings = json.loads((out / "settings.json").read_text())
    assert str(tmp_path / "cache1") in settings["splits"]["test-a"]["cache"]   # not rewritten
    assert settings["splits"]["test-a"]["content_key"]
    again = run_mod.run(args(tiny, out, "--decoder", "greedy", "--split", "test-a", "--model",
                             "m", cache=tmp_path / "cache1"))
    assert again.systems[0].wer == first.systems[0].wer


def test_skipped_utterances_are_printed_and_recorded(tiny, tmp_path, capsys):
    cache_root = tmp_path / "cache"
    run_mod.run(args(tiny, tmp_path / "first", "--decoder", "greedy", "--split", "test-a",
                     cache=cache_root))
    (meta_file,) = cache_root.rglob("test-a/meta.json")
    meta = json.loads(meta_file.read_text())
    meta["skipped"] = [{"id": "t9", "path": "/audio/t9.flac", "reason": "empty file"}]
    meta_file.write_text(json.dumps(meta))
    capsys.readouterr()
    run_mod.run(args(tiny, tmp_path / "second", "--decoder", "greedy", "--split", "test-a",
                     cache=cache_root))
    out = capsys.readouterr().out
    assert ("test-a: 1 utterance(s) skipped when the emissions were made and not scored: t9 "
            "(empty file)") in out
    settings = json.loads((tmp_path / "second" / "settings.json").read_text())
    assert settings["splits"]["test-a"]["skipped"] == [{"id": "t9", "reason": "empty file"}]


# ----------------------------------------------------------------------------- item 15
def test_a_locked_folder_is_refused_and_repeated_lines_are_read_once(tiny, tmp_path, capsys):
    out = tmp_path / "l"
    run_mod.run(args(tiny, out, "--decoder", "greedy", "--split", "dev-a"))
    folder = ResultsFolder(out)
    with folder.lock():      # another run writing the folder
        assert run_mod.main(args(tiny, out, "--decoder", "greedy", "--split", "dev-a")) == 2
        err = capsys.readouterr().err
        assert f"error: another eval/run.py is writing {out} (pid {os.getpid()})" in err
    # A folder written twice by two unlocked runs (before this lock existed): 2 x the lines.
    path = out / "dev-a" / "greedy.jsonl"
    path.write_text(path.read_text() * 2)
    results = folder.read_utterances("dev-a", "greedy")
    assert len(results) == len({r.id for r in results}) == 4
    summary = run_mod.run(args(tiny, out, "--decoder", "greedy", "--split", "dev-a"))
    assert summary.systems[0].utterances == 4


def test_a_reader_never_cuts_the_writers_file(tiny, tmp_path):
    out = tmp_path / "t"
    run_mod.run(args(tiny, out, "--decoder", "greedy", "--split", "dev-a"))
    path = out / "dev-a" / "greedy.jsonl"
    text = path.read_text()
    path.write_text(text + '{"id": "d9", "re')        # a line being written
    assert len(ResultsFolder(out).read_utterances("dev-a", "greedy")) == 4
    assert path.read_text().endswith('"re')            # left for the writer
    assert len(ResultsFolder(out).read_utterances("dev-a", "greedy", repair=True)) == 4
    assert path.read_text() == text


# ----------------------------------------------------------------------------- item 19
def test_params_are_refused_for_another_lm_file_of_the_same_name(tiny, tmp_path):
    out = tmp_path / "tuned"
    lm = tmp_path / "a" / "tiny.arpa"
    lm.parent.mkdir()
    shutil.copy(tiny["lm"], lm)
    run_mod.run(args(tiny, out, "--decoder", LM_DECODER, "--lm", str(lm), "--split", "test-a",
                     "--tune", "alpha", "--tune-split", "dev-b", "--tune-values", "alpha=0,1"))
    params = out / "params.json"
    # The same file: applied.
    run_mod.run(args(tiny, tmp_path / "same", "--decoder", LM_DECODER, "--lm", str(lm),
                     "--split", "test-a", "--params", str(params)))
    # Another LM with the same file name (so the same system label): refused, naming both.
    other = tmp_path / "b" / "tiny.arpa"
    other.parent.mkdir()
    other.write_text(lm.read_text().replace("-0.3", "-0.4"))
    with pytest.raises(ValueError, match=rf"tuned with lm_path = {lm} .*this run's is {other}"):
        run_mod.run(args(tiny, tmp_path / "other", "--decoder", LM_DECODER, "--lm", str(other),
                         "--split", "test-a", "--params", str(params)))
    # The tuned file edited in place: refused too.
    lm.write_text(lm.read_text().replace("-0.3", "-0.5"))
    with pytest.raises(ValueError, match="another file of the same name, or the file changed"):
        run_mod.run(args(tiny, tmp_path / "edited", "--decoder", LM_DECODER, "--lm", str(lm),
                         "--split", "test-a", "--params", str(params)))


def test_results_are_not_resumed_with_an_lm_file_replaced_in_place(tiny, tmp_path):
    out = tmp_path / "lm"
    lm = tmp_path / "tiny.arpa"
    shutil.copy(tiny["lm"], lm)
    run_mod.run(args(tiny, out, "--decoder", LM_DECODER, "--lm", str(lm), "--split", "test-a"))
    lm.write_text(lm.read_text().replace("-0.3", "-0.6"))
    with pytest.raises(ValueError, match=r"made with inputs.lm_path = .* the file behind it "
                                         "changed"):
        run_mod.run(args(tiny, out, "--decoder", LM_DECODER, "--lm", str(lm), "--split",
                         "test-a"))


def test_a_folder_that_cannot_be_resumed_is_refused_before_tuning(tiny, tmp_path, monkeypatch):
    out = tmp_path / "t"
    run_mod.run(args(tiny, out, "--decoder", "greedy", "--split", "test-a"))
    monkeypatch.setattr(job_mod, "tune_systems", lambda *a, **k: pytest.fail("tuned first"))
    with pytest.raises(ValueError, match="also holds results of systems this run does not name"):
        run_mod.run(args(tiny, out, "--decoder", LM_DECODER, "--lm", str(tiny["lm"]), "--split",
                         "test-a", "--tune", "alpha", "--tune-split", "dev-b"))


# ----------------------------------------------------------------------------- item 3
def test_nbest_lists_and_word_timestamps_reach_the_jsonl(tiny, tmp_path):
    out = tmp_path / "n"
    run_mod.run(args(tiny, out, "--decoder", LM_DECODER, "--split", "test-a", "--nbest", "3",
                     "--beam-width", "8"))
    rows = [json.loads(line) for line in (out / "test-a" / f"{LM_DECODER}.jsonl").open()]
    for row in rows:
        assert len(row["nbest"]) == 3 and row["nbest"][0]["text"] == row["hyp"]
        assert {"text", "score", "errors"} <= set(row["nbest"][0])
        assert row["words"] and all({"start_s", "end_s", "start_frame", "end_frame"} <= set(w)
                                    for w in row["words"])
    assert json.loads((out / "settings.json").read_text())["word_timestamps"] is True
    # Without timestamps: the words (with their confidence) stay, their times go.
    bare = tmp_path / "bare"
    run_mod.run(args(tiny, bare, "--decoder", "greedy", "--split", "test-a",
                     "--no-word-timestamps"))
    for line in (bare / "test-a" / "greedy.jsonl").open():
        words = json.loads(line)["words"]
        assert words and all("start_s" not in w and "confidence" in w for w in words)
    # One folder, one layout: a resume with the other setting is refused.
    with pytest.raises(ValueError, match="records words without timestamps"):
        run_mod.run(args(tiny, bare, "--decoder", "greedy", "--split", "test-a"))
