"""The two candidate layouts of a search step (decoders/search_schedule.py): dense (U_s, K_s)
blocks and ragged lists. Forcing every step into one layout or the other gives the same
hypotheses to the last bit, in every search mode, on numpy and on torch, and on the real sets.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import shared_path
from decoding_fixtures import BEAM_BACKENDS, log_softmax, quartznet_vocab, write_arpa

import ctclab.decoders.search_schedule as schedule_module
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders import create_decoder

WORDS = {"the": 0.2, "cat": 0.08, "cap": 0.01, "sat": 0.06, "on": 0.1, "mat": 0.04, "a": 0.1}
BIGRAMS = {("the", "cat"): 0.3, ("cat", "sat"): 0.4, ("sat", "on"): 0.5}
MODES = {
    "no LM, 3-best": {"nbest": 3},
    "LM, soft lexicon, 3-best": {"lm": True, "nbest": 3},
    "LM, hard lexicon": {"lm": True, "lexicon_mode": "hard"},
    "LM and hotwords": {"lm": True, "hotwords": ("mat",)},
    "no LM, exact": {"beam_prune_logp": -math.inf, "token_min_logp": -math.inf,
                     "blank_skip_threshold": None, "nbest": 4},
}


def decode_in_layout(monkeypatch, ragged: bool, vocab, emissions, options) -> tuple[list, int]:
    """Hypotheses with every step ragged (or every step dense), and how many ragged steps ran."""
    monkeypatch.setattr(schedule_module, "RAGGED_MIN_CELLS", 0 if ragged else 2**62)
    monkeypatch.setattr(schedule_module, "RAGGED_MIN_PADDING", 0)
    made = []
    original = schedule_module.make_schedule

    def spy(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    import ctclab.decoders.beam_search as beam_search
    monkeypatch.setattr(beam_search, "make_schedule", spy)
    hyps = create_decoder("beam", vocab, **options).decode_many(emissions)
    return hyps, sum(int(s.cand_ragged.sum()) for s in made)


def noisy_emissions(vocab, seed: int, count: int = 10) -> list[np.ndarray]:
    """Peaky frames with a second likely label here and there: steps with several candidates."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(1, 50))
        logits = rng.normal(size=(n, vocab.size))
        logits[np.arange(n), rng.integers(0, vocab.size, n)] += 5.0
        logits[np.arange(n), rng.integers(0, vocab.size, n)] += 3.0 * (rng.random(n) < 0.4)
        out.append(log_softmax(logits))
    return out


@pytest.mark.parametrize("backend", sorted(BEAM_BACKENDS))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_ragged_and_dense_steps_give_the_same_hypotheses(tmp_path, monkeypatch, mode, backend):
    vocab = quartznet_vocab()
    options = {"beam_width": 16, **MODES[mode], **BEAM_BACKENDS[backend]}
    if options.pop("lm", False):
        options["lm_path"] = str(write_arpa(tmp_path / "lm.arpa", WORDS, BIGRAMS))
    emissions = noisy_emissions(vocab, seed=len(mode))
    dense, none = decode_in_layout(monkeypatch, False, vocab, emissions, options)
    ragged, steps = decode_in_layout(monkeypatch, True, vocab, emissions, options)
    assert none == 0 and steps > 20
    assert ragged == dense


def test_the_real_sets_are_decoded_alike_in_both_layouts(monkeypatch):
    """QuartzNet letters with the shared 3-gram, and hama phonemes through the IPA lexicon
    (homophone forks, the general extension path)."""
    import json

    paths = {k: shared_path(*p) for k, p in {
        "quartznet": ("emissions", "quartznet15x5-base-en"), "hama": ("emissions", "hama-phoneme"),
        "lm": ("lm", "en-us-70k-3gram.arpa.gz"),
        "ipa": ("lm", "en-us-70k-3gram.ipa-lexicon.tsv")}.items()}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        pytest.skip(f"real data not present: {missing}")

    def load(root):
        rows = [line.split("\t") for line in (root / "manifest.tsv").read_text(
            encoding="utf-8").splitlines()[1:]]
        return [np.load(root / split / f"{utt}.npy") for split, utt, *_ in rows]

    meta = json.loads((paths["hama"] / "labels.json").read_text(encoding="utf-8"))
    phonemes = Vocabulary.from_labels(meta["labels"], blank=meta["blank_index"],
                                      delimiter=meta["word_delimiter"], unused=meta.get("unused"),
                                      units="phonemes")
    lm = str(paths["lm"])
    for vocab, emissions, options in (
            (quartznet_vocab(), load(paths["quartznet"]), {"lm_path": lm, "nbest": 3}),
            (phonemes, load(paths["hama"]), {"lm_path": lm, "lexicon_path": str(paths["ipa"])})):
        dense, _ = decode_in_layout(monkeypatch, False, vocab, emissions, options)
        ragged, steps = decode_in_layout(monkeypatch, True, vocab, emissions, options)
        assert steps > 100
        assert ragged == dense
