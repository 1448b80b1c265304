"""Run a CTC model over an audio source in length-sorted batches and store log-probs in a cache.

Padding, done right. Each utterance's model input is made alone by the model's own feature
extractor (emission/front_end.py: per-utterance normalisation and filterbanks never see padding),
then inputs are zero-padded into a batch with the model's padding mask. Where a model still lets
padding reach valid frames (wav2vec2-base's group norm over time, wav2vec2-conformer's unmasked
depthwise convs, data2vec-audio's positional convs, SEW's pair pooling, adapter convs), the
treatments of emission/padding.py make it exact. Batched output then equals one-at-a-time output
up to float rounding (tested for every transformers CTC type: max |diff| < 1e-4 in float32);
a model with a leak no treatment covers runs one utterance at a time. Output frame counts come
from the model's own length computation (CTCModel.frames_of_inputs); inputs too short for one
frame never reach the model and get no frames.

Data loading (decode, resample, normalise, pad; pinned memory on CUDA) runs in a background
thread with a small decode pool, overlapping the model; libsndfile, soxr and torch release the GIL.
Cache writes (float16 cast, shard file, manifest, fsyncs) run in a second thread, one batch behind
the model (run_model), so the device does not wait for the disk either.
"""
from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctclab.core.progress import progress_bar
from ctclab.emission.audio_sources import AudioReadError, AudioSource, SourceEntry, SourceRow
from ctclab.emission.cache import (
    DEFAULT_DTYPE,
    CacheMeta,
    CacheWriter,
    EmissionCache,
    SkippedItem,
    cache_dir_for,
)
from ctclab.emission.exactness import MASKED_GROUP_NORM, ONE_AT_A_TIME
from ctclab.emission.models import CTCModel
from ctclab.emission.options import (  # noqa: F401 - re-exported: extraction's option names
    COMPUTE_DTYPES,
    DEFAULT_BATCH_SECONDS_CPU,
    DEFAULT_BATCH_SECONDS_GPU,
    DEFAULT_LOADER_THREADS,
    DEVICES,
    PREFETCH_BATCHES,
    ExtractOptions,
)
from ctclab.emission.padding import (  # noqa: F401 - re-exported: its old home
    ExactPadding,
    MaskedGroupNorm,
)
from ctclab.emission.sync import ExtractStats, FillReport, fill


def select_device(device: str = "auto") -> Any:
    """torch.device for ``device``; "auto" = CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch sees no CUDA GPU (CPU-only torch "
                         "build or no driver); use --device cpu")
    return torch.device(device)


class _Runner:
    """Moves the model to a device once and runs padded batches through it, exactly: each row's
    output is what the utterance gives alone (emission/padding.py), to float rounding."""

    def __init__(self, model: CTCModel, device: Any, dtype: str):
        if dtype == "float16" and device.type == "cpu":
            raise ValueError("float16 compute needs a GPU (CPU float16 kernels are slow or "
                             "missing); on CPU use --dtype float32 or bfloat16")
        self.model, self.device, self.dtype = model, device, dtype
        self.module = model.module.to(device).eval()
        plan = model.padding_plan
        # torchaudio's ASR bundles may layer-normalise the whole padded batch tensor at once
        # (normalize_waveform), which mixes utterances: they run one at a time, like any model
        # whose padding leaks in a way emission/padding.py does not treat.
        self.one_at_a_time = ONE_AT_A_TIME in plan
        self.exact = None if self.one_at_a_time or model.kind != "hf" else ExactPadding.install(
            self.module, plan, (model.kernels[0], model.strides[0]) if model.kernels else None)
        self.masked = self.exact.group_norm if self.exact is not None else None
        self.autocast = dtype != "float32"
        self.torch_dtype = getattr(torch, dtype)

    def __call__(self, padded: np.ndarray | torch.Tensor, lengths: np.ndarray) -> list[np.ndarray]:
        """padded: (B, L, ...) float32 model inputs, time second (array or, pinned, tensor);
        lengths: (B,) their true lengths (samples, or feature frames). Returns B arrays (T_b, V)
        float32 log-probs trimmed to each true frame count (T_b = 0 for inputs too short for a
        frame: those never reach the model)."""
        lengths = np.asarray(lengths, np.int64).reshape(-1)
        frames = np.asarray(self.model.frames_of_inputs(lengths), np.int64).reshape(-1)
        out = [np.zeros((0, self.model.vocabulary.size), np.float32)] * len(lengths)
        live = np.flatnonzero(frames > 0)
        groups = [live[i:i + 1] for i in range(len(live))] if self.one_at_a_time else [live]
        for rows in groups:
            if rows.size == 0:
                continue
            x = _take(padded, rows, int(lengths[rows].max()))
            for b, lp in zip(rows, self._forward(x, lengths[rows], frames[rows]), strict=True):
                out[b] = lp
        return out

    def _forward(self, padded: np.ndarray | torch.Tensor, lengths: np.ndarray,
                 frames: np.ndarray) -> list[np.ndarray]:
        """One forward pass over rows that all give frames; a GPU out of memory is a
        RuntimeError that says what to lower (batches already stored stay: a rerun resumes)."""
        try:
            return self._forward_rows(padded, lengths, frames)
        except torch.cuda.OutOfMemoryError as exc:
            seconds = float(len(lengths)) * float(padded.shape[1]) / self.model.sample_rate \
                if self.model.input_name == "input_values" else None
            size = f"{len(lengths)} utterances" + (f", {seconds:.0f} s padded" if seconds else "")
            raise RuntimeError(
                f"the {self.device} GPU ran out of memory on a batch of {size}: lower "
                f"--batch-seconds (default {DEFAULT_BATCH_SECONDS_GPU:g} on a GPU) or use --dtype "
                "float16/bfloat16; the batches already stored are kept, so the rerun resumes"
            ) from exc

    def _forward_rows(self, padded: np.ndarray | torch.Tensor, lengths: np.ndarray,
                      frames: np.ndarray) -> list[np.ndarray]:
        x = padded if isinstance(padded, torch.Tensor) else torch.from_numpy(padded)
        x = x.to(self.device, non_blocking=x.is_pinned())
        if self.model.time_axis:  # e.g. OmniASR takes (B, 1, S): time back in its place
            x = x.movedim(1, 1 + self.model.time_axis)
        lens = torch.from_numpy(lengths).to(self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.torch_dtype,
                                                    enabled=self.autocast):
            if self.model.kind == "torchaudio":
                logits, _ = self.module(x, lens)
            else:
                inputs = {self.model.input_name: x}
                if self.model.mask_name is not None:
                    steps = torch.arange(padded.shape[1], device=self.device)
                    inputs[self.model.mask_name] = (steps[None, :] < lens[:, None]).long()
                with self.exact.batch(lengths, frames) if self.exact is not None \
                        else contextlib.nullcontext():
                    logits = self.module(**inputs).logits
            log_probs = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        if log_probs.shape[1] < frames.max(initial=0):
            raise RuntimeError(f"model returned {log_probs.shape[1]} frames for a batch whose "
                               f"longest input needs {frames.max()}: the length computation does "
                               "not match this model")
        return [np.ascontiguousarray(log_probs[b, :n]) for b, n in enumerate(frames)]


def _take(padded: np.ndarray | torch.Tensor, rows: np.ndarray,
          width: int) -> np.ndarray | torch.Tensor:
    """Rows ``rows`` of a padded batch, cut to ``width`` steps (the batch itself when that is
    all of it)."""
    if len(rows) == padded.shape[0] and width == padded.shape[1]:
        return padded
    if isinstance(padded, torch.Tensor):
        return padded[torch.from_numpy(rows)][:, :width]
    return padded[rows, :width]


def pad_batch(waves: Sequence[np.ndarray], min_samples: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad per-utterance inputs, time first ((S_b,) samples or (T_b, F) frames), into
    (B, max length, ...) float32 plus (B,) int64 lengths (at least ``min_samples`` long)."""
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    trailing = tuple(waves[0].shape[1:]) if len(waves) else ()
    padded = np.zeros((len(waves), max(int(lengths.max(initial=0)), min_samples), *trailing),
                      np.float32)
    for b, w in enumerate(waves):
        padded[b, :len(w)] = w
    return padded, lengths


def compute_log_probs(model: CTCModel, waveforms: Sequence[np.ndarray], *, device: str = "cpu",
                      dtype: str = "float32") -> list[np.ndarray]:
    """Log-probs of 16 kHz float32 waveforms run as ONE padded batch: list of (T_i, V) float32,
    T_i = model.num_frames(len(waveform_i)). The model's front end is applied here."""
    runner = _Runner(model, select_device(device), dtype)
    padded, lengths = pad_batch([model.normalize(w) for w in waveforms])
    return runner(padded, lengths)


def plan_batches(seconds: Sequence[float], batch_seconds: float) -> list[list[int]]:
    """Indices grouped into batches, longest first, each padded size (count x longest) at most
    ``batch_seconds`` (a single longer utterance forms its own batch)."""
    order = sorted(range(len(seconds)), key=lambda i: (-seconds[i], i))
    batches: list[list[int]] = []
    for i in order:
        # Sorted descending, so the first item of the current batch is its longest.
        if batches and seconds[batches[-1][0]] * (len(batches[-1]) + 1) <= batch_seconds:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


_END = object()


def _loader(source: AudioSource, model: CTCModel, entries: list[SourceEntry],
            batches: list[list[int]], out: queue.Queue, skip_bad: bool,
            stop: threading.Event, threads: int, pin: bool) -> None:
    """Thread body: decode + front end (a pool of ``threads``) + pad each batch, then put
    (entries, padded, input lengths, sample counts, skipped) on ``out``; errors are put there
    too."""

    def load_one(i: int) -> tuple[np.ndarray, int] | SkippedItem:
        try:
            audio = source.load(entries[i])
            return model.normalize(audio), len(audio)
        except AudioReadError as exc:
            if not skip_bad:
                raise
            return SkippedItem(exc.utt_id, exc.path, exc.reason)

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for batch in batches:
                if stop.is_set():
                    return
                ok, waves, samples, bad = [], [], [], []
                for i, result in zip(batch, pool.map(load_one, batch), strict=True):
                    if isinstance(result, SkippedItem):
                        bad.append(result)
                    else:
                        ok.append(entries[i])
                        waves.append(result[0])
                        samples.append(result[1])
                padded, lengths = pad_batch(waves) if waves else (None, None)
                batch_input: Any = padded
                if pin and padded is not None:  # page-locked: async host-to-GPU copy
                    batch_input = torch.from_numpy(padded).pin_memory()
                out.put((ok, batch_input, lengths, np.array(samples, np.int64), bad))
        out.put(_END)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises
        out.put(exc)


def source_split(source: AudioSource) -> str:
    """The split name a source's cache is filed under ("all" for a source without splits)."""
    return str(getattr(source, "split", None) or "all")


def model_meta(model: CTCModel, source: AudioSource, store_dtype: str,
               compute_dtype: str) -> CacheMeta:
    """The CacheMeta of ``model`` run over ``source`` in ``compute_dtype``, stored as
    ``store_dtype``."""
    return CacheMeta(model=model.name, revision=model.revision, source=source.name,
                     split=source_split(source), vocabulary=model.vocabulary.to_dict(),
                     frame_shift_s=model.frame_shift_s, sample_rate=model.sample_rate,
                     dtype=store_dtype, compute_dtype=compute_dtype, data_key=source.data_key,
                     details={"data": source.location, "model_type": model.model_type,
                              # how padded batches were made exact (emission/padding.py)
                              "padding": list(model.padding_plan),
                              "masked_group_norm": MASKED_GROUP_NORM in model.padding_plan})


def extract(model: CTCModel, source: AudioSource, cache_root: str | Path, *,
            options: ExtractOptions | None = None, progress: bool = True,
            on_batch: Callable[[int], None] | None = None,
            listing: list[SourceRow] | None = None) -> tuple[EmissionCache, ExtractStats]:
    """Compute and cache the log-probs of every utterance of ``source`` (resuming if partial,
    extending a complete cache by new utterances, refusing a source whose cached audio changed:
    see emission/sync.py).

    The cache lands at ``cache_dir_for(cache_root, model.name, model.revision, source.name,
    source.split)``. listing: ``source.listing()`` when the caller already has it. on_batch(n) is
    called after each stored batch of n utterances (tests use it to simulate a kill).
    """
    options = options or ExtractOptions()
    cache, report = extract_report(model, source, cache_root, options=options, progress=progress,
                                   on_batch=on_batch, listing=listing)
    stats = report.stats or ExtractStats(0, 0.0, 0, report.wall_seconds, "-", options.dtype, 0)
    return cache, dataclasses.replace(stats, resumed=report.resumed, skipped=report.newly_skipped,
                                      wall_seconds=report.wall_seconds)


def extract_report(model: CTCModel, source: AudioSource, cache_root: str | Path, *,
                   options: ExtractOptions, progress: bool = True,
                   on_batch: Callable[[int], None] | None = None,
                   listing: list[SourceRow] | None = None) -> tuple[EmissionCache, FillReport]:
    """:func:`extract` with the full report of what changed (for emission.stage)."""
    path = cache_dir_for(cache_root, model.name, model.revision, source.name, source_split(source))
    existing = CacheMeta.read(path)
    store = options.store_dtype or (existing.dtype if existing else DEFAULT_DTYPE)
    rows = listing if listing is not None else source.listing()
    with CacheWriter(path, model_meta(model, source, store, options.dtype)) as writer:
        return fill(writer, source, rows, skip_bad=options.skip_bad, compute=lambda e: (
            run_model(model, source, writer, e, options, progress=progress, on_batch=on_batch)))


@dataclass(frozen=True)
class BatchOutput:
    """One batch through the model: the utterances whose audio was read (batch order), their
    true sample counts, their (T_i, V) float32 log-probs, and those skipped as unreadable."""

    entries: list[SourceEntry]
    samples: np.ndarray
    log_probs: list[np.ndarray]
    skipped: list[SkippedItem]

    def items(self, sample_rate: int) -> list[tuple[str, str, float, np.ndarray]]:
        """(id, text, audio seconds, log-probs) of each utterance: what a cache stores."""
        return [(e.id, e.text, n / sample_rate, lp) for e, n, lp
                in zip(self.entries, self.samples, self.log_probs, strict=True)]


def model_runner(model: CTCModel, options: ExtractOptions) -> _Runner:
    """The model moved to ``options.device`` once, ready for :func:`run_batches`."""
    return _Runner(model, select_device(options.device), options.dtype)


def default_batch_seconds(device_type: str) -> float:
    """Padded audio seconds per batch on a device type ("cuda", "cpu", ...)."""
    return DEFAULT_BATCH_SECONDS_GPU if device_type == "cuda" else DEFAULT_BATCH_SECONDS_CPU


def run_batches(model: CTCModel, source: AudioSource, entries: list[SourceEntry],
                batches: list[list[int]], options: ExtractOptions, runner: _Runner
                ) -> Generator[BatchOutput, None, None]:
    """Run ``batches`` (index lists into ``entries``) through ``runner``, one BatchOutput per
    batch in order, with the audio decoded ahead by a loader thread. Audio unreadable at decode
    time is skipped with ``options.skip_bad``, else raises AudioReadError. Closing the generator
    early stops the loader thread."""
    work: queue.Queue = queue.Queue(maxsize=options.prefetch)
    stop = threading.Event()
    thread = threading.Thread(target=_loader, daemon=True, args=(
        source, model, entries, batches, work, options.skip_bad, stop, options.loader_threads,
        runner.device.type == "cuda"))
    thread.start()
    try:
        while True:
            item = work.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            ok, padded, lengths, samples, bad = item
            outputs = runner(padded, lengths) if ok else []
            yield BatchOutput(ok, samples, outputs, bad)
    finally:
        stop.set()
        while thread.is_alive():  # unblock a loader waiting on a full queue
            try:
                work.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def short_warning(min_samples: int, sample_rate: int, short: list[str]) -> tuple[str, ...]:
    """The warning for utterances too short to give a frame (none when ``short`` is empty), for
    a model whose receptive field is ``min_samples`` at ``sample_rate`` Hz."""
    if not short:
        return ()
    ms = 1000 * min_samples / sample_rate
    return (f"{len(short)} utterance(s) shorter than the model's receptive field "
            f"({min_samples} samples = {ms:g} ms) have no frames, so any decoder "
            f"gives them an empty hypothesis: {', '.join(sorted(short)[:5])}",)


def run_model(model: CTCModel, source: AudioSource, writer: CacheWriter,
              entries: list[SourceEntry], options: ExtractOptions, *, progress: bool = True,
              on_batch: Callable[[int], None] | None = None) -> ExtractStats:
    """Run ``model`` over ``entries`` (probed, not yet cached) in length-sorted batches and add
    each batch to ``writer``. Audio unreadable at decode time is skipped with
    ``options.skip_bad`` (returned in ``skipped``), else raises AudioReadError."""
    start = time.perf_counter()
    runner = model_runner(model, options)
    device = runner.device
    batches = plan_batches([e.seconds for e in entries],
                           options.batch_seconds or default_batch_seconds(device.type))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    count, seconds, frames = 0, 0.0, 0
    skipped: list[SkippedItem] = []
    short: list[str] = []
    bar = progress_bar(sum(e.seconds for e in entries), f"{model.name} {source_split(source)}",
                       "audio-s", enabled=progress)

    def store(out: BatchOutput) -> None:
        if out.skipped:
            writer.add_skipped(out.skipped)
        if out.entries:
            writer.add_batch(out.items(model.sample_rate))

    def settle(out: BatchOutput, write: Future[None]) -> None:
        """Wait for ``out``'s write (its error raised here), then count it."""
        nonlocal count, seconds, frames
        write.result()
        skipped.extend(out.skipped)
        count += len(out.entries)
        seconds += float(out.samples.sum()) / model.sample_rate
        frames += int(sum(lp.shape[0] for lp in out.log_probs))
        short.extend(e.id for e, lp in zip(out.entries, out.log_probs, strict=True)
                     if lp.shape[0] == 0)
        bar.update(sum(e.seconds for e in out.entries))
        if on_batch is not None:
            on_batch(len(out.entries))

    # Write-behind: batch k is written (float16 cast, shard file, manifest, fsyncs) by one thread
    # while batch k+1 runs through the model; the device no longer waits for the disk. One write
    # in flight at a time, so the writer is never entered twice and at most two batches' outputs
    # are held; the pool's exit waits for it, so a batch computed before an error is still kept.
    pending: tuple[BatchOutput, Future[None]] | None = None
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="cache-writer") as pool, \
                closing(run_batches(model, source, entries, batches, options, runner)) as outputs:
            for out in outputs:
                if pending is not None:
                    settle(*pending)
                pending = out, pool.submit(store, out)
            if pending is not None:
                settle(*pending)
    finally:
        bar.close()
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return ExtractStats(count, seconds, frames, time.perf_counter() - start, str(device),
                        options.dtype, 0, tuple(skipped), peak,
                        short_warning(model.min_samples, model.sample_rate, short))
