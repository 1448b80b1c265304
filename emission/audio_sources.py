"""Audio sources: one interface over a LibriSpeech (OpenSLR) folder, a Hugging Face dataset, or a
manifest file. Each yields utterance id, 16 kHz mono float32 waveform and reference text.

Listing (:meth:`AudioSource.listing`) reads only the transcripts/manifest and each file's size and
modification time, so a cache can tell whether its source changed before anything heavy loads.
Probing (:meth:`AudioSource.probe`) reads file headers, so utterances can be sorted by length
before any audio is decoded. Reading (:meth:`AudioSource.load`) decodes with soundfile, downmixes
stereo by averaging channels and resamples with soxr. A missing, empty, corrupt or unreadable file
raises :class:`AudioReadError` naming it.
"""
from __future__ import annotations

import io
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.emission.hub import hub_unreachable, use_offline_mode
from ctclab.emission.options import SOURCE_NAMES

# Rate every model in this project expects (wav2vec2, HuBERT, ...): 16 kHz.
TARGET_SAMPLE_RATE = 16_000
# soxr "HQ" is its default high quality setting: transparent for ASR, fast enough for real time.
RESAMPLE_QUALITY = "HQ"
# LibriSpeech split names -> (HF config, HF split) of openslr/librispeech_asr.
HF_LIBRISPEECH_SPLITS = {
    "test-clean": ("clean", "test"), "test-other": ("other", "test"),
    "dev-clean": ("clean", "validation"), "dev-other": ("other", "validation"),
    "train-clean-100": ("clean", "train.100"), "train-clean-360": ("clean", "train.360"),
    "train-other-500": ("other", "train.500"),
}
DEFAULT_HF_DATASET = "openslr/librispeech_asr"


class AudioReadError(ValueError):
    """An audio file (or dataset row) could not be read; the message names it and why."""

    def __init__(self, utt_id: str, path: str, reason: str):
        super().__init__(f"cannot read audio of utterance {utt_id!r} from {path}: {reason} "
                         "(fix or remove the file, or pass --skip-bad to skip it and list it in "
                         "the cache meta)")
        self.utt_id, self.path, self.reason = utt_id, path, reason


@dataclass(frozen=True)
class SourceRow:
    """One listed utterance, nothing decoded: id, reference text, where its audio is (a path or
    a ``dataset[row]`` description), and the audio's size in bytes and modification time in ns
    (-1 and 0 for a missing file; mtime 0 for audio held in a dataset)."""

    id: str
    text: str
    path: str
    size: int
    mtime_ns: int

    @property
    def stat(self) -> tuple[int, int]:
        """(size, mtime_ns): what a cache compares to tell that the audio changed."""
        return (self.size, self.mtime_ns)


@dataclass(frozen=True)
class SourceEntry:
    """One utterance before decoding: id, reference text, where its audio is (a path or a
    ``dataset[row]`` description), and its duration in seconds from the file header."""

    id: str
    text: str
    path: str
    seconds: float


@dataclass(frozen=True)
class AudioItem:
    """One decoded utterance. audio: (S,) float32 mono at 16 kHz, S samples."""

    id: str
    text: str
    audio: np.ndarray
    path: str


def _audio_handle(data: str | Path | bytes, utt_id: str, where: str) -> Any:
    """What soundfile reads: a path checked to exist and be non-empty, or the bytes wrapped."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise AudioReadError(utt_id, where, "file not found")
        if path.stat().st_size == 0:
            raise AudioReadError(utt_id, where, "the file is empty (0 bytes)")
        return str(path)
    if not data:
        raise AudioReadError(utt_id, where, "no audio bytes")
    return io.BytesIO(data)


def read_audio(data: str | Path | bytes, utt_id: str = "?", where: str | None = None,
               target_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Decode a file path or raw bytes to (S,) float32 mono at ``target_rate`` Hz.

    Stereo/multichannel is averaged; another rate is resampled with soxr. Raises AudioReadError
    (naming ``where`` or the path) for a missing, empty (0 bytes or 0 samples) or corrupt file,
    or one with NaN/inf samples.
    """
    import soundfile as sf

    where = where or (str(data) if not isinstance(data, bytes) else f"<bytes of {utt_id}>")
    handle = _audio_handle(data, utt_id, where)
    try:
        audio, rate = sf.read(handle, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types; all mean unreadable
        raise AudioReadError(utt_id, where, f"not a readable audio file ({exc})") from None
    if audio.shape[0] == 0:
        raise AudioReadError(utt_id, where, "the audio has no samples")
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if rate != target_rate:
        import soxr

        audio = soxr.resample(audio, rate, target_rate, quality=RESAMPLE_QUALITY)
    if not np.isfinite(audio).all():
        raise AudioReadError(utt_id, where, "the audio contains NaN/inf samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _probe_seconds(data: str | Path | bytes, utt_id: str, where: str) -> float:
    """Duration from the header only (cheap); AudioReadError when the header is unreadable."""
    import soundfile as sf

    handle = _audio_handle(data, utt_id, where)
    try:
        info = sf.info(handle)
    except Exception as exc:  # noqa: BLE001 - as in read_audio
        raise AudioReadError(utt_id, where, f"not a readable audio file ({exc})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioReadError(utt_id, where, "the audio has no samples")
    return info.frames / info.samplerate


def read_utf8(file: Path, what: str) -> str:
    """The text of ``file``; a ValueError naming it when it is not UTF-8."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {file} is not UTF-8 text ({exc}); re-save it as UTF-8 (e.g. "
                         f"iconv -f latin1 -t utf-8)") from None


def _stat(data: str | Path | bytes) -> tuple[int, int]:
    """(size, mtime_ns) of a path, (-1, 0) when it is missing; (len, 0) of raw bytes."""
    if isinstance(data, bytes):
        return len(data), 0
    try:
        info = os.stat(data)
    except OSError:
        return -1, 0
    return int(info.st_size), int(info.st_mtime_ns)


class AudioSource(ABC):
    """A corpus split. ``name`` ("openslr", "hf", "manifest": the --source value) goes into the
    cache directory name; ``location`` says where the data is (recorded in the cache meta);
    ``data_key`` identifies the corpus where its utterance ids are only locally meaningful (a
    manifest, a dataset): a cache made from another data_key is refused, never mixed."""

    name: str = ""
    location: str = ""
    data_key: str = ""

    @abstractmethod
    def _raw_entries(self) -> Iterator[tuple[str, str, str, Any]]:
        """Yield (id, text, where, data) with data a path or raw bytes (no decoding)."""

    def listing(self) -> list[SourceRow]:
        """All utterances with their audio's size and mtime, nothing decoded (cheap: a stat per
        file). A repeated id is a ValueError naming both places."""
        rows = []
        self._data: dict[str, Any] = {}
        seen: dict[str, str] = {}
        for utt, text, where, data in self._raw_entries():
            if utt in seen:  # ids key the cache: a repeat would silently shadow the first
                raise ValueError(f"utterance id {utt!r} appears twice in {self.location} ({seen[utt]}"
                                 f" and {where}); ids must be unique within a split")
            seen[utt] = where
            self._data[utt] = data
            rows.append(SourceRow(utt, text, where, *_stat(data)))
        return rows

    def probe(self, rows: Sequence[SourceRow], skip_bad: bool = False
              ) -> tuple[list[SourceEntry], list[AudioReadError]]:
        """Durations of ``rows`` (from :meth:`listing`) from their headers. Unreadable ones raise
        AudioReadError, or with ``skip_bad`` are returned in the second list instead. Results
        are remembered per (id, size, mtime), so probing again costs nothing."""
        data = getattr(self, "_data", {})
        memo: dict[tuple[str, int, int], float | AudioReadError] = self.__dict__.setdefault(
            "_probed", {})
        good, bad = [], []
        for row in rows:
            key = (row.id, *row.stat)
            if key not in memo:
                try:
                    memo[key] = _probe_seconds(data.get(row.id, row.path), row.id, row.path)
                except AudioReadError as exc:
                    memo[key] = exc
            found = memo[key]
            if isinstance(found, AudioReadError):
                if not skip_bad:
                    raise found
                bad.append(found)
                continue
            good.append(SourceEntry(row.id, row.text, row.path, found))
        return good, bad

    def entries(self, skip_bad: bool = False) -> tuple[list[SourceEntry], list[AudioReadError]]:
        """:meth:`probe` of the whole :meth:`listing`."""
        return self.probe(self.listing(), skip_bad)

    def load(self, entry: SourceEntry) -> np.ndarray:
        """(S,) float32 16 kHz mono audio of ``entry`` (from :meth:`entries`)."""
        data = getattr(self, "_data", {}).get(entry.id, entry.path)
        return read_audio(data, entry.id, entry.path)

    def __iter__(self) -> Iterator[AudioItem]:
        """All utterances in listing order, decoded (raises on the first unreadable one)."""
        entries, _ = self.entries()
        for entry in entries:
            yield AudioItem(entry.id, entry.text, self.load(entry), entry.path)


class OpenSLRSource(AudioSource):
    """``<root>/<split>/<speaker>/<chapter>/*.flac`` with ``<speaker>-<chapter>.trans.txt``.

    ``root`` may also be the folder that contains ``LibriSpeech/`` (as the OpenSLR tarballs
    unpack). Utterances are those listed in the trans.txt files, sorted by id.
    """

    name = "openslr"

    def __init__(self, root: str | Path, split: str):
        root = Path(root)
        if not (root / split).is_dir() and (root / "LibriSpeech" / split).is_dir():
            root = root / "LibriSpeech"
        folder = root / split
        if not folder.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            if present == ["LibriSpeech"]:  # the tarball's parent folder: list the splits inside
                root = root / "LibriSpeech"
                present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"no split folder {folder} (OpenSLR layout <data-dir>/<split>/<speaker>/<chapter>);"
                f" folders in {root}: {present or 'none (does --data-dir exist?)'}")
        self.root, self.split, self.folder = root, split, folder
        self.location = str(folder.resolve())

    def _raw_entries(self) -> Iterator[tuple[str, str, str, Any]]:
        rows = []
        for trans in sorted(self.folder.glob("*/*/*.trans.txt")):
            for number, line in enumerate(read_utf8(trans, "transcript").splitlines(), 1):
                if not line.strip():
                    continue
                utt, _, text = line.strip().partition(" ")
                if not text:
                    raise ValueError(f"{trans}:{number}: expected '<id> <TEXT>', got {line!r}")
                rows.append((utt, text, trans.parent / f"{utt}.flac"))
        if not rows:
            raise FileNotFoundError(f"no *.trans.txt transcripts under {self.folder}/*/*/; is "
                                    "this a LibriSpeech split folder?")
        for utt, text, path in sorted(rows):
            yield utt, text, str(path), path


class ManifestSource(AudioSource):
    """A TSV (header row) or JSONL manifest with id, audio path and text for any corpus.

    Accepted column names: id (``id``/``utt_id``), audio (``audio_path``/``path``/``audio``/
    ``audio_filepath``), text (``text``/``reference``/``transcript``); rows with a ``split``
    column are filtered to ``split``. Relative audio paths are relative to the manifest's folder.
    """

    name = "manifest"
    ID_KEYS = ("id", "utt_id", "utterance_id")
    AUDIO_KEYS = ("audio_path", "path", "audio", "audio_filepath", "file")
    TEXT_KEYS = ("text", "reference", "transcript", "sentence")

    def __init__(self, manifest: str | Path, split: str | None = None):
        self.file = Path(manifest)
        if not self.file.is_file():
            raise FileNotFoundError(f"manifest {self.file} not found (--manifest FILE)")
        self.split = split
        self.location = str(self.file.resolve())
        self.data_key = self.location

    def _rows(self) -> list[dict]:
        text = read_utf8(self.file, "manifest")
        if self.file.suffix.lower() in (".jsonl", ".json"):
            rows = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as exc:
                        raise ValueError(f"{self.file}:{number} is not valid JSON ({exc})") from None
                    if not isinstance(row, dict):
                        raise ValueError(f"{self.file}:{number} is not a JSON object with id, "
                                         f"audio path and text keys: {line[:80]!r}")
                    rows.append(row)
            return rows
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"manifest {self.file} is empty")
        header = lines[0].split("\t")
        rows = []
        for number, line in enumerate(lines[1:], 2):
            values = line.split("\t")
            if len(values) != len(header):
                raise ValueError(f"{self.file}:{number} has {len(values)} tab-separated fields; "
                                 f"the header has {len(header)} ({header})")
            rows.append(dict(zip(header, values, strict=True)))
        return rows

    def _raw_entries(self) -> Iterator[tuple[str, str, str, Any]]:
        rows = self._rows()

        def key(row: dict, options: tuple[str, ...], what: str) -> str:
            found = next((k for k in options if k in row), None)
            if found is None:
                raise ValueError(f"manifest {self.file} has no {what} column/key (one of "
                                 f"{list(options)}); it has {sorted(row)}")
            return found

        if rows and self.split is not None and "split" in rows[0]:
            splits = sorted({str(r.get("split")) for r in rows})
            rows = [r for r in rows if r.get("split") == self.split]
            if not rows:
                raise ValueError(f"manifest {self.file} has no rows of split {self.split!r}; "
                                 f"splits present: {splits}")
        if not rows:
            raise ValueError(f"manifest {self.file} lists no utterances")
        id_key = key(rows[0], self.ID_KEYS, "id")
        audio_key = key(rows[0], self.AUDIO_KEYS, "audio path")
        text_key = key(rows[0], self.TEXT_KEYS, "text")
        for number, row in enumerate(rows, 1):
            missing = [k for k in (id_key, audio_key, text_key) if k not in row]
            if missing:  # the keys were chosen from the first row; JSONL rows may differ
                raise ValueError(f"manifest {self.file}: utterance {number} lacks {missing}, "
                                 "which the first utterance has")
            path = Path(str(row[audio_key]))
            if not path.is_absolute():
                path = self.file.parent / path
            yield str(row[id_key]), str(row[text_key]), str(path), path


class HFDatasetSource(AudioSource):
    """A Hugging Face dataset: a hub name (default ``openslr/librispeech_asr``) or a local
    dataset folder written by ``save_to_disk``. Audio is decoded from the raw bytes with
    soundfile (``Audio(decode=False)``), so no torchcodec is needed.

    split: a LibriSpeech split name (``test-clean`` -> config ``clean``, split ``test``) or the
    dataset's own split name. Columns: ``audio``, ``text`` and (optional) ``id``.
    """

    name = "hf"

    def __init__(self, dataset: str | Path = DEFAULT_HF_DATASET, split: str = "test-clean",
                 config: str | None = None):
        self.dataset, self.split = str(dataset), split
        self.config = config
        self.location = str(Path(self.dataset).resolve()) if Path(self.dataset).exists() \
            else self.dataset
        self.data_key = f"{self.location}:{self.config or ''}"
        self._ds = None

    def _load(self):
        from datasets import Audio, DatasetDict, load_dataset, load_from_disk

        if Path(self.dataset).exists():
            ds = load_from_disk(self.dataset)
            if isinstance(ds, DatasetDict):
                hf_split = self.split if self.split in ds else \
                    HF_LIBRISPEECH_SPLITS.get(self.split, (None, self.split))[1]
                if hf_split not in ds:
                    raise ValueError(f"local dataset {self.dataset} has no split {self.split!r}; "
                                     f"it has {sorted(ds)}")
                ds = ds[hf_split]
        else:
            config, hf_split = HF_LIBRISPEECH_SPLITS.get(self.split, (self.config, self.split))
            config = self.config or config
            if hub_unreachable() is not None:
                use_offline_mode()  # a cached copy still loads; otherwise fail now, not in 30 s
            try:
                ds = load_dataset(self.dataset, config, split=hf_split)
            except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
                raise RuntimeError(
                    f"cannot load Hugging Face dataset {self.dataset!r} (config {config!r}, split "
                    f"{hf_split!r}): {type(exc).__name__}: {str(exc)[:300]}. Offline or behind a "
                    "firewall? Download LibriSpeech from https://www.openslr.org/12 and pass "
                    "--source openslr --data-dir <folder containing the split>, or pass "
                    "--source hf --data-dir <a dataset saved with save_to_disk>.") from None
        missing = [c for c in ("audio", "text") if c not in ds.column_names]
        if missing:
            raise ValueError(f"dataset {self.dataset} lacks column(s) {missing}; it has "
                             f"{ds.column_names}")
        return ds.cast_column("audio", Audio(decode=False))

    def _raw_entries(self) -> Iterator[tuple[str, str, str, Any]]:
        ds = self._ds = self._ds if self._ds is not None else self._load()
        ids = ds["id"] if "id" in ds.column_names else [f"{i:06d}" for i in range(len(ds))]
        texts = ds["text"]
        for row, (utt, text, audio) in enumerate(zip(ids, texts, ds["audio"], strict=True)):
            where = f"{self.dataset}[{self.split}][{row}] ({audio.get('path') or 'bytes'})"
            data = audio.get("bytes") or audio.get("path") or b""
            yield str(utt), str(text), where, data


def open_source(source: str, split: str, *, data_dir: str | Path | None = None,
                manifest: str | Path | None = None) -> AudioSource:
    """Build a source by name: "openslr" (needs data_dir), "hf" (data_dir = a local dataset
    folder, else the hub's openslr/librispeech_asr), "manifest" (needs manifest)."""
    if source == "openslr":
        if data_dir is None:
            raise ValueError("--source openslr needs --data-dir (the folder holding "
                             f"{split}/<speaker>/<chapter>/*.flac, or its LibriSpeech/ parent)")
        return OpenSLRSource(data_dir, split)
    if source == "hf":
        return HFDatasetSource(data_dir if data_dir is not None else DEFAULT_HF_DATASET, split)
    if source == "manifest":
        if manifest is None:
            raise ValueError("--source manifest needs --manifest FILE (TSV or JSONL with id, "
                             "audio path and text)")
        return ManifestSource(manifest, split)
    raise ValueError(f"unknown audio source {source!r}; valid names: {', '.join(SOURCE_NAMES)}")
