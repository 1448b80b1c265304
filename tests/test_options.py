"""Options declared once: flags, help and shown defaults generated from the options dataclasses
(core.options), and the same generated flags in eval/run.py and bench/decode_speed.py."""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from dataclasses import dataclass

import pytest
from conftest import REPO_ROOT

from ctclab.core.options import NO_FLAG, add_option_flags, flag_of, given_options, option
from ctclab.decoders.options import BeamOptions, PrefixSearchOptions, PyctcdecodeOptions
from ctclab.eval.run import build_parser
from ctclab.eval.systems import decoder_options


@dataclass(frozen=True)
class Small:
    width: int = option(8, "beams kept")
    floor: float = option(-5.0, "ln floor (5 % is too little)")
    top_k: int | None = option(None, "labels per frame")
    skip: float | None = option(0.9, "blank skip")
    words: tuple[str, ...] = option((), "words to boost")
    mode: str = option("soft", "lexicon", choices=("soft", "hard"))
    exact: bool = option(False, "exact search")
    source: str | None = option(None, "given elsewhere", flag=NO_FLAG)
    known: str | None = option(None, "word list", flag="unigrams")


@dataclass(frozen=True)
class Other:
    width: int = option(16, "beams kept")


def parse(argv: list[str], owners=None) -> dict:
    owners = owners or {"small": Small}
    parser = argparse.ArgumentParser()
    add_option_flags(parser, owners)
    return given_options(parser.parse_args(argv), owners)


def test_types_come_from_the_annotations():
    got = parse(["--width", "3", "--floor", "-2.5", "--top-k", "4", "--skip", "none", "--words",
                 "ravi", "kumar", "--mode", "hard", "--exact", "--unigrams", "w.txt"])
    assert got == {"width": 3, "floor": -2.5, "top_k": 4, "skip": None,
                   "words": ("ravi", "kumar"), "mode": "hard", "exact": True, "known": "w.txt"}
    assert Small(**got).words == ("ravi", "kumar")
    assert parse(["--no-exact"]) == {"exact": False}


def test_flags_not_given_are_absent_so_each_class_keeps_its_defaults():
    assert parse([]) == {}
    assert parse(["--top-k", "none"]) == {"top_k": None}   # given as none is not "not given"


def test_bad_values_and_fields_without_flags_are_refused(capsys):
    for argv in (["--width", "x"], ["--mode", "strict"], ["--source", "a"], ["--known", "a"]):
        with pytest.raises(SystemExit):
            parse(argv)
    err = capsys.readouterr().err
    assert "invalid int value: 'x'" in err and "invalid choice: 'strict'" in err
    assert "unrecognized arguments: --source" in err


def test_help_shows_text_owners_and_defaults():
    parser = argparse.ArgumentParser()
    add_option_flags(parser, {"small": Small, "other": Other})
    text = parser.format_help()
    assert "ln floor (5 % is too little)" in text        # % is escaped for argparse
    assert "beams kept [small, other] (default: small 8, other 16)" in " ".join(text.split())
    assert "(default: 0.9)" in text and "{soft,hard}" in text
    assert "--source" not in text and "--unigrams" in text


def test_one_field_with_two_types_is_an_error():
    @dataclass(frozen=True)
    class Clash:
        width: float = option(1.0, "not an int here")

    with pytest.raises(TypeError, match="declare it once"):
        add_option_flags(argparse.ArgumentParser(), {"small": Small, "clash": Clash})


def test_every_decoder_option_has_exactly_one_generated_flag_in_eval_run():
    parser = build_parser()
    flags = {a.dest: a.option_strings for a in parser._actions}
    for cls in decoder_options().values():
        for f in dataclasses.fields(cls):
            if flag_of(f):
                assert flags[f.name][0] == flag_of(f), f.name
                assert f.metadata["help"], f"{cls.__name__}.{f.name} has no help text"
            else:
                assert f.name == "lm_path"               # given as --lm, one system per LM
    # defaults shown are the dataclasses' own
    help_text = " ".join(parser.format_help().split())
    batch_default = BeamOptions().batch_size     # None: the device picks (shown as "none")
    assert f"(default: {'none' if batch_default is None else batch_default})" in help_text
    assert f"[beam, pyctcdecode] (default: {PrefixSearchOptions().beam_width})" in help_text


def test_shared_options_are_declared_once():
    beam = {f.name: f for f in dataclasses.fields(BeamOptions)}
    pyctc = {f.name: f for f in dataclasses.fields(PyctcdecodeOptions)}
    shared = set(beam) & set(pyctc)
    assert shared == {f.name for f in dataclasses.fields(PrefixSearchOptions)}
    for name in shared:   # the very same field object: one declaration, one default, one help
        assert beam[name] is pyctc[name], name


def test_bench_generates_the_same_flags():
    run = subprocess.run([sys.executable, "bench/decode_speed.py", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.split())
    assert f"beams kept per utterance after every frame (default: " \
           f"{PyctcdecodeOptions().beam_width})" in text
    assert "--decoder DECODER [DECODER ...]" in text and "--quiet" in text
    assert "--prune-history, --no-prune-history" in text
