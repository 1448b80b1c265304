"""Import emissions made elsewhere (one ``<split>/<id>.npy`` per utterance) into a cache.

An imported cache is keyed by its content, not by the folder's name: its meta records
``data_key`` = a hash of the vocabulary, frame shift, the split's manifest rows and every array
file's bytes. Importing another folder with the same name into the same cache root is refused
(with what differs), never answered with the first folder's arrays. A re-run first compares the
files' sizes and mtimes with the ones recorded (cheap); only when those moved does it hash the
arrays again, and equal content is still a no-op (a copied or touched folder).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctclab.core.validation import validate_log_probs
from ctclab.core.vocabulary import Vocabulary
from ctclab.emission.audio_sources import read_utf8
from ctclab.emission.cache import CacheMeta, CacheWriter, EmissionCache, cache_dir_for

# Imported shards are cut at about this many frames (~17 min of audio at 20 ms): few files, each
# small enough to write atomically without holding much in memory.
IMPORT_SHARD_FRAMES = 50_000
IMPORTED = "imported"  # the revision and source of an imported cache (its path components)


@dataclass(frozen=True)
class _ImportRow:
    id: str
    text: str
    num_frames: int | None
    audio_seconds: float | None


def _read_import_manifest(file: Path, split: str) -> list[_ImportRow]:
    """Rows of a TSV with a header naming at least ``id`` and a text column (``reference`` or
    ``text``); optional ``split``, ``num_frames``, ``audio_seconds``."""
    lines = read_utf8(file, "manifest").splitlines()
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
        try:
            rows.append(_ImportRow(
                row["id"], row[text_col],
                int(row["num_frames"]) if row.get("num_frames") else None,
                float(row["audio_seconds"]) if row.get("audio_seconds") else None))
        except ValueError:
            raise ValueError(f"{file}:{number}: num_frames/audio_seconds must be numbers, got "
                             f"{row.get('num_frames')!r} / {row.get('audio_seconds')!r}") from None
    return rows


def _read_labels(src: Path) -> dict:
    file = src / "labels.json"
    if not file.is_file():
        return {}
    try:
        info = json.loads(read_utf8(file, "labels file"))
    except ValueError as exc:
        raise ValueError(f"{file} is not valid JSON ({exc})") from None
    return {"labels": info} if isinstance(info, list) else info


def _keys(vocab: Vocabulary, frame_shift_s: float, rows: Sequence[_ImportRow],
          files: Sequence[Path], content: bool) -> str:
    """sha256 of what an import is made from: vocabulary, frame shift, the rows, and each array
    file's (size, mtime) when ``content`` is False (the cheap stat key), or its bytes when True."""
    digest = hashlib.sha256()
    digest.update(json.dumps([vocab.to_dict(), frame_shift_s], sort_keys=True).encode())
    for row, file in zip(rows, files, strict=True):
        if content:
            part = hashlib.sha256(file.read_bytes()).hexdigest()
        else:
            info = file.stat()
            part = f"{info.st_size}:{info.st_mtime_ns}"
        digest.update(f"{row.id}\t{row.text}\t{row.num_frames}\t{row.audio_seconds}\t{part}\n"
                      .encode())
    return digest.hexdigest()[:32]


def _what_differs(cache: EmissionCache, rows: Sequence[_ImportRow]) -> str:
    ids = {r.id for r in rows}
    only_new, only_old = ids - set(cache.ids), set(cache.ids) - ids
    texts = sum(1 for r in rows if r.id in cache and cache.record(r.id).text != " ".join(
        r.text.split()))
    parts = [f"{n} {what}" for n, what in ((len(only_new), "utterances only in the folder"),
                                           (len(only_old), "utterances only in the cache"),
                                           (texts, "references differ")) if n]
    return ", ".join(parts) or "same ids and references, other arrays"


def _same_arrays(cache: EmissionCache, rows: Sequence[_ImportRow], files: Sequence[Path]) -> bool:
    """True when ``cache`` holds exactly these rows and arrays (at its storage dtype)."""
    if sorted(cache.ids) != sorted(r.id for r in rows):
        return False
    for row, file in zip(rows, files, strict=True):
        stored, source = cache.log_probs(row.id), np.load(file)
        if cache.record(row.id).text != " ".join(row.text.split()) or stored.shape != source.shape \
                or not np.array_equal(stored, source.astype(cache.meta.dtype).astype(np.float32)):
            return False
    return True


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
    dtype: str | None = None,
) -> EmissionCache:
    """Import per-utterance ``<src_dir>/<split>/<id>.npy`` log-probs (T, V); see
    :func:`import_split` (this returns only the cache)."""
    return import_split(src_dir, dest_root, split=split, model=model, labels=labels, blank=blank,
                        delimiter=delimiter, manifest=manifest, frame_shift_s=frame_shift_s,
                        dtype=dtype)[0]


def import_split(
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
    dtype: str | None = None,
) -> tuple[EmissionCache, bool]:
    """Import one split; returns (cache, True when this call wrote it, False for a no-op).

    labels/blank/delimiter default to ``<src_dir>/labels.json`` (keys ``labels``,
    ``blank_index``, ``word_delimiter``, ``frame_shift_seconds``); manifest defaults to
    ``<src_dir>/manifest.tsv`` (id, reference, optional split/num_frames/audio_seconds).
    frame_shift_s: seconds per frame; default from labels.json, else total audio seconds / total
    frames of the manifest (rounded to 0.1 ms). dtype: storage dtype; None: an existing cache's,
    else float32 (which keeps the source values exactly). The cache lands at
    ``cache_dir_for(dest_root, model or src_dir.name, "imported", "imported", split)``. A
    complete cache of the same content is returned as is; one of other content is refused
    (ValueError saying what differs).
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"emissions folder {src} does not exist (--import-emissions DIR)")
    info = _read_labels(src)
    if labels is None:
        if "labels" not in info:
            raise FileNotFoundError(f"{src / 'labels.json'} is missing: pass labels=[...] (and "
                                    "blank=) or write a labels.json with 'labels' and "
                                    "'blank_index'")
        labels = info["labels"]
    if blank is None:
        blank = info.get("blank_index", info.get("blank"))
    if delimiter is None:
        delimiter = info.get("word_delimiter", info.get("delimiter"))
    # labels.json may list the tokens never emitted ("unused") and say what they are ("units":
    # letters, word_pieces, phonemes); word pieces are recognised by their word-start marker.
    vocab = Vocabulary.from_labels(labels, blank=blank, delimiter=delimiter,
                                   unused=info.get("unused"), units=info.get("units"))
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
    files = [split_dir / f"{row.id}.npy" for row in rows]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} array file(s) listed in {manifest_file} are "
                                f"missing: {', '.join(missing[:3])}")
    if frame_shift_s is None:
        frame_shift_s = info.get("frame_shift_seconds")
    if frame_shift_s is None:
        known = [r for r in rows if r.num_frames and r.audio_seconds]
        if not known:
            raise ValueError("cannot tell the frame shift: pass frame_shift_s= (seconds per frame)")
        frame_shift_s = round(sum(r.audio_seconds or 0.0 for r in known)
                              / sum(r.num_frames or 0 for r in known), 4)
    frame_shift_s = float(frame_shift_s)
    name = model or src.name
    path = cache_dir_for(dest_root, name, IMPORTED, IMPORTED, split)
    stat_key = _keys(vocab, frame_shift_s, rows, files, content=False)
    existing = CacheMeta.read(path)
    dtype = dtype or (existing.dtype if existing is not None else "float32")
    if existing is not None and existing.complete and existing.dtype == dtype \
            and existing.details.get("import_stat") == stat_key:
        return EmissionCache.open(path), False  # same files as last time: no hashing
    content_key = _keys(vocab, frame_shift_s, rows, files, content=True)
    details = {"imported_from": str(src.resolve()), "import_stat": stat_key}
    meta = CacheMeta(model=name, revision=IMPORTED, source=IMPORTED, split=split,
                     vocabulary=vocab.to_dict(), frame_shift_s=frame_shift_s, dtype=dtype,
                     data_key=content_key, details=details)
    if existing is not None and existing.data_key != content_key:
        cache = EmissionCache.open(path, allow_incomplete=True)
        legacy = existing.data_key == "" and existing.complete  # imported before content keys
        if not existing.complete and len(cache) == 0:  # a failed start holds nothing: take it
            with CacheWriter(path, dataclasses.replace(meta, data_key=existing.data_key)) as w:
                w.rekey(content_key, details)
        elif not (legacy and _same_arrays(cache, rows, files)):
            origin = existing.details.get("imported_from", "an unrecorded folder")
            raise ValueError(
                f"the emission cache at {path} was imported from {origin}, but {src} holds other "
                f"emissions for split {split!r} ({_what_differs(cache, rows)}); refusing to mix "
                "them. Import it under another name (--model NAME), pass another --cache-dir, "
                f"or delete {path} to import again.")
    if existing is not None and existing.complete:  # same content: moved or touched files
        with CacheWriter(path, dataclasses.replace(meta, data_key=existing.data_key)) as writer:
            writer.rekey(content_key, details)  # the writer checked dtype, vocabulary, ...
        return EmissionCache.open(path), False
    with CacheWriter(path, meta) as writer:
        pending: list[tuple[str, str, float, np.ndarray]] = []
        frames = 0
        done = writer.done_ids  # a copy: taken once, not per row
        for row, file in zip(rows, files, strict=True):
            if row.id in done:
                continue
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
        return writer.finish(), True
