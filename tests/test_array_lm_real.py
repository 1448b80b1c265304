"""The array LM of the shared real 3-gram equals KenLM: for every n-gram of the file and for a
million random word sequences (unknown words and </s> included), and the beam gives the same
texts and scores with it as with KenLM on the 94 real utterances.

Slow (about half a minute: the arrays are built once into the session's empty cache, and KenLM
scores 4.8 million sentences one Python call each); skipped without ../shared.
"""
from __future__ import annotations

import gc
import warnings

import kenlm
import numpy as np
import pytest
from conftest import require_shared

from ctclab.decoders import create_decoder
from ctclab.lm.array_lm import ArrayLanguageModel, load_array_lm
from ctclab.lm.files import resolve_lm_path

pytestmark = pytest.mark.slow

LM = ("lm", "en-us-70k-3gram.arpa.gz")
EMISSIONS = ("emissions", "quartznet15x5-base-en")
RANDOM_SEQUENCES = 1_000_000


@pytest.fixture(scope="module")
def real():
    """(arpa path, array LM, kenlm.Model, n-grams per order: (sentences, word ids, listed log10))."""
    arpa = resolve_lm_path(require_shared(*LM))
    lm = load_array_lm(arpa, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = kenlm.Model(str(arpa))
    return arpa, lm, model, _read_ngrams(arpa, lm)


def _read_ngrams(arpa, lm: ArrayLanguageModel
                 ) -> dict[int, tuple[list[str], np.ndarray, np.ndarray]]:
    """Every n-gram of the file, read independently of lm.array_build (plain line splitting)."""
    grams: dict[int, list[list[str]]] = {}
    probs: dict[int, list[str]] = {}
    order = 0
    gc.disable()  # millions of small lists: the cyclic collector would rescan them all
    try:
        with open(arpa, encoding="utf-8") as f:
            for line in f:
                if line.startswith("\\") and line.rstrip().endswith("-grams:"):
                    order = int(line[1:line.index("-")])
                    grams[order], probs[order] = [], []
                    continue
                parts = line.split()
                if order and len(parts) >= order + 1:
                    grams[order].append(parts[1:order + 1])
                    probs[order].append(parts[0])
        out = {}
        for n in grams:
            ids = lm.word_ids([w for gram in grams[n] for w in gram]).reshape(-1, n)
            out[n] = (list(map(" ".join, grams[n])), ids,
                      np.array(probs[n], np.float64).astype(np.float32))
        return out
    finally:
        gc.enable()


def _sums(lm: ArrayLanguageModel, ids: np.ndarray, start: int, end: bool
          ) -> tuple[np.ndarray, np.ndarray]:
    """(float32 sum over the words of each row, as kenlm.Model.score adds them; last word's)."""
    context = np.full(len(ids), start, np.int64)
    total = np.zeros(len(ids), np.float32)
    for j in range(ids.shape[1]):
        log10, context = lm.score_log10(context, ids[:, j])
        total += log10
    if end:
        total += lm.score_log10(context, np.full(len(ids), lm.word_ids(["</s>"])[0]))[0]
    return total, log10


def _kenlm_scores(model: kenlm.Model, sentences: list[str], bos_eos: bool) -> np.ndarray:
    flags = [bos_eos] * len(sentences)
    return np.fromiter(map(model.score, sentences, flags, flags), np.float32, len(sentences))


def test_every_ngram_of_the_real_3gram_equals_kenlm(real):
    _, lm, model, ngrams = real
    assert [len(ngrams[n][0]) for n in (1, 2, 3)] == [72_547, 2_051_541, 1_669_625]
    for sentences, ids, listed in ngrams.values():
        total, last = _sums(lm, ids, 0, end=False)
        # P(last word | the others) from no history is the listed probability...
        np.testing.assert_array_equal(last, listed)
        # ...and the whole n-gram scores as in KenLM, word by word (float32, exactly)
        np.testing.assert_array_equal(total, _kenlm_scores(model, sentences, False))


def test_a_million_random_sequences_equal_kenlm(real):
    """Sentences of 3 words from <s>, ended by </s> (kenlm.Model.score with bos and eos): a third
    uniform words (mostly backing off; unknown words and </s> among them), a third real 3-grams,
    a third a real 2-gram and a uniform word."""
    _, lm, model, ngrams = real
    rng = np.random.default_rng(0)
    count = RANDOM_SEQUENCES // 3
    ids = rng.integers(0, len(lm.words), (RANDOM_SEQUENCES, 3))  # id 0: an unknown word
    ids[:count] = ngrams[3][1][rng.integers(0, len(ngrams[3][1]), count)]
    ids[count: 2 * count, :2] = ngrams[2][1][rng.integers(0, len(ngrams[2][1]), count)]
    text = np.array(["zyzzyvaq", *lm.words[1:]], dtype=object)  # what KenLM is given
    assert lm.word_ids(["zyzzyvaq"])[0] == 0 and (ids == lm.word_ids(["</s>"])[0]).any()
    sentences = list(map(" ".join, zip(*(text[ids[:, j]] for j in range(3)), strict=True)))
    ours, _ = _sums(lm, ids, lm.start_context, end=True)
    np.testing.assert_array_equal(ours, _kenlm_scores(model, sentences, True))


def test_the_beam_gives_the_same_texts_and_scores_with_arrays_as_with_kenlm(real):
    root = require_shared(*EMISSIONS)
    import json

    labels = json.loads((root / "labels.json").read_text())["labels"]
    from ctclab.decoders import Vocabulary

    vocab = Vocabulary.from_labels(labels, blank=len(labels) - 1, delimiter=" ")
    rows = [line.split("\t") for line in (root / "manifest.tsv").read_text().splitlines()[1:]]
    emissions = [np.load(root / split / f"{utt}.npy") for split, utt, *_ in rows]
    arpa = str(real[0])
    hyps = {backend: create_decoder("beam", vocab, lm_path=arpa, lm_backend=backend)
            .decode_many(emissions) for backend in ("arrays", "kenlm")}
    assert len(hyps["kenlm"]) == 94
    for a, k in zip(hyps["arrays"], hyps["kenlm"], strict=True):
        assert (a.text, a.tokens) == (k.text, k.tokens)
        # the same float32 LM values, combined in the same order: equal, not merely close
        assert (a.score, a.lm_score, a.acoustic_score) == (k.score, k.lm_score, k.acoustic_score)
