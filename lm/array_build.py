"""Read an ARPA file into the sorted arrays that ``lm.array_lm`` queries (one streaming pass).

Layout (V words with ``<unk>`` as id 0; N the order). A *state* is a history KenLM keeps: 0 is the
empty one, 1 + w the one-word history w, and 1 + V + j the history ending with n-gram entry j below
(only entries of orders 2..N-1 are histories). Arrays:

- ``uni_prob[w]`` (float32, log10) and ``uni_state[w]``: the state after w when only w is known
  (0 when w extends nothing, KenLM's state minimisation).
- ``keys`` (int64, sorted, one INT64_MAX sentinel at the end): every n-gram of order >= 2 as
  ``context_state * V + last_word``. Blocks of states are numbered by order, so the orders come
  out grouped in one sorted array; ``prob`` (float32 log10) and ``ext_state`` run alongside:
  the entry's state (1 + V + index) when KenLM keeps it as history (it is the context of a longer
  n-gram, or its backoff is non-zero), else 0.
- ``ctx_base[s, m-1]`` (int64) = (state of the last m words of state s) * V, or a negative
  sentinel when s holds fewer than m words; ``ctx_backoff[s, m-1]`` (float32) that history's log10
  backoff (0 without one). A lookup at order m + 1: ``searchsorted(keys, ctx_base[s, m-1] + w)``.
  State-major, so one state's rows share a cache line.

Bad files: an ARPA KenLM rejects is rejected here with the file, the line and the fix
(ArpaFormatError); an ARPA KenLM reads by inventing entries (an n-gram whose suffix was pruned, as
SRILM pruning leaves) raises ArrayLMUnsupported, which callers answer by using KenLM itself.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import IO

import numpy as np

from ctclab.core.memory import gc_paused
from ctclab.core.progress import progress_bar
from ctclab.lm.arpa import (
    ArpaFormatError,
    ArpaHeader,
    iter_numbered_entries,
    open_text,
    read_arpa_header,
    validate_arpa,
)
from ctclab.lm.constants import (
    ARPA_READ_CHUNK_LINES,
    KENLM_UNKNOWN_MISSING_LOG10,
    PROGRESS_MIN_NGRAMS,
    UNKNOWN_WORDS,
)

# Key of the sentinel entry that ends ``keys``: larger than any real key, so searchsorted never
# runs past the arrays.
KEY_SENTINEL = np.iinfo(np.int64).max


class ArrayLMUnsupported(ValueError):
    """A file the array LM does not represent although KenLM reads it: use KenLM for it."""


class ArrayLMTooLarge(ArrayLMUnsupported):
    """The arrays would take more memory than allowed: use KenLM for this LM."""


@dataclass
class NgramTables:
    """The arrays of one LM (see the module docstring) with what they were built from."""

    order: int
    words: list[str]                # id -> word; id 0 is <unk>
    arrays: dict[str, np.ndarray]
    counts: tuple[int, ...]         # n-grams per order as the ARPA declares them
    unk_in_arpa: bool               # False: <unk> got KenLM's substitute log10 prob -100

    @property
    def bos(self) -> int:
        return self.words.index("<s>")


def estimate_bytes(counts: Sequence[int]) -> int:
    """Bytes the arrays of an LM with these n-gram counts take (words' text not included)."""
    order = len(counts)
    vocab = counts[0] + 1
    entries = sum(counts[1:]) + 1
    states = 1 + vocab + sum(counts[1:-1])
    return vocab * (4 + 8) + entries * (8 + 4 + 4) + states * max(order - 1, 1) * (8 + 4)


def build_tables(path: str | Path, progress: bool = True, shown: str | None = None
                 ) -> NgramTables:
    """Read ``path`` (ARPA, gzip or not) into NgramTables. progress: show a progress line for a
    large file, naming it ``shown`` (default: the file's name).

    Raises ArpaFormatError for a file KenLM would reject too (miscounted sections, malformed or
    duplicate entries, a positive log probability, an n-gram whose context is missing, ...) and
    ArrayLMUnsupported for one KenLM accepts by filling in pruned suffixes.
    """
    path = Path(path)
    header = read_arpa_header(path)
    if header.order < 2:
        raise ArpaFormatError(path, None, "a 1-gram model: KenLM needs at least a 2-gram")
    vocab: dict[str, int] = {}
    try:
        with gc_paused():
            sections = list(_read_sections(path, header, vocab, progress,
                                           shown or path.name))
    except _Irregular:
        validate_arpa(path)  # raises the precise error with the line
        raise ArpaFormatError(path, None, "an entry could not be read (not a number, or the "
                              "wrong number of fields)") from None
    words = ["<unk>"] + [""] * len(vocab)
    for word, index in vocab.items():
        words[index] = word
    return _Builder(path, header, sections).tables(words)


# ----------------------------------------------------------------------------- reading
class _Irregular(Exception):
    """The fast reader met something unexpected; validate_arpa then names the problem."""


@dataclass
class _Section:
    """One order's entries in file order: word ids (n, order), log10 prob and backoff (n,)."""

    ids: np.ndarray
    prob: np.ndarray
    backoff: np.ndarray


def _read_sections(path: Path, header: ArpaHeader, vocab: dict[str, int], progress: bool,
                   shown: str) -> Iterator[_Section]:
    """Stream the sections in chunks, parsing each chunk with a few bulk operations; ``vocab``
    receives word -> id from the 1-grams (<unk> is 0 and not in it). shown: the file's name in
    the progress line."""
    total = sum(header.counts)
    bar = progress_bar(total, f"arrays {shown}", "n-gram", leave=False,
                       enabled=progress and total >= PROGRESS_MIN_NGRAMS)
    with open_text(path) as f, contextlib.closing(bar):
        _skip_to_section(f, 1, header_done=False)
        lookup = vocab  # word -> id for the n-grams of order >= 2 (set after the 1-grams)
        for order in range(1, header.order + 1):
            if order > 1:
                _skip_to_section(f, order, header_done=True)
            parts = []
            remaining = header.counts[order - 1]
            while remaining:
                chunk = list(islice(f, min(remaining, ARPA_READ_CHUNK_LINES)))
                if not chunk:
                    raise _Irregular
                rows = [r for r in map(str.split, chunk) if r]
                parts.append(_parse_rows(rows, order, vocab if order == 1 else lookup))
                remaining -= len(rows)
                bar.update(len(rows))
            if not parts:
                parts.append((np.zeros((0, order), np.int32), np.zeros(0), np.zeros(0)))
            yield _Section(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
            if order == 1:
                _check_unigram_words(path, vocab)
                lookup = {**vocab, **dict.fromkeys(UNKNOWN_WORDS, 0)}
        line = _next_nonblank(f)
        if line != "\\end\\":
            raise _Irregular


def _skip_to_section(f: IO[str], order: int, header_done: bool) -> None:
    want = f"\\{order}-grams:"
    if not header_done:  # the header was checked by read_arpa_header: skip to the 1-grams
        for line in f:
            if line.strip() == want:
                return
        raise _Irregular
    if _next_nonblank(f) != want:
        raise _Irregular


def _next_nonblank(f: IO[str]) -> str | None:
    for line in f:
        if line.strip():
            return line.strip()
    return None


def _parse_rows(rows: list[list[str]], order: int, vocab: dict[str, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, prob, backoff) of one chunk. 1-grams add their words to ``vocab``; longer n-grams
    look theirs up in it (-1 for a word that is not a 1-gram)."""
    n = len(rows)
    widths = np.fromiter(map(len, rows), np.int64, n)
    with_backoff = widths == order + 2
    if not (with_backoff | (widths == order + 1)).all():
        raise _Irregular
    try:
        prob = np.fromiter(map(float, map(itemgetter(0), rows)), np.float64, n)
        backoff = np.zeros(n)
        if with_backoff.all():
            backoff[:] = np.fromiter(map(float, map(itemgetter(order + 1), rows)), np.float64, n)
        elif with_backoff.any():
            backoff[with_backoff] = [float(r[order + 1]) for r in rows if len(r) == order + 2]
    except ValueError:
        raise _Irregular from None
    ids = np.empty((n, order), np.int32)
    if order == 1:
        for j, word in enumerate(map(itemgetter(1), rows)):
            if word in UNKNOWN_WORDS:
                ids[j, 0] = 0
            else:
                # a repeated word keeps its first id; _Builder reports the duplicate
                ids[j, 0] = vocab.setdefault(word, len(vocab) + 1)
    else:
        for j in range(order):
            ids[:, j] = np.fromiter(map(vocab.get, map(itemgetter(j + 1), rows), repeat(-1)),
                                    np.int64, n)
    return ids, prob, backoff


def _check_unigram_words(path: Path, vocab: dict[str, int]) -> None:
    for word in ("<s>", "</s>"):
        if word not in vocab:
            raise ArpaFormatError(path, None, f"the 1-grams lack {word}; KenLM rejects such a file "
                                  "too (a sentence marker must be a word of the LM)")


# ----------------------------------------------------------------------------- building
class _Builder:
    """Turns the parsed sections into the sorted arrays, checking what KenLM checks."""

    def __init__(self, path: Path, header: ArpaHeader, sections: list[_Section]):
        self.path, self.header, self.sections = path, header, sections
        self.order = header.order
        self.vocab_size = 0
        self.keys: list[np.ndarray] = []      # per order >= 2, sorted
        self.first_state: list[int] = []      # state id of each order's first entry

    # --- errors that name the line
    def _fail(self, order: int, index: int, problem: str, unsupported: bool = False) -> None:
        line_no, words = _locate(self.path, order, index)
        text = f"the {order}-gram {' '.join(words)!r} {problem}"
        if unsupported:
            raise ArrayLMUnsupported(f"{self.path}, line {line_no}: {text}; KenLM reads this by "
                                     "inventing the missing entries, the array LM does not: "
                                     "decode with KenLM (lm_backend='kenlm', or 'auto' which "
                                     "falls back by itself)")
        raise ArpaFormatError(self.path, line_no, text)

    def _check_values(self, order: int, sec: _Section) -> None:
        bad = np.flatnonzero(~(sec.prob <= 0))  # NaN fails "<= 0" too
        if len(bad):
            self._fail(order, int(bad[0]), "has a positive or NaN log10 probability (KenLM "
                       "rejects it; an IRSTLM bug)")
        bad = np.flatnonzero(~np.isfinite(sec.backoff))
        if len(bad):
            self._fail(order, int(bad[0]), "has a non-finite backoff")
        if order == self.order:
            bad = np.flatnonzero(sec.backoff != 0)
            if len(bad):
                self._fail(order, int(bad[0]), "of the highest order has a non-zero backoff "
                           "(KenLM rejects it)")

    # --- lookups into the orders built so far
    def _lookup(self, order: int, ctx_state: np.ndarray, word: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """(found, state id) of the ``order``-grams (context state, word)."""
        keys = self.keys[order - 2]
        query = ctx_state * self.vocab_size + word
        pos = np.minimum(keys.searchsorted(query), max(len(keys) - 1, 0))
        found = keys[pos] == query if len(keys) else np.zeros(len(query), bool)
        return found, self.first_state[order - 2] + pos

    def _state_of(self, ids: np.ndarray, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """(found, state) of the n-grams ids[:, first:last] (all rows)."""
        state = 1 + ids[:, first].astype(np.int64)
        found = np.ones(len(ids), bool)
        for j in range(first + 1, last):
            hit, state = self._lookup(j - first + 1, state, ids[:, j].astype(np.int64))
            found &= hit
        return found, state

    def tables(self, words: list[str]) -> NgramTables:
        """NgramTables; words: id -> word (from the 1-grams)."""
        order = self.order
        vocab_size = self.vocab_size = len(words)
        uni = self.sections[0]
        self._check_values(1, uni)
        known = uni.ids[:, 0]
        perm = np.argsort(known, kind="stable")
        # <unk> and <UNK> may both appear: the last one wins, as in KenLM
        dup = _first_repeat(known[perm], skip=0)
        if dup is not None:
            self._fail(1, int(perm[dup]), "appears twice")
        uni_prob = np.full(vocab_size, KENLM_UNKNOWN_MISSING_LOG10, np.float32)
        uni_backoff = np.zeros(vocab_size, np.float32)
        uni_prob[uni.ids[:, 0]] = uni.prob
        uni_backoff[uni.ids[:, 0]] = uni.backoff
        unk_in_arpa = bool((uni.ids[:, 0] == 0).any())
        # KenLM keeps a history when its backoff is non-zero or a longer n-gram extends it; the
        # <unk> it substitutes gets a +0.0 backoff, which counts as "extends".
        uni_ext = uni_backoff != 0
        uni_ext[0] |= not unk_in_arpa

        n_mid = [len(s.prob) for s in self.sections[1:-1]]   # orders 2..N-1: histories
        n_states = 1 + vocab_size + sum(n_mid)
        base = np.full((order - 1, n_states), -(vocab_size + 1), np.int64)
        ctx_backoff = np.zeros((order - 1, n_states), np.float32)
        states = np.arange(1, vocab_size + 1, dtype=np.int64)
        base[0, 1:vocab_size + 1] = states * vocab_size
        ctx_backoff[0, 1:vocab_size + 1] = uni_backoff
        probs: list[np.ndarray] = []
        exts: list[np.ndarray] = []
        next_state = 1 + vocab_size
        for n in range(2, order + 1):
            sec = self.sections[n - 1]
            self._check_values(n, sec)
            missing = np.flatnonzero((sec.ids < 0).any(axis=1))
            if len(missing):
                self._fail(n, int(missing[0]), "uses a word that is not among the 1-grams (KenLM "
                           "rejects it)")
            found, ctx = self._state_of(sec.ids, 0, n - 1)
            if not found.all():
                self._fail(n, int(np.flatnonzero(~found)[0]), f"has no {n - 1}-gram for its "
                           f"context (the first {n - 1} words); KenLM rejects it too")
            key = ctx * vocab_size + sec.ids[:, n - 1]
            perm = np.argsort(key, kind="stable")
            key = key[perm]
            dup = _first_repeat(key)
            if dup is not None:
                self._fail(n, int(perm[dup]), "appears twice")
            found, suffix = self._state_of(sec.ids, 1, n)
            if not found.all():
                self._fail(n, int(np.flatnonzero(~found)[0]), f"has no {n - 1}-gram for its "
                           f"last {n - 1} words", unsupported=True)
            # the contexts are histories KenLM keeps
            if n == 2:
                uni_ext[sec.ids[:, 0]] = True
            else:
                exts[-1][ctx - self.first_state[-1]] = True
            self.keys.append(key)
            self.first_state.append(next_state)
            probs.append(sec.prob[perm].astype(np.float32))
            backoff = sec.backoff[perm].astype(np.float32)
            exts.append(backoff != 0 if n < order else np.zeros(len(key), bool))
            if n < order:  # its entries are histories: fill their rows of the context tables
                block = slice(next_state, next_state + len(key))
                suffix = suffix[perm]
                base[: n - 1, block] = base[: n - 1, suffix]
                ctx_backoff[: n - 1, block] = ctx_backoff[: n - 1, suffix]
                base[n - 1, block] = np.arange(block.start, block.stop) * vocab_size
                ctx_backoff[n - 1, block] = backoff
            next_state += len(key)
        ext = np.concatenate([*exts, [False]])
        entry_states = np.arange(1 + vocab_size, 1 + vocab_size + len(ext), dtype=np.int64)
        state_type = np.int32 if n_states < np.iinfo(np.int32).max else np.int64
        arrays: dict[str, np.ndarray] = {
            "uni_prob": uni_prob,
            "uni_state": np.where(uni_ext, states, 0).astype(np.int64),
            "keys": np.concatenate([*self.keys, [KEY_SENTINEL]]).astype(np.int64),
            "prob": np.concatenate([*probs, [0.0]]).astype(np.float32),
            "ext_state": np.where(ext, entry_states, 0).astype(state_type),
            "ctx_base": np.ascontiguousarray(base.T),
            "ctx_backoff": np.ascontiguousarray(ctx_backoff.T),
        }
        return NgramTables(order, words, arrays, self.header.counts, unk_in_arpa)


def _first_repeat(sorted_values: np.ndarray, skip: int | None = None) -> int | None:
    """Index of the first value equal to its predecessor in a sorted array (values equal to
    ``skip`` ignored), or None."""
    same = sorted_values[1:] == sorted_values[:-1]
    if skip is not None:
        same &= sorted_values[1:] != skip
    hits = np.flatnonzero(same)
    return int(hits[0]) + 1 if len(hits) else None


def _locate(path: Path, order: int, index: int) -> tuple[int | None, tuple[str, ...]]:
    """(line number, words) of the index-th ``order``-gram (the file is read again: errors only)."""
    seen = 0
    for line_no, n, _, words, _ in iter_numbered_entries(path, max_order=order):
        if n == order:
            if seen == index:
                return line_no, words
            seen += 1
    return None, ()


def log10_to_ln(values: np.ndarray) -> np.ndarray:
    """float64 natural logs of float32 log10 values, rounded exactly as KenLMLanguageModel does
    (one operation: the multiply casts to float64 first)."""
    return np.multiply(values, math.log(10.0), dtype=np.float64)
