"""Per-process sharing of loaded LMs and word lists, so that building many decoders over one LM
(comparing decoders, tuning alpha/beta) loads the KenLM model and reads its unigrams once.

Used by both LM decoders (``beam`` and the pyctcdecode adapter).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from ctclab.lm.arpa import looks_like_arpa
from ctclab.lm.files import resolve_lm_path
from ctclab.lm.language_model import KenLMLanguageModel, LanguageModel
from ctclab.lm.unigrams import read_unigrams

# Loaded models / lists kept per process. Two is enough for a run comparing two LMs; older entries
# are dropped (and freed once no decoder uses them).
SHARED_LM_SLOTS = 2
_KENLM: OrderedDict[Path, KenLMLanguageModel] = OrderedDict()
_UNIGRAMS: OrderedDict[tuple, list[str]] = OrderedDict()


def remember(table: OrderedDict, key: Any, value: Any) -> Any:
    """Store ``value`` under ``key`` in a per-process table bounded to SHARED_LM_SLOTS entries."""
    table[key] = value
    while len(table) > SHARED_LM_SLOTS:
        table.popitem(last=False)
    return value


def shared_language_model(lm_file: Path) -> KenLMLanguageModel:
    """KenLMLanguageModel for ``lm_file``, loaded once per process (its errors name the file and,
    for a broken ARPA, the bad line)."""
    key = Path(lm_file).resolve()
    if key in _KENLM:
        return _KENLM[key]
    return remember(_KENLM, key, KenLMLanguageModel(lm_file))


def load_unigrams(unigrams_path: str | None, lm_file: Path | None) -> list[str] | None:
    """Known words, read once per process per file (size and mtime checked).

    From ``unigrams_path`` (word list, lexicon or ARPA) if given, else from ``lm_file`` when it is
    an ARPA (recognised by content, whatever its name); None otherwise (a KenLM binary keeps no
    word list). FileNotFoundError for a missing unigrams_path, ValueError for an empty one.
    """
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
    return remember(_UNIGRAMS, key, read_unigrams(source))


def load_lm_and_unigrams(lm_path: str | None, unigrams_path: str | None,
                         language_model: LanguageModel | None = None
                         ) -> tuple[LanguageModel | None, list[str] | None]:
    """The LM (loaded from ``lm_path`` unless given) and the known-word list, if any.

    lm_path: .arpa / .arpa.gz / .binary or a known LM name (lm.files.resolve_lm_path).
    Unigrams come from ``unigrams_path`` (word list, lexicon, ARPA) or else from the LM's own ARPA;
    a binary LM without ``unigrams_path`` has no word list.
    """
    lm_file: Path | None = None
    if language_model is None and lm_path is not None:
        lm_file = resolve_lm_path(lm_path)
        language_model = shared_language_model(lm_file)
    elif language_model is not None:
        lm_file = getattr(language_model, "path", None)
    return language_model, load_unigrams(unigrams_path, lm_file)
