"""The options of the emission stage, declared once. Command lines generate their flags from these
dataclasses (the comment above a field is its help; ``metadata`` gives choices, a flag name or a
metavar where the field name alone is not enough). Nothing here imports torch.

- :class:`EmissionSpec`: which emissions (a model or an import folder), the cache root, and
  the two groups below.
- :class:`SourceOptions`: where the audio is.
- :class:`ExtractOptions`: how the model runs and how the cache stores its output.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ctclab.core.paths import default_cache_root

SOURCE_NAMES = ("openslr", "hf", "manifest")
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
STORAGE_DTYPES = ("float16", "float32")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Batches prepared ahead by the loader thread (each holds only its padded waveforms).
PREFETCH_BATCHES = 3
# FLAC decoding runs at very roughly 500-1000x real time per core: one thread cannot feed a GPU
# doing 10 h of audio a minute, so decoding uses a small pool (libsndfile/soxr release the GIL).
DEFAULT_LOADER_THREADS = max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class SourceOptions:
    """Where the audio of a split is. All None: no audio source (only existing caches are used,
    unless EmissionSpec.default_source names one)."""

    # Audio source: openslr (a LibriSpeech-layout folder), hf (a Hugging Face dataset) or
    # manifest (a TSV/JSONL file). Default: manifest with --manifest, openslr with --data-dir,
    # else the hub's openslr/librispeech_asr.
    source: str | None = field(default=None, metadata={"choices": SOURCE_NAMES})
    # OpenSLR folder holding <split>/ (or its LibriSpeech/ parent), or a local Hugging Face
    # dataset saved with save_to_disk.
    data_dir: str | None = field(default=None, metadata={"metavar": "DIR"})
    # TSV (with a header) or JSONL manifest with id, audio path and text columns.
    manifest: str | None = field(default=None, metadata={"metavar": "FILE"})

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in SOURCE_NAMES:
            raise ValueError(f"unknown audio source {self.source!r}; valid names: "
                             f"{', '.join(SOURCE_NAMES)}")

    def source_name(self, default: str | None) -> str | None:
        """The source to read: the one named, else the one the given paths imply, else
        ``default`` (None: no audio source)."""
        if self.source:
            return self.source
        if self.manifest:
            return "manifest"
        if self.data_dir:
            return "openslr"
        return default


@dataclass(frozen=True)
class ExtractOptions:
    """How the acoustic model runs over the audio and how its output is stored."""

    # Device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps.
    device: str = "auto"
    # Compute dtype; float16/bfloat16 run under autocast (norms and softmax stay float32).
    dtype: str = field(default="float32", metadata={"choices": COMPUTE_DTYPES})
    # dtype of the cached log-probs: float16 (default for a new cache) or float32. Unset, an
    # existing cache keeps its own; set, a cache stored in the other dtype is an error.
    store_dtype: str | None = field(default=None, metadata={"choices": STORAGE_DTYPES})
    # Padded audio seconds per batch (default 16 on CPU, 400 on GPU).
    batch_seconds: float | None = None
    # Log and skip unreadable audio (listed in the cache meta, retried once the file changes)
    # instead of stopping.
    skip_bad: bool = False
    # Batches the loader thread prepares ahead of the model.
    prefetch: int = PREFETCH_BATCHES
    # Threads decoding audio ahead of the model.
    loader_threads: int = DEFAULT_LOADER_THREADS

    def __post_init__(self) -> None:
        if self.device.split(":")[0] not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; valid: {', '.join(DEVICES)} "
                             "(or cuda:N)")
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"unknown compute dtype {self.dtype!r}; valid: {COMPUTE_DTYPES}")
        if self.store_dtype is not None and self.store_dtype not in STORAGE_DTYPES:
            raise ValueError(f"store_dtype must be float16 or float32, got {self.store_dtype!r}")
        if self.batch_seconds is not None and not self.batch_seconds > 0:
            raise ValueError(f"batch_seconds must be positive, got {self.batch_seconds}")
        if self.prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {self.prefetch}")
        if self.loader_threads < 1:
            raise ValueError(f"loader_threads must be >= 1, got {self.loader_threads}")


@dataclass(frozen=True)
class EmissionSpec:
    """Which emissions to get and where the caches live; ``source`` and ``extract`` are only used
    when the model has to run."""

    # Acoustic model: a Hugging Face id, a local model directory, or torchaudio:BUNDLE. With
    # --import-emissions, the name to import under (default: the folder's name).
    model: str | None = None
    # Model revision (hub branch, tag or commit); picks among cached revisions too.
    revision: str | None = None
    # Import per-utterance <DIR>/<split>/<id>.npy log-probs (with labels.json and manifest.tsv in
    # DIR) instead of running a model.
    import_dir: str | None = field(default=None, metadata={"flag": "--import-emissions",
                                                           "metavar": "DIR"})
    # Emission cache root (default $CTCLAB_CACHE_DIR, else ctclab in the user cache folder).
    cache_dir: str | None = field(default=None, metadata={"metavar": "DIR"})
    # Audio source options (used when the model has to run).
    source: SourceOptions = field(default_factory=SourceOptions, metadata={"flags": False})
    # Extraction options (used when the model has to run).
    extract: ExtractOptions = field(default_factory=ExtractOptions, metadata={"flags": False})
    # Source to read when none is named: "hf" (eval/emit.py: the hub's LibriSpeech) or None
    # (eval/run.py: without a named source only existing caches are used).
    default_source: str | None = field(default="hf", metadata={"flags": False})

    def cache_root(self) -> Path:
        """The cache root: cache_dir, else the default root."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_root()
