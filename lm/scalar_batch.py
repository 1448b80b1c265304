"""Any word-at-a-time LanguageModel (KenLM, a test double) behind the array interface the beam
search uses (lm.language_model.BatchLanguageModel).

Its states are interned as integer context ids and its words as word ids, and every
(context, word) pair is answered from a cache after its first query, so a pair reaches the LM once
per decoder. This is the path for LMs without an array form (KenLM binaries, LMs over the array
memory limit); ARPA LMs are served by lm.array_lm without a per-word Python loop.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from ctclab.lm.constants import LM_CONTEXT_LIMIT, LM_SCORE_CACHE_SIZE, LM_WORD_LIMIT
from ctclab.lm.language_model import BatchLanguageModel, LanguageModel

# Key packing for the score cache: context id in the high bits, word id in the low 32.
_WORD_BITS = 32


class ScalarBatch(BatchLanguageModel):
    """``lm`` answered pair by pair, through a cache keyed by (context id, word id)."""

    def __init__(self, lm: LanguageModel):
        self.lm = lm
        self.order = lm.order
        self._reset()

    def _reset(self) -> None:
        self._states: list[Hashable] = []
        self._state_ids: dict[Hashable, int] = {}
        self._words: list[str] = []
        self._word_index: dict[str, int] = {}
        self._known: list[bool] = []
        self._cache: dict[int, tuple[float, int]] = {}
        self._end_cache: dict[int, float] = {}
        self._start = self._intern(self.lm.start_state())

    @property
    def start_context(self) -> int:
        return self._start

    def _intern(self, state: Hashable) -> int:
        ident = self._state_ids.get(state)
        if ident is None:
            ident = len(self._states)
            self._states.append(state)
            self._state_ids[state] = ident
        return ident

    def word_ids(self, words: Sequence[str]) -> np.ndarray:
        out = np.empty(len(words), np.int64)
        for i, word in enumerate(words):
            ident = self._word_index.get(word)
            if ident is None:
                ident = len(self._words)
                self._words.append(word)
                self._word_index[word] = ident
                self._known.append(not self.lm.is_oov(word))
            out[i] = ident
        return out

    def known(self, word_ids: np.ndarray) -> np.ndarray:
        known = self._known
        return np.fromiter((known[i] for i in word_ids.tolist()), bool, len(word_ids))

    def score_batch(self, contexts: np.ndarray, word_ids: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        keys = ((contexts << _WORD_BITS) | word_ids).tolist()
        cache = self._cache
        results = [cache.get(k) or self._miss(k) for k in keys]
        ln = np.fromiter((r[0] for r in results), np.float64, len(results))
        after = np.fromiter((r[1] for r in results), np.int64, len(results))
        return ln, after

    def _miss(self, key: int) -> tuple[float, int]:
        context, word = key >> _WORD_BITS, key & ((1 << _WORD_BITS) - 1)
        ln, state = self.lm.score(self._states[context], self._words[word])
        result = (ln, self._intern(state))
        if len(self._cache) >= LM_SCORE_CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = result
        return result

    def end_score_batch(self, contexts: np.ndarray) -> np.ndarray:
        out = np.empty(len(contexts), np.float64)
        for i, context in enumerate(contexts.tolist()):
            value = self._end_cache.get(context)
            if value is None:
                value = self.lm.end_score(self._states[context])
                self._end_cache[context] = value
            out[i] = value
        return out

    def trim(self) -> bool:
        """Forget states, words and cached scores once there are more than their limits."""
        if len(self._states) > LM_CONTEXT_LIMIT or len(self._words) > LM_WORD_LIMIT:
            self._reset()
            return True
        return False


def as_batch(lm: LanguageModel | BatchLanguageModel) -> BatchLanguageModel:
    """``lm`` itself when it scores arrays already, else wrapped in a ScalarBatch."""
    if isinstance(lm, BatchLanguageModel):
        return lm
    return ScalarBatch(lm)
