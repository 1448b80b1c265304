"""Whole-sentence scores from a word n-gram, for re-ranking n-best lists (eval/rescore.py).

    scorer = KenLMSentenceScorer(load_language_model("4gram.arpa"), mapper)
    scorer.score_texts(["the cat sat", "the cap sat"])     # (2,) ln P(<s> words </s>)

Any object with ``name`` and ``score_texts(texts) -> (n,) natural-log probabilities`` can rescore
(eval/causal_lm.py is the other one). Words are mapped to the LM's casing first (lm.casing).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from ctclab.lm.language_model import LanguageModel


class SentenceScorer(Protocol):
    """Scores whole sentences: ln P(text), the end of the sentence included."""

    name: str

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) natural-log probability of each text (words separated by single spaces)."""
        ...


class KenLMSentenceScorer:
    """ln P(<s> w1 .. wn </s>) under a word n-gram (a LanguageModel, e.g. KenLM).

    mapper: acoustic word -> LM word (lm.casing.make_word_mapper); OOV words get the LM's <unk>
    score, as in decoding. Scores are cached per text: tuning re-ranks the same lists many times.
    """

    def __init__(self, lm: LanguageModel, mapper: Callable[[str], str], name: str = "kenlm"):
        self.lm, self.mapper, self.name = lm, mapper, name
        self._cache: dict[str, float] = {}

    def score_text(self, text: str) -> float:
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        state = self.lm.start_state()
        total = 0.0
        for word in text.split():
            ln_p, state = self.lm.score(state, self.mapper(word))
            total += ln_p
        total += self.lm.end_score(state)
        self._cache[text] = total
        return total

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.score_text(t) for t in texts], np.float64)
