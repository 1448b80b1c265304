"""bench/decode_speed.py runs end to end as a script (tiny synthetic sets) with sane figures: against
pyctcdecode where it is installed, and the peers alone (C++, flashlight) everywhere, numpy 2 too."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, needs_pyctcdecode
from decoding_fixtures import write_arpa

from ctclab.decoders import available_decoders

HAMA = REPO_ROOT.parent / "shared" / "emissions" / "hama-phoneme"
IPA_LEXICON = REPO_ROOT.parent / "shared" / "lm" / "en-us-70k-3gram.ipa-lexicon.tsv"


@needs_pyctcdecode
def test_decode_speed_script_on_tiny_synthetic_sets(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [sys.executable, "bench/decode_speed.py", "--inputs", "peaky", "random", "--lm", "none",
           "--peaky-utterances", "4", "--random-utterances", "1", "--repeat", "1",
           "--beam-width", "8", "--decoder", "beam", "pyctcdecode", "ctc-beam-decoder", "greedy",
           "--out", str(out), "--quiet"]
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "x ref" in run.stdout and "ctc-beam-decoder" in run.stdout
    results = {(r["inputs"], r["decoder"]): r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {(i, d) for i in ("peaky", "random")
                            for d in ("beam", "pyctcdecode", "ctc-beam-decoder", "greedy")}
    for r in results.values():
        assert not r["error"] and r["ms_per_audio_s"] > 0 and r["utterances"] >= 1
    ref = results[("peaky", "pyctcdecode")]
    assert ref["speed_vs_pyctcdecode"] == 1.0 and ref["agreement"] == 1.0
    assert ref["delta_ln_p"] == 0.0
    # synthetic peaky words are spelled clearly: the beam searches get them all right
    assert ref["wer"] == 0.0 and results[("peaky", "beam")]["wer"] == 0.0
    assert results[("peaky", "beam")]["agreement"] == 1.0
    assert all(math.isfinite(r["delta_ln_p"]) for r in results.values())
    assert math.isnan(results[("random", "greedy")]["wer"])   # no references for random logits


@pytest.mark.skipif(not (HAMA / "manifest.tsv").is_file() or not IPA_LEXICON.is_file(),
                    reason="needs ../shared/emissions/hama-phoneme and the IPA lexicon")
def test_decode_speed_on_the_hama_phoneme_set_against_flashlight(tmp_path):
    out = tmp_path / "speed.json"
    # pyctcdecode is asked for where it is installed, to show that it is left out on phonemes
    pyctc = ["pyctcdecode"] if "pyctcdecode" in available_decoders() else []
    cmd = [sys.executable, "bench/decode_speed.py", "--inputs", "hama", "--lm", "none",
           "--repeat", "1", "--decoder", "beam", *pyctc, "flashlight", "--out", str(out)]
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    results = {r["decoder"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"beam", "flashlight"}   # pyctcdecode decodes no phonemes
    assert results["flashlight"]["speed_vs_pyctcdecode"] == 1.0   # the reference on hama
    # the lexicon alone turns phonemes into words: about half of them right for both
    for r in results.values():
        assert not r["error"] and 0.3 < r["wer"] < 0.6
    assert results["beam"]["wer"] <= results["flashlight"]["wer"]


def load_bench(monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_decode_speed", REPO_ROOT / "bench" /
                                                  "decode_speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_no_word_confidence_reaches_every_ctclab_decoder(monkeypatch):
    """--no-word-confidence (a generated flag): the options each of our decoders is built with
    say so; the default keeps them on."""
    from ctclab.decoders.options import BeamOptions, GreedyOptions, PyctcdecodeOptions

    module = load_bench(monkeypatch)
    off = module.parse_args(["--decoder", "beam", "--no-word-confidence"]).matched
    assert module.parse_args(["--decoder", "beam"]).matched.word_confidence
    assert off.word_confidence is False
    for cls in (BeamOptions, GreedyOptions, PyctcdecodeOptions):
        assert module.peers.matched_options(cls, off).word_confidence is False


def test_table_shows_a_dash_where_a_figure_does_not_exist(monkeypatch):
    module = load_bench(monkeypatch)
    lm_run = module.Measure("peaky", "3gram", "beam", 4, 2.0, 0.1, 1.0, 1.1, 0.9, 12.0,
                            speed_vs_pyctcdecode=2.0, agreement=1.0, wer=0.0)
    (row,) = module.table_rows([lm_run])   # d ln p is only measured without an LM
    assert row[-1] == "-" and "nan" not in row
    random = module.Measure("random", "none", "greedy", 1, 2.0, 0.1, 0.2, 0.2, 0.2, 1.0,
                            speed_vs_pyctcdecode=20.0, agreement=0.0, delta_ln_p=-3.5)
    (row,) = module.table_rows([random])   # no references: no WER
    assert row[-3] == "-" and row[-1] == "-3.50" and "nan" not in row


def test_decoders_are_timed_in_turns_and_failures_are_reported(tmp_path, monkeypatch):
    """Pass r of every decoder runs before pass r + 1 of any; a decoder that fails to build, or
    whose process dies in a pass, is one row with its error, and the others keep their passes."""
    import numpy as np

    module = load_bench(monkeypatch)
    log = tmp_path / "order.txt"
    monkeypatch.setitem(module._INPUTS, "tiny", module.InputSet(
        "tiny", [np.zeros((3, 29), np.float32)], ["A"], 1.0))

    def build(name, vocab, settings, jobs):
        if name == "broken":
            raise RuntimeError("no such decoder here")
        calls = []

        def decode(emissions):
            calls.append(1)
            if name == "dies" and len(calls) == 3:   # warm-up, pass 1, then turn 2 crashes
                os._exit(3)
            with open(log, "a") as f:
                f.write(f"{name}\n")
            return ["a"] * len(emissions)
        return decode

    monkeypatch.setattr(module.peers, "build", build)
    settings = module.peers.Settings(module.PyctcdecodeOptions())
    runs = [(name, "tiny", settings, 1, "none") for name in ("one", "broken", "two", "dies")]
    measures = {m.decoder: m for m in module.measure_interleaved(runs, repeat=3)}
    order = log.read_text().split()
    # warm-ups run at build time, one decoder after the other; then the passes, in turns, an
    # untimed one before each timed one from the second turn on
    assert order == ["one", "two", "dies", "one", "two", "dies", *["one"] * 2, *["two"] * 2,
                     *["one"] * 2, *["two"] * 2]
    assert "no such decoder here" in measures["broken"].error
    assert "died" in measures["dies"].error
    for name in ("one", "two"):
        m = measures[name]
        assert not m.error and m.texts == ["a"] and m.best_pass_ms_per_audio_s > 0
        assert m.best_pass_ms_per_audio_s <= m.median_pass_ms_per_audio_s


def test_peers_run_without_pyctcdecode(tmp_path):
    """Our beam, the C++ ctc-beam-decoder and flashlight-text, without the LM and with one: they
    run wherever ctclab does (this also runs in the numpy-2 environment); no reference, no ratio."""
    lm = write_arpa(tmp_path / "tiny.arpa", {"the": 0.3, "cat": 0.2, "sat": 0.2, "mat": 0.2})
    out = tmp_path / "speed.json"
    decoders = ("beam", "ctc-beam-decoder", "flashlight", "greedy")
    cmd = [sys.executable, "bench/decode_speed.py", "--inputs", "peaky", "--lm", str(lm),
           "--peaky-utterances", "3", "--repeat", "1", "--beam-width", "8",
           "--decoder", *decoders, "--no-word-confidence", "--out", str(out), "--quiet"]
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "word confidences of our decoders off" in run.stdout
    results = {(r["lm"], r["decoder"]): r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {("none", d) for d in decoders} | {
        ("tiny", d) for d in decoders if d != "greedy"}   # greedy takes no LM
    for r in results.values():
        assert not r["error"] and r["ms_per_audio_s"] > 0 and r["utterances"] == 3, r
        assert math.isnan(r["speed_vs_pyctcdecode"])   # pyctcdecode, the reference, not run
    for d in decoders:   # synthetic peaky words are spelled clearly: every search finds them
        assert results[("none", d)]["wer"] == 0.0, d


@pytest.mark.skipif(not (REPO_ROOT.parent / "shared" / "emissions" / "quartznet15x5-base-en" /
                         "manifest.tsv").is_file(),
                    reason="needs ../shared/emissions/quartznet15x5-base-en")
def test_split_sizes_script_times_every_split():
    cmd = [sys.executable, "bench/split_sizes.py", "--decoder", "beam", "greedy", "--lm", "none"]
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].split()[:3] == ["split", "utts", "audio"]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line and line[0] != "L"}
    assert set(rows) == {"test-clean", "dev-clean", "dev-other", "an4-test", "an4-train",
                         "an4-clstk"}
    assert sum(int(r[1]) for r in rows.values()) == 94
    for r in rows.values():   # two decoders, "1st / 2nd" each
        first, second = float(r[3]), float(r[5])
        assert first > 0 and second > 0
