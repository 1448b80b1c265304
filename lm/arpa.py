"""ARPA n-gram files: header parsing, streaming section reads, and validation with clear errors.

An ARPA file is ``\\data\\``, ``ngram N=count`` lines, then one ``\\N-grams:`` section per order with
``log10prob<TAB>w1 ... wN[<TAB>log10backoff]`` lines, then ``\\end\\``. Everything here streams
(gzip too), so a 1 GB 4-gram is never held in memory.
"""
from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ctclab.lm.constants import UNKNOWN_WORDS

_COUNT_LINE = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)\s*$")
_SECTION_LINE = re.compile(r"^\\(\d+)-grams:\s*$")
_GZIP_MAGIC = b"\x1f\x8b"


class ArpaFormatError(ValueError):
    """A malformed or truncated ARPA file; the message names the file, the line and the fix.

    source: the file the user named when ``path`` is ctclab's decompressed copy of it (an
    .arpa.gz, lm.files.resolve_lm_path); the line number is the copy's, the plain text's."""

    def __init__(self, path: str | Path, line_no: int | None, problem: str,
                 source: str | Path | None = None):
        name = f"{path}" if source is None else f"{source} (decompressed to {path})"
        where = name if line_no is None else f"{name}, line {line_no}"
        super().__init__(f"{where}: {problem}. The ARPA file is corrupt or truncated: rebuild it "
                         "(python lm/build.py) or download it again")
        self.path, self.line_no, self.problem = Path(path), line_no, problem
        self.source = None if source is None else Path(source)

    def naming(self, source: str | Path) -> ArpaFormatError:
        """The same error naming ``source``, the file ``path`` was decompressed from."""
        return ArpaFormatError(self.path, self.line_no, self.problem, source)


@dataclass(frozen=True)
class ArpaHeader:
    """The ``\\data\\`` section. counts[n-1] = number of n-grams the file declares."""

    path: Path
    counts: tuple[int, ...]

    @property
    def order(self) -> int:
        return len(self.counts)


def is_gzip(path: str | Path) -> bool:
    """True when the file starts with the gzip magic bytes (whatever its suffix)."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, transparently gunzipping; UTF-8 (ARPA files from KenLM/SRILM are)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    raw = gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # noqa: SIM115 (caller closes)
    return io.TextIOWrapper(raw, encoding="utf-8", newline=None)


def looks_like_arpa(path: str | Path) -> bool:
    """True when the first non-blank line is ``\\data\\`` (reads only the start of the file)."""
    try:
        with open_text(path) as f:
            for line in f:
                if line.strip():
                    return line.strip() == "\\data\\"
    except (UnicodeDecodeError, OSError, EOFError, zlib.error):
        return False
    return False


class _Lines:
    """Numbered, stripped lines of an open file with decode/gzip errors turned into ArpaFormatError."""

    def __init__(self, path: Path, f: IO[str]):
        self.path, self.f, self.line_no = path, f, 0

    def __iter__(self) -> Iterator[str]:
        try:
            for line in self.f:
                self.line_no += 1
                yield line.strip()
        except UnicodeDecodeError as exc:
            raise ArpaFormatError(self.path, self.line_no + 1,
                                  f"not UTF-8 text ({exc.reason})") from None
        except (EOFError, OSError, zlib.error) as exc:  # OSError includes gzip.BadGzipFile
            raise ArpaFormatError(self.path, self.line_no + 1,
                                  f"the gzip stream ends early or is damaged ({exc})") from None


def _read_header(path: Path, numbered: _Lines, lines: Iterator[str]
                 ) -> tuple[ArpaHeader, str | None]:
    """Consume the header; also return the first section line when no blank line preceded it."""
    seen_data = False
    counts: dict[int, int] = {}
    pending: str | None = None
    for line in lines:
        if not line:
            if counts:
                break  # a blank line after the counts ends the header
            continue
        if not seen_data:
            if line != "\\data\\":
                raise ArpaFormatError(path, numbered.line_no,
                                      f"expected '\\data\\' to open an ARPA file, found {line[:60]!r}")
            seen_data = True
            continue
        match = _COUNT_LINE.match(line)
        if match:
            counts[int(match.group(1))] = int(match.group(2))
            continue
        if _SECTION_LINE.match(line) and counts:
            pending = line
            break
        raise ArpaFormatError(path, numbered.line_no,
                              f"expected an 'ngram N=count' line in the header, found {line[:60]!r}")
    if not seen_data:
        raise ArpaFormatError(path, None, "empty file, no '\\data\\' header")
    if not counts:
        raise ArpaFormatError(path, numbered.line_no, "the header declares no 'ngram N=count' lines")
    orders = sorted(counts)
    if orders != list(range(1, len(orders) + 1)):
        raise ArpaFormatError(path, None, f"header orders {orders} are not 1..N")
    return ArpaHeader(path, tuple(counts[n] for n in orders)), pending


def read_arpa_header(path: str | Path) -> ArpaHeader:
    """Parse the ``\\data\\`` counts (reads only the first lines). ArpaFormatError if malformed."""
    path = Path(path)
    with open_text(path) as f:
        numbered = _Lines(path, f)
        return _read_header(path, numbered, iter(numbered))[0]


def _iter_entries(path: Path, max_order: int | None = None
                  ) -> Iterator[tuple[int, float, tuple[str, ...], float]]:
    """Single pass over the file: (order, log10 prob, words, log10 backoff) for every entry.

    Checks each section's count against the header as it closes, and the final ``\\end\\``.
    Stops early (without those end checks) once the sections up to ``max_order`` are read.
    """
    for _, order, prob, words, backoff in iter_numbered_entries(path, max_order):
        yield order, prob, words, backoff


def iter_numbered_entries(path: str | Path, max_order: int | None = None
                          ) -> Iterator[tuple[int, int, float, tuple[str, ...], float]]:
    """Like the entries of :func:`validate_arpa`, with the line number first:
    (line_no, order, log10 prob, words, log10 backoff or 0.0). Stops after ``max_order``."""
    path = Path(path)
    with open_text(path) as f:
        numbered = _Lines(path, f)
        lines = iter(numbered)
        header, pending = _read_header(path, numbered, lines)
        order, found = 0, 0

        def close_section() -> None:
            if order and found != header.counts[order - 1]:
                raise ArpaFormatError(path, numbered.line_no, f"the header declares "
                                      f"{header.counts[order - 1]} {order}-grams but the section "
                                      f"holds {found}")

        stream = lines if pending is None else _chain_first(pending, lines)
        for line in stream:
            if not line:
                continue
            if line.startswith("\\"):
                close_section()
                if line == "\\end\\":
                    if order != header.order:
                        raise ArpaFormatError(path, numbered.line_no, f"'\\end\\' after the "
                                              f"{order}-grams but the header declares "
                                              f"{header.order} orders")
                    return
                match = _SECTION_LINE.match(line)
                if not match or int(match.group(1)) != order + 1:
                    raise ArpaFormatError(path, numbered.line_no,
                                          f"expected '\\{order + 1}-grams:', found {line[:60]!r}")
                if max_order is not None and order == max_order:
                    return
                order, found = order + 1, 0
                continue
            if order == 0:
                raise ArpaFormatError(path, numbered.line_no,
                                      f"an entry before the first section: {line[:60]!r}")
            yield (numbered.line_no, order, *_parse_entry(path, numbered.line_no, line, order))
            found += 1
        raise ArpaFormatError(path, None, f"the file ends inside the '\\{order}-grams:' section "
                              f"after {found} entries, with no '\\end\\': truncated")


def _chain_first(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def iter_section(path: str | Path, order: int) -> Iterator[tuple[float, tuple[str, ...], float]]:
    """Stream the ``\\order-grams:`` section: (log10 prob, words, log10 backoff or 0.0).

    Reads only up to the end of that section (unigrams touch only the start of the file). Raises
    ArpaFormatError when an entry is malformed or the section is truncated or miscounted.
    """
    path = Path(path)
    header = read_arpa_header(path)
    if not 1 <= order <= header.order:
        raise ValueError(f"{path}: has orders 1..{header.order}, no {order}-grams section")
    for n, prob, words, backoff in _iter_entries(path, max_order=order):
        if n == order:
            yield prob, words, backoff


def _parse_entry(path: Path, line_no: int, line: str, order: int
                 ) -> tuple[float, tuple[str, ...], float]:
    parts = line.split()
    if len(parts) not in (order + 1, order + 2):
        raise ArpaFormatError(path, line_no, f"a {order}-gram entry needs log10prob, {order} "
                              f"word(s) and an optional backoff; found {line[:80]!r}")
    try:
        prob = float(parts[0])
        backoff = float(parts[order + 1]) if len(parts) == order + 2 else 0.0
    except ValueError:
        raise ArpaFormatError(path, line_no, f"non-numeric probability/backoff in {line[:80]!r}"
                              ) from None
    return prob, tuple(parts[1:order + 1]), backoff


def validate_arpa(path: str | Path) -> ArpaHeader:
    """One streaming pass over the whole file: every section present with its declared count,
    entries well formed, every word of a longer n-gram among the 1-grams (KenLM rejects the file
    otherwise), ``\\end\\`` at the end. Returns the header; ArpaFormatError otherwise.
    """
    path = Path(path)
    header = read_arpa_header(path)
    words = set(UNKNOWN_WORDS)   # KenLM maps these to <unk> wherever they appear
    for line_no, order, _, gram, _ in iter_numbered_entries(path):
        if order == 1:
            words.add(gram[0])
        elif not words.issuperset(gram):
            word = next(w for w in gram if w not in words)
            raise ArpaFormatError(path, line_no, f"the {order}-gram {' '.join(gram)!r} uses the "
                                  f"word {word!r}, which is not among the 1-grams (KenLM "
                                  "rejects it)")
    return header
