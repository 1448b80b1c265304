"""eval/run.py as a command line (issue #11): what it prints, what it refuses before decoding,
and that every error is one ``error:`` line with exit status 2."""
from __future__ import annotations

import gzip

import pytest
from conftest import needs_pyctcdecode
from decoding_fixtures import arpa_text
from eval_fixtures import LM_WORDS, write_tiny_emissions

from ctclab.decoders.base import available_decoders
from ctclab.eval import run as run_mod
from ctclab.lm import array_build, files

LM_DECODER = next(d for d in ("beam", "pyctcdecode") if d in available_decoders())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-cli")
    return {"emissions": write_tiny_emissions(root), "cache": root / "cache", "root": root}


def args(tiny, out, *extra):
    return ["--import-emissions", str(tiny["emissions"]), "--cache-dir", str(tiny["cache"]),
            "--out", str(out), "--bootstrap", "50", "--split", "test-a", *extra]


def arpa_without_unk(path):
    """A unigram-backed bigram ARPA with no <unk> (KenLM prints a notice when loading it)."""
    words = ["<s>", "</s>", *LM_WORDS]
    path.write_text(arpa_text({w: (-1.0, -0.3) for w in words}, {"<s> the": -0.3}), "utf-8")
    return path


def test_kenlm_banner_is_one_note_and_nothing_with_quiet(tiny, tmp_path, capfd):
    # beam scores an ARPA with the array LM by default; KenLM loads it with this backend
    kenlm = ["--lm-backend", "kenlm"] if LM_DECODER == "beam" else []
    lm = arpa_without_unk(tmp_path / "quiet.arpa")
    run_mod.run(args(tiny, tmp_path / "q", "--decoder", LM_DECODER, "--lm", str(lm), "--quiet",
                     *kenlm))
    err = capfd.readouterr().err
    for banner in ("Reading", "****", "<unk>", "binary file", "note:"):
        assert banner not in err, err
    lm2 = arpa_without_unk(tmp_path / "loud.arpa")
    run_mod.run(args(tiny, tmp_path / "l", "--decoder", LM_DECODER, "--lm", str(lm2), *kenlm))
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if "loud.arpa" in line]
    assert len(notes) == 1 and notes[0].startswith("note: LM loud.arpa: 2-gram loaded in"), err
    assert "no <unk>" in notes[0] and "****" not in err and "Reading" not in err


def gzipped(path):
    """``path`` gzipped beside it as <name>.gz (the plain file removed)."""
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return target


def test_quiet_reaches_the_progress_of_lm_set_up_work(tiny, tmp_path, capfd, monkeypatch):
    # A tiny LM shows no progress anyway: lower the thresholds so that it would.
    monkeypatch.setattr(files, "PROGRESS_MIN_GZIP_BYTES", 0)
    monkeypatch.setattr(array_build, "PROGRESS_MIN_NGRAMS", 0)
    capfd.readouterr()
    for name, quiet in (("hush", ["--quiet"]), ("shout", [])):
        lm = gzipped(arpa_without_unk(tmp_path / f"{name}.arpa"))  # new files: work to do again
        run_mod.run(args(tiny, tmp_path / name, "--decoder", "beam", "--lm", str(lm),
                         "--rescore", str(lm), "--nbest", "2", *quiet))
        out, err = capfd.readouterr()
        gunzip = [line for line in err.splitlines() if line.startswith(f"gunzip {name}.arpa.gz:")]
        arrays = [line for line in err.splitlines() if line.startswith("arrays ")]
        if quiet:
            assert not gunzip and not arrays and "B/s" not in out + err, err
        else:  # the check of input files decompresses it; the beam builds its arrays
            assert len(gunzip) == 1 and len(arrays) == 1 and "n-gram" in arrays[0], err


def test_lm_note_names_the_gzip_file_given_not_its_decompressed_copy(tiny, tmp_path, capfd):
    kenlm = ["--lm-backend", "kenlm"] if LM_DECODER == "beam" else []
    lm = gzipped(arpa_without_unk(tmp_path / "given.arpa"))
    run_mod.run(args(tiny, tmp_path / "g", "--decoder", LM_DECODER, "--lm", str(lm), *kenlm))
    notes = [line for line in capfd.readouterr().err.splitlines() if line.startswith("note: LM")]
    assert len(notes) == 1 and notes[0].startswith("note: LM given.arpa.gz: 2-gram loaded"), notes


def test_speed_column_keeps_digits_for_fast_decoders():
    from ctclab.eval.report import speed_text

    assert speed_text(0.00004) == "25,000"      # greedy: an RTF column printed 0.0000
    assert speed_text(0.05) == "20.0" and speed_text(0.8) == "1.25"
    assert speed_text(float("nan")) == "-" and speed_text(0.0) == "-"


def test_console_table_shows_speed_as_multiple_of_real_time(tiny, tmp_path, capsys):
    from ctclab.eval.report import speed_text

    summary = run_mod.run(args(tiny, tmp_path / "s", "--decoder", "greedy", "--quiet"))
    printed = capsys.readouterr().out
    assert "x real time" in printed and "RTF" not in printed
    (s,) = summary.systems
    row = next(line for line in printed.splitlines() if line.startswith("test-a"))
    assert row.split()[-1] == speed_text(s.rtf)
    assert row.split()[-1] not in ("0.0000", "-")


# ----------------------------------------------------------------------------- item 4: no silence
def test_options_that_reach_no_system_are_errors(tiny, tmp_path, capsys):
    lm = str(arpa_without_unk(tmp_path / "tiny.arpa"))
    cases = [(["--decoder", "greedy", "--lm", lm], "no chosen decoder (greedy) fuses an LM"),
             (["--decoder", LM_DECODER, "--alpha", "0.8"], "--alpha 0.8 has no effect on any "
              f"system of this run ({LM_DECODER}: no language model); add --lm FILE"),
             (["--decoder", LM_DECODER, "--beta", "2"], "--beta 2.0 has no effect"),
             (["--decoder", LM_DECODER, "--unigrams", lm], "--unigrams"),
             (["--decoder", LM_DECODER, "--hotword-weight", "3"], "no hotwords")]
    if "beam" in available_decoders():
        cases.append((["--decoder", "beam", "--lexicon-mode", "hard"],
                      "--lexicon-mode hard has no effect on any system of this run (beam: no "
                      "language model, word list or lexicon)"))
    for extra, message in cases:
        assert run_mod.main(args(tiny, tmp_path / "x", "--quiet", *extra)) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (extra, err)
        assert not (tmp_path / "x").exists()


@needs_pyctcdecode
def test_options_that_miss_some_systems_are_named_in_a_warning(tiny, tmp_path, capsys):
    lm = str(arpa_without_unk(tmp_path / "tiny.arpa"))
    run_mod.run(args(tiny, tmp_path / "w", "--quiet", "--decoder", "greedy", "beam",
                     "pyctcdecode", "--lm", "none", lm, "--beam-width", "8", "--alpha", "0.8",
                     "--lexicon-mode", "hard"))
    err = capsys.readouterr().err.splitlines()
    assert "warning: --beam-width 8 does not apply to greedy (not its option)" in err
    assert ("warning: --alpha 0.8 does not apply to greedy (not its option); beam, pyctcdecode "
            "(no language model)") in err
    assert ("warning: --lexicon-mode hard does not apply to greedy, pyctcdecode, pyctcdecode+tiny "
            "(not its option); beam (no language model, word list or lexicon)") in err


def test_greedy_beside_lm_decoders_without_none_runs_once_and_says_so(tiny, tmp_path, capsys):
    lm = str(arpa_without_unk(tmp_path / "tiny.arpa"))
    run_mod.run(args(tiny, tmp_path / "g", "--quiet", "--decoder", "greedy", "beam", "--lm", lm,
                     "--beam-width", "8"))
    assert "warning: greedy takes no LM: it runs once, without" in capsys.readouterr().err


def test_options_every_system_uses_give_no_warning(tiny, tmp_path, capsys):
    lm = str(arpa_without_unk(tmp_path / "tiny.arpa"))
    run_mod.run(args(tiny, tmp_path / "n", "--quiet", "--decoder", LM_DECODER, "--lm", lm,
                     "--beam-width", "8", "--alpha", "0.3", "--hotwords", "cat"))
    assert "warning" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- item 5: LM labels
def test_lms_sharing_a_stem_get_distinct_systems(tiny, tmp_path):
    from ctclab.eval.systems import lm_labels

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    arpa = arpa_without_unk(tmp_path / "a" / "4gram.arpa")
    other = tmp_path / "a" / "4gram.binary"      # labels only: never loaded
    twin = arpa_without_unk(tmp_path / "b" / "4gram.arpa")
    assert lm_labels([str(arpa), str(other)]) == {str(arpa): "4gram.arpa",
                                                  str(other): "4gram.binary"}
    assert lm_labels([str(arpa), str(twin)]) == {str(arpa): "a-4gram.arpa",
                                                  str(twin): "b-4gram.arpa"}
    assert lm_labels([str(arpa), "librispeech-4gram"]) == {str(arpa): "4gram",
                                                            "librispeech-4gram": "librispeech-4gram"}
    with pytest.raises(ValueError, match="twice"):
        lm_labels([str(arpa), str(tmp_path / "a" / ".." / "a" / "4gram.arpa")])
    summary = run_mod.run(args(tiny, tmp_path / "r", "--quiet", "--decoder", LM_DECODER, "--lm",
                               str(arpa), str(twin), "--beam-width", "8"))
    assert [s.system for s in summary.systems] == [f"{LM_DECODER}+a-4gram.arpa",
                                                   f"{LM_DECODER}+b-4gram.arpa"]


# ----------------------------------------------------------------------------- items 6, 7, 16
def test_every_input_is_checked_before_anything_is_decoded(tiny, tmp_path, capsys, monkeypatch):
    from ctclab.eval import runner

    monkeypatch.setattr(runner, "decode_records", lambda *a, **k: pytest.fail("decoded first"))
    out = tmp_path / "x"
    bad_lm = ["--decoder", "greedy", LM_DECODER, "--lm", "none", str(tmp_path / "nope.arpa")]
    assert run_mod.main(args(tiny, out, "--quiet", *bad_lm)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: language model not found: ") and "nope.arpa" in err
    not_an_lm = tmp_path / "words.arpa"
    not_an_lm.write_text("the\ncat\n")
    assert run_mod.main(args(tiny, out, "--quiet", "--decoder", LM_DECODER, "--lm",
                             str(not_an_lm))) == 2
    assert "is neither an ARPA file" in capsys.readouterr().err
    lm = str(arpa_without_unk(tmp_path / "ok.arpa"))
    assert run_mod.main(args(tiny, out, "--quiet", "--decoder", LM_DECODER, "--lm", lm,
                             "--unigrams", str(tmp_path / "no-words.txt"))) == 2
    assert "error: --unigrams " in capsys.readouterr().err
    assert run_mod.main(args(tiny, out, "--quiet", "--decoder", LM_DECODER, "--lm", lm,
                             "--params", str(tmp_path / "no-params.json"))) == 2
    assert "params file" in capsys.readouterr().err
    assert not out.exists()           # nothing was written for a run that could not start


def test_an_lm_name_offline_is_one_error_line_and_no_folder(tiny, tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    out = tmp_path / "x"
    code = run_mod.main(args(tiny, out, "--quiet", "--decoder", LM_DECODER, "--lm",
                             "librispeech-4gram"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "Download it by hand" in err
    assert not out.exists()           # no results folder holding only settings.json


def test_an_unreachable_hub_is_one_error_line(tmp_path, capsys, monkeypatch):
    from ctclab.emission.audio_sources import HFDatasetSource

    def offline(self):   # what the datasets library does without a network, quickly
        raise RuntimeError("cannot load Hugging Face dataset 'openslr/librispeech_asr': offline")

    monkeypatch.setattr(HFDatasetSource, "listing", offline)
    code = run_mod.main(["--model", "facebook/wav2vec2-base-960h", "--source", "hf", "--cache-dir",
                         str(tmp_path), "--split", "test-clean", "--out", str(tmp_path / "o"),
                         "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot load Hugging Face dataset")
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_out_naming_a_file_and_a_full_disk_are_error_lines(tiny, tmp_path, capsys, monkeypatch):
    file = tmp_path / "taken"
    file.write_text("not a folder")
    assert run_mod.main(args(tiny, file, "--quiet", "--decoder", "greedy")) == 2
    assert "error: --out " in capsys.readouterr().err and file.read_text() == "not a folder"
    from ctclab.eval.results import ResultsFolder

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResultsFolder, "append_utterances", full)
    assert run_mod.main(args(tiny, tmp_path / "full", "--quiet", "--decoder", "greedy")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "No space left on device" in err


# ----------------------------------------------------------------------------- item 8
def test_the_one_cached_model_is_picked_without_model(tiny, tmp_path, capsys):
    cache = tmp_path / "cache"
    base = ["--cache-dir", str(cache), "--bootstrap", "50", "--split", "test-a", "--decoder",
            "greedy"]
    run_mod.run(["--import-emissions", str(tiny["emissions"]), *base, "--out",
                 str(tmp_path / "first")])
    capsys.readouterr()
    summary = run_mod.run([*base, "--out", str(tmp_path / "picked")])
    assert summary.systems[0].utterances == 2
    assert "note: no --model given: decoding tiny-ctc" in capsys.readouterr().err
    # No cache of the split: the error lists what is cached.
    assert run_mod.main([*base[:-4], "--split", "dev-z", "--decoder", "greedy", "--out",
                         str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "no single model has caches of dev-z" in err and "pass --model NAME" in err
    # Two cached models: the error names both.
    run_mod.run(["--import-emissions", str(tiny["emissions"]), "--model", "other", *base,
                 "--out", str(tmp_path / "other")])
    capsys.readouterr()
    assert run_mod.main([*base, "--out", str(tmp_path / "two")]) == 2
    err = capsys.readouterr().err
    assert "several models have caches of test-a" in err and "other, tiny-ctc" in err


def test_progress_off_a_terminal_is_plain_lines(tiny, tmp_path, capfd):
    run_mod.run(args(tiny, tmp_path / "p", "--decoder", "greedy", LM_DECODER))
    err = capfd.readouterr().err
    assert "\r" not in err                              # no redraws in a log file or a pipe
    assert f"test-a {LM_DECODER}: 2/2 utt (100%)" in err  # one plain line when a bar ends


def test_flags_without_the_flag_they_go_with_are_errors(tiny, tmp_path, capsys):
    for extra, message in ((["--tune-values", "alpha=0,1"], "--tune-values only applies with "
                             "--tune"),
                           (["--params-out", "p.json"], "--params-out only applies with --tune"),
                           (["--tune-split", "dev-a"], "--tune-split only applies with --tune"),
                           (["--calibration-out", "c.json"], "--calibration-out only applies "
                            "with --calibrate-split")):
        assert run_mod.main(args(tiny, tmp_path / "x", "--quiet", "--decoder", "greedy",
                                 *extra)) == 2
        assert message in capsys.readouterr().err
    assert run_mod.main(args(tiny, tmp_path / "x", "--quiet", "--decoder", LM_DECODER, "--lm",
                             str(arpa_without_unk(tmp_path / "t.arpa")), "--tune", "alpha",
                             "--tune-split", "dev-a", "--tune-trials", "5")) == 2
    assert "--tune-trials only applies with --tune-method optuna" in capsys.readouterr().err
