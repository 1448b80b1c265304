"""The progress display of decoding (evaluation and tuning): one bar of utterances per split and
system, with the audio seconds decoded per wall second; plain lines when not on a terminal (a log
file or a pipe gets no carriage-return redraws); off with --quiet."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ctclab.core.progress import progress_bar


class _Timed(Protocol):
    @property
    def audio_seconds(self) -> float: ...


class DecodeProgress:
    """A bar of utterances (core.progress: tqdm on a terminal, plain lines elsewhere) with the
    audio seconds decoded per wall second in the postfix.

    total: utterances of the split; initial: those already done (a resumed run); desc: the label.
    Call it with each decoded chunk's results and wall seconds; close() when done (or use it as a
    context manager).
    """

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = progress_bar(total, desc, "utt", enabled=enabled, initial=initial,
                                leave=False)
        self.audio = 0.0
        self.wall = 0.0

    def __call__(self, results: Sequence[_Timed], wall: float) -> None:
        self.audio += sum(r.audio_seconds for r in results)
        self.wall += wall
        self.bar.update(len(results))
        if self.wall > 0:
            self.bar.set_postfix_str(f"{self.audio / self.wall:.0f} audio s/s")

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> DecodeProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
