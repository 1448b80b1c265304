"""Notes from the library (an LM loaded, what a load printed) as plain lines, or nothing.

Library code logs its notes at INFO on a ``ctclab.*`` logger and never prints them itself; a
command line decides whether they show:

    show_notes(not args.quiet)      # stderr: "note: LM 3gram.arpa: 3-gram loaded in 1.9 s ..."

Without a call (library use, tests) INFO notes stay silent and warnings go through Python's
default handler.
"""
from __future__ import annotations

import logging
import sys
from typing import IO

LOGGER = "ctclab"
_HANDLER_NAME = "ctclab-notes"


def show_notes(enabled: bool, stream: IO[str] | None = None) -> None:
    """Print ctclab's INFO notes (``note: ...``) and warnings (``warning: ...``) on ``stream``
    (default stderr) when ``enabled``; else only warnings. Calling it again replaces the
    earlier setting."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(handler)
    handler = _LineHandler(stream)
    handler.set_name(_HANDLER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    logger.propagate = False


class _LineHandler(logging.Handler):
    """One ``note: ...`` / ``warning: ...`` line per record, on the stream given or on the
    sys.stderr of the moment (which tests and notebooks replace)."""

    def __init__(self, stream: IO[str] | None):
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        kind = "note" if record.levelno < logging.WARNING else record.levelname.lower()
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            print(f"{kind}: {record.getMessage()}", file=stream, flush=True)
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.handleError(record)
