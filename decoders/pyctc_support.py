"""LM file, word list and casing helpers for the pyctcdecode adapter.

Each helper delegates to the ``lm`` package (lm.files, lm.unigrams, lm.casing) when that module is
present and otherwise uses a small local fallback with the same behaviour, so the adapter works
before and after those modules land.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from decoders.vocabulary import Vocabulary

LM_SUFFIXES = (".arpa", ".binary", ".klm", ".bin")
# ARPA/lexicon entries that are sentence markers, not words a decoder can spell.
NON_WORDS = frozenset({"<s>", "</s>", "<unk>", "<UNK>"})


def resolve_lm(path_or_name: str | os.PathLike) -> Path:
    """A KenLM-readable file for ``path_or_name`` (.arpa.gz decompressed once into a cache).

    A known LM name (no suffix, no folder, e.g. ``librispeech-3gram``) is left to lm.files; a
    path that does not exist is a FileNotFoundError here, whatever lm.files would try.
    """
    path = Path(path_or_name)
    looks_like_path = path.suffix in (*LM_SUFFIXES, ".gz") or len(path.parts) > 1
    if looks_like_path and not path.is_file():
        raise FileNotFoundError(f"language model not found: {path}; pass a KenLM .arpa, .arpa.gz "
                                "or .binary file (or a known LM name) as lm_path")
    try:
        from lm.files import resolve_lm_path
    except ImportError:
        return _resolve_lm_local(Path(path_or_name))
    return Path(resolve_lm_path(path_or_name))


def load_unigrams(unigrams_path: str | None, lm_file: Path) -> list[str] | None:
    """Known words: from ``unigrams_path`` if given, else the LM's ARPA; None for a bare binary."""
    source = Path(unigrams_path) if unigrams_path is not None else lm_file
    if unigrams_path is None and not source.name.endswith((".arpa", ".arpa.gz")):
        return None
    if not source.is_file():
        raise FileNotFoundError(f"unigram/lexicon file not found: {source} (unigrams_path)")
    stat = source.stat()
    key = (str(source.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _UNIGRAMS:
        _remember(_UNIGRAMS, key, _load_unigrams(source))
    return _UNIGRAMS[key]


def _load_unigrams(source: Path) -> list[str]:
    try:
        from lm.unigrams import read_unigrams
    except ImportError:
        words = _read_unigrams_local(source)
    else:
        words = list(read_unigrams(source))
    if not words:
        raise ValueError(f"{source}: no words found; give an ARPA, a word list (one word a line) "
                         "or a pronunciation lexicon as unigrams_path")
    return words


# Loaded KenLM models and pyctcdecode LM wrappers kept per process, so that building many decoders
# over one LM (tuning alpha/beta) loads the model and the unigram trie once. Two is enough for a
# run comparing two LMs; older entries are dropped (and freed once no decoder uses them).
SHARED_LM_SLOTS = 2
_KENLM: OrderedDict[Path, Any] = OrderedDict()
_PYCTC_LM: OrderedDict[tuple, Any] = OrderedDict()
_UNIGRAMS: OrderedDict[tuple, list[str] | None] = OrderedDict()


def _remember(table: OrderedDict, key: Any, value: Any) -> Any:
    table[key] = value
    while len(table) > SHARED_LM_SLOTS:
        table.popitem(last=False)
    return value


def shared_kenlm_model(lm_file: Path) -> Any:
    """kenlm.Model for ``lm_file``, loaded once per process (ValueError if KenLM cannot read it)."""
    key = lm_file.resolve()
    if key in _KENLM:
        return _KENLM[key]
    import kenlm

    try:
        model = kenlm.Model(str(lm_file))
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{lm_file}: KenLM could not load it ({exc}); the file may be corrupt or "
                         "truncated; rebuild or download it again") from exc
    return _remember(_KENLM, key, model)


def pyctc_language_model(kenlm_model: Any, lm_file: Path, unigrams_path: str | None,
                         unigrams: list[str] | None, options: Any) -> Any:
    """A pyctcdecode LanguageModel with ``options``' alpha/beta/unk_score_offset/boundary.

    The unigram set and trie (the slow, large part) are built once per (model, word list) and
    shared by shallow copies that differ only in the weights.
    """
    import copy

    import pyctcdecode

    key = (id(kenlm_model), str(lm_file), unigrams_path)
    base = _PYCTC_LM.get(key)
    if base is None:
        base = _remember(_PYCTC_LM, key, pyctcdecode.LanguageModel(kenlm_model, unigrams))
    lm = copy.copy(base)
    lm.alpha, lm.beta = float(options.alpha), float(options.beta)
    lm.unk_score_offset = float(options.unk_score_offset)
    lm.score_boundary = bool(options.lm_score_boundary)
    return lm


def make_mapper(vocab: Vocabulary, lm_words: list[str] | None) -> Callable[[str], str]:
    """acoustic word -> LM word. Identity without LM; ValueError when every word would be OOV."""
    if lm_words is None:
        return _identity
    try:
        from lm.casing import make_word_mapper
    except ImportError:
        return _make_mapper_local(vocab, lm_words)
    return make_word_mapper(vocab, lm_words)


# ----------------------------------------------------------------------------- local fallbacks
def _identity(word: str) -> str:
    return word


def _lower(word: str) -> str:
    return word.lower()


def _upper(word: str) -> str:
    return word.upper()


def _word_casing(words: Iterable[str]) -> str:
    upper = lower = 0
    for word in words:
        upper += word.isupper()
        lower += word.islower()
    if upper == lower == 0:
        return "none"
    return "upper" if upper > lower else "lower"


def _make_mapper_local(vocab: Vocabulary, lm_words: list[str]) -> Callable[[str], str]:
    lm_case = _word_casing(lm_words[:20000])
    mapper = {("upper", "lower"): _lower, ("lower", "upper"): _upper}.get(
        (vocab.case, lm_case), _identity)
    letters = {mapper(vocab.labels[i]) for i in vocab.emitting_ids if i != vocab.delimiter}
    if not any(set(w) <= letters for w in lm_words):
        raise ValueError(f"no LM word can be spelled with the acoustic labels (labels are "
                         f"{vocab.case} case, LM words {lm_case} case): every word would be OOV; "
                         "use an LM whose words are written with the model's characters")
    return mapper


def _resolve_lm_local(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"language model not found: {path}; pass a KenLM .arpa, .arpa.gz "
                                "or .binary file as lm_path")
    if path.suffix != ".gz":
        return path
    cache = Path(os.environ.get("CTCLAB_CACHE_DIR", Path.home() / ".cache" / "ctclab")) / "lm"
    stat = path.stat()
    target = cache / f"{path.name[:-3]}.{stat.st_size}-{int(stat.st_mtime)}.arpa"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, target)  # atomic: an interrupted run never leaves a truncated ARPA
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _read_unigrams_local(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    words: list[str] = []
    with opener(path, "rt", encoding="utf-8") as f:
        first = ""
        for first in f:
            if first.strip():
                break
        if first.strip() == "\\data\\":
            in_unigrams = False
            for line in f:
                line = line.strip()
                if line == "\\1-grams:":
                    in_unigrams = True
                elif in_unigrams and line.startswith("\\"):
                    break
                elif in_unigrams and line:
                    parts = line.split()
                    if len(parts) >= 2 and parts[1] not in NON_WORDS:
                        words.append(parts[1])
            return words
        for line in [first, *f]:  # word list or lexicon: the first column
            parts = line.split()
            if parts and parts[0] not in NON_WORDS:
                words.append(parts[0])
    return list(dict.fromkeys(words))
