"""Command line: run a CTC model over a corpus split once and cache its log-probs on disk.

    python eval/emit.py --model facebook/wav2vec2-base-960h --split test-clean --data-dir DIR
    python eval/emit.py --import-emissions ../shared/emissions/quartznet15x5-base-en --split test-clean
    python eval/emit.py --model ... --split train-clean-360 --data-dir DIR --ray HOST:6379

With --ray (or $RAY_ADDRESS) the model runs on Ray workers, one per GPU of the cluster, each
writing its shards into the one cache (emission/distributed.py); the cache is the same.

Re-running the same command resumes an interrupted run; a complete cache is left as is (decided
before the model loads); new utterances in the source extend it; corrected references update it.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from ctclab.cluster.connection import RayOptions, open_cluster, ray_options
from ctclab.core.options import HelpFormatter, add_option_flags
from ctclab.core.table import Table
from ctclab.emission.distributed import EmissionWorkers
from ctclab.emission.options import add_emission_flags, spec_from_flags
from ctclab.emission.stage import EmissionResult, ModelLoader, open_emissions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python eval/emit.py", description=__doc__,
        formatter_class=HelpFormatter)
    p.add_argument("--split", nargs="+", required=True,
                   help="split name(s), e.g. test-clean test-other")
    add_emission_flags(p)
    add_option_flags(p.add_argument_group("Ray cluster"), {"ray": RayOptions})
    # --quiet as in eval/run.py and the benchmarks; --no-progress is the older spelling
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress display (--no-progress: the same)")
    return p


def run(args: argparse.Namespace) -> list[EmissionResult]:
    """Get the cache of every split (one model load for all); returns one result per split."""
    spec, models = spec_from_flags(args, default_source="hf"), ModelLoader()
    ray = ray_options(args)
    if ray.enabled and spec.import_dir:
        print("[ray] --import-emissions runs no model: Ray is not used", file=sys.stderr)
        ray = RayOptions()
    logs = Path(ray.ray_logs) if ray.ray_logs else \
        spec.cache_root() / "ray-logs" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    results = []
    with open_cluster(ray, logs) as cluster:
        workers = EmissionWorkers(cluster, ray) if cluster is not None else None
        for split in args.split:
            result = open_emissions(spec, split, models=models, progress=not args.quiet,
                                    workers=workers)
            for line in result.messages():
                print(line, file=sys.stderr)
            results.append(result)
    return results


def format_table(results: list[EmissionResult]) -> str:
    """The closing table, one row per split, then where each cache is."""
    header = ("split", "utts", "hours", "frames", "time s", "speed x", "device", "skipped",
              "status")
    rows = [(r.cache.meta.split, str(len(r.cache)), f"{r.cache.total_audio_seconds / 3600:.3f}",
             str(r.cache.total_frames), f"{r.wall_seconds:.1f}",
             f"{r.speed:.1f}" if r.speed is not None else "-", r.device,
             str(len(r.cache.skipped)), r.note) for r in results]
    return "\n".join([Table(header, rows).text(),
                      *(f"cache {r.cache.meta.split}: {r.cache.path}" for r in results)])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished batches are saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, ImportError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions, a vanished file: the cache stays consistent
        hint = "" if isinstance(exc, FileNotFoundError) else (
            " (finished batches are saved: fix the cause and run the same command again to "
            "resume)")
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
