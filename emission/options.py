"""The options of the emission stage, declared once (core.options: each field carries its help;
eval/emit.py and eval/run.py generate their flags from these classes). Nothing here imports torch.

- :class:`EmissionSpec`: which emissions (a model or an import folder), the cache root, and
  the two groups below.
- :class:`SourceOptions`: where the audio is.
- :class:`ExtractOptions`: how the model runs and how the cache stores its output.

:func:`add_emission_flags` and :func:`spec_from_flags` are the two commands' shared glue.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from ctclab.core.options import NO_FLAG, add_option_flags, given_options, option
from ctclab.core.paths import default_cache_root

SOURCE_NAMES = ("openslr", "hf", "manifest")
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
# The model forward's default precision: float32, the reference the tolerances are measured in
# (emission/cache.py); reduced precision is an explicit choice (--dtype). A cache records its own
# (CacheMeta.compute_dtype).
DEFAULT_COMPUTE_DTYPE = "float32"
STORAGE_DTYPES = ("float16", "float32")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Padded audio seconds per batch. CPU: batches do not run faster than one utterance at a time,
# and larger ones run slower (bench/emit_throughput.py --batch-seconds 8 16 32 64, 2 cores, fp32:
# 13.7, 13.2-13.4, 11.7 and 7.5-9.1 audio-s/s, one at a time 13.8); 16 s keeps that speed and
# bounds the memory.
# GPU: an H200, a wav2vec2-base-sized model in fp16 over 10.5 h (bench/emit_throughput.py --device
# cuda, README Speed): 400 s batches 9.6 s at 4.1 GiB, 800 s 6.0 s at 7.9 GiB, 1600 s 5.7-6.1 s at
# 14.0 GiB. 800 s is the default: as fast as 1600 s within the noise, at half the memory, and it
# leaves a 16 GB GPU room for larger models, which take more per second.
DEFAULT_BATCH_SECONDS_CPU = 16.0
DEFAULT_BATCH_SECONDS_GPU = 800.0
# Batches prepared ahead by the loader thread (each holds only its padded waveforms).
PREFETCH_BATCHES = 3
# FLAC decoding and wav2vec2's normalisation run at ~3,200x real time per core (bench/
# audio_decode.py, the real clips of ../shared): one thread cannot feed a GPU emitting ~6,300x
# (README Speed), so decoding uses a small pool (libsndfile/soxr release the GIL).
DEFAULT_LOADER_THREADS = max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class SourceOptions:
    """Where the audio of a split is. All None: no audio source (only existing caches are used,
    unless EmissionSpec.default_source names one)."""

    source: str | None = option(
        None, "audio source: openslr (a LibriSpeech-layout folder), hf (a Hugging Face dataset) "
        "or manifest (a TSV/JSONL file); none: manifest with --manifest, openslr with "
        "--data-dir, else (eval/emit.py) the hub's openslr/librispeech_asr", choices=SOURCE_NAMES)
    data_dir: str | None = option(
        None, "OpenSLR folder holding <split>/ (or its LibriSpeech/ parent), or a local Hugging "
        "Face dataset saved with save_to_disk")
    manifest: str | None = option(
        None, "TSV (with a header) or JSONL manifest with id, audio path and text columns")

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

    device: str = option("auto", "auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps")
    dtype: str = option(DEFAULT_COMPUTE_DTYPE, "compute dtype; float16/bfloat16 run under autocast "
                        "(norms and softmax stay float32); a cache records it and refuses to be "
                        "resumed or extended in another", choices=COMPUTE_DTYPES)
    store_dtype: str | None = option(
        None, "dtype of the cached log-probs; none: float16 for a new cache, an existing cache's "
        "own otherwise (a cache stored in another dtype than the one given is an error)",
        choices=STORAGE_DTYPES)
    batch_seconds: float | None = option(
        None, f"padded audio seconds per batch; none: {DEFAULT_BATCH_SECONDS_CPU:g} on CPU, "
        f"{DEFAULT_BATCH_SECONDS_GPU:g} on GPU")
    skip_bad: bool = option(
        False, "log and skip unreadable audio (listed in the cache meta, tried again once the "
        "file changes) instead of stopping")
    prefetch: int = option(PREFETCH_BATCHES, "batches the loader thread prepares ahead")
    loader_threads: int = option(DEFAULT_LOADER_THREADS, "threads decoding audio ahead of the "
                                 "model")

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
    """Which emissions to get and where the caches live; ``audio`` and ``extract`` are only used
    when the model has to run."""

    model: str | None = option(
        None, "acoustic model: a Hugging Face id, a local model directory, or torchaudio:BUNDLE; "
        "with --import-emissions, the name to import under (none: the folder's name)")
    revision: str | None = option(
        None, "model revision (hub branch, tag or commit); also picks among cached revisions")
    import_dir: str | None = option(
        None, "import per-utterance <DIR>/<split>/<id>.npy log-probs (with labels.json and "
        "manifest.tsv in DIR) instead of running a model", flag="import-emissions")
    cache_dir: str | None = option(
        None, "emission cache root (none: $CTCLAB_CACHE_DIR, else ctclab in the user cache "
        "folder)")
    audio: SourceOptions = option(SourceOptions(), "where the audio is", flag=NO_FLAG)
    extract: ExtractOptions = option(ExtractOptions(), "how the model runs", flag=NO_FLAG)
    default_source: str | None = option(
        "hf", "source to read when none is named: hf (eval/emit.py: the hub's LibriSpeech) or "
        "None (eval/run.py: only existing caches are used)", flag=NO_FLAG)

    def cache_root(self) -> Path:
        """The cache root: cache_dir, else the default root."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_root()


def add_emission_flags(parser: argparse.ArgumentParser) -> None:
    """The emission stage's flags in three groups (generated from the classes above)."""
    add_option_flags(parser.add_argument_group("emissions"), {"emission": EmissionSpec})
    add_option_flags(parser.add_argument_group("audio source"), {"source": SourceOptions})
    add_option_flags(parser.add_argument_group("extraction (when the model runs)"),
                     {"extract": ExtractOptions})


def spec_from_flags(args: argparse.Namespace, default_source: str | None) -> EmissionSpec:
    """The EmissionSpec of flags made by :func:`add_emission_flags` (flags not given keep the
    classes' defaults)."""
    return EmissionSpec(**given_options(args, {"emission": EmissionSpec}),
                        audio=SourceOptions(**given_options(args, {"source": SourceOptions})),
                        extract=ExtractOptions(**given_options(args, {"extract": ExtractOptions})),
                        default_source=default_source)
