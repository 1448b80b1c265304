"""One file holding named numpy arrays and a JSON header, read back by mmap (no copy, no parse).

Layout: MAGIC, the header's byte length (8 bytes, little endian), the UTF-8 JSON header
``{"version", "meta", "arrays": {name: {"dtype", "shape", "offset"}}}``, then each array's raw
bytes at a 64-byte aligned offset from the data start. Loading maps the file read-only and wraps
each array around its bytes, so a second load costs milliseconds whatever the LM's size, and
processes that load the same file share its pages. The mapping is populated when it is made
(MAP_POPULATE, Linux): ~10 ms per 100 MB of cached file at load instead of a page fault at the
first touch of each 4 KiB page during the search. Arrays a caller names ``private`` are copied
out of the mapping into the process's own memory instead (lm.constants.ARRAY_LM_PRIVATE_ARRAYS
says why), and their pages of the mapping are let go. Written atomically (ctclab.core.atomic): a
reader sees a whole file or none.
"""
from __future__ import annotations

import json
import mmap
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.core.atomic import atomic_open

MAGIC = b"ctclab n-gram arrays\n"
FORMAT_VERSION = 1
_ALIGN = 64
_LENGTH_BYTES = 8


class ArrayFileError(ValueError):
    """A file that is not a complete array file of this version (damaged, truncated, older)."""


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def write_array_file(path: str | os.PathLike, arrays: dict[str, np.ndarray],
                     meta: dict[str, Any]) -> Path:
    """Write ``arrays`` (C-contiguous copies are made where needed) and ``meta`` (JSON-able)."""
    specs: dict[str, dict[str, Any]] = {}
    offset = 0
    for name, array in arrays.items():
        array = np.asarray(array)
        specs[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        offset = _aligned(offset + array.nbytes)
    header = json.dumps({"version": FORMAT_VERSION, "meta": meta, "arrays": specs}).encode()
    start = _aligned(len(MAGIC) + _LENGTH_BYTES + len(header))
    with atomic_open(path, "wb") as out:
        out.write(MAGIC + len(header).to_bytes(_LENGTH_BYTES, "little") + header)
        out.write(b"\0" * (start - out.tell()))
        for name, array in arrays.items():
            out.write(b"\0" * (start + specs[name]["offset"] - out.tell()))
            out.write(np.ascontiguousarray(array).tobytes())
    return Path(path)


def read_array_file(path: str | os.PathLike, private: Collection[str] = ()
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a file made by write_array_file; arrays are read-only views of the mmap,
    except those named in ``private``: read-only copies in the process's own memory.

    Raises ArrayFileError when the file is not one (magic, version, header) or is shorter than its
    header says (truncated).
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < len(MAGIC) + _LENGTH_BYTES:
            raise ArrayFileError(f"{path}: too short to be an n-gram array file")
        populate = getattr(mmap, "MAP_POPULATE", 0)
        if populate:
            mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | populate,
                               prot=mmap.PROT_READ)
        else:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if mapped[: len(MAGIC)] != MAGIC:
        raise ArrayFileError(f"{path}: not an n-gram array file")
    length = int.from_bytes(mapped[len(MAGIC): len(MAGIC) + _LENGTH_BYTES], "little")
    header_end = len(MAGIC) + _LENGTH_BYTES + length
    try:
        header = json.loads(mapped[len(MAGIC) + _LENGTH_BYTES: header_end].decode())
        version = header["version"]
        specs = header["arrays"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArrayFileError(f"{path}: damaged header ({exc})") from None
    if version != FORMAT_VERSION:
        raise ArrayFileError(f"{path}: format version {version}, this code reads "
                             f"{FORMAT_VERSION}")
    start = _aligned(header_end)
    arrays = {}
    for name, spec in specs.items():
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        begin = start + int(spec["offset"])
        if begin + count * dtype.itemsize > size:
            raise ArrayFileError(f"{path}: truncated (array {name!r} runs past the end)")
        view = np.frombuffer(mapped, dtype, count, begin).reshape(shape)
        if name in private:
            arrays[name] = np.array(view)
            arrays[name].flags.writeable = False   # read-only, as the views
            _let_go(mapped, begin, count * dtype.itemsize)
        else:
            arrays[name] = view
    return arrays, header["meta"]


def _let_go(mapped: mmap.mmap, begin: int, size: int) -> None:
    """Drop the whole pages of bytes [begin, begin + size) from this process's mapping (they stay
    in the page cache, and would fault back in if read): a copied array then takes its memory
    once, not twice. Nothing where the platform lacks madvise."""
    dontneed = getattr(mmap, "MADV_DONTNEED", None)
    if dontneed is None or not hasattr(mapped, "madvise"):
        return
    page = mmap.PAGESIZE
    first, last = -(-begin // page) * page, (begin + size) // page * page
    if last > first:
        mapped.madvise(dontneed, first, last - first)
