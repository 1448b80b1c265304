"""Hotwords: words whose spelling earns a bonus while a beam spells them and when it finishes one.

A finished hotword earns ``weight``; a partial word that starts a hotword earns the fraction of the
hotword spelled so far (weight * depth / length), so the search keeps a hotword alive through the
frames before it is complete instead of pruning it early. Phrases are split into words, each of
which is boosted on its own.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.prefix_trie import WordTrie
from ctclab.lm.spelling import Spelling


def hotword_spellings(hotwords: Sequence[str], vocab: Vocabulary,
                      spelling: Spelling | None = None) -> list[tuple[str, list[int]]]:
    """(word, label ids) for every spelling of every word of every hotword phrase, spelled the
    way the decoder spells words (letters in the acoustic casing by default; word pieces by the
    tokenizer; phonemes by the lexicon, every pronunciation).

    Raises ValueError naming the hotword when it cannot be spelled.
    """
    spelling = spelling or Spelling(vocab)
    out: list[tuple[str, list[int]]] = []
    for phrase in hotwords:
        for word in phrase.split():
            found = spelling.spell(word)
            if not found:
                how = ("it is not in the lexicon (add a line word<TAB>tokens for it)"
                       if spelling.lexicon is not None else
                       f"it uses characters that are not acoustic labels; labels are "
                       f"{list(vocab.labels)[:40]}")
                raise ValueError(f"hotword {word!r} cannot be spelled: {how}")
            out.extend((word, list(ids)) for ids in found)
    return out


@dataclass(frozen=True)
class HotwordBonus:
    """Per-trie-node bonuses (ln). partial[n]: while n is the partial word; word[n]: when n ends.
    Both in the trie's array namespace."""

    partial: Any
    word: Any

    @classmethod
    def build(cls, trie: WordTrie, spellings: Sequence[Sequence[int]], weight: float
              ) -> HotwordBonus:
        """Bonuses for hotwords already inserted into ``trie`` (see WordTrie(spellings=...))."""
        partial = np.zeros(trie.size, np.float64)
        word = np.zeros(trie.size, np.float64)
        for ids in spellings:
            node = 0
            for depth, label in enumerate(ids, start=1):
                node = trie.child_of(node, label)
                partial[node] = max(partial[node], weight * depth / len(ids))
            word[node] = weight
        return cls(trie.xp.asarray(partial), trie.xp.asarray(word))

    def lookup(self, table: Any, nodes: Any, xp: Any) -> Any:
        """table[nodes], 0 for nodes created after the bonuses were built (never hotword prefixes)."""
        known = nodes < len(table)
        return xp.where(known, xp.take(table, xp.where(known, nodes, 0)), 0.0)
