"""Unigram lists (the words an LM or lexicon knows): read from ARPA, word list or lexicon; write.

Decoders use them to keep beams on real words (pyctcdecode's ``unigrams``, our beam's lexicon).
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from pathlib import Path

from ctclab.core.atomic import atomic_open
from ctclab.lm.arpa import iter_section, looks_like_arpa, open_text
from ctclab.lm.constants import ARPA_SPECIAL_TOKENS

# Every KenLM binary starts with this line (lm/binary_format.cc).
KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"


def read_unigrams(path: str | os.PathLike) -> list[str]:
    """The words of ``path``, in file order, without duplicates or ``<s>``/``</s>``/``<unk>``.

    path: an ARPA file (.arpa or gzip, detected by content): only the ``\\1-grams:`` section is
    streamed, so a multi-GB 4-gram costs a fraction of a second; or a word list (one word a line);
    or a pronunciation lexicon (``WORD  PH1 PH2 ...``, the first column is taken; gzip allowed).
    Raises FileNotFoundError, or ValueError (ArpaFormatError) for a malformed ARPA / empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"unigram source not found: {path}; give an ARPA LM, a word list "
                                "or a pronunciation lexicon")
    if is_kenlm_binary(path):
        raise ValueError(f"{path} is a KenLM binary, which keeps no readable word list; give the "
                         "ARPA it was built from or a word list as the unigram source")
    words: Iterable[str]
    if looks_like_arpa(path):
        words = (entry[1][0] for entry in iter_section(path, 1))
    else:
        words = _first_columns(path)
    unique = dict.fromkeys(w for w in words if w not in ARPA_SPECIAL_TOKENS)
    if not unique:
        raise ValueError(f"{path}: no words found; expected an ARPA file, a word list (one word a "
                         "line) or a lexicon (word followed by its phones)")
    return list(unique)


def is_kenlm_binary(path: Path) -> bool:
    """True when the file starts with KenLM's binary header."""
    with open(path, "rb") as f:
        return f.read(len(KENLM_BINARY_MAGIC)) == KENLM_BINARY_MAGIC


def _first_columns(path: Path) -> Iterable[str]:
    """First whitespace-separated field of each non-blank line (word lists and lexicons)."""
    line_no = 0
    try:
        with open_text(path) as f:
            for line in f:
                line_no += 1  # read by the error messages below
                fields = line.split(maxsplit=1)
                if fields:
                    yield fields[0]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text near line {line_no + 1} ({exc.reason}); word "
                         "lists and lexicons must be UTF-8") from None
    except (EOFError, OSError, zlib.error) as exc:  # a damaged or truncated gzip
        raise ValueError(f"{path}: unreadable near line {line_no + 1} ({exc}); the gzip file "
                         "is damaged or truncated: download or rebuild it") from None


def write_unigrams(words: Iterable[str], path: str | os.PathLike) -> None:
    """Write one word a line (UTF-8), atomically: a crash never leaves a half-written list.

    Raises ValueError for a word that contains whitespace (it could not be read back).
    """
    with atomic_open(path, "w") as out:
        for word in words:
            if not word or len(word.split()) != 1 or word != word.strip():
                raise ValueError(f"cannot write {word!r} to {path}: a unigram must be one "
                                 "non-empty token without whitespace")
            out.write(word + "\n")
