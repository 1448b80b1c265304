"""Progress display: a tqdm bar on a terminal, plain lines everywhere else.

A tqdm bar redraws itself with carriage returns; written to a log file, a CI console or a pipe
that becomes thousands of ``\\r`` fragments on one line. When the stream is not a terminal,
:func:`progress_bar` returns a :class:`LineProgress` instead, which prints one ordinary line at
most every PLAIN_INTERVAL_S seconds and one at the end.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Any, Protocol

# Seconds between two plain progress lines: often enough to see that a long job is alive, rare
# enough that an hour-long run adds a few hundred lines to a log, not thousands.
PLAIN_INTERVAL_S = 30.0


class Progress(Protocol):
    """What callers use of a progress display (tqdm has the same methods)."""

    def update(self, n: float = 1) -> Any: ...

    def write(self, message: str) -> Any: ...

    def set_postfix_str(self, text: str) -> Any: ...

    def close(self) -> Any: ...


class LineProgress:
    """Plain-line progress: ``desc: 12.0/40.0 audio-s (30%), 1.4 audio-s/s, 9 s``."""

    def __init__(self, total: float | None, desc: str, unit: str, *, initial: float = 0,
                 file: IO[str] | None = None, interval: float | None = None,
                 enabled: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = float(initial)
        self.file = file if file is not None else sys.stderr
        self.interval = PLAIN_INTERVAL_S if interval is None else interval
        self.enabled = enabled
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._printed_n: float | None = None

    def _line(self) -> None:
        elapsed = time.monotonic() - self._start
        done = f"{self.n:g}" if self.total is None else f"{self.n:g}/{self.total:g}"
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = f", {self.n / elapsed:.1f} {self.unit}/s" if elapsed > 0 else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {self.unit}{percent}{rate}{postfix}, {elapsed:.0f} s",
              file=self.file, flush=True)
        self._printed_n = self.n

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._line()

    def write(self, message: str) -> None:
        print(message, file=self.file, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.enabled and self._printed_n != self.n and self.n > 0:
            self._line()
        self.enabled = False


def progress_bar(total: float | None, desc: str, unit: str, *, enabled: bool = True,
                 initial: float = 0, leave: bool = True, file: IO[str] | None = None) -> Progress:
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`LineProgress`.

    total/initial: in ``unit`` (e.g. audio seconds, utterances). enabled=False shows nothing.
    """
    stream = file if file is not None else sys.stderr
    is_terminal = bool(getattr(stream, "isatty", lambda: False)())
    if not is_terminal or not enabled:
        return LineProgress(total, desc, unit, initial=initial, file=stream, enabled=enabled)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=True,
                dynamic_ncols=True, leave=leave, file=stream)
