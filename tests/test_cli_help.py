"""Every command's --help explains every flag and shows each default once, as it applies
(issue #11 item 9): no option without help, no "(default: None)", no default printed twice, and
one spelling for the shared flags (--decoder with space-separated names, --quiet)."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys

import pytest
from conftest import REPO_ROOT

MODULE_PARSERS = ["ctclab.eval.run", "ctclab.eval.emit", "ctclab.eval.oov", "ctclab.lm.build",
                  "ctclab.lm.fetch", "ctclab.lm.tools"]
BENCH_PARSERS = ["ab_trees", "audio_decode", "decode_speed", "emit_throughput", "lm_formats"]


def _bench_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))  # bench scripts import their helpers
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.build_parser()


def _parsers(parser: argparse.ArgumentParser, name: str):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _option_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    """flag -> its help as printed (joined lines)."""
    text = parser.format_help()
    out, current = {}, None
    for line in text.splitlines():
        match = re.match(r"^  (-[-\w]+|[a-z]\w*)", line)
        if match:
            current = match.group(1)
            out[current] = line
        elif current and line.startswith("      "):
            out[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in out.items()}


def check_parser(parser: argparse.ArgumentParser, name: str) -> None:
    for sub_name, sub in _parsers(parser, name):
        printed = _option_help(sub)
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            flag = action.option_strings[0] if action.option_strings else action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"{sub_name} {flag}: no help"
            shown = printed[flag]
            assert "(default: None)" not in shown, f"{sub_name} {flag}: {shown}"
            defaults = len(re.findall(r"default[: ]", shown))
            assert defaults <= 1, f"{sub_name} {flag} states its default twice: {shown}"
            empty = action.default is None or action.default is False or action.default in ([], ())
            if not empty and action.default != argparse.SUPPRESS and not action.required:
                assert "default" in shown, f"{sub_name} {flag} hides its default: {shown}"


@pytest.mark.parametrize("module", MODULE_PARSERS)
def test_every_flag_has_help_and_its_default(module):
    check_parser(importlib.import_module(module).build_parser(), module)


@pytest.mark.parametrize("script", BENCH_PARSERS)
def test_every_bench_flag_has_help_and_its_default(script, monkeypatch):
    check_parser(_bench_parser(script, monkeypatch), f"bench/{script}.py")


def test_run_help_states_the_defaults_that_apply(monkeypatch):
    from ctclab.eval.run import build_parser

    printed = _option_help(build_parser())
    assert "test-clean test-other" in printed["--split"]
    assert "(default: 0.5)" in printed["--alpha"] and "(default: 1.5)" in printed["--beta"]
    assert printed["--out"].count("results/<UTC time>") == 1
    assert "(default: grid)" in printed["--tune-method"]


def test_shared_flags_are_spelled_alike(monkeypatch):
    from ctclab.eval.run import build_parser

    run = build_parser()
    bench = _bench_parser("decode_speed", monkeypatch)
    for parser in (run, bench):
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"--decoder", "--quiet", "--lm", "--jobs"} <= flags
        (decoder,) = [a for a in parser._actions if "--decoder" in a.option_strings]
        assert decoder.nargs == "+"       # names separated by spaces, not a comma list
    from ctclab.eval.emit import build_parser as emit_parser

    assert emit_parser().parse_args(["--split", "x", "--quiet"]).quiet      # as in eval/run.py
    assert emit_parser().parse_args(["--split", "x", "--no-progress"]).quiet  # the older spelling
