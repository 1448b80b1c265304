"""Word timestamps from a collapsed labelling and the frames where each label was emitted."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ctclab.core.hypothesis import WordTimestamp
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.confidence import word_frame_confidence


def word_timestamps(
    tokens: Sequence[int],
    start_frames: Sequence[int],
    end_frames: Sequence[int],
    vocab: Vocabulary,
    frame_shift_s: float,
    log_probs: np.ndarray | None = None,
) -> tuple[WordTimestamp, ...]:
    """Group labels into words at delimiters.

    tokens: (N,) collapsed label ids; start_frames/end_frames: (N,) first frame of each label and the
    frame after its last frame. A word spans from its first label's start to its last label's end.
    log_probs: (T, V) of the utterance, to set each word's frame_confidence
    (decoders.confidence.word_frame_confidence); without it, it stays NaN.
    """
    words: list[WordTimestamp] = []
    chars: list[str] = []
    ids: list[int] = []
    word_ids: list[list[int]] = []
    first = last = 0

    def flush() -> None:
        if chars:
            words.append(WordTimestamp("".join(chars), first, last,
                                       round(first * frame_shift_s, 4), round(last * frame_shift_s, 4)))
            word_ids.append(list(ids))
            chars.clear()
            ids.clear()

    for token, start, end in zip(tokens, start_frames, end_frames, strict=True):
        text = vocab.token_text(int(token))
        if text == " ":
            flush()
            continue
        if not text:
            continue
        for piece_index, piece in enumerate(text.split(" ")):
            if piece_index:  # labels with an inner space (rare) split words too
                flush()
            if piece:
                if not chars:
                    first = int(start)
                chars.append(piece)
                ids.append(int(token))
                last = int(end)
    flush()
    if log_probs is None or not words:
        return tuple(words)
    conf = word_frame_confidence(log_probs, word_ids,
                                 [(w.start_frame, w.end_frame) for w in words]).tolist()
    return tuple(dataclasses.replace(w, frame_confidence=c)
                 for w, c in zip(words, conf, strict=True))
