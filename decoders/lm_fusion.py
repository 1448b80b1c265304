"""Word-level scoring for the beam search: LM shallow fusion, lexicon checks and hotword bonuses.

The search names every partial word by a WordTrie node id and every LM history by an integer
context id of the LM (lm.language_model.BatchLanguageModel), so that it can keep both in numpy
arrays. Every trie node that ends a word carries that word's LM word id and its additive score
terms, computed once per node; finishing words is then one vectorized LM call per search step
(an array LM: a fixed number of array operations; a word-at-a-time LM such as a KenLM binary: a
per-(history, word) cache in front of it, lm.scalar_batch).

Score of a finished word (natural log):
    alpha * ln P_LM(word | history) + beta          (only with an LM)
  + unknown_prefix_penalty                          (soft lexicon mode, word not known)
  + hotword bonus
  (a hotword the LM does not know pays unknown_prefix_penalty instead of its LM term)
In hard lexicon mode an unknown word scores -inf (the beam is dropped). Without a word list (a
binary LM and no unigrams_path) "known" means known to the LM.

Words reach tokens through a spelling (lm.spelling): letters, word pieces or a pronunciation
lexicon. A lexicon node can end several words (homophones): the search tries each (a "choice"
0..k-1 at the node) and the LM tells them apart; choice 0's word sits in the per-node tables, the
others in per-homophone tables. An unknown partial word of a pronunciation lexicon has no text
the LM could know: it is scored as ``<unk>``.

The search-time tables live in the search's array namespace (ctclab.core.arrays: numpy, or torch
on the CPU or a GPU), as does the LM's scoring (BatchLanguageModel.on). Words are strings only
on the host: a node that ends a word for the first time is spelled there (_fill).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ctclab.core.arrays import NUMPY, Arrays
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.constants import AVG_WORD_LABELS, SEARCH_NODE_LIMIT, WORD_MEMO_BITS
from ctclab.decoders.hotwords import HotwordBonus, hotword_spellings
from ctclab.decoders.prefix_trie import WordTrie
from ctclab.lm.array_lm import ArrayLanguageModel
from ctclab.lm.casing import WordMapper
from ctclab.lm.constants import UNKNOWN_WORDS
from ctclab.lm.language_model import BatchLanguageModel, LanguageModel
from ctclab.lm.scalar_batch import as_batch
from ctclab.lm.spelling import SpelledWords, Spelling

# _node_word value of a trie node whose word was not looked up yet.
_UNSET = -1
# The LM word an unknown partial word of a pronunciation lexicon is scored as.
UNKNOWN_WORD = "<unk>"
# Memo keys: context * 2^32 + node (trie nodes stay below 2^32, contexts below 2^31).
_NODE_SPAN = 1 << 32
# Fibonacci hashing of a key: the top bits of key * 2^64/phi (as int64: the same bits).
_MEMO_MUL = 0x9E3779B97F4A7C15 - (1 << 64)


class WordScorer:
    """Scores partial and finished words for the search; see the module docstring for the formula.

    lm: LanguageModel or None. known: the known words and their spellings (None = no lexicon).
    mapper: acoustic word -> LM word. lexicon_mode: 'none' | 'soft' | 'hard'. spelling: how
    hotwords are spelled (the same way as the known words).
    """

    def __init__(self, vocab: Vocabulary, lm: LanguageModel | None, known: SpelledWords | None,
                 mapper: Callable[[str], str], *, alpha: float, beta: float, lexicon_mode: str,
                 unknown_prefix_penalty: float, hotwords: Sequence[str] = (),
                 hotword_weight: float = 0.0, spelling: Spelling | None = None,
                 xp: Arrays = NUMPY):
        self.vocab, self.mapper, self.xp = vocab, mapper, xp
        # host_lm answers words (strings -> ids); lm scores arrays of the search's namespace
        self.host_lm: BatchLanguageModel | None = as_batch(lm) if lm is not None else None
        self.lm = self.host_lm.on(xp) if self.host_lm is not None else None
        self.alpha, self.beta = float(alpha), float(beta)
        self.penalty = float(unknown_prefix_penalty)
        # The most a finished word can add to a beam's score (the search prunes candidates against
        # the best beam before their words are scored, allowing for this much).
        self.max_word_gain = (max(self.beta, 0.0) if lm is not None else 0.0) + (
            max(float(hotword_weight), 0.0) if hotwords else 0.0)
        spelling = spelling or Spelling(vocab)
        # text_from_tokens: words read as their tokens' text (letters, pieces); else (phonemes)
        # the text of a known word is its lexicon word, of an unknown one its tokens' labels.
        self.text_from_tokens = spelling.from_tokens
        words: list[str] = []
        self.word_text: list[str] = []
        spellings: list[Sequence[int]] = []
        owners: list[int] = []
        if known is not None and lexicon_mode != "none":
            words, self.word_text = list(known.words), list(known.text)
            spellings, owners = list(known.spellings), list(known.owners)
        self.lexicon = bool(words)
        # Without a word list (a binary LM), "soft" still penalises and "hard" still forbids
        # finished words the LM itself does not know; partial words are then not checked.
        self.penalise_lm_oov = lexicon_mode == "soft" and not self.lexicon
        self.forbid_lm_oov = lexicon_mode == "hard" and not self.lexicon
        self.hard = self.lexicon and lexicon_mode == "hard"
        self.soft = self.lexicon and lexicon_mode == "soft"
        hot = hotword_spellings(hotwords, vocab, spelling) if hotwords else []
        index_of = {w: i for i, w in enumerate(words)} if hot else {}
        self._hot_ids: set[int] = set()   # word ids of the hotwords (homophones share a node)
        for word, ids in hot:  # hotwords are known words: no unknown-word penalty for them
            # the LM word of the spelling (in the labels' casing), not of the hotword as typed
            if self.text_from_tokens:
                text = vocab.decode_tokens(ids) if vocab.word_start is not None else "".join(
                    vocab.labels[i] for i in ids)
                lm_word = mapper(text)
            else:
                lm_word = text = word.lower() if word.lower() in index_of else word
            owner = index_of.get(lm_word)
            if owner is None:
                owner = index_of[lm_word] = len(words)
                words.append(lm_word)
                if not self.text_from_tokens:
                    self.word_text.append(text)
            spellings.append(ids)
            owners.append(owner)
            self._hot_ids.add(owner)
        self.trie = WordTrie(vocab.size, spellings, words, owners,
                             shared_columns=not self.text_from_tokens, xp=xp,
                             reset=vocab.delimiter)
        self.hot = HotwordBonus.build(self.trie, [ids for _, ids in hot], hotword_weight) if hot \
            else None
        self.homophones = self.trie.max_homophones
        if self._unknown_prefixes_alike(vocab, mapper):
            self.trie.share_unknown_prefixes()
        self._partial = xp.zeros(0, xp.float64)   # partial_scores per trie node
        self._partial_size = 0                    # nodes [0, size) of it are filled
        # (context, node) -> (delta, context after) of finished words, direct-mapped; numpy
        # only (per-call overhead is what it saves; a GPU scores words in bulk)
        self._memo: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if xp.name == "numpy":
            size = 1 << WORD_MEMO_BITS
            self._memo = (np.full(size, -1, np.int64), np.zeros(size), np.zeros(size, np.int64))
        self._build_word_tables()

    @property
    def active(self) -> bool:
        """True when words change scores at all (else the search skips word tracking)."""
        return self.lm is not None or self.lexicon or self.hot is not None

    @property
    def start_context(self) -> int:
        """LM context id of the sentence start (0 without an LM)."""
        return self.lm.start_context if self.lm is not None else 0

    def trim(self) -> None:
        """Between batches: forget the partial words made during search once there are more than
        SEARCH_NODE_LIMIT, and let the LM forget what it remembered for the search (memory stays
        bounded over a long corpus)."""
        forget = self.trie.size - self.trie.static_size > SEARCH_NODE_LIMIT
        if self.host_lm is not None and self.host_lm.trim():  # its ids changed: look all up again
            forget = True
        if forget:
            self.trie.forget_search_nodes()
            self._partial_size = min(self._partial_size, self.trie.size)
            self._build_word_tables()
            if self._memo is not None:  # its node (and maybe context) ids mean other things now
                self._memo[0][:] = -1

    def _unknown_prefixes_alike(self, vocab: Vocabulary, mapper: Callable[[str], str]) -> bool:
        """True when every partial word off the trie scores like any other of its length, so that
        they may share one trie node per length (WordTrie.share_unknown_prefixes: the search then
        makes a few nodes instead of one per noisy spelling, and finished ones hit the memo).

        Such a word's partial score is the unknown-prefix penalty by its length (soft lexicon),
        its hotword bonus 0 (hotwords are in the trie), and finished it scores as the LM's
        ``<unk>`` plus the penalty, unless its text maps to a word the LM knows. That cannot
        happen when labels spell letters (each label one character, told apart by the mapper
        character by character: the identity, or an ASCII recasing) and every LM word whose
        labels exist is in the trie (a word node): then every node that ends no known word, a
        prefix of known words too, finishes as ``<unk>``. Not for word pieces, pronunciations,
        hard mode (scores of -inf), or an LM that is not an array LM (other LMs tell unknown
        words apart by their text)."""
        if not (self.soft and self.text_from_tokens and vocab.word_start is None):
            return False
        labels = [vocab.labels[int(t)] for t in vocab.emitting_ids if int(t) != vocab.delimiter]
        if any(len(label) != 1 for label in labels):
            return False
        if not isinstance(mapper, WordMapper) or (
                not mapper.identity and not all(label.isascii() for label in labels)):
            return False
        mapped = {mapper(label): i for i, label in zip(
            (int(t) for t in vocab.emitting_ids if int(t) != vocab.delimiter), labels,
            strict=True)}
        if len(mapped) != len(labels) or any(len(m) != 1 for m in mapped):
            return False
        if self.host_lm is None:
            return True
        if not isinstance(self.host_lm, ArrayLanguageModel):
            return False
        in_trie = set(self.trie.words)
        for word in self.host_lm.words[1:]:   # id 0 is <unk>
            if word in in_trie or word in UNKNOWN_WORDS:
                continue
            if all(ch in mapped for ch in word):
                return False   # labels spell a word the LM knows that is not in the trie
        return True

    # ----------------------------------------------------------------------------- word tables
    def _build_word_tables(self) -> None:
        """Per trie node: the LM word id of the word it spells (_node_word) and what finishing it
        adds besides the LM (_node_extra: unknown-word penalty or -inf, hotword bonus). Filled
        here for the lexicon and hotword nodes, later (_fill) for other nodes as they end words.
        Computed on the host, then moved to the search's namespace."""
        trie, xp = self.trie, self.xp
        capacity = len(trie.parent)
        node_word = np.full(capacity, _UNSET, np.int64)
        node_extra = np.zeros(capacity, np.float64)
        node_free = np.zeros(capacity, bool)
        words = np.flatnonzero(trie.host_word_index >= 0)
        if trie.shares_unknown_prefixes:  # every other node finishes as <unk> (_fill)
            node_word[: trie.static_size] = self.host_lm.word_ids([UNKNOWN_WORD])[0] \
                if self.host_lm is not None else 0
            node_extra[: trie.static_size] = self.penalty
        if len(words):
            node_word[words], node_extra[words], node_free[words] = \
                self._word_terms(trie.host_word_index[words], words)
        # Homophones: every word of every node (choice c of node n is flat index
        # word_first[n] + c); only read for choices > 0.
        word_count = xp.to_numpy(trie.word_count)
        flat_nodes = np.repeat(np.arange(trie.static_size), word_count)
        flat_word, flat_extra, flat_free = self._word_terms(xp.to_numpy(trie.node_words),
                                                            flat_nodes)
        self._any_free = bool(node_free.any() or flat_free.any())
        self._node_word, self._node_extra, self._node_free = (
            xp.asarray(node_word), xp.asarray(node_extra), xp.asarray(node_free))
        self._flat_word, self._flat_extra, self._flat_free = (
            xp.asarray(flat_word), xp.asarray(flat_extra), xp.asarray(flat_free))

    def _word_terms(self, word_ids: np.ndarray, nodes: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LM word ids, extra score terms and "LM-free" flags of the known words ``word_ids``
        (trie.words indices) ending at ``nodes`` (host arrays). Extra: a hotword's bonus. A
        hotword the LM lacks is LM-free: it pays the unknown-word penalty instead of its LM term
        (its <unk> probability would outweigh any bonus; KenLM gives -100 log10 when an ARPA has
        no <unk>)."""
        n = len(word_ids)
        extra, free = np.zeros(n, np.float64), np.zeros(n, bool)
        if not n:
            return np.zeros(0, np.int64), extra, free
        lm_words = [self.trie.words[i] for i in word_ids.tolist()]
        ids = np.asarray(self.host_lm.word_ids(lm_words), np.int64) \
            if self.host_lm is not None else np.zeros(n, np.int64)
        if self.hot is not None:  # known words: no penalty; hotwords: their bonus
            xp = self.xp
            named = np.isin(word_ids, list(self._hot_ids))
            bonus = xp.to_numpy(self.hot.lookup(self.hot.word, xp.asarray(nodes), xp))
            extra += np.where(named | self.text_from_tokens, bonus, 0.0)
            if self.host_lm is not None:
                free = named & ~np.asarray(self.host_lm.known(ids), bool)
                extra[free] += self.penalty
        return ids, extra, free

    def _fill(self, nodes: Any) -> None:
        """Word tables of ``nodes`` (unique; not lexicon words): spelled on the host, mapped to
        the LM's casing and looked up once per node."""
        labels, vocab, xp = self.vocab.labels, self.vocab, self.xp
        n = len(nodes)
        if not self.text_from_tokens or self.trie.shares_unknown_prefixes:
            # an unknown pronunciation has no text the LM knows; with shared unknown partial
            # words no node off the known words spells one the LM knows (see
            # _unknown_prefixes_alike)
            lm_words = [UNKNOWN_WORD] * n
        elif vocab.word_start is not None:
            lm_words = [self.mapper(vocab.decode_tokens(ids))
                        for ids in self.trie.spellings(nodes)]
        else:
            lm_words = [self.mapper("".join(labels[i] for i in ids))
                        for ids in self.trie.spellings(nodes)]
        known = np.zeros(n, bool)
        if self.host_lm is not None:
            ids = np.asarray(self.host_lm.word_ids(lm_words), np.int64)
            if not self.lexicon:  # no word list: the LM's own vocabulary decides
                known = np.asarray(self.host_lm.known(ids), bool)
        else:
            ids = np.zeros(n, np.int64)
        self._node_word[nodes] = xp.asarray(ids)
        if self.hard or (self.lm is not None and self.forbid_lm_oov):
            unknown = -math.inf
        elif self.soft or (self.lm is not None and self.penalise_lm_oov):
            unknown = self.penalty
        else:
            unknown = 0.0
        self._node_extra[nodes] = xp.asarray(np.where(known, 0.0, unknown))

    def _grow_word_tables(self) -> None:
        xp = self.xp
        capacity = len(self.trie.parent)
        word = xp.full(capacity, _UNSET, xp.int64)
        extra = xp.zeros(capacity, xp.float64)
        free = xp.zeros(capacity, xp.bool_)
        word[: len(self._node_word)] = self._node_word
        extra[: len(self._node_extra)] = self._node_extra
        free[: len(self._node_free)] = self._node_free
        self._node_word, self._node_extra, self._node_free = word, extra, free

    # ----------------------------------------------------------------------------- partial words
    def partial_scores(self, nodes: Any) -> Any:
        """(n,) ln score a beam carries while ``nodes`` is its unfinished word."""
        xp = self.xp
        if not self.soft and self.hot is None:
            return xp.zeros(len(nodes), xp.float64)
        # A node's score never changes while the node lives, so it is computed once per node
        # (trim() forgets the cached search nodes together with the nodes themselves).
        size = self.trie.size
        if self._partial_size < size:
            if len(self._partial) < size:
                grown = xp.zeros(max(size, 2 * len(self._partial)), xp.float64)
                grown[: self._partial_size] = self._partial[: self._partial_size]
                self._partial = grown
            new = xp.arange(size - self._partial_size, self._partial_size)
            self._partial[self._partial_size:size] = self._partial_of(new)
            self._partial_size = size
        return xp.take(self._partial, nodes)

    def _partial_of(self, nodes: Any) -> Any:
        xp = self.xp
        out = xp.zeros(len(nodes), xp.float64)
        if self.soft:
            depth = xp.astype(xp.take(self.trie.depth, nodes), xp.float64)
            scale = xp.maximum(depth / AVG_WORD_LABELS, 1.0)
            out += xp.where(xp.take(self.trie.in_lexicon, nodes), 0.0, self.penalty * scale)
        if self.hot is not None:
            out += self.hot.lookup(self.hot.partial, nodes, xp)
        return out

    def allowed(self, nodes: Any) -> Any:
        """(n,) bool: partial words the search may keep (hard mode: prefixes of known words)."""
        if self.hard:
            return self.xp.take(self.trie.in_lexicon, nodes)
        return self.xp.full(len(nodes), True, self.xp.bool_)

    # ----------------------------------------------------------------------------- finished words
    def word_counts(self, nodes: Any) -> Any:
        """(n,) how many words each node ends, at least 1 (an unknown word is one word)."""
        xp, static = self.xp, self.trie.static_size
        counts = xp.take(self.trie.word_count, xp.minimum(nodes, static - 1))
        return xp.where(nodes < static, xp.maximum(counts, 1), 1)

    def word_ids(self, nodes: Any, choices: Any) -> Any:
        """(n,) word id of homophone ``choices[i]`` at ``nodes[i]``; -1 for an unknown word."""
        xp, trie = self.xp, self.trie
        static = trie.static_size
        safe = xp.minimum(nodes, static - 1)
        known = (nodes < static) & (xp.take(trie.word_count, safe) > choices)
        if not len(trie.node_words):
            return xp.full(len(nodes), -1, xp.int64)
        flat = xp.minimum(xp.take(trie.word_first, safe) + choices, len(trie.node_words) - 1)
        return xp.where(known, xp.take(trie.node_words, flat), -1)

    def complete(self, contexts: Any, nodes: Any, choices: Any = None) -> tuple[Any, Any]:
        """Score words ``nodes`` (homophone ``choices``, default 0) finished after LM histories
        ``contexts``: (delta, new contexts).

        contexts, nodes: (n,) int64, n >= 1. One LM call for all n words; no Python loop over them
        (only over nodes that end a word for the first time). Without homophone choices the
        answers come from a memo when it has them all.
        """
        if self._memo is not None and choices is None:
            key = contexts * _NODE_SPAN + nodes
            slot = (key * _MEMO_MUL >> (64 - WORD_MEMO_BITS)) & ((1 << WORD_MEMO_BITS) - 1)
            keys, deltas, afters = self._memo
            if np.logical_and.reduce(keys.take(slot) == key):   # ndarray.all's wrapper costs more
                return deltas.take(slot), afters.take(slot)
            delta, after = self._complete(contexts, nodes, None)
            keys[slot], deltas[slot], afters[slot] = key, delta, after
            return delta, after
        return self._complete(contexts, nodes, choices)

    def _complete(self, contexts: Any, nodes: Any, choices: Any) -> tuple[Any, Any]:
        xp = self.xp
        if len(self._node_word) < len(self.trie.parent):
            self._grow_word_tables()
        ids = xp.take(self._node_word, nodes)
        if xp.item(xp.amin(ids) < 0):
            self._fill(xp.unique_inverse(nodes[ids < 0])[0])
            ids = xp.take(self._node_word, nodes)
        extra = xp.take(self._node_extra, nodes)
        free = xp.take(self._node_free, nodes) if self._any_free else None
        if choices is not None and xp.item(choices.any()):  # homophones after the first
            other = xp.flatnonzero(choices > 0)
            flat = xp.take(self.trie.word_first, xp.take(nodes, other)) + xp.take(choices, other)
            ids[other] = xp.take(self._flat_word, flat)
            extra[other] = xp.take(self._flat_extra, flat)
            if free is not None:
                free[other] = xp.take(self._flat_free, flat)
        if self.lm is None:
            return extra, contexts
        ln_prob, after = self.lm.score_batch(contexts, ids)
        if free is not None:  # LM-free hotwords: the penalty (in extra) replaces the LM term
            ln_prob = xp.where(free, 0.0, ln_prob)
        delta = ln_prob * self.alpha
        delta += self.beta
        delta += extra  # one term at most: 0, the penalty, -inf or a (known) hotword's bonus
        return delta, after

    def end(self, contexts: Any) -> Any:
        """(n,) alpha * ln P(</s> | history) for each context (0 without an LM)."""
        if self.lm is None:
            return self.xp.zeros(len(contexts), self.xp.float64)
        return self.alpha * self.lm.end_score_batch(contexts)
