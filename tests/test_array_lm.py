"""lm.array_lm: the n-gram LM held as arrays equals KenLM (scores and states), its file cache is
keyed by the source, and bad or unsupported files give a clear error or the KenLM fallback."""
from __future__ import annotations

import gzip
import mmap
import os
import re
import warnings

import kenlm
import numpy as np
import pytest
from arpa_fixtures import ngram_walks, random_arpa

from ctclab.lm.arpa import ArpaFormatError
from ctclab.lm.array_build import ArrayLMTooLarge, ArrayLMUnsupported, log10_to_ln
from ctclab.lm.array_lm import ArrayLanguageModel, array_lm_file, load_array_lm
from ctclab.lm.build import build_binary
from ctclab.lm.language_model import KenLMLanguageModel
from ctclab.lm.loaded import load_lm
from ctclab.lm.scalar_batch import ScalarBatch
from ctclab.lm.unigrams import read_unigrams

SMALL = """\\data\\
ngram 1=6
ngram 2=4
ngram 3=2

\\1-grams:
-1.0\t<s>\t-0.5
-1.1\t</s>
-0.8\ta\t0
-0.9\tb\t-0.2
-1.2\tc\t0.0
-1.3\td

\\2-grams:
-0.3\t<s> a\t0
-0.4\ta b
-0.5\tb c\t-0.1
-0.6\tc d\t0

\\3-grams:
-0.2\t<s> a b
-0.25\ta b c

\\end\\
"""


def load(path, tmp_path, **kw) -> ArrayLanguageModel:
    return load_array_lm(path, cache_root=tmp_path / "cache", progress=False, **kw)


def kenlm_model(path) -> kenlm.Model:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kenlm.Model(str(path))


def assert_equals_kenlm(lm: ArrayLanguageModel, model: kenlm.Model, rng: np.random.Generator,
                        sequences: int = 1500, length: int = 6) -> None:
    """Word sequences that mostly follow the LM's n-grams (every order is reached) with unknown
    words, <s>, </s>, <UNK> mixed in, from <s> or from no history: every log10 prob equals
    KenLM's BaseScore, and our context ids name KenLM's states one to one (the same history
    minimisation). Returns the n-gram lengths KenLM matched, for coverage checks."""
    walks = ngram_walks(lm.path, rng, sequences, length, ["never-seen", "<s>", "</s>", "<UNK>"])
    from_bos = rng.random(sequences) < 0.5
    ours = np.where(from_bos, lm.start_context, 0).astype(np.int64)
    theirs = []
    for bos in from_bos:
        state = kenlm.State()
        (model.BeginSentenceWrite if bos else model.NullContextWrite)(state)
        theirs.append(state)
    states: dict[int, kenlm.State] = {}
    matched: set[int] = set()
    for t in range(length):
        text = [walk[t] for walk in walks]
        log10, ours = lm.score_log10(ours, lm.word_ids(text))
        expected = np.empty(sequences, np.float32)
        for i, word in enumerate(text):
            out = kenlm.State()
            ret = model.BaseFullScore(theirs[i], word, out)
            expected[i] = ret.log_prob
            matched.add(ret.ngram_length)
            theirs[i] = out
            assert states.setdefault(int(ours[i]), out) == out, (t, i, word)
        # KenLM's float32 arithmetic is reproduced exactly (the bound is 1e-4)
        np.testing.assert_array_equal(log10, expected)
    kept = list(states.values())
    assert len(set(kept)) == len(kept), "two context ids for one KenLM state"
    assert matched == set(range(1, lm.order + 1)), f"only n-gram lengths {matched} were reached"


# ----------------------------------------------------------------------------- equality with KenLM
def test_hand_made_model_equals_kenlm(tmp_path):
    path = tmp_path / "small.arpa"
    path.write_text(SMALL)
    lm = load(path, tmp_path)
    assert_equals_kenlm(lm, kenlm_model(path), np.random.default_rng(0))
    # <unk> is missing: KenLM's substitute log10 -100, and a history of its own
    assert lm.score_log10(np.array([0]), lm.word_ids(["zebra"]))[0][0] == -100.0
    # the backoff chain by hand: P(d | <s> b) = p(d) + bo(b), as b d and <s> b are absent
    ctx = lm.score_log10(np.array([lm.start_context]), lm.word_ids(["b"]))[1]
    assert lm.score_log10(ctx, lm.word_ids(["d"]))[0][0] == np.float32(-1.3) + np.float32(-0.2)


@pytest.mark.parametrize("order", [2, 3, 4, 5])
@pytest.mark.parametrize("with_unk", [False, True])
def test_random_models_of_every_order_equal_kenlm(tmp_path, order, with_unk):
    rng = np.random.default_rng(order * 10 + with_unk)
    path = random_arpa(tmp_path / f"{order}.arpa", rng, order, with_unk=with_unk)
    assert_equals_kenlm(load(path, tmp_path), kenlm_model(path), rng, sequences=600,
                        length=order + 3)


def test_word_at_a_time_interface_matches_the_arrays(tmp_path):
    path = random_arpa(tmp_path / "3.arpa", np.random.default_rng(1), 3)
    lm, ken = load(path, tmp_path), KenLMLanguageModel(path)
    a, k = lm.start_state(), ken.start_state()
    for word in ["w1", "w2", "w3", "nope", "w4"]:
        (pa, a), (pk, k) = lm.score(a, word), ken.score(k, word)
        assert pa == pk
    assert lm.end_score(a) == ken.end_score(k)
    assert lm.is_oov("nope") and "w1" in lm and not lm.is_oov("w1")
    assert lm.unigrams() == read_unigrams(path)


def test_scalar_lms_behind_the_batch_interface_give_the_same_scores(tmp_path):
    path = random_arpa(tmp_path / "3.arpa", np.random.default_rng(2), 3)
    arrays, batch = load(path, tmp_path), ScalarBatch(KenLMLanguageModel(path))
    words = ["w1", "w2", "</s>", "nope", "w3", "w1"]
    ca, cb = np.array([arrays.start_context]), np.array([batch.start_context])
    for word in words:
        (la, ca), (lb, cb) = (arrays.score_batch(ca, arrays.word_ids([word])),
                              batch.score_batch(cb, batch.word_ids([word])))
        assert la[0] == lb[0]
    assert arrays.end_score_batch(ca)[0] == batch.end_score_batch(cb)[0]
    assert list(batch.known(batch.word_ids(["w1", "nope"]))) == [True, False]
    assert list(arrays.known(arrays.word_ids(["w1", "nope"]))) == [True, False]


def test_the_memo_answers_as_the_arrays_even_when_slots_collide(tmp_path, monkeypatch):
    from ctclab.lm import array_lm

    monkeypatch.setattr(array_lm, "ARRAY_LM_MEMO_BITS", 3)  # 8 slots: constant collisions
    path = random_arpa(tmp_path / "3.arpa", np.random.default_rng(8), 3)
    lm = load(path, tmp_path)
    assert len(lm._memo) == 8
    rng = np.random.default_rng(9)
    contexts = np.array([0, lm.start_context], np.int64)
    for _ in range(60):
        ctx = rng.choice(contexts, 40)
        words = rng.integers(0, len(lm.words), 40)
        expected = lm.lookup_log10(ctx, words)
        got = lm.score_log10(ctx, words)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
        contexts = np.unique(np.concatenate([contexts, expected[1]]))
    assert (lm._memo["key"] >= 0).all()  # the memo was used


# ----------------------------------------------------------------------------- the file cache
def mapped(array: np.ndarray) -> bool:
    """The array's memory belongs to an mmap (a view of the file), not to numpy."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def test_a_second_load_maps_the_saved_file(tmp_path):
    path = random_arpa(tmp_path / "3.arpa", np.random.default_rng(3), 3)
    first = load(path, tmp_path)
    assert first.file == array_lm_file(path, tmp_path / "cache")
    stamp = first.file.stat().st_mtime_ns
    second = load(path, tmp_path)
    assert second.file == first.file and first.file.stat().st_mtime_ns == stamp  # not rebuilt
    # the file is mapped, not read: the arrays are read-only views of the mmap, but for the
    # binary-searched keys, a read-only copy in the process's own memory (lm/constants.py)
    assert mapped(second._tables.prob) and not second._tables.prob.flags.writeable
    assert not mapped(second._tables.keys) and not second._tables.keys.flags.writeable
    assert [p.name for p in first.file.parent.iterdir()] == [first.file.name]  # no temp files
    ctx, words = np.array([second.start_context] * 3), second.word_ids(["w1", "w2", "zz"])
    for a, b in zip(first.score_log10(ctx, words), second.score_log10(ctx, words), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.nbytes == second.nbytes <= first.file.stat().st_size


def test_an_edited_lm_is_read_again(tmp_path):
    path = tmp_path / "small.arpa"
    path.write_text(SMALL)
    before = load(path, tmp_path)
    old = before.score_log10(np.array([0]), before.word_ids(["a"]))[0][0]
    path.write_text(SMALL.replace("-0.8\ta\t0", "-0.7\ta\t0"))
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    after = load(path, tmp_path)
    assert after.file != before.file
    assert (old, after.score_log10(np.array([0]), after.word_ids(["a"]))[0][0]) == (
        np.float32(-0.8), np.float32(-0.7))


def test_a_damaged_cache_file_is_rebuilt(tmp_path):
    path = random_arpa(tmp_path / "3.arpa", np.random.default_rng(4), 3)
    lm = load(path, tmp_path)
    expected = lm.score_log10(np.array([lm.start_context]), lm.word_ids(["w1"]))[0]
    data = lm.file.read_bytes()
    del lm
    array_lm_file(path, tmp_path / "cache").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="truncated"):
        again = load(path, tmp_path)
    assert again.score_log10(np.array([again.start_context]), again.word_ids(["w1"]))[0] == \
        expected


# ----------------------------------------------------------------------------- bad input
def _bad(tmp_path, text: str):
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit, match", [
    (("ngram 2=4", "ngram 2=5"), r"line \d+: the header declares 5 2-grams but the section holds 4"),
    (("ngram 2=4", "ngram 2=3"), r"line 20: the header declares 3 2-grams but the section holds 4"),
    (("-0.25\ta b c", "-0.25\tb a c"), r"line 22: the 3-gram 'b a c' has no 2-gram for its context"),
    (("-0.8\ta\t0", "0.5\ta\t0"), r"line 9: the 1-gram 'a' has a positive"),
    (("-0.6\tc d\t0", "-0.6\tc zz\t0"), r"line 18: the 2-gram 'c zz' uses a word that is not"),
    (("-0.6\tc d\t0", "-0.6\tb c\t0"), r"line 18: the 2-gram 'b c' appears twice"),
    (("-0.25\ta b c", "-0.25\ta b c\t-0.3"), r"line 22: .*highest order has a non-zero backoff"),
    (("-1.0\t<s>\t-0.5", "-1.0\t<q>\t-0.5"), r"lack <s>"),
    (("-0.4\ta b", "-0.4\ta b c d"), r"line 16: a 2-gram entry needs"),
])
def test_broken_files_name_the_line_and_never_score(tmp_path, edit, match):
    path = _bad(tmp_path, SMALL.replace(*edit))
    with pytest.raises(ArpaFormatError, match=match):
        load(path, tmp_path)
    assert not (tmp_path / "cache" / "lm").exists() or not any(
        (tmp_path / "cache" / "lm").iterdir())  # nothing half-written is left to be reused


@pytest.mark.parametrize("backend", ["arrays", "kenlm"])
def test_a_broken_gzip_lm_is_named_as_the_user_gave_it(tmp_path, backend):
    """An .arpa.gz is read from a decompressed copy in the cache: errors name the file the user
    gave (and the copy, whose line numbers they are), with either backend; KenLM's own message
    for a word missing from the 1-grams is replaced by the precise one."""
    given = tmp_path / "bad.arpa.gz"
    given.write_bytes(gzip.compress(SMALL.replace("-0.6\tc d\t0", "-0.6\tc zz\t0").encode()))
    pattern = (re.escape(str(given)) + r" \(decompressed to .*\.arpa\), line 18: the 2-gram "
               r"'c zz' uses (a|the) word")
    with pytest.raises(ArpaFormatError, match=pattern):
        load_lm(given, cache_root=tmp_path / "cache", backend=backend, progress=False)


def test_a_pruned_suffix_is_left_to_kenlm(tmp_path):
    # '<s> a c' is kept while 'a c' was pruned: KenLM invents the missing 2-gram, we do not
    path = _bad(tmp_path, SMALL.replace("-0.25\ta b c", "-0.25\t<s> a c"))
    with pytest.raises(ArrayLMUnsupported, match=r"line 22: the 3-gram '<s> a c' has no 2-gram"):
        load(path, tmp_path)
    with pytest.warns(UserWarning, match="scoring it with KenLM"):
        lm = load_lm(path, backend="auto").model
    assert isinstance(lm, KenLMLanguageModel)
    with pytest.raises(ValueError, match="lm_backend 'kenlm' or 'auto'"):
        load_lm(path, backend="arrays")


def test_an_lm_over_the_memory_limit_is_left_to_kenlm(tmp_path):
    path = random_arpa(tmp_path / "3.arpa", np.random.default_rng(5), 3)
    with pytest.raises(ArrayLMTooLarge, match="MiB allowed"):
        load(path, tmp_path, max_bytes=1000)
    assert not array_lm_file(path, tmp_path / "cache").exists()  # refused before building
    with pytest.warns(UserWarning, match="more than the 0 MiB allowed"):
        assert isinstance(load_lm(path, backend="auto", arrays_max_mib=1e-4).model,
                          KenLMLanguageModel)
    with pytest.raises(ValueError, match="MiB allowed"):
        load_lm(path, backend="arrays", arrays_max_mib=1e-4)
    arrays = load_lm(path, backend="arrays")
    assert isinstance(arrays.model, ArrayLanguageModel) and arrays.unigrams == read_unigrams(path)
    # once held in the process, a lower limit still sends the LM to KenLM
    with pytest.warns(UserWarning, match="more than"):
        assert isinstance(load_lm(path, backend="auto", arrays_max_mib=1e-4).model,
                          KenLMLanguageModel)


def test_a_kenlm_binary_is_scored_by_kenlm(tmp_path):
    path = random_arpa(tmp_path / "3.arpa", np.random.default_rng(6), 3)
    binary = build_binary(path, tmp_path / "3.binary", "probing")
    assert isinstance(load_lm(binary, backend="auto").model, KenLMLanguageModel)
    with pytest.raises(ValueError, match="not an ARPA file"):
        load_lm(binary, backend="arrays")
    with pytest.raises(ArrayLMUnsupported, match="not an ARPA"):
        load(binary, tmp_path)


def test_the_array_lm_on_torch_scores_as_on_numpy(tmp_path):
    """lm.on(torch namespace): the tables copied to the device, the same query: equal float32
    log10 scores and contexts (a 4-gram with backoffs, <unk> and misses)."""
    from ctclab.core.arrays import torch_arrays

    path = random_arpa(tmp_path / "r.arpa", np.random.default_rng(8), 4, with_unk=True)
    lm = load(path, tmp_path)
    xp = torch_arrays("cpu")
    device = lm.on(xp)
    assert lm.on(xp) is device   # copied once per device
    rng = np.random.default_rng(1)
    ctx = np.array([lm.start_context], np.int64).repeat(300)
    for _ in range(4):
        words = rng.integers(0, len(lm.words), 300)
        expected = lm.lookup_log10(ctx, words)
        ln, after = device.score_batch(xp.asarray(ctx), xp.asarray(words))
        assert np.array_equal(xp.to_numpy(after), expected[1])
        assert np.array_equal(xp.to_numpy(ln), log10_to_ln(expected[0]))
        ctx = expected[1]
    ends = device.end_score_batch(xp.asarray(ctx))
    assert np.array_equal(xp.to_numpy(ends), lm.end_score_batch(ctx))
