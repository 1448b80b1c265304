"""lm.build with the real KenLM tools: counts, normalised probabilities, binaries, loaders.

The tools are built by ``.ci/setup`` (``python -m ctclab.lm.tools install``); a missing tool fails these
tests with that instruction rather than skipping them.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_pyctcdecode
from decoding_fixtures import quartznet_vocab

from ctclab.core.normalize import APOSTROPHE_VARIANTS, DEFAULT_NORMALIZER
from ctclab.lm.arpa import ArpaFormatError, iter_section, read_arpa_header
from ctclab.lm.build import BuildOptions, build, build_binary, main
from ctclab.lm.corpus import CorpusNormalizer, default_vocabulary, load_vocabulary
from ctclab.lm.language_model import KenLMLanguageModel
from ctclab.lm.tools import ToolNotFoundError, find_tool, find_tools
from ctclab.lm.unigrams import read_unigrams

REPO = Path(__file__).resolve().parents[1]
CORPUS = """the cat sat on the mat
The dog sat on the log.
the cat’s toy is well-known!
a cat and a dog sat
the dog and the cat ran 3 times
"""
ORDER = 3


@pytest.fixture(scope="module")
def tools():
    try:
        return find_tools()
    except ToolNotFoundError as exc:
        pytest.fail(f"KenLM tools are missing: {exc}")


@pytest.fixture(scope="module")
def built(tools, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    text = folder / "corpus.txt"
    text.write_text(CORPUS, encoding="utf-8")
    result = build([text], folder / "3gram.arpa", BuildOptions(order=ORDER),
                   binary_out=folder / "3gram.binary")
    return result


def _sentences() -> list[list[str]]:
    normalizer = CorpusNormalizer.for_vocabulary(default_vocabulary())
    return [s.split() for s in normalizer.normalize_lines(CORPUS.splitlines())]


def test_normalisation_matches_the_acoustic_labels():
    assert _sentences()[2] == ["THE", "CAT'S", "TOY", "IS", "WELL", "KNOWN"]
    assert _sentences()[4] == ["THE", "DOG", "AND", "THE", "CAT", "RAN", "TIMES"]  # "3" dropped


@pytest.mark.parametrize("variant", list(APOSTROPHE_VARIANTS))
def test_lm_text_and_scored_text_agree_on_every_apostrophe_variant(variant):
    """One list of variants (core.normalize) for LM text, OOV reports and scoring: a word the LM
    learnt as DON'T is the word the scorer compares, whichever apostrophe the text used."""
    text = f"Don{variant}t   stop"
    lm_text = CorpusNormalizer.for_vocabulary(default_vocabulary()).normalize_line(text)
    assert lm_text == DEFAULT_NORMALIZER(text) == "DON'T STOP"
    assert CorpusNormalizer.for_vocabulary(quartznet_vocab()).normalize_line(text) == "don't stop"


def test_counts_are_the_distinct_ngrams_of_the_padded_text(built):
    padded = [["<s>", *s, "</s>"] for s in _sentences()]
    expected = []
    for n in range(1, ORDER + 1):
        grams = {tuple(s[i:i + n]) for s in padded for i in range(len(s) - n + 1)}
        expected.append(len(grams) + (1 if n == 1 else 0))  # + <unk>
    assert built.counts == tuple(expected) == read_arpa_header(built.arpa).counts
    assert built.stats.dropped_words == 1 and built.stats.sentences == 5
    assert built.arpa_bytes == built.arpa.stat().st_size > 0


def _histories() -> set[tuple[str, ...]]:
    out = set()
    for s in _sentences():
        padded = ["<s>", *s]
        for i in range(1, len(padded) + 1):
            out.add(tuple(padded[max(0, i - (ORDER - 1)):i]))
    return out


def _next_word_log10(model, history: tuple[str, ...], word: str) -> float:
    import kenlm

    state, out = kenlm.State(), kenlm.State()
    if history and history[0] == "<s>":
        model.BeginSentenceWrite(state)
        history = history[1:]
    else:
        model.NullContextWrite(state)
    for w in history:
        model.BaseScore(state, w, out)
        state, out = out, state
    return model.BaseScore(state, word, out)


def test_each_history_distribution_sums_to_one(built):
    import kenlm

    model = kenlm.Model(str(built.arpa))
    words = [w for _, (w,), _ in iter_section(built.arpa, 1) if w != "<s>"]  # incl. </s>, <unk>
    histories = _histories()
    assert len(histories) > 20
    for history in histories:
        total = sum(10 ** _next_word_log10(model, history, w) for w in words)
        assert abs(total - 1.0) < 0.01, f"P(. | {' '.join(history)}) sums to {total}"


def test_kenlm_scores_equal_the_arpa_entries(built):
    import kenlm

    model = kenlm.Model(str(built.arpa))
    trigrams = list(iter_section(built.arpa, 3))
    assert trigrams
    for log10_prob, (a, b, c), _ in trigrams:
        assert math.isclose(_next_word_log10(model, (a, b), c), log10_prob, abs_tol=1e-5)


def test_binaries_load_in_kenlm_with_the_same_scores(built, tmp_path):
    import kenlm

    arpa = kenlm.Model(str(built.arpa))
    probing = kenlm.Model(str(built.binary))
    trie = kenlm.Model(str(build_binary(built.arpa, tmp_path / "new" / "q8.binary", "trie",
                                          quantize=8)))
    assert built.binary_bytes == built.binary.stat().st_size
    for sentence in ["THE CAT SAT ON THE LOG", "A DOG RAN", "ZEBRA CAT"]:
        reference = arpa.score(sentence)
        assert math.isclose(probing.score(sentence), reference, abs_tol=1e-4)
        assert math.isclose(trie.score(sentence), reference, abs_tol=0.1)  # 8-bit quantised
    ours = KenLMLanguageModel(built.binary)
    state = ours.start_state()
    ln_prob, _ = ours.score(state, "THE")
    assert math.isclose(ln_prob, arpa.score("THE", bos=True, eos=False) * math.log(10),
                        rel_tol=1e-5)


@needs_pyctcdecode
def test_pyctcdecode_uses_the_built_lm(built):
    """An acoustically ambiguous second word (KAT slightly above CAT) is fixed by the LM."""
    from pyctcdecode import build_ctcdecoder

    labels = ["", " ", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'"]
    index = {c: i for i, c in enumerate(labels)}
    frames = []
    for token in ["T", "H", "E", " ", "C|K", "A", "T"]:
        row = np.full(len(labels), 1e-4)
        if "|" in token:
            first, second = token.split("|")
            row[index[first]], row[index[second]] = 0.45, 0.55
        else:
            row[index[token]] = 1.0
        frames += [row, np.eye(len(labels))[0] * 1.0 + 1e-4]  # the token, then blank
    log_probs = np.log(np.array(frames) / np.array(frames).sum(axis=1, keepdims=True))
    plain = build_ctcdecoder(labels)
    assert plain.decode(log_probs) == "THE KAT"
    with_lm = build_ctcdecoder(labels, kenlm_model_path=str(built.binary),
                               unigrams=read_unigrams(built.arpa), alpha=1.0, beta=0.0)
    assert with_lm.decode(log_probs) == "THE CAT"
    from_arpa = build_ctcdecoder(labels, kenlm_model_path=str(built.arpa),
                                 unigrams=read_unigrams(built.arpa), alpha=1.0, beta=0.0)
    assert from_arpa.decode(log_probs) == "THE CAT"


def test_unigrams_cannot_come_from_a_binary(built):
    with pytest.raises(ValueError, match="KenLM binary"):
        read_unigrams(built.binary)


def test_truncated_built_arpa_gives_a_clear_error(built, tmp_path):
    cut = tmp_path / "cut.arpa"
    text = built.arpa.read_text()
    cut.write_text(text[: text.index("\\3-grams:") + 40])
    with pytest.raises(ArpaFormatError, match=r"cut\.arpa.*truncated"):
        KenLMLanguageModel(cut)


def test_cli_lower_case_vocab_prune_and_trie(tools, tmp_path, capsys):
    labels = tmp_path / "labels.json"
    labels.write_text('{"labels": [" ", "a", "b", "c", "d", "e", "g", "h", "k", "l", "m", "n", '
                      '"o", "r", "s", "t", "<blank>"], "blank_index": 16, "word_delimiter": " "}')
    text = tmp_path / "c.txt"
    text.write_text(CORPUS * 2 + "the log ran on a mat\n")  # its n-grams occur once
    out = tmp_path / "out" / "lm.arpa"
    assert main(["--text", str(text), "--order", "3", "--out", str(out), "--prune", "0", "1",
                 "--vocab", str(labels), "--binary", "--binary-type", "trie",
                 "--quantize", "8"]) == 0
    printed = capsys.readouterr().out
    assert "n-grams" in printed and "binary" in printed
    words = read_unigrams(out)
    assert "the" in words and "THE" not in words and "cat" in words
    assert "well" not in words  # 'w' is not among these labels: the word is dropped
    assert sorted(p.name for p in out.parent.iterdir()) == ["lm.arpa", "lm.binary"]
    pruned = read_arpa_header(out).counts
    assert sum(1 for _ in iter_section(out, 3)) == pruned[2] > 0
    full = build([text], tmp_path / "full.arpa", BuildOptions(order=3),
                 vocab=load_vocabulary(labels)).counts
    assert pruned[0] == full[0] and pruned[1] < full[1] and pruned[2] < full[2]


@pytest.mark.parametrize("args, message", [
    (["--order", "9"], "--order must be 1..6"),
    (["--prune", "1"], "unigram threshold must be 0"),
    (["--quantize", "8", "--binary"], "needs --binary-type trie"),
    (["--memory", "lots"], "--memory 'lots'"),
])
def test_cli_rejects_bad_options_cleanly(tmp_path, capsys, args, message):
    text = tmp_path / "c.txt"
    text.write_text(CORPUS)
    out = tmp_path / "x.arpa"
    assert main(["--text", str(text), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_damaged_gzip_text_is_a_clean_cli_error(tmp_path, capsys):
    import gzip

    text = tmp_path / "c.txt.gz"
    text.write_bytes(gzip.compress(CORPUS.encode() * 50)[:-30])  # truncated
    assert main(["--text", str(text), "--out", str(tmp_path / "x.arpa")]) == 2
    assert "c.txt.gz: the gzip file is damaged or truncated" in capsys.readouterr().err


def test_missing_tools_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CTCLAB_TOOLS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match="python -m ctclab.lm.tools install"):
        find_tool("lmplz")
    with pytest.raises(ValueError, match="build_binary"):
        find_tool("lmplzz")


def test_script_runs_from_any_directory(tools, tmp_path):
    text = tmp_path / "c.txt"
    text.write_text(CORPUS)
    done = subprocess.run([sys.executable, str(REPO / "lm" / "build.py"), "--text", str(text),
                           "--order", "2", "--out", "two.arpa"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert read_arpa_header(tmp_path / "two.arpa").order == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_vocab_from_cache_meta_json(tmp_path):
    (tmp_path / "meta.json").write_text(
        '{"model": "m", "vocabulary": {"labels": ["<pad>", "|", "A", "B"], "blank": 0, '
        '"delimiter": 1, "unused": []}}')
    vocab = load_vocabulary(tmp_path)
    assert vocab.labels == ("<pad>", "|", "A", "B") and vocab.case == "upper"
    with pytest.raises(FileNotFoundError, match="--vocab"):
        load_vocabulary(tmp_path / "nope")


def test_tools_install_is_a_no_op_when_built_and_which_lists_them(tools, capsys, tmp_path,
                                                                  monkeypatch):
    from ctclab.lm import tools as lm_tools

    assert lm_tools.install(verbose=False) == tools
    assert lm_tools.main(["which"]) == 0
    printed = capsys.readouterr().out
    assert all(f"{name}\t{getattr(tools, name)}" in printed for name in lm_tools.TOOL_NAMES)
    monkeypatch.setenv("CTCLAB_TOOLS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no CMakeLists.txt"):
        lm_tools.install(force=True, source=tmp_path, verbose=False)
