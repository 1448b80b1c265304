"""The one result type every decoder returns."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WordTimestamp:
    """A decoded word and where it sits in the emission.

    start_frame: first frame (inclusive) of the word's first token.
    end_frame: frame after the word's last token (exclusive).
    start_s / end_s: the same in seconds (frame * frame_shift_s).
    confidence: probability in [0, 1] that the word is right, as the decoder estimates it
        (decoders/confidence.py: n-best posterior x frame posterior; greedy: frame posterior);
        NaN when not computed. Uncalibrated: eval/calibration.py maps it to calibrated values.
    frame_confidence: the acoustic part of it, in [0, 1]: the least certain of the word's labels,
        each label counted by its highest frame probability within the word (NaN if unknown).
    """

    word: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    # Not compared: two results are the same words at the same times whatever their confidence
    # (and NaN never equals itself).
    confidence: float = field(default=float("nan"), compare=False)
    frame_confidence: float = field(default=float("nan"), compare=False)


@dataclass(frozen=True)
class Hypothesis:
    """A decoding result.

    text: words joined by single spaces, in the acoustic vocabulary's casing.
    score: total natural-log score the decoder ranked by (acoustic + weighted LM + bonuses).
    tokens: label ids of the collapsed labelling (no blanks, no repeats), word delimiters included.
    words: one WordTimestamp per word of ``text``.
    nbest: alternatives, best first (the first one is this hypothesis); empty unless asked for.
    acoustic_score / lm_score: the parts of ``score`` where the decoder tracks them (else nan).
    """

    text: str
    score: float
    tokens: tuple[int, ...] = ()
    words: tuple[WordTimestamp, ...] = ()
    nbest: tuple[Hypothesis, ...] = field(default=(), repr=False)
    acoustic_score: float = float("nan")
    lm_score: float = float("nan")

    @staticmethod
    def empty() -> Hypothesis:
        """The result for an utterance with no frames (T = 0)."""
        return Hypothesis(text="", score=0.0, acoustic_score=0.0, lm_score=0.0)


def word_timestamps(words: Sequence[str], start_frames: Sequence[int], end_frames: Sequence[int],
                    start_s: Sequence[float], end_s: Sequence[float],
                    frame_confidence: Sequence[float]) -> list[WordTimestamp]:
    """WordTimestamps from columns of values that are already what the fields hold (as
    ``WordTimestamp(word, start_frame, end_frame, start_s, end_s,
    frame_confidence=frame_confidence)`` would, confidence NaN): a third of the constructor's
    cost, for the tens of thousands of words a batch decode returns.

    The frozen dataclass's __init__ sets each field through object.__setattr__; here each
    instance gets its whole __dict__ at once, the fields in declaration order, so equality,
    hashing, repr, pickling and frozenness are those of constructed ones (tests/test_hypothesis
    compares them; it also fails when WordTimestamp gains a field or a __post_init__ this
    would skip).
    """
    new, set_attr, cls = object.__new__, object.__setattr__, WordTimestamp
    nan = cls.confidence   # the field's default (the very object the constructor stores)
    out: list[WordTimestamp] = []
    append = out.append
    for w, a, b, sa, sb, fc in zip(words, start_frames, end_frames, start_s, end_s,
                                   frame_confidence, strict=True):
        item = new(cls)
        set_attr(item, "__dict__", {"word": w, "start_frame": a, "end_frame": b, "start_s": sa,
                                    "end_s": sb, "confidence": nan, "frame_confidence": fc})
        append(item)
    return out
