"""The LM a decoder fuses, as one object: resolved from what the user named, loaded once per
process, and handed to every decoder that names the same files.

    lm = load_lm("../shared/lm/en-us-70k-3gram.arpa.gz")   # -> LoadedLM (memoised per process)
    lm.model.score(lm.model.start_state(), "the")           # the scoring interface (natural logs)
    lm.unigrams                                             # known words (the ARPA's, or a list)
    lm.word_mapper(vocab)                                   # acoustic word -> LM word (casing)

Building many decoders over one LM (comparing decoders, tuning alpha and beta) therefore loads the
model and reads its words once; structures that decoders derive from the LM (pyctcdecode's
unigram trie, the casing mapping per vocabulary) live on the object too (``LoadedLM.derived``) and
go away with it.

The model comes in the form ``backend`` asks for:
- ``kenlm``: KenLM (what pyctcdecode needs, and the reference);
- ``arrays``: the array form of an ARPA LM (lm.array_lm: KenLM's scores, a search step's words in
  one call); an error when the LM has none;
- ``auto``: the arrays when the LM has them, else KenLM. KenLM serves a KenLM binary (it keeps no
  n-gram list to read), and with a warning an ARPA whose arrays would exceed ``arrays_max_mib``
  or whose pruned suffixes KenLM fills in.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ctclab.core.vocabulary import Vocabulary
from ctclab.lm.arpa import ArpaFormatError, looks_like_arpa
from ctclab.lm.array_build import ArrayLMUnsupported
from ctclab.lm.array_lm import ArrayLanguageModel, load_array_lm
from ctclab.lm.casing import WordMapper, make_word_mapper
from ctclab.lm.constants import LM_BACKENDS
from ctclab.lm.files import resolve_lm_path
from ctclab.lm.language_model import KenLMLanguageModel, LanguageModel
from ctclab.lm.unigrams import read_unigrams

T = TypeVar("T")

# Loaded LMs (and word lists) kept per process. Two is enough for a run comparing two LMs; older
# entries are dropped (and freed once no decoder holds them).
SHARED_LM_SLOTS = 2


@dataclass(frozen=True, eq=False)
class LoadedLM:
    """A loaded word LM with what decoders need beside it.

    source: what the user named (a file or a known name; None for a model built in memory).
    path: the file the model was read from (an .arpa.gz from its decompressed copy), or None.
    model: the scoring interface (KenLMLanguageModel, or ArrayLanguageModel, which also scores
    arrays of words: lm.language_model.BatchLanguageModel). unigrams: the known words in the LM's casing (from
    ``unigrams_path``, else the LM's own ARPA unigrams; None for a KenLM binary without a list).
    """

    source: str | None
    path: Path | None
    model: LanguageModel
    unigrams: list[str] | None
    _derived: dict[Hashable, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, model: LanguageModel, unigrams: list[str] | None = None) -> LoadedLM:
        """An LM made in memory (a test double, a custom LanguageModel), with its known words."""
        path = model.path if isinstance(model, KenLMLanguageModel) else None
        return cls(None, path, model, unigrams)

    def derived(self, key: Hashable, build: Callable[[], T]) -> T:
        """``build()`` once per ``key`` for this LM (what a decoder derives from it and may share
        with other decoders over the same LM)."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def word_mapper(self, vocab: Vocabulary) -> WordMapper:
        """acoustic word -> LM word for ``vocab``'s labels (lm.casing), chosen once per vocabulary;
        ValueError when no casing lets any LM word be spelled."""
        return self.derived(("word_mapper", vocab),
                            lambda: make_word_mapper(vocab, self.unigrams, self.model))


_LMS: OrderedDict[tuple, LoadedLM] = OrderedDict()
_WORD_LISTS: OrderedDict[tuple, list[str]] = OrderedDict()
_ARRAY_MODELS: OrderedDict[tuple, ArrayLanguageModel] = OrderedDict()


def _remember(table: OrderedDict, key: Any, value: T) -> T:
    table[key] = value
    while len(table) > SHARED_LM_SLOTS:
        table.popitem(last=False)
    return value


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def load_word_list(path: str | Path) -> list[str]:
    """The words of a word list, lexicon or ARPA (lm.unigrams.read_unigrams), read once per
    process per file version (size and mtime). FileNotFoundError naming a missing file."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"unigram/lexicon file not found: {source} (unigrams_path)")
    key = _file_key(source)
    if key in _WORD_LISTS:
        return _WORD_LISTS[key]
    return _remember(_WORD_LISTS, key, read_unigrams(source))


def load_lm(source: str | Path, unigrams_path: str | Path | None = None,
            cache_root: str | Path | None = None, *, backend: str = "kenlm",
            arrays_max_mib: float | None = None, progress: bool = True) -> LoadedLM:
    """The LM named by ``source`` (.arpa / .arpa.gz / .binary or a known name, see
    lm.files.resolve_lm_path), loaded once per process per (LM file, word list, model form).

    backend: 'kenlm' | 'arrays' | 'auto' (module docstring); arrays_max_mib: the largest array
    LM to build and hold (None: no limit); progress: show the progress of first-use work on a
    large LM (decompressing an .arpa.gz, building its arrays). Known words come from
    ``unigrams_path`` (word list, lexicon, ARPA) when given, else from the LM's own ARPA; a
    binary LM without ``unigrams_path`` has none. Errors name the file and, for a broken ARPA,
    the bad line.
    """
    if backend not in LM_BACKENDS:
        raise ValueError(f"unknown LM backend {backend!r}; valid: {', '.join(LM_BACKENDS)}")
    lm_file = resolve_lm_path(source, cache_root, progress=progress)
    try:
        return _load_resolved(source, lm_file, unigrams_path, cache_root, backend,
                              arrays_max_mib, progress)
    except ArpaFormatError as exc:
        if exc.path == lm_file and lm_file != Path(source):  # name the file the user gave
            raise exc.naming(source) from None
        raise


def _load_resolved(source: str | Path, lm_file: Path, unigrams_path: str | Path | None,
                   cache_root: str | Path | None, backend: str, arrays_max_mib: float | None,
                   progress: bool) -> LoadedLM:
    """load_lm once ``source`` is a file KenLM reads (``lm_file``)."""
    words_file = Path(unigrams_path) if unigrams_path is not None else (
        lm_file if looks_like_arpa(lm_file) else None)
    if words_file is not None and not words_file.is_file():
        raise FileNotFoundError(f"unigram/lexicon file not found: {words_file} (unigrams_path)")
    arrays = _array_model(lm_file, backend, arrays_max_mib, cache_root, progress,
                          Path(source).name)
    form = "kenlm" if arrays is None else "arrays"
    key = (_file_key(lm_file), None if words_file is None else _file_key(words_file), form)
    if key in _LMS:
        return _LMS[key]
    # The same LM file in the same form with another word list keeps its loaded model.
    model: LanguageModel | None = arrays or next(
        (lm.model for k, lm in _LMS.items() if k[0] == key[0] and k[2] == form), None)
    if model is None:
        model = KenLMLanguageModel(lm_file, given=source)
    if arrays is not None and words_file == lm_file:
        words: list[str] | None = arrays.unigrams()  # the ARPA's 1-grams, already read
    else:
        words = None if words_file is None else load_word_list(words_file)
    return _remember(_LMS, key, LoadedLM(str(source), lm_file, model, words))


def _array_model(lm_file: Path, backend: str, max_mib: float | None,
                 cache_root: str | Path | None, progress: bool, shown: str
                 ) -> ArrayLanguageModel | None:
    """The array form of ``lm_file`` (once per process), or None where KenLM is to score it.
    shown: the LM's name in the build's progress line (the file the user gave)."""
    if backend == "kenlm":
        return None
    if not looks_like_arpa(lm_file):
        if backend == "arrays":
            raise ValueError(f"{lm_file} is not an ARPA file (a KenLM binary?), so it has no array "
                             "form: pass its ARPA, or use lm_backend 'kenlm' or 'auto'")
        return None  # a binary: KenLM's own fast format
    key = _file_key(lm_file)
    max_bytes = None if max_mib is None else int(max_mib * 2**20)
    held = _ARRAY_MODELS.get(key)
    try:
        if held is not None:
            if max_bytes is None or held.nbytes <= max_bytes:
                return held
            raise ArrayLMUnsupported(f"{lm_file}: its arrays take {held.nbytes / 2**20:.0f} MiB, "
                                     f"more than the {max_mib:.0f} MiB allowed")
        return _remember(_ARRAY_MODELS, key, load_array_lm(lm_file, cache_root,
                                                           max_bytes=max_bytes, progress=progress,
                                                           shown=shown))
    except ArrayLMUnsupported as exc:  # too large, or pruned suffixes KenLM fills in
        if backend == "arrays":
            raise ValueError(f"{exc}; use lm_backend 'kenlm' or 'auto' for this LM") from None
        warnings.warn(f"{exc}; scoring it with KenLM instead (same scores, slower search)",
                      stacklevel=3)
        return None
