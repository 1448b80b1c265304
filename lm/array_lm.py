"""An n-gram LM held as sorted arrays: KenLM's scores, for a whole search step in one call.

    lm = load_array_lm("lm.arpa")            # built once (~seconds), then mmap'd (~milliseconds)
    ln_p, after = lm.score_batch(contexts, word_ids)   # (n,) int64 each: no Python loop per word

Scores equal KenLM's (kenlm.Model.BaseScore; the same float32 arithmetic in the same order): the
backoff chain, ``<unk>`` (log10 -100 when the ARPA lacks it), ``</s>``, the ``<s>`` start, and
KenLM's state minimisation (the history kept after a word is the longest one a longer n-gram can
extend). A context id is a KenLM state: 0 the empty history, 1 + w the history "w", larger ids
n-gram entries (lm.array_build documents the arrays).

The query is a fixed number of array operations per order, written once against an array
namespace (lm.array_query): per order one searchsorted of ``context base + word`` in the sorted
keys, then where/add along KenLM's backoff chain. ``lm.on(xp)`` gives the same LM scoring torch
arrays (its tables copied to the device once), for a search running there.

The arrays are saved in the LM cache (``<cache root>/lm``) under a name keyed by the ARPA's path,
size and mtime, so an edited ARPA is read again, and the file is checked against the ARPA's
identity when it is loaded. Files KenLM reads but the arrays cannot represent exactly (ARPAs with
pruned suffixes) raise ArrayLMUnsupported; lm.loaded then falls back to KenLM.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.core.arrays import NUMPY, Arrays
from ctclab.lm.arpa import looks_like_arpa, read_arpa_header
from ctclab.lm.array_build import (
    ArrayLMTooLarge,
    ArrayLMUnsupported,
    build_tables,
    estimate_bytes,
    log10_to_ln,
)
from ctclab.lm.array_file import FORMAT_VERSION, ArrayFileError, read_array_file, write_array_file
from ctclab.lm.array_query import DeviceArrayLM, QueryTables, lookup_log10
from ctclab.lm.constants import (
    ARPA_SPECIAL_TOKENS,
    ARRAY_LM_MEMO_BITS,
    ARRAY_LM_PRIVATE_ARRAYS,
    ARRAY_LM_SORTED_SEARCH,
    UNKNOWN_WORDS,
)
from ctclab.lm.fetch import lm_cache_dir
from ctclab.lm.language_model import BatchLanguageModel, LanguageModel

ARRAY_FILE_SUFFIX = ".ngrams"
# Fibonacci hashing: the top bits of key * 2^64/phi spread consecutive keys over the memo.
_MEMO_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
# One memo slot: the pair's key (context * V + word), then its answer.
_MEMO_RECORD = np.dtype([("key", np.int64), ("after", np.int64), ("log10", np.float32)])
_QUERY_ARRAYS = ("uni_prob", "uni_state", "keys", "prob", "ext_state", "ctx_base", "ctx_backoff",
                 "words")


class ArrayLanguageModel(LanguageModel, BatchLanguageModel):
    """KenLM-equal n-gram scoring over arrays. Use :func:`load_array_lm` to get one.

    Also a word-at-a-time LanguageModel (states are context ids), for code that scores single
    words; that path is slow per call, the array methods are the point.
    """

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                 path: Path | None = None, file: Path | None = None):
        """arrays/meta as lm.array_build makes them; path: the ARPA; file: the array file."""
        self.path, self.file, self.meta = path, file, meta
        self.order = int(meta["order"])
        self._vocab_size = int(meta["vocab_size"])
        self._bos, self._eos = int(meta["bos"]), int(meta["eos"])
        self._arrays = arrays
        self._tables = QueryTables.of(arrays, NUMPY)
        self._on: dict[str, DeviceArrayLM] = {}   # its tables on other devices, by namespace
        self._words: list[str] | None = None
        self._vocab: dict[str, int] | None = None
        self._unigrams: list[str] | None = None
        # Memo of recent answers, direct-mapped by a multiplicative hash of the pair's key. Per
        # process (forked workers get their own copy); not for concurrent threads.
        self._memo_shift = np.uint64(64 - ARRAY_LM_MEMO_BITS)
        self._memo = np.zeros(1 << ARRAY_LM_MEMO_BITS, _MEMO_RECORD)
        self._memo["key"] = -1  # no pair has a negative key

    # ------------------------------------------------------------------------- words
    @property
    def words(self) -> list[str]:
        """Word strings by id (id 0 is <unk>); decoded on first use."""
        if self._words is None:
            self._words = self._arrays["words"].tobytes().decode("utf-8").split("\n")
        return self._words

    def _lookup(self) -> dict[str, int]:
        if self._vocab is None:
            vocab = dict(zip(self.words, range(len(self.words)), strict=True))
            vocab.update(dict.fromkeys(UNKNOWN_WORDS, 0))
            self._vocab = vocab
        return self._vocab

    def word_ids(self, words: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self._lookup().get, words, repeat(0)), np.int64, len(words))

    def known(self, word_ids: np.ndarray) -> np.ndarray:
        return word_ids != 0

    def unigrams(self) -> list[str]:
        """The LM's words in ARPA order without <s>, </s>, <unk> (what lm.unigrams reads)."""
        if self._unigrams is None:
            self._unigrams = [w for w in self.words[1:] if w not in ARPA_SPECIAL_TOKENS]
        return self._unigrams

    @property
    def nbytes(self) -> int:
        """Bytes of all arrays (what the LM takes once every page of its file is touched)."""
        return sum(a.nbytes for a in self._arrays.values())

    # ------------------------------------------------------------------------- array queries
    @property
    def start_context(self) -> int:
        return 1 + self._bos  # KenLM's BeginSentenceWrite: the history <s>, whatever it extends

    def score_log10(self, contexts: np.ndarray, word_ids: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """((n,) float32 log10 P(word | context), (n,) int64 context after the word).

        contexts: (n,) int64 context ids of this LM; word_ids: (n,) int64 from word_ids().
        Pairs answered before come from the memo (a fixed 7 array operations over a 1.5 MB
        table); the others are looked up in the arrays (``lookup_log10``) and remembered.
        """
        key = contexts * self._vocab_size  # one int64 per (context, word) pair
        key += word_ids
        slot = key.view(np.uint64) * _MEMO_MULTIPLIER
        slot >>= self._memo_shift
        slot = slot.view(np.int64)
        memo = self._memo.take(slot)
        hit = memo["key"] == key
        if not np.logical_and.reduce(hit):   # ndarray.all adds a Python layer
            miss = (~hit).nonzero()[0]   # (np.flatnonzero: ~0.7 us of Python layer a call)
            fresh = np.empty(len(miss), _MEMO_RECORD)
            fresh["key"] = key.take(miss)
            fresh["log10"], fresh["after"] = self.lookup_log10(contexts.take(miss),
                                                               word_ids.take(miss))
            memo[miss] = fresh
            # whole records: when two pairs share a slot, one of them wins with its own values
            self._memo[slot.take(miss)] = fresh
        return memo["log10"], memo["after"]

    def lookup_log10(self, contexts: np.ndarray, word_ids: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """score_log10 without the memo: a fixed number of array operations per order
        (lm.array_query.lookup_log10, the query every namespace runs)."""
        return lookup_log10(NUMPY, self._tables, self.order, contexts, word_ids,
                            ARRAY_LM_SORTED_SEARCH)

    def score_batch(self, contexts: np.ndarray, word_ids: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        log10, after = self.score_log10(contexts, word_ids)
        return log10_to_ln(log10), after

    def end_score_batch(self, contexts: np.ndarray) -> np.ndarray:
        eos = np.full(len(contexts), self._eos, np.int64)
        return log10_to_ln(self.score_log10(contexts, eos)[0])

    @property
    def eos_id(self) -> int:
        return self._eos

    def on(self, xp: Arrays) -> BatchLanguageModel:
        """numpy: itself (with its memo); another namespace: its tables copied there once per
        device (lm.array_query.DeviceArrayLM), the same scores."""
        if xp.name == "numpy":
            return self
        key = f"{xp.name}:{xp.device}"
        if key not in self._on:
            self._on[key] = DeviceArrayLM(self, self._arrays, xp)
        return self._on[key]

    # ------------------------------------------------------------------------- one word at a time
    def start_state(self) -> int:
        return self.start_context

    def score(self, state: Any, word: str) -> tuple[float, int]:
        log10, after = self.score_log10(np.array([state], np.int64), self.word_ids([word]))
        return float(log10_to_ln(log10)[0]), int(after[0])

    def end_score(self, state: Any) -> float:
        return float(self.end_score_batch(np.array([state], np.int64))[0])

    def is_oov(self, word: str) -> bool:
        return self._lookup().get(word, 0) == 0

    def __contains__(self, word: str) -> bool:
        return not self.is_oov(word)


# ----------------------------------------------------------------------------- the cache file
def _identity(arpa: Path) -> dict[str, Any]:
    stat = arpa.stat()
    return {"path": str(arpa.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def array_lm_file(arpa: str | os.PathLike, cache_root: str | os.PathLike | None = None) -> Path:
    """Where the arrays of ``arpa`` are kept: ``<cache root>/lm/<name>-<key>.ngrams``, the key made
    of the ARPA's resolved path, size and mtime and the file format version."""
    arpa = Path(arpa)
    ident = _identity(arpa)
    key = hashlib.sha1(f"{ident['path']}|{ident['size']}|{ident['mtime_ns']}|"
                       f"{FORMAT_VERSION}".encode()).hexdigest()[:12]
    stem = arpa.name.removesuffix(".gz").removesuffix(".arpa")
    return lm_cache_dir(cache_root) / f"{stem}-{key}{ARRAY_FILE_SUFFIX}"


def load_array_lm(arpa: str | os.PathLike, cache_root: str | os.PathLike | None = None,
                  max_bytes: int | None = None, progress: bool = True,
                  shown: str | None = None) -> ArrayLanguageModel:
    """The array LM of an ARPA file (.arpa or gzip): mmap'd from the cache, built on first use.

    max_bytes: refuse (ArrayLMTooLarge) when the arrays would take more; None = no limit.
    progress: show the build's progress (a large ARPA; False: nothing is printed); shown: the
    LM's name there (default: the file's name; lm.loaded gives the .arpa.gz a copy came from).
    Raises ArrayLMUnsupported for a non-ARPA file (a KenLM binary keeps no n-gram list) or an ARPA
    KenLM reads by filling in pruned n-grams, ArpaFormatError for a broken ARPA.
    """
    arpa = Path(arpa)
    if not arpa.is_file():
        raise FileNotFoundError(f"language model file not found: {arpa}")
    if not looks_like_arpa(arpa):
        raise ArrayLMUnsupported(f"{arpa} is not an ARPA file (a KenLM binary?): only ARPA "
                                 "files are read into arrays; it is scored with KenLM")
    target = array_lm_file(arpa, cache_root)
    if target.is_file():
        try:
            arrays, meta = read_array_file(target, ARRAY_LM_PRIVATE_ARRAYS)
            missing = set(_QUERY_ARRAYS) - set(arrays)
            if missing:
                raise ArrayFileError(f"{target}: lacks the arrays {sorted(missing)}")
            if meta.get("source") == _identity(arpa):
                return _checked(ArrayLanguageModel(arrays, meta, arpa, target), max_bytes)
        except ArrayFileError as exc:  # ours, damaged (e.g. a full disk): make it again
            warnings.warn(f"{exc}; rebuilding it from {arpa}", stacklevel=2)
    header = read_arpa_header(arpa)
    need = estimate_bytes(header.counts)
    if max_bytes is not None and need > max_bytes:
        raise ArrayLMTooLarge(f"{arpa}: its arrays would take {need / 2**20:.0f} MiB, more than "
                              f"the {max_bytes / 2**20:.0f} MiB allowed")
    tables = build_tables(arpa, progress=progress, shown=shown)
    meta = {"source": _identity(arpa), "order": tables.order, "counts": list(tables.counts),
            "vocab_size": len(tables.words), "bos": tables.words.index("<s>"),
            "eos": tables.words.index("</s>"), "unk_in_arpa": tables.unk_in_arpa}
    arrays = dict(tables.arrays)
    arrays["words"] = np.frombuffer("\n".join(tables.words).encode("utf-8"), np.uint8)
    write_array_file(target, arrays, meta)
    # file-backed pages: shared, and evictable (but for the private arrays)
    arrays, meta = read_array_file(target, ARRAY_LM_PRIVATE_ARRAYS)
    return ArrayLanguageModel(arrays, meta, arpa, target)


def _checked(lm: ArrayLanguageModel, max_bytes: int | None) -> ArrayLanguageModel:
    if max_bytes is not None and lm.nbytes > max_bytes:
        raise ArrayLMTooLarge(f"{lm.path}: its arrays take {lm.nbytes / 2**20:.0f} MiB, more "
                              f"than the {max_bytes / 2**20:.0f} MiB allowed")
    return lm
