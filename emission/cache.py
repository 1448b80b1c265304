"""The emission cache: per-frame CTC log-probs of one model over one corpus split, kept on disk.

Layout of one cache directory (one per model, revision, source, split)::

    meta.json        CacheMeta (model, revision, vocabulary, frame shift, dtype, ..., complete flag)
    manifest.tsv     one line per utterance: id, num_frames, audio_seconds, shard, offset, text
    source.tsv       the audio source as last seen: id, size, mtime_ns, path of every listed
                     utterance (cached, skipped or pending); a later run compares the source
                     with it to tell new, removed and changed audio apart
    shards/NNNNNN.npy  (N_frames, V) float16/float32 arrays, the frames of several utterances
                     concatenated; memory-mapped on read

Crash safety: a shard is written to a temp name, fsynced and renamed; only then are its utterances'
manifest lines appended (and fsynced). A killed run therefore leaves at worst an orphan shard (never
referenced, overwritten later) or a torn last manifest line (dropped on resume). Resuming skips the
ids already in the manifest; ``complete`` is set in meta.json (atomically) only once all are done.
Temp files of a write cut short (``.meta.json.*.tmp``, ``shards/.NNNNNN.npy.*.tmp``) are removed
when a writer next opens the directory (it holds the lock, so no other write is in flight).
Distributed workers (emission/distributed.py) write shards under temp names in a staging folder
of their run, ``shards/.stage-<run>/`` (:meth:`CacheWriter.staging`); the writer alone publishes
them (:meth:`CacheWriter.add_shard_file`: rename, then manifest lines), so the same guarantees
hold. The run removes its staging folder when it ends, and a killed run's is removed with the temp
files: a worker that Ray has not stopped yet then cannot create a file there.

Tolerance. Two caches of the same model and audio (one resumed, or made with other batch sizes)
agree within :func:`storage_tolerance`: float32 storage within BATCH_TOLERANCE (the float32
compute's summation-order noise); float16 storage within that plus one float16 step of the value,
since a value near a rounding boundary may round either way (up to 1/64 for log-probs in [-32, -16]).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import numpy as np

from ctclab.core.atomic import atomic_open, atomic_write_bytes
from ctclab.core.paths import default_cache_root  # noqa: F401 - re-exported: one root for all stages
from ctclab.core.vocabulary import Vocabulary
from ctclab.emission.options import COMPUTE_DTYPES, DEFAULT_COMPUTE_DTYPE, STORAGE_DTYPES

# Bumped when the on-disk layout changes; recorded in meta.json.
TOOL_VERSION = "ctclab-cache/1"
# float16 halves disk and page-cache use; log-probs only need ~3 significant digits for decoding
# (rounding error ~1e-3 relative, far below any beam-pruning threshold).
DEFAULT_DTYPE = "float16"
# float32 compute on a CPU: a batched and a one-at-a-time run of the same utterance differ by less
# than this (summation order in the kernels; tests/test_extract.py measures it).
BATCH_TOLERANCE = 1e-4
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.tsv"
SOURCE_FILE = "source.tsv"
SHARD_DIR = "shards"
LOCK_FILE = ".lock"
# Name prefix of a distributed run's staging folder in shards/ (CacheWriter.staging).
STAGING_PREFIX = ".stage-"
# Seconds a staging folder's removal is retried while a file whose creation was under way when
# it was renamed away may still appear in it (a creation by name fails once it is renamed).
STAGING_REMOVE_WAIT_S = 30.0
MANIFEST_COLUMNS = ("id", "num_frames", "audio_seconds", "shard", "offset", "text")
SOURCE_COLUMNS = ("id", "size", "mtime_ns", "path")
# Fields of CacheMeta that must agree before new utterances may be added to an existing cache.
IDENTITY_FIELDS = ("model", "revision", "source", "split", "vocabulary", "frame_shift_s",
                   "sample_rate", "dtype", "compute_dtype", "tool_version", "data_key")


def slug(text: str) -> str:
    """A path component for a model id / revision / source / split (``a/b`` -> ``a--b``)."""
    text = str(text).strip().replace("/", "--").replace(":", "-")
    text = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._")
    return text or "_"


def storage_tolerance(dtype: str, values: np.ndarray) -> np.ndarray:
    """Per-value bound on the difference between two caches of the same model and audio stored
    in ``dtype`` (see the module docstring): BATCH_TOLERANCE, plus one float16 step at each value
    for float16 storage. values: log-probs (any shape); returns float32 of the same shape."""
    values = np.asarray(values, dtype=np.float32)
    bound = np.full(values.shape, BATCH_TOLERANCE, dtype=np.float32)
    if dtype == "float16":
        bound += np.spacing(np.abs(values).astype(np.float16)).astype(np.float32)
    return bound


def cache_dir_for(root: str | Path, model: str, revision: str, source: str, split: str) -> Path:
    """The cache directory for one (model, revision, source, split) under ``root``."""
    return Path(root) / slug(model) / slug(revision) / slug(source) / slug(split)


@dataclass(frozen=True)
class SkippedItem:
    """An input that could not be read (with ``--skip-bad``): its id, file and the reason."""

    id: str
    path: str
    reason: str


@dataclass(frozen=True)
class CacheMeta:
    """What made the emissions. vocabulary: ``Vocabulary.to_dict()``; frame_shift_s: seconds per
    frame; sample_rate: Hz of the audio fed to the model; dtype: storage dtype of the arrays;
    compute_dtype: precision of the model forward that made them (ExtractOptions.dtype)."""

    model: str
    revision: str
    source: str
    split: str
    vocabulary: dict
    frame_shift_s: float
    sample_rate: int = 16_000
    dtype: str = DEFAULT_DTYPE
    tool_version: str = TOOL_VERSION
    created: str = ""
    skipped: tuple[SkippedItem, ...] = ()
    complete: bool = False
    # Identifies the corpus where ids are only locally meaningful (a manifest or dataset path);
    # "" for LibriSpeech (globally unique ids, so a moved data folder still matches).
    data_key: str = ""
    # The model forward's precision (--dtype): arrays of two precisions must not share a cache.
    # A meta.json written before this field existed reads as the stage's default (float32): what
    # such a cache was made with unless --dtype was given. Imports keep the default: the model ran
    # elsewhere, and an import is keyed by its content (data_key) instead.
    compute_dtype: str = DEFAULT_COMPUTE_DTYPE
    # Free-form provenance (device, batching strategy); not used for matching.
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"cache dtype must be one of {STORAGE_DTYPES}, got {self.dtype!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"cache compute_dtype must be one of {COMPUTE_DTYPES}, got "
                             f"{self.compute_dtype!r}")
        if not self.frame_shift_s > 0:
            raise ValueError(f"frame_shift_s must be positive seconds, got {self.frame_shift_s}")
        Vocabulary.from_dict(self.vocabulary)  # raises ValueError on a malformed vocabulary
        if not self.created:
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            object.__setattr__(self, "created", stamp)
        object.__setattr__(self, "skipped", tuple(
            s if isinstance(s, SkippedItem) else SkippedItem(**s) for s in self.skipped))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, where: Path) -> CacheMeta:
        try:
            data = json.loads(text)
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where} is not a valid ctclab cache meta file ({exc}); delete the "
                             "cache directory and run eval/emit.py again") from exc

    @classmethod
    def read(cls, path: str | Path) -> CacheMeta | None:
        """The meta of the cache directory ``path``; None when it has none."""
        file = Path(path) / META_FILE
        if not file.is_file():
            return None
        return cls.from_json(file.read_text(encoding="utf-8"), file)


@dataclass(frozen=True)
class CacheIdentity:
    """What a cache is, for a results folder to record and compare: model, revision, source,
    split, and ``content_key``, a hash of everything the emissions were made from and hold
    (vocabulary, frame shift, sample rate, storage and compute dtypes, data key, and every
    utterance's id, frame count, audio seconds and reference text, and the skipped ids). Two
    caches with equal identities hold the same utterances and references from the same model and
    data; the key changes when a reference is corrected or the cache is extended."""

    model: str
    revision: str
    source: str
    split: str
    content_key: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class UtteranceRecord:
    """One cached utterance: id, reference text, frame count, audio length in seconds, and where
    its frames live (rows ``offset:offset + num_frames`` of ``shards/<shard>``)."""

    id: str
    text: str
    num_frames: int
    audio_seconds: float
    shard: str
    offset: int

    def manifest_line(self) -> str:
        text = " ".join(self.text.split())  # no tabs/newlines inside the TSV field
        return (f"{self.id}\t{self.num_frames}\t{self.audio_seconds:.6f}\t{self.shard}\t"
                f"{self.offset}\t{text}\n")


def _read_manifest(path: Path) -> list[UtteranceRecord]:
    """Parse manifest.tsv; a torn last line (no trailing newline, from a kill) is ignored."""
    if not path.exists():
        return []
    data = path.read_text(encoding="utf-8")
    lines = data.split("\n")[:-1]  # the piece after the last newline is empty or torn
    records = []
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split("\t", 5)
        try:
            utt, frames, seconds, shard, offset, text = parts
            records.append(UtteranceRecord(utt, text, int(frames), float(seconds), shard,
                                           int(offset)))
        except ValueError:  # wrong field count or a non-numeric field
            raise ValueError(f"{path}:{number} is malformed (expected {len(MANIFEST_COLUMNS)} "
                             f"tab-separated fields: {', '.join(MANIFEST_COLUMNS)}); delete the "
                             "cache directory and extract again") from None
    return records


def _read_snapshot(path: Path) -> dict[str, tuple[int, int]] | None:
    """source.tsv as id -> (size, mtime_ns); None when the cache has none (made before ctclab
    recorded its source)."""
    if not path.is_file():
        return None
    out = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], start=2):
        parts = line.split("\t", 3)
        try:
            out[parts[0]] = (int(parts[1]), int(parts[2]))
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{number} is malformed (expected {', '.join(SOURCE_COLUMNS)})"
                             "; delete the file and run again (the next run records the source "
                             "anew)") from None
    return out


def shard_array(arrays: Sequence[np.ndarray], dtype: str) -> np.ndarray:
    """The (sum T_i, V) array of one shard: utterances' frames concatenated, in ``dtype``."""
    return np.concatenate(arrays, axis=0).astype(dtype, copy=False)


def write_shard(handle: IO[bytes], array: np.ndarray) -> None:
    """Write one shard's .npy bytes (of :func:`shard_array`) to an open binary file: the same
    bytes wherever the shard is written, by the cache writer or by a distributed worker."""
    np.save(handle, array)


def _remove_for_good(folder: Path) -> None:
    """Remove ``folder`` and its files while another process may still be creating files in it
    by name (a killed worker that still runs): the folder is renamed first, so that those
    creations fail from then on, then removed (retried, up to STAGING_REMOVE_WAIT_S, for a
    creation that was under way at the rename)."""
    gone = folder.with_name(f"{folder.name}.removed-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(folder, gone)
    except FileNotFoundError:
        return
    deadline = time.monotonic() + STAGING_REMOVE_WAIT_S
    while True:
        shutil.rmtree(gone, ignore_errors=True)
        if not gone.exists():
            return
        if time.monotonic() > deadline:
            raise OSError(f"could not remove {gone}: a process keeps writing in it; stop it and "
                          "remove the folder")
        time.sleep(0.05)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:
        write_shard(handle, array)


class EmissionCache:
    """Read access to a cache directory. Arrays are memory-mapped; ``log_probs`` returns float32.

    >>> cache = EmissionCache.open(path)
    >>> for record, log_probs in cache:   # log_probs: (T, V) float32, natural-log probabilities
    ...     ...
    """

    def __init__(self, path: Path, meta: CacheMeta, records: list[UtteranceRecord]):
        self.path = Path(path)
        self.meta = meta
        # Sorted by id: a stable order however extraction batched (or resumed) the utterances.
        self._records = sorted(records, key=lambda r: r.id)
        self._index = {r.id: i for i, r in enumerate(self._records)}
        self._shards: dict[str, np.ndarray] = {}
        self._identity: CacheIdentity | None = None

    @classmethod
    def open(cls, path: str | Path, *, allow_incomplete: bool = False) -> EmissionCache:
        """Open a cache directory. FileNotFoundError when it is missing or (unless
        ``allow_incomplete``) not complete, with the command that makes or finishes it."""
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"no emission cache at {path} (missing {META_FILE}); create "
                                    "it with `python eval/emit.py --model ... --split ...` or "
                                    "import one with --import-emissions")
        meta = CacheMeta.from_json(meta_file.read_text(encoding="utf-8"), meta_file)
        if not meta.complete and not allow_incomplete:
            raise FileNotFoundError(f"the emission cache at {path} is incomplete (an interrupted "
                                    "run); run the same eval/emit.py command again to resume it")
        return cls(path, meta, _read_manifest(path / MANIFEST_FILE))

    # ----------------------------------------------------------------------------- metadata
    @property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_dict(self.meta.vocabulary)

    @property
    def frame_shift_s(self) -> float:
        return float(self.meta.frame_shift_s)

    @property
    def records(self) -> list[UtteranceRecord]:
        return list(self._records)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self._records]

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._index

    @property
    def is_complete(self) -> bool:
        return bool(self.meta.complete)

    @property
    def skipped(self) -> tuple[SkippedItem, ...]:
        """Listed utterances whose audio could not be read (``--skip-bad``): not in the cache.
        A run retries one once its file changes."""
        return tuple(s for s in self.meta.skipped if s.id not in self._index)

    @property
    def identity(self) -> CacheIdentity:
        """Model, revision, source, split and a content key (see :class:`CacheIdentity`)."""
        if self._identity is None:
            digest = hashlib.sha256()
            meta = {name: getattr(self.meta, name) for name in IDENTITY_FIELDS}
            if meta["compute_dtype"] == DEFAULT_COMPUTE_DTYPE:
                # Hashed only when not the default, so that the keys of caches made before the
                # field existed (read as the default) stay what results folders recorded.
                del meta["compute_dtype"]
            digest.update(json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
            for r in self._records:  # sorted by id
                digest.update(f"{r.id}\t{r.num_frames}\t{r.audio_seconds:.6f}\t"
                              f"{' '.join(r.text.split())}\n".encode())
            for s in sorted(s.id for s in self.skipped):
                digest.update(f"skipped\t{s}\n".encode())
            self._identity = CacheIdentity(self.meta.model, self.meta.revision, self.meta.source,
                                           self.meta.split, digest.hexdigest()[:32])
        return self._identity

    def source_snapshot(self) -> dict[str, tuple[int, int]] | None:
        """The audio source as last seen, id -> (size, mtime_ns); None when not recorded."""
        return _read_snapshot(self.path / SOURCE_FILE)

    @property
    def total_audio_seconds(self) -> float:
        return float(sum(r.audio_seconds for r in self._records))

    @property
    def total_frames(self) -> int:
        return int(sum(r.num_frames for r in self._records))

    def record(self, utt_id: str) -> UtteranceRecord:
        """The record of ``utt_id``; KeyError naming a few valid ids when absent."""
        try:
            return self._records[self._index[utt_id]]
        except KeyError:
            raise KeyError(f"utterance {utt_id!r} is not in the cache at {self.path} "
                           f"({len(self)} utterances, e.g. {self.ids[:3]})") from None

    # ----------------------------------------------------------------------------- arrays
    def _shard(self, name: str) -> np.ndarray:
        arr = self._shards.get(name)
        if arr is None:
            file = self.path / SHARD_DIR / name
            if not file.is_file():
                raise FileNotFoundError(f"cache shard {file} is missing; delete {self.path} and "
                                        "extract again")
            arr = np.load(file, mmap_mode="r")
            self._shards[name] = arr
        return arr

    def log_probs(self, utt_id: str) -> np.ndarray:
        """(T, V) float32 log-probs of one utterance (a fresh array, safe to modify)."""
        return self._array(self.record(utt_id))

    def _array(self, record: UtteranceRecord) -> np.ndarray:
        rows = self._shard(record.shard)[record.offset:record.offset + record.num_frames]
        return np.array(rows, dtype=np.float32)

    def __iter__(self) -> Iterator[tuple[UtteranceRecord, np.ndarray]]:
        """Yield (record, (T, V) float32 log-probs) in id order."""
        for record in self._records:
            yield record, self._array(record)

    def __repr__(self) -> str:
        return (f"EmissionCache({str(self.path)!r}, model={self.meta.model!r}, "
                f"split={self.meta.split!r}, utterances={len(self)}, "
                f"hours={self.total_audio_seconds / 3600:.2f}, complete={self.is_complete})")


class CacheWriter:
    """Create or resume a cache directory and add utterances batch by batch.

    Holds an exclusive lock (one writer per directory) and, holding it, removes the temp files
    of writes a kill cut short. Opening an existing directory made with a different model,
    vocabulary, dtype, ... raises ValueError naming the differing field.
    Use as a context manager; :meth:`finish` marks the cache complete.
    """

    def __init__(self, path: str | Path, meta: CacheMeta):
        self.path = Path(path)
        (self.path / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        try:
            self._remove_temp_files()
            meta_file = self.path / META_FILE
            if meta_file.exists():
                old = CacheMeta.from_json(meta_file.read_text(encoding="utf-8"), meta_file)
                check_compatible(old, meta, self.path)
                meta = dataclasses.replace(meta, created=old.created, skipped=old.skipped,
                                           complete=old.complete)
            self.meta = meta
            self._records = _read_manifest(self.path / MANIFEST_FILE)
        except BaseException:
            self.close()  # a refused cache must not stay locked while the error is handled
            raise
        self._repair_manifest()
        self._done = {r.id for r in self._records}
        self._next_shard = 1 + max((int(Path(r.shard).stem) for r in self._records), default=-1)
        self._vocab_size = len(meta.vocabulary["labels"])
        self._write_meta()

    def _acquire_lock(self):
        import fcntl

        handle = open(self.path / LOCK_FILE, "w")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise RuntimeError(f"another process is writing the emission cache at {self.path}; "
                               "wait for it to finish (or stop it) and run again") from None
        return handle

    def _remove_temp_files(self) -> None:
        """Delete ``.<name>.*.tmp`` files (core.atomic's temp names) left by a killed write, and
        the staging folders of killed distributed runs."""
        for folder in (self.path, self.path / SHARD_DIR):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        for staging in (self.path / SHARD_DIR).glob(STAGING_PREFIX + "*"):
            if staging.is_dir():
                _remove_for_good(staging)

    @contextmanager
    def staging(self, run: str) -> Iterator[Path]:
        """A new folder ``shards/.stage-<run>/`` where other processes (distributed workers)
        write shard files for :meth:`add_shard_file`, removed with what is left in it when the
        block ends. Removed for good: a killed worker may still run for a moment (Ray kills
        asynchronously) and create files in it by name; once the block has ended, that fails."""
        folder = self.path / SHARD_DIR / f"{STAGING_PREFIX}{run}"
        folder.mkdir()
        try:
            yield folder
        finally:
            _remove_for_good(folder)

    def _repair_manifest(self) -> None:
        """Rewrite the manifest without a torn last line, so appends start on a fresh line."""
        file = self.path / MANIFEST_FILE
        header = "\t".join(MANIFEST_COLUMNS) + "\n"
        body = "".join(r.manifest_line() for r in self._records)
        if not file.exists() or file.read_text(encoding="utf-8") != header + body:
            atomic_write_bytes(file, (header + body).encode("utf-8"))

    def _write_meta(self) -> None:
        file, text = self.path / META_FILE, self.meta.to_json()
        if not file.is_file() or file.read_text(encoding="utf-8") != text:  # no-op runs write nothing
            atomic_write_bytes(file, text.encode("utf-8"))

    @property
    def done_ids(self) -> set[str]:
        """Ids already stored (skip these when resuming)."""
        return set(self._done)

    @property
    def records(self) -> list[UtteranceRecord]:
        """The stored utterances, in the order they were added."""
        return list(self._records)

    @property
    def snapshot(self) -> dict[str, tuple[int, int]] | None:
        """The source as last recorded (source.tsv), id -> (size, mtime_ns); None if never."""
        return _read_snapshot(self.path / SOURCE_FILE)

    def record_source(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        """Record the source as now listed: rows of (id, size, mtime_ns, path); atomic, and
        nothing is written when it is unchanged."""
        lines = ["\t".join(SOURCE_COLUMNS) + "\n"]
        lines += [f"{utt}\t{size}\t{mtime}\t{' '.join(path.split())}\n"
                  for utt, size, mtime, path in rows]
        data = "".join(lines).encode("utf-8")
        file = self.path / SOURCE_FILE
        if not file.is_file() or file.read_bytes() != data:
            atomic_write_bytes(file, data)

    def update_texts(self, texts: dict[str, str]) -> None:
        """Replace the reference text of stored utterances (id -> new text): the emissions do not
        depend on it. Rewrites manifest.tsv atomically."""
        if not texts:
            return
        self._records = [dataclasses.replace(r, text=texts[r.id]) if r.id in texts else r
                         for r in self._records]
        self._repair_manifest()

    def forget_skipped(self, ids: Iterable[str]) -> None:
        """Drop ids from the skipped list (their audio is to be tried again, or left the source)."""
        drop = set(ids)
        kept = tuple(s for s in self.meta.skipped if s.id not in drop)
        if len(kept) != len(self.meta.skipped):
            self.meta = dataclasses.replace(self.meta, skipped=kept)
            self._write_meta()

    def rekey(self, data_key: str, details: dict) -> None:
        """Record a new data key and details for the same emissions (an import whose content was
        verified equal to the cache's)."""
        self.meta = dataclasses.replace(self.meta, data_key=data_key, details=details)
        self._write_meta()

    def reopen(self) -> None:
        """Mark a complete cache incomplete before adding to it, so that a kill in between leaves
        a cache that the next run resumes rather than one that looks finished."""
        if self.meta.complete:
            self.meta = dataclasses.replace(self.meta, complete=False)
            self._write_meta()

    @property
    def is_complete(self) -> bool:
        return bool(self.meta.complete)

    def add_batch(self, items: Sequence[tuple[str, str, float, np.ndarray]]) -> None:
        """Store utterances as one shard. items: (id, text, audio_seconds, (T, V) log-probs)."""
        items = [it for it in items if it[0] not in self._done]
        if not items:
            return
        arrays = []
        for utt, _, _, arr in items:
            arr = np.asarray(arr)
            if arr.ndim != 2 or arr.shape[1] != self._vocab_size:
                raise ValueError(f"emission of {utt!r} has shape {arr.shape}; this cache "
                                 f"stores (T, {self._vocab_size}) arrays")
            arrays.append(arr)
        shard = f"{self._next_shard:06d}.npy"
        _atomic_save_npy(self.path / SHARD_DIR / shard, shard_array(arrays, self.meta.dtype))
        self._next_shard += 1
        self._commit(shard, [(utt, text, seconds, arr.shape[0])
                             for (utt, text, seconds, _), arr in zip(items, arrays, strict=True)])

    def add_shard_file(self, staged: str | Path, items: Sequence[tuple[str, str, float, int]]
                       ) -> None:
        """Store utterances whose shard was written elsewhere (a worker of
        emission.distributed, with :func:`write_shard`, fsynced, under a temp name in
        ``shards/``): the file is checked, renamed to the next shard name, and its utterances
        are committed as by :meth:`add_batch`. items: (id, text, audio_seconds, num_frames) in
        row order. An id already stored is a ValueError (no utterance is stored twice)."""
        staged = Path(staged)
        twice = [it[0] for it in items if it[0] in self._done]
        if twice:
            raise ValueError(f"utterance(s) {twice[:3]} are already in the cache at {self.path}; "
                             "refusing to store them twice")
        frames = sum(int(it[3]) for it in items)
        try:
            array = np.load(staged, mmap_mode="r")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{staged} (written by a worker) is not visible on this machine: the cache "
                "folder must be on a filesystem that every node mounts at the same path") from None
        shape, dtype = array.shape, array.dtype
        del array
        if shape != (frames, self._vocab_size) or dtype != np.dtype(self.meta.dtype):
            raise ValueError(f"{staged} holds a {shape} {dtype} array; this batch needs "
                             f"({frames}, {self._vocab_size}) {self.meta.dtype}")
        shard = f"{self._next_shard:06d}.npy"
        os.replace(staged, self.path / SHARD_DIR / shard)
        self._next_shard += 1
        self._commit(shard, items)

    def _commit(self, shard: str, items: Sequence[tuple[str, str, float, int]]) -> None:
        """Append the manifest lines of the utterances of a published shard (then fsync)."""
        offset, lines, new = 0, [], []
        for utt, text, seconds, frames in items:
            record = UtteranceRecord(utt, text, int(frames), float(seconds), shard, offset)
            offset += int(frames)
            lines.append(record.manifest_line())
            new.append(record)
        with open(self.path / MANIFEST_FILE, "a", encoding="utf-8") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        self._records.extend(new)
        self._done.update(r.id for r in new)

    def add_skipped(self, items: Iterable[SkippedItem]) -> None:
        """Record unreadable inputs in meta.json (deduplicated by id)."""
        known = {s.id for s in self.meta.skipped}
        extra = tuple(s for s in items if s.id not in known)
        if extra:
            self.meta = dataclasses.replace(self.meta, skipped=self.meta.skipped + extra)
            self._write_meta()

    def finish(self) -> EmissionCache:
        """Mark the cache complete (atomically) and return it opened for reading."""
        self.meta = dataclasses.replace(self.meta, complete=True)
        self._write_meta()
        self.close()
        return EmissionCache.open(self.path)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> CacheWriter:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_compatible(old: CacheMeta, new: CacheMeta, path: Path) -> None:
    """ValueError when ``new`` (what is about to be written) differs from the cache's ``old``."""
    for name in IDENTITY_FIELDS:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            shown_a, shown_b = (("labels " + str(x.get("labels"))[:80] + f", blank {x.get('blank')}")
                                if name == "vocabulary" else repr(x) for x in (a, b))
            if name == "compute_dtype":
                raise ValueError(
                    f"the emission cache at {path} was computed with --dtype {a}, but this run "
                    f"asks for --dtype {b}; refusing to mix arrays of two precisions in one "
                    f"cache. Run with --dtype {a} to resume or extend it, or pass another "
                    f"--cache-dir for a {b} cache (or delete {path} to rebuild it).")
            raise ValueError(
                f"the emission cache at {path} was made with a different {name} ({shown_a}) than "
                f"this run ({shown_b}); refusing to mix them. Use another --cache-dir, or delete "
                f"{path} to rebuild it.")
