"""Word timestamps from a collapsed labelling and the frames where each label was emitted."""
from __future__ import annotations

from collections.abc import Sequence

from ctclab.core.hypothesis import WordTimestamp
from ctclab.core.vocabulary import Vocabulary


def word_timestamps(
    tokens: Sequence[int],
    start_frames: Sequence[int],
    end_frames: Sequence[int],
    vocab: Vocabulary,
    frame_shift_s: float,
) -> tuple[WordTimestamp, ...]:
    """Group labels into words at delimiters.

    tokens: (N,) collapsed label ids; start_frames/end_frames: (N,) first frame of each label and the
    frame after its last frame. A word spans from its first label's start to its last label's end.
    """
    words: list[WordTimestamp] = []
    chars: list[str] = []
    first = last = 0

    def flush() -> None:
        if chars:
            words.append(WordTimestamp("".join(chars), first, last,
                                       round(first * frame_shift_s, 4), round(last * frame_shift_s, 4)))
            chars.clear()

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
                last = int(end)
    flush()
    return tuple(words)
