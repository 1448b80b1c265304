"""The array LM's query, written once against an array namespace (ctclab.core.arrays), and LMs
that score arrays of another namespace than numpy (torch on the CPU or a GPU).

    lm.on(xp).score_batch(contexts, word_ids)     # contexts, word_ids: (n,) int64 of ``xp``

- ``DeviceArrayLM``: the array LM's tables copied to the device once, queried there: the same
  float32 arithmetic in the same order as on the host, so the scores equal KenLM's there too.
Any other batch LM (KenLM through lm.scalar_batch) is answered on the host for such a search
(lm.language_model.HostScored).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctclab.core.arrays import Arrays
from ctclab.lm.language_model import BatchLanguageModel

_LN_10 = math.log(10.0)


@dataclass(frozen=True)
class QueryTables:
    """The arrays a query reads (lm.array_build documents them), in one namespace."""

    uni_prob: Any      # (V,) float32 log10 P(w)
    uni_state: Any     # (V,) int64 context after the unigram w (0: not kept)
    keys: Any          # (K,) int64 sorted n-gram keys, a sentinel last
    prob: Any          # (K,) float32 log10 P of each key's n-gram
    ext_state: Any     # (K,) context after each key's n-gram (0: not kept)
    ctx_base: Any      # (contexts, N-1) int64 key base of each context's last m words
    ctx_backoff: Any   # (contexts, N-1) float32 their log10 backoffs
    by_order: bool = False   # ctx_base / ctx_backoff stored (N-1, contexts) instead

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray], xp: Arrays) -> QueryTables:
        def to(name: str, dtype: Any = None) -> Any:
            return xp.asarray(arrays[name], dtype)

        if xp.name == "numpy":  # the (mmap'd, shared) arrays as they are
            return cls(to("uni_prob"), to("uni_state"), to("keys"), to("prob"),
                       to("ext_state"), to("ctx_base"), to("ctx_backoff"))
        # a device copy: int64 states, context rows by order (contiguous query rows)
        return cls(to("uni_prob"), to("uni_state"), to("keys"), to("prob"),
                   to("ext_state", xp.int64),
                   xp.asarray(np.ascontiguousarray(arrays["ctx_base"].T)),
                   xp.asarray(np.ascontiguousarray(arrays["ctx_backoff"].T)), by_order=True)

    def by_context(self, xp: Arrays, table: Any, contexts: Any) -> Any:
        """(N-1, n): the rows of ``table`` (ctx_base or ctx_backoff) for ``contexts``."""
        return xp.take(table, contexts, 1) if self.by_order else xp.take(table, contexts, 0).T


def lookup_log10(xp: Arrays, t: QueryTables, order: int, contexts: Any, word_ids: Any,
                 sorted_from: int | None = None) -> tuple[Any, Any]:
    """((n,) float32 log10 P(word | context), (n,) int64 context after the word): a fixed number
    of array operations per order.

    sorted_from: from this many searches on, search the keys in sorted order (neighbouring
    binary searches share cache lines on a CPU); None: never.
    """
    # Order m + 1 looks up (last m words of the context, word): one searchsorted for all
    # orders at once (their keys are disjoint blocks of one sorted array).
    query = t.by_context(xp, t.ctx_base, contexts) + word_ids  # (N-1, n)
    if sorted_from is not None and query.shape[0] * query.shape[1] >= sorted_from:
        flat = query.reshape(-1)
        sort = xp.argsort(flat)
        pos = xp.empty(len(flat), xp.int64)
        pos[sort] = xp.searchsorted(t.keys, xp.take(flat, sort))
        pos = pos.reshape(query.shape)
    else:
        pos = xp.searchsorted(t.keys, query)
    hit = xp.take(t.keys, pos) == query
    found = xp.take(t.prob, pos)
    backoff = t.by_context(xp, t.ctx_backoff, contexts)
    # KenLM: prob of the longest n-gram found, plus the backoffs of the longer histories,
    # added one by one from the shortest (float32, in that order). A miss at order m + 1
    # implies misses above it (every n-gram's suffix is an n-gram: checked when built).
    log10 = xp.take(t.uni_prob, word_ids)
    for m in range(order - 1):
        log10 = xp.where(hit[m], found[m], log10 + backoff[m])
    # The next context: the longest n-gram found that KenLM keeps as history (0 when it is not
    # kept). Context ids grow with the order, so it is the largest candidate; the highest
    # order is never kept (a history holds at most N-1 words).
    after = xp.take(t.uni_state, word_ids)
    if order > 2:
        kept = xp.take(t.ext_state, pos[: order - 2]) * hit[: order - 2]
        for m in range(order - 2):
            after = xp.maximum(after, kept[m])
    return log10, after


def log10_to_ln_on(xp: Arrays, values: Any) -> Any:
    """float64 natural logs of float32 log10 values, rounded as lm.array_build.log10_to_ln does
    (the float32 value widened exactly, then one float64 multiply)."""
    return xp.astype(values, xp.float64) * _LN_10


class DeviceArrayLM(BatchLanguageModel):
    """An array LM's scores computed in another namespace (its tables copied there once).
    Words and their ids stay on the host (``word_ids``, ``known``: numpy)."""

    def __init__(self, host: Any, arrays: dict[str, np.ndarray], xp: Arrays):
        """host: the ArrayLanguageModel; arrays: its tables."""
        self.host, self.xp = host, xp
        self.order = host.order
        self.tables = QueryTables.of(arrays, xp)
        self._eos = host.eos_id

    @property
    def start_context(self) -> int:
        return int(self.host.start_context)

    def word_ids(self, words: Sequence[str]) -> np.ndarray:
        return np.asarray(self.host.word_ids(words))

    def known(self, word_ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.host.known(word_ids))

    def score_batch(self, contexts: Any, word_ids: Any) -> tuple[Any, Any]:
        log10, after = lookup_log10(self.xp, self.tables, self.order, contexts, word_ids)
        return log10_to_ln_on(self.xp, log10), after

    def end_score_batch(self, contexts: Any) -> Any:
        eos = self.xp.full(len(contexts), self._eos, self.xp.int64)
        return self.score_batch(contexts, eos)[0]
