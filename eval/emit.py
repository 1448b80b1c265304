"""Command line: run a CTC model over a corpus split once and cache its log-probs on disk.

    python eval/emit.py --model facebook/wav2vec2-base-960h --split test-clean --data-dir DIR
    python eval/emit.py --import-emissions ../shared/emissions/quartznet15x5-base-en --split test-clean

Re-running the same command resumes an interrupted run; a complete cache is left as is.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ctclab.core.paths import CACHE_DIR_ENV
from ctclab.core.table import Table
from ctclab.emission.audio_sources import SOURCE_NAMES, open_source
from ctclab.emission.cache import EmissionCache, default_cache_root, import_emissions
from ctclab.emission.extract import COMPUTE_DTYPES, DEFAULT_LOADER_THREADS, DEVICES, ExtractOptions


@dataclass(frozen=True)
class SplitSummary:
    """One row of the closing table."""

    split: str
    utterances: int
    audio_seconds: float
    frames: int
    wall_seconds: float
    device: str
    skipped: int
    note: str
    path: Path
    speed: float | None = None  # audio seconds computed in this run per wall second

    @classmethod
    def of_cache(cls, cache: EmissionCache, wall: float, device: str, note: str,
                 speed: float | None = None) -> SplitSummary:
        return cls(cache.meta.split, len(cache), cache.total_audio_seconds, cache.total_frames,
                   wall, device, len(cache.meta.skipped), note, cache.path, speed)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python eval/emit.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="HF model id, local model directory, or torchaudio:BUNDLE")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    p.add_argument("--split", nargs="+", required=True,
                   help="split name(s), e.g. test-clean test-other")
    p.add_argument("--data-dir", default=None,
                   help="OpenSLR folder (holding <split>/) or a local HF dataset (save_to_disk)")
    p.add_argument("--source", choices=SOURCE_NAMES, default=None,
                   help="audio source (default: manifest with --manifest, openslr with "
                        "--data-dir, else the HF hub's openslr/librispeech_asr)")
    p.add_argument("--manifest", default=None, help="TSV/JSONL with id, audio path, text")
    p.add_argument("--cache-dir", default=None,
                   help=f"cache root (default ${CACHE_DIR_ENV}, else ctclab in the user cache "
                        f"folder; here: {default_cache_root()})")
    p.add_argument("--device", default="auto", help=f"one of {DEVICES} or cuda:N")
    p.add_argument("--dtype", default="float32", choices=COMPUTE_DTYPES,
                   help="compute dtype (float16/bfloat16 via autocast, for GPUs)")
    p.add_argument("--store-dtype", default="float16", choices=("float16", "float32"),
                   help="dtype of the cached log-probs")
    p.add_argument("--batch-seconds", type=float, default=None,
                   help="padded audio seconds per batch (default 16 on CPU, 400 on GPU)")
    p.add_argument("--loader-threads", type=int, default=DEFAULT_LOADER_THREADS,
                   help="threads decoding audio ahead of the model")
    p.add_argument("--skip-bad", action="store_true",
                   help="log and skip unreadable audio (listed in the cache meta) instead of "
                        "stopping")
    p.add_argument("--import-emissions", default=None, metavar="DIR",
                   help="import per-utterance <DIR>/<split>/<id>.npy log-probs instead of "
                        "running a model (labels.json + manifest.tsv in DIR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _print_table(rows: list[SplitSummary]) -> None:
    header = ("split", "utts", "hours", "frames", "time s", "speed x", "device", "skipped", "status")
    cells = [(r.split, str(r.utterances), f"{r.audio_seconds / 3600:.3f}", str(r.frames),
              f"{r.wall_seconds:.1f}", f"{r.speed:.1f}" if r.speed is not None else "-",
              r.device, str(r.skipped), r.note) for r in rows]
    print(Table(header, cells).text())
    for r in rows:
        print(f"cache {r.split}: {r.path}")


def run(args: argparse.Namespace) -> list[SplitSummary]:
    """Do the work for parsed arguments; returns one summary row per split."""
    import time

    root = Path(args.cache_dir) if args.cache_dir else default_cache_root()
    rows: list[SplitSummary] = []
    if args.import_emissions:
        for split in args.split:
            start = time.perf_counter()
            cache = import_emissions(args.import_emissions, root, split=split, model=args.model)
            rows.append(SplitSummary.of_cache(cache, time.perf_counter() - start, "-",
                                              "imported"))
        return rows
    if not args.model:
        raise ValueError("--model is required (a HF id such as facebook/wav2vec2-base-960h, a "
                         "local model directory, or torchaudio:BUNDLE), unless --import-emissions")
    from ctclab.emission.extract import extract
    from ctclab.emission.models import load_ctc_model

    options = ExtractOptions(device=args.device, dtype=args.dtype, store_dtype=args.store_dtype,
                             batch_seconds=args.batch_seconds, skip_bad=args.skip_bad,
                             loader_threads=args.loader_threads)
    source_name = args.source or ("manifest" if args.manifest else
                                  "openslr" if args.data_dir else "hf")
    model = load_ctc_model(args.model, revision=args.revision)
    for split in args.split:
        source = open_source(source_name, split, data_dir=args.data_dir, manifest=args.manifest)
        cache, stats = extract(model, source, root, options=options,
                               progress=not args.no_progress)
        for item in stats.skipped:
            print(f"skipped {item.id}: {item.path}: {item.reason}", file=sys.stderr)
        if not stats.utterances:
            note = "cached (no-op)"
        elif stats.resumed:
            note = f"computed {stats.utterances}, resumed after {stats.resumed}"
        else:
            note = "computed"
        rows.append(SplitSummary.of_cache(cache, stats.wall_seconds, stats.device, note,
                                          stats.speed if stats.utterances else None))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished batches are saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, ImportError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
