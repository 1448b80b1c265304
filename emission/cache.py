"""The emission cache: per-frame CTC log-probs of one model over one corpus split, kept on disk.

Layout of one cache directory (one per model, revision, source, split)::

    meta.json        CacheMeta (model, revision, vocabulary, frame shift, dtype, ..., complete flag)
    manifest.tsv     one line per utterance: id, num_frames, audio_seconds, shard, offset, text
    shards/NNNNNN.npy  (N_frames, V) float16/float32 arrays, the frames of several utterances
                     concatenated; memory-mapped on read

Crash safety: a shard is written to a temp name, fsynced and renamed; only then are its utterances'
manifest lines appended (and fsynced). A killed run therefore leaves at worst an orphan shard (never
referenced, overwritten later) or a torn last manifest line (dropped on resume). Resuming skips the
ids already in the manifest; ``complete`` is set in meta.json (atomically) only once all are done.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ctclab.core.atomic import atomic_open, atomic_write_bytes
from ctclab.core.paths import default_cache_root  # noqa: F401 - re-exported: one root for all stages
from ctclab.core.validation import validate_log_probs
from ctclab.core.vocabulary import Vocabulary

# Bumped when the on-disk layout changes; recorded in meta.json.
TOOL_VERSION = "ctclab-cache/1"
# float16 halves disk and page-cache use; log-probs only need ~3 significant digits for decoding
# (rounding error ~1e-3 relative, far below any beam-pruning threshold).
DEFAULT_DTYPE = "float16"
STORAGE_DTYPES = ("float16", "float32")
# Imported shards are cut at about this many frames (~17 min of audio at 20 ms): few files, each
# small enough to write atomically without holding much in memory.
IMPORT_SHARD_FRAMES = 50_000
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.tsv"
SHARD_DIR = "shards"
LOCK_FILE = ".lock"
MANIFEST_COLUMNS = ("id", "num_frames", "audio_seconds", "shard", "offset", "text")
# Fields of CacheMeta that must agree before new utterances may be added to an existing cache.
IDENTITY_FIELDS = ("model", "revision", "source", "split", "vocabulary", "frame_shift_s",
                   "sample_rate", "dtype", "tool_version", "data_key")


def slug(text: str) -> str:
    """A path component for a model id / revision / source / split (``a/b`` -> ``a--b``)."""
    text = str(text).strip().replace("/", "--").replace(":", "-")
    text = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._")
    return text or "_"


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
    frame; sample_rate: Hz of the audio fed to the model; dtype: storage dtype of the arrays."""

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
    # Free-form provenance (device, compute dtype, batching strategy); not used for matching.
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"cache dtype must be one of {STORAGE_DTYPES}, got {self.dtype!r}")
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


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:
        np.save(handle, array)


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

    Holds an exclusive lock (one writer per directory). Opening an existing directory made with
    a different model, vocabulary, dtype, ... raises ValueError naming the differing field.
    Use as a context manager; :meth:`finish` marks the cache complete.
    """

    def __init__(self, path: str | Path, meta: CacheMeta):
        self.path = Path(path)
        (self.path / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        try:
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
        stacked = np.concatenate(arrays, axis=0).astype(self.meta.dtype, copy=False)
        _atomic_save_npy(self.path / SHARD_DIR / shard, stacked)
        self._next_shard += 1
        offset, lines, new = 0, [], []
        for (utt, text, seconds, _), arr in zip(items, arrays, strict=True):
            record = UtteranceRecord(utt, text, int(arr.shape[0]), float(seconds), shard, offset)
            offset += arr.shape[0]
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
            raise ValueError(
                f"the emission cache at {path} was made with a different {name} ({shown_a}) than "
                f"this run ({shown_b}); refusing to mix them. Use another --cache-dir, or delete "
                f"{path} to rebuild it.")


# ----------------------------------------------------------------------------- import
@dataclass(frozen=True)
class _ImportRow:
    id: str
    text: str
    num_frames: int | None
    audio_seconds: float | None


def _read_import_manifest(file: Path, split: str) -> list[_ImportRow]:
    """Rows of a TSV with a header naming at least ``id`` and a text column (``reference`` or
    ``text``); optional ``split``, ``num_frames``, ``audio_seconds``."""
    lines = file.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{file} is empty; expected a TSV header with id and reference columns")
    header = lines[0].split("\t")
    text_col = next((c for c in ("reference", "text", "transcript") if c in header), None)
    if "id" not in header or text_col is None:
        raise ValueError(f"{file} must have a header with 'id' and 'reference' (or 'text') "
                         f"columns; found {header}")
    rows = []
    seen: dict[str, int] = {}  # id -> line number
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(header):
            raise ValueError(f"{file}:{number} has {len(values)} fields, the header {len(header)}")
        row = dict(zip(header, values, strict=True))
        if "split" in row and row["split"] != split:
            continue
        if row["id"] in seen:
            raise ValueError(f"{file}:{number} repeats the id {row['id']!r} of line "
                             f"{seen[row['id']]}; ids must be unique within a split")
        seen[row["id"]] = number
        rows.append(_ImportRow(
            row["id"], row[text_col],
            int(row["num_frames"]) if row.get("num_frames") else None,
            float(row["audio_seconds"]) if row.get("audio_seconds") else None))
    return rows


def import_emissions(
    src_dir: str | Path,
    dest_root: str | Path,
    *,
    split: str,
    model: str | None = None,
    labels: Sequence[str] | None = None,
    blank: int | str | None = None,
    delimiter: int | str | None = None,
    manifest: str | Path | None = None,
    frame_shift_s: float | None = None,
    dtype: str = "float32",
) -> EmissionCache:
    """Import per-utterance ``<src_dir>/<split>/<id>.npy`` log-probs (T, V) into a cache.

    labels/blank/delimiter default to ``<src_dir>/labels.json`` (keys ``labels``,
    ``blank_index``, ``word_delimiter``, ``frame_shift_seconds``); manifest defaults to
    ``<src_dir>/manifest.tsv`` (id, reference, optional split/num_frames/audio_seconds).
    frame_shift_s: seconds per frame; default from labels.json, else total audio seconds / total
    frames of the manifest (rounded to 0.1 ms). dtype: storage dtype (float32 keeps the source
    values exactly). The cache lands at ``cache_dir_for(dest_root, model or src_dir.name,
    "imported", "imported", split)``; an existing complete cache is returned as is.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"emissions folder {src} does not exist (--import-emissions DIR)")
    info: dict = {}
    labels_file = src / "labels.json"
    if labels_file.is_file():
        try:
            info = json.loads(labels_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{labels_file} is not valid JSON ({exc})") from None
        if isinstance(info, list):
            info = {"labels": info}
    if labels is None:
        if "labels" not in info:
            raise FileNotFoundError(f"{labels_file} is missing: pass labels=[...] (and blank=) or "
                                    "write a labels.json with 'labels' and 'blank_index'")
        labels = info["labels"]
    if blank is None:
        blank = info.get("blank_index", info.get("blank"))
    if delimiter is None:
        delimiter = info.get("word_delimiter", info.get("delimiter"))
    vocab = Vocabulary.from_labels(labels, blank=blank, delimiter=delimiter)
    manifest_file = Path(manifest) if manifest is not None else src / "manifest.tsv"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"manifest {manifest_file} not found; pass manifest= a TSV with "
                                "id and reference columns")
    rows = _read_import_manifest(manifest_file, split)
    split_dir = src / split
    if not rows or not split_dir.is_dir():
        found = sorted(p.name for p in src.iterdir() if p.is_dir())
        raise ValueError(f"no utterances of split {split!r} in {src} (manifest {manifest_file}); "
                         f"splits present: {found}")
    if frame_shift_s is None:
        frame_shift_s = info.get("frame_shift_seconds")
    if frame_shift_s is None:
        known = [r for r in rows if r.num_frames and r.audio_seconds]
        if not known:
            raise ValueError("cannot tell the frame shift: pass frame_shift_s= (seconds per frame)")
        frame_shift_s = round(sum(r.audio_seconds or 0.0 for r in known)
                              / sum(r.num_frames or 0 for r in known), 4)
    name = model or src.name
    meta = CacheMeta(model=name, revision="imported", source="imported", split=split,
                     vocabulary=vocab.to_dict(), frame_shift_s=float(frame_shift_s),
                     dtype=dtype, details={"imported_from": str(src.resolve())})
    path = cache_dir_for(dest_root, name, "imported", "imported", split)
    if (path / META_FILE).is_file():
        try:
            existing = EmissionCache.open(path)
            check_compatible(existing.meta, meta, path)
            return existing
        except FileNotFoundError:
            pass  # incomplete: resume below
    with CacheWriter(path, meta) as writer:
        pending: list[tuple[str, str, float, np.ndarray]] = []
        frames = 0
        done = writer.done_ids  # a copy: taken once, not per row
        for row in rows:
            if row.id in done:
                continue
            file = split_dir / f"{row.id}.npy"
            if not file.is_file():
                raise FileNotFoundError(f"{file} is listed in {manifest_file} but missing")
            try:
                arr = np.load(file)
            except (ValueError, OSError, EOFError) as exc:  # truncated, pickled or not .npy
                raise ValueError(f"{file} is not a readable .npy array ({exc}); export it again "
                                 "with numpy.save") from None
            arr = validate_log_probs(arr, vocab.size, name=str(file))
            if row.num_frames is not None and arr.shape[0] != row.num_frames:
                raise ValueError(f"{file} has {arr.shape[0]} frames but {manifest_file} says "
                                 f"{row.num_frames}")
            seconds = row.audio_seconds if row.audio_seconds is not None \
                else arr.shape[0] * frame_shift_s
            pending.append((row.id, row.text, seconds, arr))
            frames += arr.shape[0]
            if frames >= IMPORT_SHARD_FRAMES:
                writer.add_batch(pending)
                pending, frames = [], 0
        writer.add_batch(pending)
        return writer.finish()
