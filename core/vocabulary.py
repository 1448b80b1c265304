"""The acoustic vocabulary: CTC labels in index order, which one is blank, which one separates words.

Two common layouts are handled explicitly (never guessed from the data):
- wav2vec2 / Hugging Face: ``<pad>`` = blank at 0, ``|`` = word delimiter, ``<s>``, ``</s>``, ``<unk>``
  present but never emitted, letters upper case.
- NeMo / DeepSpeech style: space = word delimiter, letters lower case, blank last.

Word boundaries follow one of two explicit conventions: a *delimiter* token between words (letters
``|`` or space, phonemes ``<wb>``), or a *word-start marker* on the first piece of each word
(``▁`` as SentencePiece and Hugging Face's word-piece CTC tokenizers write it). ``units`` says what
the tokens are: letters and word pieces spell the text themselves; phonemes reach words only
through a pronunciation lexicon (ctclab.lm.lexicon).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# Labels that CTC vocabularies carry for the tokenizer's sake but the acoustic model never emits.
SPECIAL_UNUSED_LABELS = frozenset({"<s>", "</s>", "<unk>", "<bos>", "<eos>"})
KNOWN_BLANK_LABELS = ("<pad>", "<blank>", "<eps>", "_", "")
KNOWN_DELIMITERS = ("|", " ", "▁")
# SentencePiece's word-start marker (U+2581), also used by Hugging Face word-piece CTC tokenizers.
WORD_START_MARKER = "▁"
# What the tokens are: letters and word pieces spell the words; phonemes need a lexicon.
UNITS = ("letters", "word_pieces", "phonemes")


@dataclass(frozen=True)
class Vocabulary:
    """CTC label set.

    labels: label strings in index order (V of them).
    blank: index of the CTC blank.
    delimiter: index of the word delimiter label (``|`` or space), or None when the labels carry
        no explicit word boundary.
    unused: indices the model never emits (tokenizer specials); decoders never extend with them.
    word_start: the marker (``▁``) that word pieces beginning a word carry, or None; set for word
        pieces, which then have no delimiter.
    units: 'letters', 'word_pieces' or 'phonemes' (see the module docstring).
    """

    labels: tuple[str, ...]
    blank: int
    delimiter: int | None = None
    unused: frozenset[int] = field(default_factory=frozenset)
    word_start: str | None = None
    units: str = "letters"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "unused", frozenset(int(i) for i in self.unused))
        size = len(self.labels)
        if size < 2:
            raise ValueError(f"a CTC vocabulary needs at least 2 labels (blank + one), got {size}")
        if not 0 <= self.blank < size:
            raise ValueError(f"blank index {self.blank} is outside the {size} labels")
        if self.delimiter is not None:
            if not 0 <= self.delimiter < size:
                raise ValueError(f"delimiter index {self.delimiter} is outside the {size} labels")
            if self.delimiter == self.blank:
                raise ValueError("the word delimiter cannot be the blank label")
        bad = [i for i in self.unused if not 0 <= i < size or i in (self.blank, self.delimiter)]
        if bad:
            raise ValueError(f"unused label indices {sorted(bad)} are out of range or blank/delimiter")
        if len(set(self.labels)) != size:
            dupes = sorted({x for x in self.labels if self.labels.count(x) > 1})
            raise ValueError(f"duplicate labels in the vocabulary: {dupes}")
        if self.units not in UNITS:
            raise ValueError(f"unknown units {self.units!r}; valid: {', '.join(UNITS)}")
        if (self.word_start is not None) != (self.units == "word_pieces"):
            raise ValueError("word pieces mark word starts (word_start='▁') and only word pieces "
                             f"do; got units={self.units!r} with word_start={self.word_start!r}")
        if self.word_start is not None:
            if not self.word_start:
                raise ValueError("word_start must be a non-empty marker such as '▁'")
            if self.delimiter is not None:
                raise ValueError("word pieces mark word starts with "
                                 f"{self.word_start!r}; a delimiter token "
                                 f"({self.labels[self.delimiter]!r}) cannot be used with them")

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_labels(
        cls,
        labels: Sequence[str],
        blank: int | str | None = None,
        delimiter: int | str | None = None,
        unused: Iterable[int | str] | None = None,
        word_start: str | None = None,
        units: str | None = None,
    ) -> Vocabulary:
        """Build from a label list; blank/delimiter/unused may be given as index or label string.

        Word pieces: labels other than a lone ``▁`` that start with ``▁`` make the vocabulary
        word pieces (word_start ``▁``, no delimiter) unless a delimiter is given; ``units`` defaults
        to 'word_pieces' then and to 'letters' otherwise (phonemes are never guessed: pass
        units='phonemes' or let a pronunciation lexicon say so).

        When ``blank`` is None it must be one of the well-known blank names (``<pad>``, ``<blank>``,
        ``<eps>``, ``_``, empty string), otherwise a ValueError asks for it explicitly. When
        ``delimiter`` is None, ``|``, space or ``▁`` is used if present. When ``unused`` is None, the
        tokenizer specials ``<s>``, ``</s>``, ``<unk>`` present in the labels are marked unused.
        """
        labels = tuple(str(x) for x in labels)

        def index_of(value: int | str, what: str) -> int:
            if isinstance(value, (int, np.integer)):
                return int(value if value >= 0 else len(labels) + value)
            if value not in labels:
                raise ValueError(f"{what} label {value!r} is not among the labels {list(labels)[:40]}")
            return labels.index(value)

        if blank is None:
            found = [lab for lab in KNOWN_BLANK_LABELS if lab in labels]
            if not found:
                raise ValueError(
                    "cannot tell which label is the CTC blank: none of "
                    f"{KNOWN_BLANK_LABELS} is in the labels; pass blank=<index> explicitly"
                )
            blank = found[0]
        blank_id = index_of(blank, "blank")
        if word_start is None and delimiter is None and units in (None, "word_pieces") and any(
                lab.startswith(WORD_START_MARKER) and lab != WORD_START_MARKER
                for i, lab in enumerate(labels) if i != blank_id):
            word_start = WORD_START_MARKER
        if word_start is not None:
            delim_id = None
        elif delimiter is None:
            delim_id = next((labels.index(d) for d in KNOWN_DELIMITERS if d in labels), None)
        else:
            delim_id = index_of(delimiter, "delimiter")
        if unused is None:
            unused_ids = {i for i, lab in enumerate(labels) if lab in SPECIAL_UNUSED_LABELS}
        else:
            unused_ids = {index_of(u, "unused") for u in unused}
        unused_ids -= {blank_id, delim_id}
        if units is None:
            units = "word_pieces" if word_start is not None else "letters"
        return cls(labels, blank_id, delim_id, frozenset(unused_ids), word_start, units)

    @classmethod
    def wav2vec2_english(cls) -> Vocabulary:
        """The 32-label vocabulary of facebook/wav2vec2-base-960h (for tests and examples)."""
        labels = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
        return cls.from_labels(labels, blank="<pad>", delimiter="|")

    def to_dict(self) -> dict:
        """JSON-ready form (stored in cache meta); word_start/units only when not letters."""
        out = {
            "labels": list(self.labels),
            "blank": self.blank,
            "delimiter": self.delimiter,
            "unused": sorted(self.unused),
        }
        if self.units != "letters":
            out.update(word_start=self.word_start, units=self.units)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """Inverse of :meth:`to_dict`; ValueError naming what is missing or malformed."""
        if not isinstance(data, dict) or not {"labels", "blank"} <= data.keys():
            raise ValueError("a vocabulary dict needs 'labels' (list) and 'blank' (index), plus "
                             f"optional 'delimiter' and 'unused'; got {str(data)[:200]}")
        try:
            return cls(tuple(data["labels"]), int(data["blank"]), data.get("delimiter"),
                       frozenset(data.get("unused") or ()), data.get("word_start"),
                       data.get("units") or "letters")
        except TypeError as exc:
            raise ValueError(f"malformed vocabulary dict ({exc}): {str(data)[:200]}") from None

    # ----------------------------------------------------------------------------- queries
    @property
    def size(self) -> int:
        """V, the number of labels (the last axis of the log-probs)."""
        return len(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    @cached_property
    def emitting_ids(self) -> np.ndarray:
        """(K,) int64: non-blank label ids the model can emit (unused ones removed)."""
        return np.array([i for i in range(self.size) if i != self.blank and i not in self.unused],
                        dtype=np.int64)

    @cached_property
    def word_characters(self) -> frozenset[str]:
        """Characters words can be spelled with: those of the emitting labels except the delimiter
        (and the word-start marker of word pieces)."""
        return frozenset(ch for i in self.emitting_ids if int(i) != self.delimiter
                         for ch in self.labels[int(i)] if ch != " " and ch != self.word_start)

    @property
    def spells_words(self) -> bool:
        """True when the text of the tokens is the text of the words (letters, word pieces);
        False for phonemes, whose words come from a pronunciation lexicon."""
        return self.units != "phonemes"

    @cached_property
    def starts_word(self) -> np.ndarray:
        """(V,) bool: tokens that begin a new word (word pieces carrying the word-start marker);
        all False for delimiter vocabularies."""
        out = np.zeros(self.size, bool)
        if self.word_start is not None:
            for i, lab in enumerate(self.labels):
                out[i] = lab.startswith(self.word_start) and i != self.blank \
                    and i not in self.unused
        return out

    @cached_property
    def case(self) -> str:
        """Casing of the letters in the labels: 'upper', 'lower', 'mixed' or 'none'."""
        letters = "".join(lab for i, lab in enumerate(self.labels)
                          if i not in self.unused and i != self.blank and i != self.delimiter)
        has_upper = any(c.isupper() for c in letters)
        has_lower = any(c.islower() for c in letters)
        if has_upper and has_lower:
            return "mixed"
        return "upper" if has_upper else "lower" if has_lower else "none"

    @cached_property
    def label_to_id(self) -> dict[str, int]:
        """Label string -> index."""
        return {lab: i for i, lab in enumerate(self.labels)}

    @cached_property
    def token_texts(self) -> tuple[str, ...]:
        """token_text of every label id (one lookup per label where many are turned to text)."""
        return tuple(self.token_text(i) for i in range(len(self.labels)))

    def token_text(self, token: int) -> str:
        """The text a label contributes: a space for the delimiter, '' for blank/unused; a word
        piece's word-start marker becomes a space."""
        if token == self.delimiter:
            return " "
        if token == self.blank or token in self.unused:
            return ""
        label = self.labels[token]
        if self.word_start is not None and label.startswith(self.word_start):
            return " " + label[len(self.word_start):]
        return label

    def decode_tokens(self, tokens: Iterable[int]) -> str:
        """Collapsed label ids -> text with single spaces between words, no edge spaces."""
        return " ".join("".join(self.token_text(int(t)) for t in tokens).split())

    def encode_text(self, text: str) -> list[int]:
        """Text -> label ids (characters), spaces -> delimiter. Raises on characters not in labels.

        Word pieces: each word is cut greedily into the longest pieces, the first with the marker.
        """
        if self.word_start is not None:
            return [t for word in text.split() for t in self._longest_pieces(word)]
        ids = []
        for word_index, word in enumerate(text.split()):
            if word_index and self.delimiter is not None:
                ids.append(self.delimiter)
            for ch in word:
                if ch not in self.label_to_id:
                    raise ValueError(f"character {ch!r} of {text!r} is not in the vocabulary")
                ids.append(self.label_to_id[ch])
        return ids

    def _longest_pieces(self, word: str) -> list[int]:
        ids, at, rest = [], 0, self.word_start + word  # type: ignore[operator]
        while at < len(rest):
            for end in range(len(rest), at, -1):
                token = self.label_to_id.get(rest[at:end])
                if token is not None and token != self.blank and token not in self.unused:
                    ids.append(token)
                    at = end
                    break
            else:
                raise ValueError(f"{word!r} cannot be cut into the vocabulary's word pieces "
                                 f"(stuck at {rest[at:]!r})")
        return ids
