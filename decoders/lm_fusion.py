"""Word-level scoring for the beam search: LM shallow fusion, lexicon checks and hotword bonuses.

The search names every partial word by a WordTrie node id and every LM history by an integer
context id (an interned LanguageModel state), so that it can keep both in numpy arrays. Word
completions are scored here, at word boundaries only, through a cache keyed by (context, word):
the same word after the same history is looked up in the LM once per decoder.

Score of a finished word (natural log):
    alpha * ln P_LM(word | history) + beta          (only with an LM)
  + unknown_prefix_penalty                          (soft lexicon mode, word not known)
  + hotword bonus
In hard lexicon mode an unknown word scores -inf (the beam is dropped). Without a word list (a
binary LM and no unigrams_path) "known" means known to the LM.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.constants import (
    AVG_WORD_LABELS,
    LM_CONTEXT_LIMIT,
    LM_SCORE_CACHE_SIZE,
    SEARCH_NODE_LIMIT,
)
from ctclab.decoders.hotwords import HotwordBonus, hotword_spellings
from ctclab.decoders.prefix_trie import WordTrie, spell
from ctclab.lm.language_model import LanguageModel

# Key packing for the completion cache: context id in the high bits, trie node in the low 32.
_NODE_BITS = 32


class WordScorer:
    """Scores partial and finished words for the search; see the module docstring for the formula.

    lm: LanguageModel or None. unigrams: known words in the LM's casing (None = no lexicon).
    mapper: acoustic word -> LM word. lexicon_mode: 'none' | 'soft' | 'hard'.
    """

    def __init__(self, vocab: Vocabulary, lm: LanguageModel | None, unigrams: Sequence[str] | None,
                 mapper: Callable[[str], str], *, alpha: float, beta: float, lexicon_mode: str,
                 unknown_prefix_penalty: float, hotwords: Sequence[str] = (),
                 hotword_weight: float = 0.0):
        self.vocab, self.lm, self.mapper = vocab, lm, mapper
        self.alpha, self.beta = float(alpha), float(beta)
        self.penalty = float(unknown_prefix_penalty)
        # The most a finished word can add to a beam's score (the search prunes candidates against
        # the best beam before their words are scored, allowing for this much).
        self.max_word_gain = (max(self.beta, 0.0) if lm is not None else 0.0) + (
            max(float(hotword_weight), 0.0) if hotwords else 0.0)
        words: list[str] = []
        spellings: list[list[int]] = []
        if unigrams is not None and lexicon_mode != "none":
            for word in unigrams:
                ids = spell(word, vocab.label_to_id, vocab.case)
                if ids is not None and vocab.delimiter not in ids and mapper(
                        "".join(vocab.labels[i] for i in ids)) == word:
                    words.append(word)
                    spellings.append(ids)
            if not words:
                raise ValueError(
                    f"none of the {len(unigrams)} known words (e.g. {list(unigrams)[:5]}) can be "
                    f"spelled with the acoustic labels ({vocab.case} case): every word would be OOV; "
                    "use an LM / unigram list written in the model's characters, or "
                    "lexicon_mode='none'")
        self.lexicon = bool(words)
        # Without a word list (a binary LM), "soft" still penalises and "hard" still forbids
        # finished words the LM itself does not know; partial words are then not checked.
        self.penalise_lm_oov = lexicon_mode == "soft" and not self.lexicon
        self.forbid_lm_oov = lexicon_mode == "hard" and not self.lexicon
        self.hard = self.lexicon and lexicon_mode == "hard"
        self.soft = self.lexicon and lexicon_mode == "soft"
        hot = hotword_spellings(hotwords, vocab) if hotwords else []
        for _, ids in hot:  # hotwords are known words: no unknown-word penalty for them
            # the LM word of the spelling (in the labels' casing), not of the hotword as typed
            words.append(mapper("".join(vocab.labels[i] for i in ids)))
            spellings.append(ids)
        self.trie = WordTrie(vocab.size, spellings, words)
        self.hot = HotwordBonus.build(self.trie, [ids for _, ids in hot], hotword_weight) if hot \
            else None
        self._states: list[Hashable] = []
        self._state_ids: dict[Hashable, int] = {}
        self.start_context = self._intern(lm.start_state()) if lm is not None else 0
        self._cache: dict[int, tuple[float, int]] = {}
        self._end_cache: dict[int, float] = {}
        self._partial = np.zeros(0, np.float64)   # partial_scores per trie node
        self._partial_size = 0                    # nodes [0, size) of it are filled

    @property
    def active(self) -> bool:
        """True when words change scores at all (else the search skips word tracking)."""
        return self.lm is not None or self.lexicon or self.hot is not None

    def trim(self) -> None:
        """Between batches: forget partial words made during search, and the LM histories and cache
        entries that name them, once they grow past their limits (memory stays bounded)."""
        if (self.trie.size - self.trie.static_size > SEARCH_NODE_LIMIT
                or len(self._states) > LM_CONTEXT_LIMIT):
            self.trie.forget_search_nodes()
            self._partial_size = min(self._partial_size, self.trie.size)
            self._cache.clear()
            self._end_cache.clear()
            if self.lm is not None:
                self._states, self._state_ids = [], {}
                self.start_context = self._intern(self.lm.start_state())

    def _intern(self, state: Hashable) -> int:
        ident = self._state_ids.get(state)
        if ident is None:
            ident = len(self._states)
            self._states.append(state)
            self._state_ids[state] = ident
        return ident

    # ----------------------------------------------------------------------------- partial words
    def partial_scores(self, nodes: np.ndarray) -> np.ndarray:
        """(n,) ln score a beam carries while ``nodes`` is its unfinished word."""
        if not self.soft and self.hot is None:
            return np.zeros(len(nodes), np.float64)
        # A node's score never changes while the node lives, so it is computed once per node
        # (trim() forgets the cached search nodes together with the nodes themselves).
        size = self.trie.size
        if self._partial_size < size:
            if len(self._partial) < size:
                grown = np.zeros(max(size, 2 * len(self._partial)), np.float64)
                grown[: self._partial_size] = self._partial[: self._partial_size]
                self._partial = grown
            new = np.arange(self._partial_size, size)
            self._partial[self._partial_size:size] = self._partial_of(new)
            self._partial_size = size
        return self._partial.take(nodes)

    def _partial_of(self, nodes: np.ndarray) -> np.ndarray:
        out = np.zeros(len(nodes), np.float64)
        if self.soft:
            scale = np.maximum(1.0, self.trie.depth[nodes] / AVG_WORD_LABELS)
            out += np.where(self.trie.in_lexicon[nodes], 0.0, self.penalty * scale)
        if self.hot is not None:
            out += self.hot.lookup(self.hot.partial, nodes)
        return out

    def allowed(self, nodes: np.ndarray) -> np.ndarray:
        """(n,) bool: partial words the search may keep (hard mode: prefixes of known words)."""
        if self.hard:
            return self.trie.in_lexicon[nodes]
        return np.ones(len(nodes), bool)

    # ----------------------------------------------------------------------------- finished words
    def complete(self, contexts: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score words ``nodes`` finished after LM histories ``contexts``: (delta, new contexts)."""
        keys = ((contexts << _NODE_BITS) | nodes).tolist()
        cache = self._cache
        results = [cache.get(k) or self._complete_one(k) for k in keys]
        delta = np.fromiter((r[0] for r in results), np.float64, len(results))
        new_ctx = np.fromiter((r[1] for r in results), np.int64, len(results))
        return delta, new_ctx

    def _complete_one(self, key: int) -> tuple[float, int]:
        context, node = key >> _NODE_BITS, key & ((1 << _NODE_BITS) - 1)
        index = int(self.trie.word_index[node])
        known = index >= 0
        if known:
            lm_word = self.trie.words[index]
        else:
            lm_word = self.mapper("".join(self.vocab.labels[i] for i in self.trie.spelling(node)))
        score, new_context = 0.0, context
        if self.lm is not None:
            ln_prob, state = self.lm.score(self._states[context], lm_word)
            score += self.alpha * ln_prob + self.beta
            new_context = self._intern(state)
            if not self.lexicon and not known:  # no word list: the LM's own vocabulary decides
                known = not self.lm.is_oov(lm_word)
        if not known:
            if self.hard or (self.lm is not None and self.forbid_lm_oov):
                score = -math.inf
            elif self.soft or (self.lm is not None and self.penalise_lm_oov):
                score += self.penalty
        if self.hot is not None and node < len(self.hot.word):
            score += float(self.hot.word[node])
        if len(self._cache) >= LM_SCORE_CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (score, new_context)
        return score, new_context

    def end(self, contexts: np.ndarray) -> np.ndarray:
        """(n,) alpha * ln P(</s> | history) for each context (0 without an LM)."""
        if self.lm is None:
            return np.zeros(len(contexts), np.float64)
        out = np.empty(len(contexts), np.float64)
        for i, context in enumerate(contexts.tolist()):
            value = self._end_cache.get(context)
            if value is None:
                value = self.alpha * self.lm.end_score(self._states[context])
                self._end_cache[context] = value
            out[i] = value
        return out
