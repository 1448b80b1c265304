"""Text normalisation applied identically to references and hypotheses before scoring.

A normaliser is a named, frozen value made of named steps applied in order (jiwer-style
composition), so results files can record exactly which one produced a number:

    from ctclab.core.normalize import DEFAULT_NORMALIZER, get_normalizer
    DEFAULT_NORMALIZER("Don’t  stop—the   music!")   # -> "DON'T STOP THE MUSIC"

The default (``"default"``) is the LibriSpeech convention: upper case, curly/back-tick apostrophes
made straight, punctuation other than in-word apostrophes replaced by a space, whitespace
collapsed. Case therefore never counts as an error (wav2vec2 emits upper case, QuartzNet lower).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

# Apostrophe look-alikes that models, transcripts and LMs use interchangeably.
APOSTROPHE_VARIANTS = "\u2019\u2018\u02bc\u0060\u00b4\u2032"
_APOSTROPHE_TABLE = str.maketrans({c: "'" for c in APOSTROPHE_VARIANTS})
# Anything that is not a letter, a digit, an apostrophe or whitespace is punctuation here.
_PUNCTUATION_RE = re.compile(r"[^\w\s']|_")
# Apostrophes not between two word characters are quotes, not contractions ("'tis" is rare in
# LibriSpeech references and keeping it would split "'hello'" from "hello").
_QUOTE_APOSTROPHE_RE = re.compile(r"(?<!\w)'|'(?!\w)")
_WHITESPACE_RE = re.compile(r"\s+")


def _upper(text: str) -> str:
    return text.upper()


def _lower(text: str) -> str:
    return text.lower()


def _unify_apostrophes(text: str) -> str:
    return text.translate(_APOSTROPHE_TABLE)


def _remove_apostrophes(text: str) -> str:
    return text.replace("'", "")


def _strip_quotes(text: str) -> str:
    return _QUOTE_APOSTROPHE_RE.sub(" ", text)


def _strip_punctuation(text: str) -> str:
    return _PUNCTUATION_RE.sub(" ", text)


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _collapse_whitespace(text: str) -> str:
    return _WHITESPACE_RE.sub(" ", text).strip()


# Step name -> function(str) -> str. Names are what results files record.
STEPS: dict[str, Callable[[str], str]] = {
    "upper": _upper,
    "lower": _lower,
    "unify_apostrophes": _unify_apostrophes,
    "remove_apostrophes": _remove_apostrophes,
    "strip_quotes": _strip_quotes,
    "strip_punctuation": _strip_punctuation,
    "strip_accents": _strip_accents,
    "collapse_whitespace": _collapse_whitespace,
}


@dataclass(frozen=True)
class TextNormalizer:
    """A named sequence of normalisation steps (see ``STEPS``), applied left to right.

    Combine with ``+``: ``get_normalizer("whitespace") + TextNormalizer("x", ("lower",))``.
    Calling it maps one string to its normalised form; words are then split on single spaces.
    """

    name: str
    steps: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown normalisation step(s) {unknown}; valid: {sorted(STEPS)}")

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"normaliser {self.name!r} takes str, got {type(text).__name__}")
        for step in self.steps:
            text = STEPS[step](text)
        return text

    def __add__(self, other: TextNormalizer) -> TextNormalizer:
        return TextNormalizer(f"{self.name}+{other.name}", self.steps + other.steps)

    def to_dict(self) -> dict:
        """JSON-ready description (stored in results settings)."""
        return {"name": self.name, "steps": list(self.steps)}


DEFAULT_NORMALIZER = TextNormalizer(
    "default",
    ("unify_apostrophes", "upper", "strip_punctuation", "strip_quotes", "collapse_whitespace"),
)

NORMALIZERS: dict[str, TextNormalizer] = {
    "default": DEFAULT_NORMALIZER,
    # Case-sensitive and punctuation-sensitive: only whitespace differences are forgiven.
    "whitespace": TextNormalizer("whitespace", ("collapse_whitespace",)),
    # The default without apostrophes: "DON'T" == "DONT" (for models with no apostrophe label).
    "no-apostrophes": TextNormalizer(
        "no-apostrophes",
        ("unify_apostrophes", "upper", "strip_punctuation", "remove_apostrophes",
         "collapse_whitespace"),
    ),
}


def get_normalizer(name: str) -> TextNormalizer:
    """The normaliser registered as ``name``; ValueError lists the valid names."""
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown normaliser {name!r}; valid: {', '.join(sorted(NORMALIZERS))}"
                         ) from None
