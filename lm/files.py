"""Turn what a user passes as ``--lm`` (a file or a known name) into a file KenLM can read.

KenLM reads .arpa and its own binaries but not gzip; ``.arpa.gz`` is decompressed once into the
cache (``$CTCLAB_CACHE_DIR/lm`` or ``~/.cache/ctclab/lm``), keyed by the source's path, size and
mtime so an edited source is decompressed again, and written atomically so an interrupted run
never leaves a truncated ARPA behind.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

from ctclab.core.atomic import atomic_open
from ctclab.core.progress import progress_bar
from ctclab.lm.arpa import is_gzip
from ctclab.lm.constants import COPY_CHUNK_BYTES, PROGRESS_MIN_GZIP_BYTES
from ctclab.lm.fetch import KNOWN_RESOURCES, fetch_resource, lm_cache_dir


def resolve_lm_path(path_or_name: str | os.PathLike,
                    cache_root: str | os.PathLike | None = None, *,
                    progress: bool = True) -> Path:
    """A KenLM-readable file for ``path_or_name``.

    - an existing .arpa / .binary / .klm (any non-gzip file): returned as is;
    - an existing gzip file (.arpa.gz): decompressed once into ``<cache_root>/lm`` and that path
      returned (later calls reuse it while the source's size and mtime are unchanged);
    - a known name such as ``librispeech-4gram`` (see ``lm.fetch.KNOWN_RESOURCES``): downloaded
      into the cache (needs the internet) and then resolved as above.
    cache_root: the ctclab cache root (default ``$CTCLAB_CACHE_DIR`` or ``~/.cache/ctclab``).
    progress: show the download's and the decompression's progress (False: nothing is printed).
    Raises FileNotFoundError listing the known names when it is neither a file nor a known name.
    """
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return _decompress_cached(path, lm_cache_dir(cache_root), progress) if is_gzip(path) \
            else path
    name = str(path_or_name)
    if name in KNOWN_RESOURCES:
        fetched = fetch_resource(name, dest_dir=lm_cache_dir(cache_root), progress=progress)
        return resolve_lm_path(fetched, cache_root, progress=progress)
    if path.exists():
        raise ValueError(f"{path} is not a file; pass a KenLM .arpa, .arpa.gz or .binary file")
    lm_names = sorted(n for n, r in KNOWN_RESOURCES.items() if r.is_lm)
    raise FileNotFoundError(f"language model not found: {path}; pass a KenLM .arpa, .arpa.gz or "
                            f".binary file, or one of the known names {lm_names}")


def decompressed_name(path: Path) -> str:
    """Cache file name for a gzip source: its stem plus a key of (resolved path, size, mtime)."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    stem = path.name.removesuffix(".gz")
    base, dot, ext = stem.rpartition(".")
    return f"{base}-{key[:12]}.{ext}" if dot and base else f"{stem}-{key[:12]}"


def _decompress_cached(path: Path, cache_dir: Path, progress: bool) -> Path:
    target = cache_dir / decompressed_name(path)
    if target.is_file():
        return target
    try:  # atomic: readers see the whole file or none, and a failure leaves no temp file
        with atomic_open(target, "wb") as out, gzip.open(path, "rb") as src:
            _copy_with_progress(src, out, path, progress)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # truncated / bad header / bad data
        raise ValueError(f"{path}: could not decompress ({exc}); the gzip file is damaged or "
                         "truncated: download or rebuild it") from exc
    return target


def _copy_with_progress(src, out, path: Path, progress: bool) -> None:
    """Copy a gzip stream with a progress display (when ``progress`` and the file is large) over
    the compressed bytes read."""
    total = path.stat().st_size
    raw = src.fileobj  # the underlying compressed file: its position is our progress
    bar = progress_bar(total, f"gunzip {path.name}", "B", leave=False,
                       enabled=progress and total >= PROGRESS_MIN_GZIP_BYTES)
    done = 0
    try:
        while True:
            chunk = src.read(COPY_CHUNK_BYTES)
            if not chunk:
                break
            out.write(chunk)
            bar.update(raw.tell() - done)
            done = raw.tell()
    finally:
        bar.close()


def file_fingerprint(path_or_name: str | os.PathLike) -> str:
    """What an LM or word-list file is, cheaply enough to check on every run: ``size:sha256``
    over its size and its first and last MiB (a 1 GB 4-gram is not read whole). Two files with
    the same name in two folders differ here; a file edited or replaced in place too. A known
    name (``librispeech-4gram``: a pinned download) is ``name:<name>``.
    FileNotFoundError when it is neither a file nor a known name."""
    path = Path(path_or_name).expanduser()
    if not path.is_file():
        name = str(path_or_name)
        if name in KNOWN_RESOURCES:
            return f"name:{name}"
        raise FileNotFoundError(f"file not found: {path}")
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(COPY_CHUNK_BYTES))
        if size > 2 * COPY_CHUNK_BYTES:
            f.seek(size - COPY_CHUNK_BYTES)
        digest.update(f.read())
    return f"{size}:{digest.hexdigest()[:24]}"
