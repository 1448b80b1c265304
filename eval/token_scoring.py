"""Scoring decoders that output tokens, not words: the phoneme error rate.

A phoneme model's greedy output is a phoneme string, not words. It is scored against the
reference spelled through the pronunciation lexicon (each word's first pronunciation; word
boundaries do not count): substitutions, deletions and insertions of phonemes over the reference
phonemes (PER). An utterance whose reference holds a word the lexicon does not have cannot be
spelled: it is left out of the PER (all counts 0) and counted in ``unspellable``.

    scoring = phoneme_scoring(vocab, "en.ipa-lexicon.tsv")   # None for a letter lexicon
    counts, chars, ref, hyp = scoring.score(reference_text, hypothesis.tokens)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ctclab.core.normalize import TextNormalizer
from ctclab.core.vocabulary import Vocabulary
from ctclab.eval.metrics import ErrorCounts, align_words, char_counts
from ctclab.lm.lexicon import Lexicon, read_lexicon

# Label of the rate in tables for systems scored this way.
TOKEN_UNIT = "phonemes"


@dataclass
class PhonemeScoring:
    """Reference spelling and token error counts for one pronunciation lexicon."""

    vocab: Vocabulary
    lexicon: Lexicon
    unspellable: int = 0

    def __post_init__(self) -> None:
        self._first: dict[str, tuple[int, ...]] = {}
        for spelling, owner in zip(self.lexicon.spellings, self.lexicon.owners, strict=True):
            self._first.setdefault(self.lexicon.words[owner].lower(), spelling)

    def reference_tokens(self, normalised_ref: str) -> list[str] | None:
        """The reference's phonemes (labels), or None when a word is not in the lexicon."""
        out: list[str] = []
        for word in normalised_ref.split():
            spelling = self._first.get(word.lower())
            if spelling is None:
                return None
            out += [self.vocab.labels[t] for t in spelling]
        return out

    def hypothesis_tokens(self, tokens: tuple[int, ...]) -> list[str]:
        """The phonemes of a token-only output: labels, word boundaries left out."""
        return [self.vocab.labels[t] for t in tokens
                if t != self.vocab.delimiter and self.vocab.token_text(t).strip()]

    def score(self, ref: str, tokens: tuple[int, ...], normalizer: TextNormalizer
              ) -> tuple[ErrorCounts, ErrorCounts, str, str]:
        """(phoneme counts, character counts of the phoneme strings, ref and hyp phonemes as
        text). An unspellable reference gives zero counts (and is counted)."""
        hyp_tokens = self.hypothesis_tokens(tokens)
        ref_tokens = self.reference_tokens(normalizer(ref))
        hyp = " ".join(hyp_tokens)
        if ref_tokens is None:
            self.unspellable += 1
            return ErrorCounts(), ErrorCounts(), "", hyp
        ref_text = " ".join(ref_tokens)
        counts = align_words(ref_tokens, hyp_tokens).counts()
        return counts, char_counts("".join(ref_tokens), "".join(hyp_tokens)), ref_text, hyp


def phoneme_scoring(vocab: Vocabulary, lexicon_path: str | None) -> PhonemeScoring | None:
    """PhonemeScoring when ``lexicon_path`` is a pronunciation lexicon of ``vocab``'s tokens
    (its spellings do not read as its words), else None (letters and word pieces are words)."""
    if lexicon_path is None:
        return None
    lexicon = read_lexicon(lexicon_path, vocab, skip_unknown_tokens=True)
    if lexicon.reads_as_words(vocab):
        return None
    return PhonemeScoring(dataclasses.replace(vocab, units="phonemes"), lexicon)


def outputs_words(options: object, scoring: PhonemeScoring | None) -> bool:
    """Whether a decoder with ``options`` outputs words: always on letters and word pieces; on
    phonemes only when it spells words through the lexicon (a ``lexicon_path`` option)."""
    return scoring is None or getattr(options, "lexicon_path", None) is not None
