"""eval/run.py as a command line (issue #11): what it prints, what it refuses before decoding,
and that every error is one ``error:`` line with exit status 2."""
from __future__ import annotations

import pytest
from decoding_fixtures import arpa_text
from eval_fixtures import LM_WORDS, write_tiny_emissions

from ctclab.decoders.base import available_decoders
from ctclab.eval import run as run_mod
from ctclab.eval.report import speed_text

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
    lm = arpa_without_unk(tmp_path / "quiet.arpa")
    run_mod.run(args(tiny, tmp_path / "q", "--decoder", LM_DECODER, "--lm", str(lm), "--quiet"))
    err = capfd.readouterr().err
    for banner in ("Reading", "****", "<unk>", "binary file", "note:"):
        assert banner not in err, err
    lm2 = arpa_without_unk(tmp_path / "loud.arpa")
    run_mod.run(args(tiny, tmp_path / "l", "--decoder", LM_DECODER, "--lm", str(lm2)))
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if "loud.arpa" in line]
    assert len(notes) == 1 and notes[0].startswith("note: LM loud.arpa: 2-gram loaded in"), err
    assert "no <unk>" in notes[0] and "****" not in err and "Reading" not in err


def test_speed_column_keeps_digits_for_fast_decoders():
    assert speed_text(0.00004) == "25,000"      # greedy: an RTF column printed 0.0000
    assert speed_text(0.05) == "20.0" and speed_text(0.8) == "1.25"
    assert speed_text(float("nan")) == "-" and speed_text(0.0) == "-"


def test_console_table_shows_speed_as_multiple_of_real_time(tiny, tmp_path, capsys):
    summary = run_mod.run(args(tiny, tmp_path / "s", "--decoder", "greedy", "--quiet"))
    printed = capsys.readouterr().out
    assert "x real time" in printed and "RTF" not in printed
    (s,) = summary.systems
    row = next(line for line in printed.splitlines() if line.startswith("test-a"))
    assert row.split()[-1] == speed_text(s.rtf)
    assert row.split()[-1] not in ("0.0000", "-")
