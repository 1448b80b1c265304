"""Emission throughput: audio seconds per wall second and peak memory of a wav2vec2-base-sized
CTC model (random weights: speed does not depend on them).

    python bench/emit_throughput.py                       # fp32 CPU, ~60 s of audio
    python bench/emit_throughput.py --device cuda --dtype float16 --batch-seconds 100 200 400 800 \
        --audio-seconds 1800 --pipeline

For each --batch-seconds it runs the length-sorted, exactly-masked batches of eval/extract.py over
synthetic utterances with LibriSpeech-like durations, in memory; the peer in the same run is one
utterance at a time (batch of 1), and the ratio is printed. --write also times the emission
stage's own extract over the same audio held in memory (front end in the loader thread + model +
atomic float16 cache writes, the manifest and the finish: the figure to compare with a plain
batched forward that writes its cache); --pipeline times it on a temporary OpenSLR-layout corpus
of FLAC files (FLAC decode in the loader thread on top).
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from durations import draw_durations  # bench/durations.py, beside this script

from ctclab.core.options import HelpFormatter
from ctclab.core.vocabulary import Vocabulary
from ctclab.emission.audio_sources import AudioReadError, AudioSource, SourceEntry, SourceRow
from ctclab.emission.extract import (
    ExtractOptions,
    _Runner,
    pad_batch,
    plan_batches,
    select_device,
)
from ctclab.emission.models import CTCModel, zero_mean_unit_var
from ctclab.emission.options import DEFAULT_BATCH_SECONDS_CPU, DEFAULT_BATCH_SECONDS_GPU

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Figure:
    """One row of the table."""

    label: str
    batch_seconds: float
    audio_seconds: float
    wall_seconds: float
    peak_bytes: int

    @property
    def speed(self) -> float:
        return self.audio_seconds / self.wall_seconds


def base_sized_model() -> CTCModel:
    """wav2vec2-base architecture (95M parameters, group-norm conv stack), random init."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    config = Wav2Vec2Config(vocab_size=32, feat_extract_norm="group", do_stable_layer_norm=False,
                            pad_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(0)
    module = Wav2Vec2ForCTC(config).eval()
    return CTCModel(
        module=module, name="random-wav2vec2-base", revision="random",
        vocabulary=Vocabulary.wav2vec2_english(), sample_rate=SAMPLE_RATE, frame_shift_s=0.02,
        kernels=tuple(config.conv_kernel), strides=tuple(config.conv_stride),
        normalize=zero_mean_unit_var,
        takes_attention_mask=False, group_norm=True)


def synthetic_audio(total_seconds: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    waves, total = [], 0.0
    while total < total_seconds:
        dur = float(draw_durations(rng, 1)[0])
        waves.append((0.1 * rng.standard_normal(int(dur * SAMPLE_RATE))).astype(np.float32))
        total += dur
    return waves


def _reset_peak(device: torch.device) -> None:
    """Start a new GPU peak; on CPU the process peak RSS cannot be reset (it is cumulative)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int:
    """Bytes: GPU max allocated since :func:`_reset_peak`, or the process peak RSS on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_batches(runner: _Runner, model: CTCModel, waves: list[np.ndarray], batch_seconds: float,
                label: str) -> Figure:
    seconds = [len(w) / SAMPLE_RATE for w in waves]
    normalized = [model.normalize(w) for w in waves]
    batches = plan_batches(seconds, batch_seconds)
    runner(*pad_batch([normalized[i] for i in batches[-1]], model.min_samples))  # warm-up
    _reset_peak(runner.device)
    start = time.perf_counter()
    for batch in batches:
        runner(*pad_batch([normalized[i] for i in batch], model.min_samples))
    if runner.device.type == "cuda":
        torch.cuda.synchronize(runner.device)
    wall = time.perf_counter() - start
    return Figure(label, batch_seconds, sum(seconds), wall, _peak(runner.device))


class MemorySource(AudioSource):
    """The synthetic waves as an emission-stage source: nothing to decode, so extract's figure is
    the model and the cache writes (and the front end, done by the loader thread as always)."""

    name = "memory"
    location = "synthetic audio in memory"
    data_key = "emit-throughput-bench"

    def __init__(self, waves: list[np.ndarray]):
        self.waves = waves
        self.split = "bench"

    def _raw_entries(self) -> Iterator[tuple[str, str, str, Any]]:
        for i, w in enumerate(self.waves):
            yield f"utt-{i:06d}", "BENCH", f"memory[{i}]", w

    def listing(self) -> list[SourceRow]:
        return [SourceRow(f"utt-{i:06d}", "BENCH", f"memory[{i}]", 4 * len(w), 0)
                for i, w in enumerate(self.waves)]

    def probe(self, rows: Sequence[SourceRow], skip_bad: bool = False
              ) -> tuple[list[SourceEntry], list[AudioReadError]]:
        return [SourceEntry(r.id, r.text, r.path, r.size / 4 / SAMPLE_RATE) for r in rows], []

    def load(self, entry: SourceEntry) -> np.ndarray:
        return self.waves[int(entry.id.removeprefix("utt-"))]


def run_write(model: CTCModel, waves: list[np.ndarray], options: ExtractOptions) -> Figure:
    """extract() over the waves held in memory, into a temporary cache (float16, as default)."""
    from ctclab.emission.extract import extract

    with tempfile.TemporaryDirectory() as tmp:
        _reset_peak(select_device(options.device))
        cache, stats = extract(model, MemorySource(waves), Path(tmp) / "cache", options=options,
                               progress=False)
        peak = _peak(select_device(options.device))
        assert len(cache) == len(waves), (len(cache), len(waves))
    return Figure("in memory + model + cache write", options.batch_seconds or 0,
                  stats.audio_seconds, stats.wall_seconds, peak)


def run_pipeline(model: CTCModel, waves: list[np.ndarray], options: ExtractOptions) -> Figure:
    import soundfile as sf

    from ctclab.emission.audio_sources import OpenSLRSource
    from ctclab.emission.extract import extract

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data" / "bench" / "1" / "1"
        folder.mkdir(parents=True)
        lines = []
        for i, w in enumerate(waves):
            sf.write(folder / f"1-1-{i:04d}.flac", w, SAMPLE_RATE, subtype="PCM_16")
            lines.append(f"1-1-{i:04d} BENCH")
        (folder / "1-1.trans.txt").write_text("\n".join(lines) + "\n")
        _reset_peak(select_device(options.device))
        _, stats = extract(model, OpenSLRSource(Path(tmp) / "data", "bench"), Path(tmp) / "cache",
                           options=options, progress=False)
        peak = _peak(select_device(options.device))
    return Figure("pipeline (FLAC+model+cache)", options.batch_seconds or 0, stats.audio_seconds,
                  stats.wall_seconds, peak)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/emit_throughput.py", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="compute dtype; float16/bfloat16 run under autocast (GPU)")
    p.add_argument("--batch-seconds", type=float, nargs="+",
                   help="padded audio seconds per batch; several: one figure each (default: the "
                   f"emission stage's own, {DEFAULT_BATCH_SECONDS_CPU:g} on CPU and "
                   f"{DEFAULT_BATCH_SECONDS_GPU:g} on GPU)")
    p.add_argument("--audio-seconds", type=float, default=60.0,
                   help="total synthetic audio per configuration")
    p.add_argument("--no-peer", action="store_true", help="skip the one-at-a-time peer")
    p.add_argument("--peer-audio-seconds", type=float, default=None,
                   help="run the one-at-a-time peer on only the first this many seconds of the "
                   "audio (its speed is per audio second; one at a time is slow on large sets)")
    p.add_argument("--write", action="store_true",
                   help="also time extract over the audio in memory (model + cache writes)")
    p.add_argument("--pipeline", action="store_true",
                   help="also time the full extract (FLAC decode, model, cache writes)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own choice)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if not args.batch_seconds:
        args.batch_seconds = [DEFAULT_BATCH_SECONDS_GPU if device.type == "cuda"
                              else DEFAULT_BATCH_SECONDS_CPU]
    model = base_sized_model()
    waves = synthetic_audio(args.audio_seconds)
    runner = _Runner(model, device, args.dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{torch.get_num_threads()} threads"
    params = sum(q.numel() for q in model.module.parameters()) / 1e6
    print(f"device {device} ({where}), compute {args.dtype}, {len(waves)} utterances, "
          f"{sum(map(len, waves)) / SAMPLE_RATE:.0f} s of audio, wav2vec2-base-sized model "
          f"({params:.0f}M params)")
    figures = [run_batches(runner, model, waves, b, "batched") for b in args.batch_seconds]
    if not args.no_peer:
        peer_waves = waves
        if args.peer_audio_seconds is not None:
            ends = np.cumsum([len(w) for w in waves]) / SAMPLE_RATE
            peer_waves = waves[:max(1, int(np.searchsorted(ends, args.peer_audio_seconds)))]
        figures.append(run_batches(runner, model, peer_waves, 0.0, "one at a time (peer)"))
    options = ExtractOptions(device=args.device, dtype=args.dtype,
                             batch_seconds=args.batch_seconds[-1])
    if args.write:
        figures.append(run_write(model, waves, options))
    if args.pipeline:
        figures.append(run_pipeline(model, waves, options))
    peak_kind = "GPU max allocated" if device.type == "cuda" else "process peak RSS (cumul.)"
    print(f"{'mode':30} {'batch s':>8} {'audio s':>8} {'wall s':>8} {'audio s/s':>10} "
          f"{peak_kind + ' MiB':>22}")
    for f in figures:
        print(f"{f.label:30} {f.batch_seconds:8.0f} {f.audio_seconds:8.1f} {f.wall_seconds:8.2f} "
              f"{f.speed:10.1f} {f.peak_bytes / 2**20:22.0f}")
    if not args.no_peer:
        peer = figures[len(args.batch_seconds)]
        for f in figures[:len(args.batch_seconds)]:
            print(f"batched {f.batch_seconds:.0f} s / one at a time: {f.speed / peer.speed:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
