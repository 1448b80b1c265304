"""The acoustic vocabulary: CTC labels in index order, which one is blank, which one separates words.

Two common layouts are handled explicitly (never guessed from the data):
- wav2vec2 / Hugging Face: ``<pad>`` = blank at 0, ``|`` = word delimiter, ``<s>``, ``</s>``, ``<unk>``
  present but never emitted, letters upper case.
- NeMo / DeepSpeech style: space = word delimiter, letters lower case, blank last.
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


@dataclass(frozen=True)
class Vocabulary:
    """CTC label set.

    labels: label strings in index order (V of them).
    blank: index of the CTC blank.
    delimiter: index of the word delimiter label (``|`` or space), or None when the labels carry
        no explicit word boundary.
    unused: indices the model never emits (tokenizer specials); decoders never extend with them.
    """

    labels: tuple[str, ...]
    blank: int
    delimiter: int | None = None
    unused: frozenset[int] = field(default_factory=frozenset)

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

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_labels(
        cls,
        labels: Sequence[str],
        blank: int | str | None = None,
        delimiter: int | str | None = None,
        unused: Iterable[int | str] | None = None,
    ) -> Vocabulary:
        """Build from a label list; blank/delimiter/unused may be given as index or label string.

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
        if delimiter is None:
            delim_id = next((labels.index(d) for d in KNOWN_DELIMITERS if d in labels), None)
        else:
            delim_id = index_of(delimiter, "delimiter")
        if unused is None:
            unused_ids = {i for i, lab in enumerate(labels) if lab in SPECIAL_UNUSED_LABELS}
        else:
            unused_ids = {index_of(u, "unused") for u in unused}
        unused_ids -= {blank_id, delim_id}
        return cls(labels, blank_id, delim_id, frozenset(unused_ids))

    @classmethod
    def wav2vec2_english(cls) -> Vocabulary:
        """The 32-label vocabulary of facebook/wav2vec2-base-960h (for tests and examples)."""
        labels = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
        return cls.from_labels(labels, blank="<pad>", delimiter="|")

    def to_dict(self) -> dict:
        """JSON-ready form (stored in cache meta)."""
        return {
            "labels": list(self.labels),
            "blank": self.blank,
            "delimiter": self.delimiter,
            "unused": sorted(self.unused),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """Inverse of :meth:`to_dict`; ValueError naming what is missing or malformed."""
        if not isinstance(data, dict) or not {"labels", "blank"} <= data.keys():
            raise ValueError("a vocabulary dict needs 'labels' (list) and 'blank' (index), plus "
                             f"optional 'delimiter' and 'unused'; got {str(data)[:200]}")
        try:
            return cls(tuple(data["labels"]), int(data["blank"]), data.get("delimiter"),
                       frozenset(data.get("unused") or ()))
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
        """Characters words can be spelled with: those of the emitting labels except the delimiter."""
        return frozenset(ch for i in self.emitting_ids if int(i) != self.delimiter
                         for ch in self.labels[int(i)] if ch != " ")

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
        """The text a label contributes: a space for the delimiter, '' for blank/unused."""
        if token == self.delimiter:
            return " "
        if token == self.blank or token in self.unused:
            return ""
        return self.labels[token]

    def decode_tokens(self, tokens: Iterable[int]) -> str:
        """Collapsed label ids -> text with single spaces between words, no edge spaces."""
        return " ".join("".join(self.token_text(int(t)) for t in tokens).split())

    def encode_text(self, text: str) -> list[int]:
        """Text -> label ids (characters), spaces -> delimiter. Raises on characters not in labels."""
        ids = []
        for word_index, word in enumerate(text.split()):
            if word_index and self.delimiter is not None:
                ids.append(self.delimiter)
            for ch in word:
                if ch not in self.label_to_id:
                    raise ValueError(f"character {ch!r} of {text!r} is not in the vocabulary")
                ids.append(self.label_to_id[ch])
        return ids
