"""Map acoustic words onto LM words (casing), and measure how many words an LM does not know.

wav2vec2 spells words in upper case, most LMs (LibriSpeech's, CMU's) in upper or lower case: a
mismatch makes every word OOV and silently turns LM fusion into a constant penalty. We detect it
from the words themselves and either fix the mapping or stop with a clear error.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice

from ctclab.core.vocabulary import Vocabulary
from ctclab.lm.constants import ARPA_SPECIAL_TOKENS, CASING_SAMPLE_WORDS, TOP_OOV_WORDS
from ctclab.lm.language_model import LanguageModel

MAPPING_MODES = ("identity", "lower", "upper")
_MODE_FUNCS: dict[str, Callable[[str], str]] = {
    "identity": lambda w: w,
    "lower": str.lower,
    "upper": str.upper,
}


@dataclass(frozen=True)
class WordMapper:
    """acoustic word -> LM word. mode: 'identity' | 'lower' | 'upper'. Call it: ``mapper("HI")``."""

    mode: str = "identity"

    def __post_init__(self) -> None:
        if self.mode not in MAPPING_MODES:
            raise ValueError(f"unknown word mapping {self.mode!r}; valid: {list(MAPPING_MODES)}")

    def __call__(self, word: str) -> str:
        return _MODE_FUNCS[self.mode](word)

    @property
    def identity(self) -> bool:
        """True when words pass unchanged (callers can skip mapping)."""
        return self.mode == "identity"


@dataclass(frozen=True)
class OovReport:
    """Reference words vs an LM. words: running words; oov: how many the LM lacks; rate = oov/words;
    top_oov: the most frequent OOV words (as written in the texts) with their counts."""

    words: int
    oov: int
    rate: float
    top_oov: tuple[tuple[str, int], ...]


def word_casing(words: Iterable[str]) -> str:
    """'upper', 'lower', 'mixed' or 'none' for a collection of words (sentence markers ignored)."""
    upper = lower = 0
    for word in words:
        if word in ARPA_SPECIAL_TOKENS:
            continue
        upper += any(c.isupper() for c in word)
        lower += any(c.islower() for c in word)
    if not upper and not lower:
        return "none"
    # A few capitalised proper nouns in a lower-case LM do not make it "mixed".
    if upper and lower and min(upper, lower) > 0.05 * max(upper, lower):
        return "mixed"
    return "upper" if upper > lower else "lower"


def _spellable(vocab: Vocabulary, mode: str) -> set[str]:
    """Characters an acoustic word can contain after mapping with ``mode``."""
    func = _MODE_FUNCS[mode]
    return {mapped for ch in vocab.word_characters for mapped in func(ch)}


def _reachable(word: str, chars: set[str], mode: str) -> bool:
    """Could a mapped acoustic word equal ``word``? (its characters spellable, casing consistent)."""
    if mode != "identity" and _MODE_FUNCS[mode](word) != word:
        return False
    return all(c in chars for c in word)


# Words any English-like LM holds: they tell the casing of an LM that has no word list (a binary).
_PROBE_WORDS = ("the", "a", "and", "of", "to", "in", "is", "it", "i", "that", "you", "he")


def make_word_mapper(vocab: Vocabulary, lm_words: Iterable[str] | None,
                     lm: LanguageModel | None = None,
                     sample_words: Iterable[str] | None = None) -> WordMapper:
    """Choose the mapping (identity, lower, upper) under which the most LM words can be spelled by
    the acoustic labels; ``sample_words`` (acoustic-side words, e.g. reference transcripts) break
    ties by how many of them the LM then knows. Identity wins remaining ties.

    Without a word list (``lm_words`` None): identity when there is no ``lm`` either; with only a
    binary ``lm``, the casing under which it knows the most common English words.

    Raises ValueError naming both casings and the fix when no mapping lets any LM word match
    (every decoded word would be OOV).
    """
    if lm_words is None:
        return WordMapper("identity") if lm is None else _probe_lm_casing(lm)
    words = [w for w in islice(lm_words, CASING_SAMPLE_WORDS) if w not in ARPA_SPECIAL_TOKENS]
    samples = [s for s in (sample_words or ()) if s]
    lm_set = set(words)
    best: tuple[int, int, int] | None = None
    best_mode = "identity"
    for rank, mode in enumerate(MAPPING_MODES):
        chars = _spellable(vocab, mode)
        reachable = sum(_reachable(w, chars, mode) for w in words)
        known = sum(_MODE_FUNCS[mode](s) in lm_set for s in samples)
        key = (reachable, known, -rank)
        if best is None or key > best:
            best, best_mode = key, mode
    if best is None or best[0] == 0:
        raise ValueError(
            f"no LM word can ever match a decoded word: the acoustic labels are {vocab.case} case "
            f"({_label_preview(vocab)}) but the LM words are {word_casing(words)} case "
            f"(e.g. {words[:5]}), and no upper/lower mapping makes them spellable. Use an LM whose "
            "words are written with the model's characters, or rebuild one from text with "
            "python lm/build.py --vocab <cache dir or labels.json> --text corpus.txt")
    return WordMapper(best_mode)


def _probe_lm_casing(lm: LanguageModel) -> WordMapper:
    hits = {mode: sum(not lm.is_oov(_MODE_FUNCS[mode](w)) for w in _PROBE_WORDS)
            for mode in ("lower", "upper", "identity")}
    mode = max(hits, key=lambda m: hits[m])
    if hits[mode] == 0:
        raise ValueError(f"the LM knows none of {_PROBE_WORDS} in lower, upper or original case: "
                         "cannot tell how acoustic words map to LM words (every word may be OOV); "
                         "pass unigrams_path with the LM's word list")
    return WordMapper(mode)


def _label_preview(vocab: Vocabulary) -> str:
    shown = [vocab.labels[int(i)] for i in vocab.emitting_ids[:8]]
    return "labels " + " ".join(repr(x) for x in shown) + (" ..." if len(vocab.emitting_ids) > 8 else "")


def oov_rate(texts: Iterable[str], lm_words: set[str], mapper: Callable[[str], str]) -> OovReport:
    """How many running words of ``texts`` (acoustic casing, whitespace-separated) the LM lacks
    after ``mapper``. An empty input gives rate 0.0."""
    lm_words = lm_words if isinstance(lm_words, (set, frozenset)) else set(lm_words)
    total = 0
    missing: Counter[str] = Counter()
    for text in texts:
        for word in text.split():
            total += 1
            if mapper(word) not in lm_words:
                missing[word] += 1
    oov = sum(missing.values())
    return OovReport(words=total, oov=oov, rate=oov / total if total else 0.0,
                     top_oov=tuple(missing.most_common(TOP_OOV_WORDS)))
