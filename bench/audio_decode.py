"""How fast one CPU core turns real FLAC files into model inputs: what an emission worker's loader
threads must keep up with on a GPU.

    python bench/audio_decode.py [--audio ../shared] [--repeat 5] [--gpu-rate 6303]

Over every .flac under --audio (the 24 LibriSpeech and 70 AN4 clips of ../shared by default), one
thread: the emission stage's own read (emission.audio_sources.read_audio: libsndfile decode, mono,
resampling when needed, the finite check), then that plus wav2vec2's per-utterance normalisation.
Prints audio seconds per CPU second (process time, best of --repeat passes) and the cores a GPU
worker at --gpu-rate (audio s per s; README Speed: the H200's batched forward) needs for them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ctclab.core.options import HelpFormatter
from ctclab.emission.audio_sources import read_audio
from ctclab.emission.ctc_model import zero_mean_unit_var

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTCLAB_SHARED", REPO.parent / "shared"))


def best_rate(files: list[Path], step: Callable[[Path], np.ndarray], repeat: int) -> float:
    """Audio seconds per CPU second of ``step`` over ``files``, best of ``repeat`` passes."""
    best = float("inf")
    audio = 0.0
    for _ in range(repeat):
        start = time.process_time()
        audio = sum(len(step(f)) for f in files) / 16_000
        best = min(best, time.process_time() - start)
    return audio / best


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--audio", type=Path, default=SHARED, help="folder searched for .flac files")
    p.add_argument("--repeat", type=int, default=5, help="passes (the best is reported)")
    p.add_argument("--gpu-rate", type=float, default=6303.0,
                   help="audio seconds a GPU worker emits per second")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    files = sorted(args.audio.rglob("*.flac"))
    if not files:
        print(f"no .flac files under {args.audio}: give a folder of FLAC audio with --audio",
              file=sys.stderr)
        return 2
    seconds = sum(len(read_audio(f)) for f in files) / 16_000
    print(f"{len(files)} FLAC files, {seconds:.1f} s of audio, under {args.audio}; one thread")
    for label, step in (("read_audio (decode, mono, resample, check)", read_audio),
                        ("+ wav2vec2 normalisation", lambda f: zero_mean_unit_var(read_audio(f)))):
        rate = best_rate(files, step, args.repeat)
        print(f"{label:45s} {rate:8,.0f} audio s per CPU s; a GPU worker at "
              f"{args.gpu_rate:,.0f}x needs {args.gpu_rate / rate:.1f} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
