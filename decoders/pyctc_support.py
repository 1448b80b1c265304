"""LM file and word list helpers over the ``lm`` package, used by both LM decoders (``beam`` and
the pyctcdecode adapter).

Also the per-process sharing of loaded KenLM models, unigram lists and pyctcdecode LM wrappers, so
that building many decoders over one LM (tuning alpha/beta) loads it once.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from lm.language_model import KenLMLanguageModel


def resolve_lm(path_or_name: str | os.PathLike) -> Path:
    """A KenLM-readable file for ``path_or_name`` (lm.files: .arpa.gz decompressed once into the
    cache, known names fetched); FileNotFoundError naming the path when it is neither."""
    from lm.files import resolve_lm_path

    return Path(resolve_lm_path(path_or_name))


def load_unigrams(unigrams_path: str | None, lm_file: Path | None) -> list[str] | None:
    """Known words, read once per process per file (size and mtime checked).

    From ``unigrams_path`` (word list, lexicon or ARPA) if given, else from ``lm_file`` when it is
    an ARPA (recognised by content, whatever its name); None otherwise (a KenLM binary keeps no
    word list). FileNotFoundError for a missing unigrams_path, ValueError for an empty one.
    """
    from lm.arpa import looks_like_arpa
    from lm.unigrams import read_unigrams

    if unigrams_path is None:
        if lm_file is None or not looks_like_arpa(lm_file):
            return None
        source = Path(lm_file)
    else:
        source = Path(unigrams_path)
        if not source.is_file():
            raise FileNotFoundError(f"unigram/lexicon file not found: {source} (unigrams_path)")
    stat = source.stat()
    key = (str(source.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _UNIGRAMS:
        return _UNIGRAMS[key]
    return _remember(_UNIGRAMS, key, read_unigrams(source))


# Loaded KenLM models and pyctcdecode LM wrappers kept per process, so that building many decoders
# over one LM (tuning alpha/beta) loads the model and the unigram trie once. Two is enough for a
# run comparing two LMs; older entries are dropped (and freed once no decoder uses them).
SHARED_LM_SLOTS = 2
_KENLM: OrderedDict[Path, KenLMLanguageModel] = OrderedDict()
_PYCTC_LM: OrderedDict[tuple, Any] = OrderedDict()
_UNIGRAMS: OrderedDict[tuple, list[str]] = OrderedDict()


def _remember(table: OrderedDict, key: Any, value: Any) -> Any:
    table[key] = value
    while len(table) > SHARED_LM_SLOTS:
        table.popitem(last=False)
    return value


def shared_language_model(lm_file: Path) -> KenLMLanguageModel:
    """KenLMLanguageModel for ``lm_file``, loaded once per process (its errors name the file and,
    for a broken ARPA, the bad line)."""
    key = lm_file.resolve()
    if key in _KENLM:
        return _KENLM[key]
    return _remember(_KENLM, key, KenLMLanguageModel(lm_file))


def pyctc_language_model(kenlm_model: Any, unigrams: list[str] | None, options: Any) -> Any:
    """A pyctcdecode LanguageModel with ``options``' alpha/beta/unk_score_offset/boundary.

    The unigram set and trie (the slow, large part) are built once per (model, word list) and
    shared by shallow copies that differ only in the weights. ``unigrams`` is the list
    load_unigrams returns (one object per file version, so an edited word list is a new key).
    """
    import copy

    import pyctcdecode

    # The entry keeps the model and the list alive, so their ids cannot be reused by others.
    key = (id(kenlm_model), id(unigrams))
    entry = _PYCTC_LM.get(key)
    if entry is None:
        entry = _remember(_PYCTC_LM, key, (kenlm_model, unigrams,
                                           pyctcdecode.LanguageModel(kenlm_model, unigrams)))
    base = entry[2]
    lm = copy.copy(base)
    lm.alpha, lm.beta = float(options.alpha), float(options.beta)
    lm.unk_score_offset = float(options.unk_score_offset)
    lm.score_boundary = bool(options.lm_score_boundary)
    return lm
