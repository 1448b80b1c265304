"""Word and character error rates derived from ONE minimum edit-distance alignment.

The alignment is computed once per utterance (rapidfuzz's Levenshtein opcodes, the same engine jiwer
uses) and substitutions, deletions, insertions, WER, the aligned diff and the substitution pairs
all come from it. Corpus rates are sums of counts over utterances divided by the summed reference
length (never an average of per-utterance rates, which would over-weight short utterances).

    from ctclab.eval.metrics import score_utterance, corpus_score
    u = score_utterance("the cat sat", "the bat sat down")   # S=1, I=1 -> WER 2/3
    c = corpus_score([u, ...])                              # c.wer, c.cer, c.words.substitutions
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from ctclab.core.normalize import DEFAULT_NORMALIZER, TextNormalizer

EQUAL, SUBSTITUTE, DELETE, INSERT = "equal", "substitute", "delete", "insert"
_RAPIDFUZZ_TAGS = {"equal": EQUAL, "replace": SUBSTITUTE, "delete": DELETE, "insert": INSERT}


@dataclass(frozen=True)
class ErrorCounts:
    """Edit counts against a reference of ``ref_len`` units (words or characters).

    ``rate`` = (S + D + I) / ref_len. For an empty reference it is 0.0 when the hypothesis is also
    empty and +inf otherwise (any output is an insertion against nothing); corpus sums avoid this.
    """

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_len: int = 0

    def __post_init__(self) -> None:
        if min(self.substitutions, self.deletions, self.insertions, self.ref_len) < 0:
            raise ValueError(f"error counts cannot be negative: {self}")
        if self.substitutions + self.deletions > self.ref_len:
            raise ValueError(f"S + D exceeds the reference length: {self}")

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def hits(self) -> int:
        return self.ref_len - self.substitutions - self.deletions

    @property
    def rate(self) -> float:
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.ref_len

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.substitutions + other.substitutions,
                           self.deletions + other.deletions,
                           self.insertions + other.insertions,
                           self.ref_len + other.ref_len)


@dataclass(frozen=True)
class AlignedSpan:
    """One block of the alignment: ``op`` over ref[ref_start:ref_end] and hyp[hyp_start:hyp_end].

    Substitution spans have equal lengths (1:1 pairs); deletions have an empty hyp span and
    insertions an empty ref span.
    """

    op: str
    ref_start: int
    ref_end: int
    hyp_start: int
    hyp_end: int


@dataclass(frozen=True)
class WordAlignment:
    """Minimum edit-distance alignment of normalised reference and hypothesis words."""

    ref: tuple[str, ...]
    hyp: tuple[str, ...]
    spans: tuple[AlignedSpan, ...]

    def counts(self) -> ErrorCounts:
        """S, D, I and reference length, read off the spans."""
        sub = sum(s.ref_end - s.ref_start for s in self.spans if s.op == SUBSTITUTE)
        dele = sum(s.ref_end - s.ref_start for s in self.spans if s.op == DELETE)
        ins = sum(s.hyp_end - s.hyp_start for s in self.spans if s.op == INSERT)
        return ErrorCounts(sub, dele, ins, len(self.ref))

    def pairs(self) -> list[tuple[str | None, str | None]]:
        """Aligned (ref word, hyp word) pairs; None marks the missing side of a deletion/insertion."""
        out: list[tuple[str | None, str | None]] = []
        for s in self.spans:
            if s.op in (EQUAL, SUBSTITUTE):
                out.extend(zip(self.ref[s.ref_start:s.ref_end], self.hyp[s.hyp_start:s.hyp_end], strict=True))
            elif s.op == DELETE:
                out.extend((w, None) for w in self.ref[s.ref_start:s.ref_end])
            else:
                out.extend((None, w) for w in self.hyp[s.hyp_start:s.hyp_end])
        return out

    def substitutions(self) -> list[tuple[str, str]]:
        """(ref word, hyp word) for every substituted word."""
        return [(r, h) for r, h in self.pairs() if r is not None and h is not None and r != h]

    def diff(self) -> str:
        """Aligned diff: a REF line, a HYP line and a marker line (S / D / I under each error).

        Columns are padded to the longer word; ``***`` fills the missing side of a D or I.
        """
        ref_line, hyp_line, mark_line = [], [], []
        for r, h in self.pairs():
            width = max(len(r or "***"), len(h or "***"))
            ref_line.append((r or "***").ljust(width))
            hyp_line.append((h or "***").ljust(width))
            mark = " " if r == h else ("D" if h is None else "I" if r is None else "S")
            mark_line.append(mark.ljust(width))
        return "\n".join(["REF: " + " ".join(ref_line).rstrip(),
                          "HYP: " + " ".join(hyp_line).rstrip(),
                          "     " + " ".join(mark_line).rstrip()])


@dataclass(frozen=True)
class UtteranceScore:
    """Scores of one utterance: normalised texts, the word alignment, word and char counts."""

    ref: str
    hyp: str
    alignment: WordAlignment
    words: ErrorCounts
    chars: ErrorCounts


@dataclass(frozen=True)
class CorpusScore:
    """Corpus totals: ``words``/``chars`` are summed counts; wer/cer are ratios of the sums."""

    utterances: int
    words: ErrorCounts
    chars: ErrorCounts
    sentence_errors: int

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate

    @property
    def ser(self) -> float:
        """Sentence error rate: fraction of utterances with at least one word error."""
        return self.sentence_errors / self.utterances if self.utterances else 0.0


def align_words(ref_words: Sequence[str], hyp_words: Sequence[str]) -> WordAlignment:
    """Minimum edit-distance alignment of two word sequences (already normalised)."""
    ref, hyp = tuple(ref_words), tuple(hyp_words)
    spans = tuple(AlignedSpan(_RAPIDFUZZ_TAGS[op.tag], op.src_start, op.src_end,
                              op.dest_start, op.dest_end)
                  for op in Levenshtein.opcodes(ref, hyp))
    return WordAlignment(ref, hyp, spans)


def char_counts(ref: str, hyp: str) -> ErrorCounts:
    """Character edit counts of two normalised strings (spaces count as characters, as in jiwer)."""
    sub = dele = ins = 0
    for op in Levenshtein.editops(ref, hyp):
        if op.tag == "replace":
            sub += 1
        elif op.tag == "delete":
            dele += 1
        else:
            ins += 1
    return ErrorCounts(sub, dele, ins, len(ref))


def score_utterance(ref: str, hyp: str,
                    normalizer: TextNormalizer = DEFAULT_NORMALIZER) -> UtteranceScore:
    """Normalise both texts with the same normaliser, align once, count word and char errors.

    An empty reference is allowed: every hypothesis word is then an insertion.
    """
    ref_n, hyp_n = normalizer(ref), normalizer(hyp)
    alignment = align_words(ref_n.split(), hyp_n.split())
    return UtteranceScore(ref_n, hyp_n, alignment, alignment.counts(), char_counts(ref_n, hyp_n))


def corpus_score(scores: Iterable[UtteranceScore]) -> CorpusScore:
    """Sum the counts of many utterances (WER = total errors / total reference words)."""
    scores = list(scores)
    return corpus_from_counts([s.words for s in scores], [s.chars for s in scores])


def corpus_from_counts(word_counts: Iterable[ErrorCounts],
                       char_counts_: Iterable[ErrorCounts]) -> CorpusScore:
    """Corpus totals from stored per-utterance counts (e.g. read back from a results JSONL)."""
    words, chars, n, wrong = ErrorCounts(), ErrorCounts(), 0, 0
    for w, c in zip(word_counts, char_counts_, strict=True):
        words, chars, n = words + w, chars + c, n + 1
        wrong += w.errors > 0
    return CorpusScore(n, words, chars, wrong)


def substitution_counts(alignments: Iterable[WordAlignment]) -> Counter:
    """Counter of (ref word, hyp word) substitutions over many utterances (most_common() ready)."""
    counter: Counter = Counter()
    for a in alignments:
        counter.update(a.substitutions())
    return counter
