"""The beam search's state: live beams as two packed arrays, and the table of prefix nodes.

Both live in an array namespace (ctclab.core.arrays: numpy, or torch on the CPU or a GPU). All
hashes are int64 with wrapping arithmetic, which numpy and torch share bit for bit (a 64-bit
multiply keeps the low 64 bits in either); torch has no uint64 arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ctclab.core.arrays import Arrays

# Rows of the packed beam state. Floats (ln scores):
PB, PNB, LM, PART = range(4)
# pb: ln P(prefix, path ends in blank); pnb: ln P(prefix, path ends in its last label);
# lm: word scores so far (LM, bonuses, penalties of finished words); part: unfinished word's score.
# Integers:
UTT, LAST, NODE, END, PEND, HASH, PARENT, WNODE, CTX, CHOICE, WORD = range(11)
# utt: utterance in the batch; last: last label (V = none: empty prefix without a delimiter label);
# node: prefix node id (0 = the empty prefix); end: active-frame index where the last label was
# last emitted; pend: where the label before it ended (its parent's END when it was made); hash:
# hash of the prefix's labels; parent: column of the live beam holding this prefix minus its last
# label, or -1. Only when words are scored: wnode: trie node of the unfinished word (0 = none);
# ctx: LM context id. Only when words come from a pronunciation lexicon: choice: homophone index
# of the word the last label (a delimiter) finished; word: its word id (-1 unknown / none).
# LAST, NODE, END, PEND, HASH are consecutive: a new prefix node copies them as one block.
INT_ROWS, SCORED_INT_ROWS, WORD_INT_ROWS = 7, 9, 11


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


# Multiplier of the rolling hash of a prefix's labels (odd, so no label is lost mod 2^64).
HASH_MUL = _signed(0x9E3779B97F4A7C15)
# Multiplier of the word-sequence hash (words from a pronunciation lexicon); another odd constant.
WORD_MUL = _signed(0xC2B2AE3D27D4EB4F)
# Marks the hash of an unknown word's labels so it never equals a word id.
UNKNOWN_SALT = _signed(0x165667B19E3779F9)


@dataclass
class Beams:
    """Packed struct of arrays: f (4, N) float64 and i (7 or 9, N) int64, one column per beam."""

    f: Any
    i: Any

    @property
    def n(self) -> int:
        return int(self.f.shape[1])

    def take(self, xp: Arrays, idx: Any) -> Beams:
        return Beams(xp.take(self.f, idx, 1), xp.take(self.i, idx, 1))


def word_hash(before: Any, word: Any, part: Any, xp: Arrays) -> Any:
    """Hash of the word sequence ``before`` + one word: its id, or (unknown) its labels' hash."""
    unit = xp.where(word >= 0, word + 1, part ^ UNKNOWN_SALT)
    return before * WORD_MUL + unit


class SearchMemory:
    """Flat host buffers that a decoder's batch searches reuse, one per purpose, each grown to
    the largest batch's need and then kept: a fresh allocation of this size is mapped from the
    system, and the kernel zeroes every page the search touches first (a batch's 70 MB of
    concatenated emissions took 21 ms to fill fresh, 12 ms reused; the prefix-node table,
    reserved at hundreds of MB of which tens are written, 1.5% of a test-clean-sized decode).
    A buffer handed out must not be taken again (its contents overwritten) until the search
    using it has finished: one search at a time, which is what a decoder runs."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def take(self, purpose: str, size: int, dtype: Any) -> np.ndarray:
        """(size,) of ``dtype``: the purpose's buffer (grown when smaller), stale contents."""
        held = self._buffers.get(purpose)
        if held is None or held.dtype != dtype or held.size < size:
            self._buffers.pop(purpose, None)   # the old one freed before the new one is made
            held = self._buffers[purpose] = np.empty(size, dtype)
        return held[:size]


class Nodes:
    """Growable prefix-node table, one column per node (column 0: the empty prefix): label,
    parent node, active index of its first frame, the active index where the parent's last label was
    last emitted (that label's end), and a hash of the prefix's labels (0 for the empty prefix).
    With words from a pronunciation lexicon three more rows: the word id a delimiter node
    finished (-1: unknown or none), a hash of the finished words (the text), and a hash of the
    labels since the last delimiter.

    One text can own several nodes (a prefix pruned and spelled again later while a child of
    the old node lives on); the hash tells such duplicates apart from different texts."""

    LABEL, PARENT, START, PREV_END, HASH, WORD_ID, WORDS_HASH, PART_HASH = range(8)
    # the first five are a new node's beam rows LAST, NODE, END, PEND, HASH: one block copy

    def __init__(self, xp: Arrays, words: bool = False, delimiter: int = -1,
                 capacity: int = 4096, memory: SearchMemory | None = None) -> None:
        """memory: where a numpy table takes its first ``capacity`` columns from (reused by
        the decoder's batches); None, or another namespace: a fresh allocation."""
        self.xp = xp
        self.size = 1
        self.rows = 8 if words else 5
        self.delimiter = delimiter
        # empty, not zeros: only columns below size are ever read, and zeroing the whole
        # capacity (~10 MB for a CPU batch) cost more than the search's node writes
        if memory is not None and xp.name == "numpy":
            self.data = memory.take("nodes", self.rows * capacity, np.int64).reshape(
                self.rows, capacity)
        else:
            self.data = xp.empty((self.rows, capacity), xp.int64)
        self.data[:, 0] = 0
        self.data[self.LABEL, 0] = -1   # the root: no label, its own parent
        if words:
            self.data[self.WORD_ID, 0] = -1

    def add(self, block: Any, word: Any = None, progress: float = 1.0) -> Any:
        """Append nodes; returns their ids. block: (5, n) int64 label, parent node, active index
        of the first frame, where the parent's label ended, prefix hash (the new beams' rows
        LAST .. HASH); word: (n,) int64 word ids (lexicon words); progress: the share of the
        search done (its beam-steps), by which a full table grows."""
        xp = self.xp
        n = block.shape[1]
        need = self.size + n
        if need > self.data.shape[1]:
            # Grow to what the search will need at its rate so far (+25%), between 1.5x and
            # 4x: each growth copies the table (~1 GB on a long batch without an LM, where
            # doubling grew it twice)
            cap = self.data.shape[1]
            size = max(need, min(4 * cap, max(cap + cap // 2, int(1.25 * need / progress))))
            grown = xp.empty((self.rows, size), xp.int64)
            grown[:, : self.size] = self.data[:, : self.size]
            self.data = grown
        data, lo, hi = self.data, self.size, self.size + n
        data[: self.WORD_ID, lo:hi] = block
        if self.rows > 5:
            assert word is not None
            label, parent = block[self.LABEL], block[self.PARENT]
            at_delim = label == self.delimiter
            data[self.WORD_ID, lo:hi] = xp.where(at_delim, word, -1)
            part_before = xp.take(data[self.PART_HASH], parent)
            data[self.PART_HASH, lo:hi] = xp.where(at_delim, 0,
                                                   part_before * HASH_MUL + label + 1)
            before = xp.take(data[self.WORDS_HASH], parent)
            data[self.WORDS_HASH, lo:hi] = xp.where(at_delim, word_hash(before, word,
                                                                        part_before, xp), before)
        self.size = hi
        return xp.arange(n, lo)

    def host(self) -> np.ndarray:
        """(rows, size) int64 copy of the table in host memory (numpy: a view)."""
        return self.xp.to_numpy(self.data[:, : self.size])
