"""Download the LibriSpeech LM resources (OpenSLR resource 11) for users with the internet.

    python -m ctclab.lm.fetch list
    python -m ctclab.lm.fetch librispeech-4gram [--dest DIR]

Downloads resume (HTTP Range) after an interruption, show a progress bar, and are checked: the
size against the server's Content-Length and a sanity floor, and a SHA-256 that is recorded beside
the file on first download (``<file>.sha256``) and verified on every later use. OpenSLR publishes
no checksums, so none are hard-coded; pass ``sha256=`` to pin one. Offline, a ConnectionError
says so and how to supply the file by hand.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctclab.core.atomic import atomic_write_text
from ctclab.core.options import HelpFormatter
from ctclab.core.paths import default_cache_root
from ctclab.core.progress import progress_bar
from ctclab.lm.constants import COPY_CHUNK_BYTES, LM_CACHE_SUBDIR

# Official host first, then OpenSLR's own mirrors (same paths).
OPENSLR_11_BASES = (
    "https://www.openslr.org/resources/11/",
    "https://us.openslr.org/resources/11/",
    "https://openslr.trmal.net/resources/11/",
)
# A download smaller than this fraction of the nominal size is an error page, not the file.
MIN_SIZE_FRACTION = 0.5
CHECKSUM_SUFFIX = ".sha256"
PART_SUFFIX = ".part"
HTTP_TIMEOUT_S = 30

_MB = 1_000_000


def lm_cache_dir(cache_root: str | os.PathLike | None = None) -> Path:
    """Folder for decompressed and fetched LM files: ``<cache root>/lm``."""
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    return root / LM_CACHE_SUBDIR


@dataclass(frozen=True)
class Resource:
    """One downloadable file. nominal_bytes: the size OpenSLR lists (approximate, for a sanity
    floor); sha256: a pinned checksum or None (then recorded on first download)."""

    name: str
    filename: str
    nominal_bytes: int
    is_lm: bool
    description: str
    sha256: str | None = None


KNOWN_RESOURCES: dict[str, Resource] = {r.name: r for r in (
    Resource("librispeech-3gram", "3-gram.arpa.gz", 759 * _MB, True,
             "LibriSpeech 3-gram, unpruned (upper case)"),
    Resource("librispeech-3gram-pruned-1e-7", "3-gram.pruned.1e-7.arpa.gz", 34 * _MB, True,
             "LibriSpeech 3-gram pruned with threshold 1e-7"),
    Resource("librispeech-3gram-pruned-3e-7", "3-gram.pruned.3e-7.arpa.gz", 13 * _MB, True,
             "LibriSpeech 3-gram pruned with threshold 3e-7"),
    Resource("librispeech-4gram", "4-gram.arpa.gz", 1300 * _MB, True,
             "LibriSpeech 4-gram, unpruned (upper case)"),
    Resource("librispeech-vocab", "librispeech-vocab.txt", 1_700_000, False,
             "the 200k-word LM vocabulary (one word a line)"),
    Resource("librispeech-lexicon", "librispeech-lexicon.txt", 5_300_000, False,
             "pronunciation lexicon (word + ARPAbet phones)"),
)}


class ChecksumError(ValueError):
    """A file's SHA-256 differs from the pinned or recorded one."""


class ShortDownloadError(ValueError):
    """The server sent far fewer bytes than the file has (an error page): try another mirror."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(COPY_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str | None = None) -> str:
    """Check ``path`` against ``expected`` or else its recorded ``<path>.sha256``; record one if
    there is none. Returns the digest; raises ChecksumError (naming both digests) on a mismatch."""
    path = Path(path)
    digest = file_sha256(path)
    sidecar = path.with_name(path.name + CHECKSUM_SUFFIX)
    fields = sidecar.read_text().split() if sidecar.is_file() else []
    recorded = fields[0] if fields else None  # an empty sidecar records nothing: write one
    for source, want in (("pinned", expected), (f"recorded in {sidecar.name}", recorded)):
        if want is not None and want.lower() != digest:
            raise ChecksumError(f"{path}: SHA-256 {digest} does not match the {source} {want}; "
                                "the file is corrupt or was replaced: delete it and fetch again")
    if recorded is None:
        atomic_write_text(sidecar, f"{digest}  {path.name}\n")
    return digest


def fetch_resource(name: str, dest_dir: str | os.PathLike | None = None, *,
                   base_urls: tuple[str, ...] = OPENSLR_11_BASES,
                   opener: Callable[..., Any] | None = None,
                   min_fraction: float = MIN_SIZE_FRACTION, progress: bool = True) -> Path:
    """Download known resource ``name`` into ``dest_dir`` (default ``<cache root>/lm``), or return
    the existing verified file. base_urls: mirrors tried in order; opener: urlopen-like (tests);
    min_fraction: reject downloads smaller than this fraction of the nominal size; progress:
    show the download's progress (False: nothing is printed).
    Raises ValueError listing known names, ConnectionError when no mirror gives the file
    (offline, or only error pages), ChecksumError when corrupt."""
    if name not in KNOWN_RESOURCES:
        raise ValueError(f"unknown resource {name!r}; known: {sorted(KNOWN_RESOURCES)}")
    res = KNOWN_RESOURCES[name]
    if dest_dir is None:
        dest_dir = lm_cache_dir()
    dest = Path(dest_dir) / res.filename
    if dest.is_file():
        verify_checksum(dest, res.sha256)
        return dest
    errors = []
    for base in base_urls:
        try:
            download(base + res.filename, dest, min_bytes=int(res.nominal_bytes * min_fraction),
                     sha256=res.sha256, opener=opener, progress=progress)
            return dest
        except (ConnectionError, ShortDownloadError) as exc:
            errors.append(str(exc))
    raise ConnectionError(
        f"could not download {res.filename} from any OpenSLR mirror (offline?):\n  "
        + "\n  ".join(errors) + f"\nDownload it by hand from {base_urls[0]}{res.filename} and pass "
        f"its path instead of the name {name!r} (e.g. /path/to/{res.filename})")


def download(url: str, dest: str | os.PathLike, *, min_bytes: int = 0, sha256: str | None = None,
             opener: Callable[..., Any] | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run.

    The finished file appears at ``dest`` only after its size and checksum check out (atomic
    rename). opener: ``urllib.request.urlopen``-like callable (tests pass a fake); progress: show
    a progress bar (plain lines off a terminal; False: nothing is printed). Raises
    ConnectionError when the server cannot be reached, ShortDownloadError (a ValueError) for a
    download shorter than ``min_bytes``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "ctclab-lm-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = (opener or urllib.request.urlopen)(request, timeout=HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range past the end: the .part is already whole
            response = None
        else:
            raise ConnectionError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"{url}: cannot connect ({reason})") from exc
    if response is not None:
        with response:
            status = getattr(response, "status", None) or response.getcode()
            resumed = have > 0 and status == 206
            if not resumed:
                have = 0  # the server ignored the Range: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            bar = progress_bar(total, dest.name, "B", initial=have, leave=False,
                               enabled=progress)
            received = have
            with open(part, "ab" if resumed else "wb") as out:
                try:
                    for chunk in iter(lambda: response.read(COPY_CHUNK_BYTES), b""):
                        out.write(chunk)
                        bar.update(len(chunk))
                        received += len(chunk)
                except OSError as exc:
                    raise ConnectionError(f"{url}: connection lost after {received} bytes "
                                          f"({exc}); run again to resume") from exc
                finally:
                    bar.close()
            got = part.stat().st_size
            if total is not None and got != total:
                raise ConnectionError(f"{url}: got {got} of {total} bytes; run again to resume")
    got = part.stat().st_size
    if got < min_bytes:
        part.unlink()
        raise ShortDownloadError(f"{url}: downloaded only {got} bytes, expected at least "
                                 f"{min_bytes}; the server sent something else (an error page?)")
    try:
        verify_checksum(part, sha256)
    except ChecksumError:
        part.unlink()
        part.with_name(part.name + CHECKSUM_SUFFIX).unlink(missing_ok=True)
        raise
    os.replace(part.with_name(part.name + CHECKSUM_SUFFIX),
               dest.with_name(dest.name + CHECKSUM_SUFFIX))
    os.replace(part, dest)
    return dest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ctclab.lm.fetch",
                                     description="Download LibriSpeech LM resources (OpenSLR 11): "
                                     "resumable, checksummed, into the LM cache.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("name", help="'list' (print the known resources) or one of: "
                        + ", ".join(KNOWN_RESOURCES))
    parser.add_argument("--dest", type=Path, help="folder to download into (default: "
                        "<cache root>/lm, e.g. ~/.cache/ctclab/lm)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.name == "list":
        print(f"{'name':32} {'file':28} {'size':>8}  description")
        for res in KNOWN_RESOURCES.values():
            print(f"{res.name:32} {res.filename:28} {res.nominal_bytes / _MB:7.0f}M  "
                  f"{res.description}")
        return 0
    try:
        path = fetch_resource(args.name, args.dest)
    except (ValueError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name}: {path} ({path.stat().st_size / _MB:.1f} MB, sha256 {file_sha256(path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
