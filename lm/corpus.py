"""Text normalisation for LM training and OOV reports: make corpus words spellable by the
acoustic vocabulary.

An LM word the CTC model cannot spell is dead weight, and a casing mismatch makes every word OOV.
So before lmplz sees the text, the one text normaliser (ctclab.core.normalize, the one scoring
uses) unifies apostrophe variants, folds case to the labels' case and strips accents; then the
vocabulary's word filter turns punctuation into word breaks and drops words that still hold
unspellable characters (digits, foreign letters), counting what was dropped.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ctclab.core.normalize import TextNormalizer
from ctclab.core.vocabulary import Vocabulary
from ctclab.lm.constants import DEFAULT_ENGLISH_LETTERS


def default_vocabulary() -> Vocabulary:
    """Upper-case English letters + apostrophe, ``|`` delimiter, blank first (wav2vec2 style)."""
    return Vocabulary.from_labels(["<pad>", "|", *DEFAULT_ENGLISH_LETTERS], blank="<pad>",
                                  delimiter="|")


def load_vocabulary(spec: str | Path | None) -> Vocabulary:
    """The acoustic vocabulary named by ``--vocab``.

    spec: None (default English letters); an emission-cache folder or its ``meta.json`` (key
    ``vocabulary``, Vocabulary.to_dict form); or a ``labels.json`` that is a list of labels, a
    Vocabulary.to_dict mapping, or ``{"labels": [...], "blank_index": i, "word_delimiter": s}``.
    """
    if spec is None:
        return default_vocabulary()
    path = Path(spec)
    if path.is_dir():
        path = path / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"--vocab {spec}: not found; give an emission-cache folder (with "
                                "meta.json), a meta.json or a labels.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--vocab {path}: not valid JSON ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("vocabulary"), dict):
        data = data["vocabulary"]
    try:
        if isinstance(data, list):
            return Vocabulary.from_labels(data)
        if isinstance(data, dict) and "labels" in data:
            if "blank" in data:
                return Vocabulary.from_dict(data)
            return Vocabulary.from_labels(data["labels"], blank=data.get("blank_index"),
                                          delimiter=data.get("word_delimiter"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--vocab {path}: not a usable label set ({exc})") from exc
    raise ValueError(f"--vocab {path}: expected a label list, a 'labels' mapping or a cache "
                     "meta.json with a 'vocabulary' entry")


@dataclass
class NormalizeStats:
    """Running counts of what normalisation did (mutable: updated while streaming)."""

    lines: int = 0
    sentences: int = 0
    words: int = 0
    dropped_words: int = 0
    dropped_examples: dict[str, int] = field(default_factory=dict)


def spelling_normalizer(case: str) -> TextNormalizer:
    """The text steps (core.normalize) that bring text to acoustic labels of ``case``: apostrophe
    variants unified, case folded ('upper' / 'lower'; kept for 'mixed' / 'none'), accents
    stripped (café -> cafe)."""
    fold = (case,) if case in ("upper", "lower") else ()
    return TextNormalizer(f"lm-corpus-{case}", ("unify_apostrophes", *fold, "strip_accents"))


@dataclass(frozen=True)
class CorpusNormalizer:
    """Maps raw text lines to LM sentences spelled with a vocabulary's characters.

    Build with :meth:`for_vocabulary`. ``text``: the shared normaliser's steps for the labels'
    case (:func:`spelling_normalizer`); ``letters``: the characters a word may contain.
    """

    text: TextNormalizer
    letters: frozenset[str]

    @classmethod
    def for_vocabulary(cls, vocab: Vocabulary) -> CorpusNormalizer:
        if not vocab.word_characters:
            raise ValueError("the vocabulary has no letters to spell words with")
        return cls(spelling_normalizer(vocab.case), vocab.word_characters)

    def normalize_line(self, line: str, stats: NormalizeStats | None = None) -> str:
        """One raw line -> space-separated words (possibly empty)."""
        text = self.text(line)
        # Punctuation and symbols separate words ("well-known" -> "well known").
        text = "".join(c if c in self.letters or c.isalnum() else " " for c in text)
        out = []
        for word in text.split():
            if len(word) > 1 and word[0] == word[-1] == "'":
                word = word[1:-1]  # 'quoted' -> quoted; keeps 'em and dogs'
            if not word or word.strip("'") == "":
                continue
            if all(c in self.letters for c in word):
                out.append(word)
            elif stats is not None:
                stats.dropped_words += 1
                if len(stats.dropped_examples) < 20 or word in stats.dropped_examples:
                    stats.dropped_examples[word] = stats.dropped_examples.get(word, 0) + 1
        if stats is not None:
            stats.lines += 1
            stats.words += len(out)
            stats.sentences += bool(out)
        return " ".join(out)

    def normalize_lines(self, lines: Iterable[str], stats: NormalizeStats | None = None
                        ) -> Iterator[str]:
        """Non-empty normalised sentences, one per input line."""
        for line in lines:
            sentence = self.normalize_line(line, stats)
            if sentence:
                yield sentence
