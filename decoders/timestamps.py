"""Word timestamps from a collapsed labelling and the frames where each label was emitted.

    words = word_timestamps(tokens, starts, ends, vocab, 0.02, log_probs)   # one hypothesis

A decoder with many hypotheses over one emission array (the beam search's n-best) groups each
one's labels with :func:`word_spans`, computes every word's frame confidence in one pass
(decoders.confidence.word_frame_confidence) and builds the words with :func:`make_words`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ctclab.core.hypothesis import WordTimestamp
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.confidence import word_frame_confidence


class WordSpan(NamedTuple):
    """A word's text, its frames [start, end) and the label ids that spell it."""

    word: str
    start: int
    end: int
    tokens: list[int]


def word_spans(tokens: Sequence[int], start_frames: Sequence[int], end_frames: Sequence[int],
               vocab: Vocabulary) -> list[WordSpan]:
    """Group labels into words at delimiters.

    tokens: (N,) collapsed label ids; start_frames/end_frames: (N,) first frame of each label and the
    frame after its last frame. A word spans from its first label's start to its last label's end.
    """
    texts = vocab.token_texts
    words: list[WordSpan] = []
    chars: list[str] = []
    ids: list[int] = []
    first = last = 0
    for token, start, end in zip(map(int, tokens), map(int, start_frames), map(int, end_frames),
                                 strict=True):
        text = texts[token]
        if text == " " or " " in text:   # a delimiter, or a label with an inner space (rare)
            pieces = text.split(" ")
            for piece_index, piece in enumerate(pieces):
                if piece_index and chars:
                    words.append(WordSpan("".join(chars), first, last, ids))
                    chars, ids = [], []
                if piece:
                    if not chars:
                        first = start
                    chars.append(piece)
                    ids.append(token)
                    last = end
        elif text:
            if not chars:
                first = start
            chars.append(text)
            ids.append(token)
            last = end
    if chars:
        words.append(WordSpan("".join(chars), first, last, ids))
    return words


def make_words(spans: Sequence[WordSpan], frame_shift_s: float,
               frame_confidence: Sequence[float] | None = None) -> tuple[WordTimestamp, ...]:
    """WordTimestamps of ``spans`` (seconds = frames x frame_shift_s), with their frame
    confidence when given (else NaN)."""
    conf = [float("nan")] * len(spans) if frame_confidence is None else frame_confidence
    return tuple(WordTimestamp(s.word, s.start, s.end, round(s.start * frame_shift_s, 4),
                               round(s.end * frame_shift_s, 4), frame_confidence=float(c))
                 for s, c in zip(spans, conf, strict=True))


def word_timestamps(
    tokens: Sequence[int],
    start_frames: Sequence[int],
    end_frames: Sequence[int],
    vocab: Vocabulary,
    frame_shift_s: float,
    log_probs: np.ndarray | None = None,
) -> tuple[WordTimestamp, ...]:
    """The words of one labelling (:func:`word_spans`) as WordTimestamps.

    log_probs: (T, V) of the utterance, to set each word's frame_confidence
    (decoders.confidence.word_frame_confidence); without it, it stays NaN.
    """
    spans = word_spans(tokens, start_frames, end_frames, vocab)
    if log_probs is None or not spans:
        return make_words(spans, frame_shift_s)
    conf = word_frame_confidence(log_probs, [s.tokens for s in spans],
                                 [(s.start, s.end) for s in spans]).tolist()
    return make_words(spans, frame_shift_s, conf)
