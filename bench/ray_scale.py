"""Scale simulation for decoding on a Ray cluster (issue #14), and the plan for 60k hours.

    python bench/ray_scale.py --hours 50 --decode-hours 2 --repeat 3 \
        --lm ../shared/lm/en-us-70k-3gram.arpa.gz

1. A synthetic emission cache of ``--hours`` of audio (made once, reused): utterance lengths drawn
   from the real LibriSpeech utterances in ../shared (their audio_seconds), peaky log-probs that
   spell random words of the LM's vocabulary (1-3 frames a letter, 0-2 blanks between, 20 ms
   frames, QuartzNet's 29 labels), stored as float16 like a real cache.
2. Decoding throughput on the first ``--decode-hours`` of it, in the same run: one process without
   Ray (the peer), then Ray with 1 and 2 workers (eval.distributed_decode, a local cluster), for
   greedy and for the beam with the LM. Audio seconds per wall second end to end (scoring on the
   driver included), best and median of ``--repeat`` passes; peak resident memory per worker.
3. The plan for ``--plan-hours`` on N GPUs and M CPU nodes: cache size and layout, time and cost
   per stage from the measured per-worker rates (the GPU emission rate is an input: see --gpu-rate).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ctclab.cluster.connection import RayOptions, open_cluster
from ctclab.core.hypothesis import Hypothesis
from ctclab.core.memory import keep_freed_memory
from ctclab.core.normalize import DEFAULT_NORMALIZER
from ctclab.core.table import Table
from ctclab.core.vocabulary import Vocabulary
from ctclab.emission.cache import CacheMeta, CacheWriter, EmissionCache
from ctclab.emission.options import DEFAULT_BATCH_SECONDS_GPU
from ctclab.eval.results import ResultsFolder
from ctclab.eval.runner import decode_records
from ctclab.eval.systems import DecoderFactory, build_systems
from ctclab.lm.unigrams import read_unigrams

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTCLAB_SHARED", REPO.parent / "shared"))
LENGTHS_FROM = SHARED / "emissions" / "quartznet15x5-base-en" / "manifest.tsv"
DEFAULT_LM = SHARED / "lm" / "en-us-70k-3gram.arpa.gz"
LABELS = [" ", *"abcdefghijklmnopqrstuvwxyz", "'", "<blank>"]
FRAME_SHIFT_S = 0.02
SHARPNESS = 8.0          # logit boost of each frame's label: p ~ 0.98, like real emissions
UTTERANCES_PER_SHARD = 64
# The plan's emission model: wav2vec2-base-like, 50 frames a second, 32 labels, float16.
PLAN_FPS, PLAN_LABELS, PLAN_BYTES = 50, 32, 2


def vocabulary() -> Vocabulary:
    return Vocabulary.from_labels(LABELS, blank=len(LABELS) - 1, delimiter=" ")


def real_lengths() -> list[float]:
    """Audio seconds of the real LibriSpeech utterances in ../shared."""
    if not LENGTHS_FROM.is_file():
        raise SystemExit(f"{LENGTHS_FROM} not found: the real utterance lengths come from the "
                         "shared QuartzNet manifest (../shared beside the repo)")
    rows = [line.split("\t") for line in LENGTHS_FROM.read_text().splitlines()[1:]]
    return [float(r[3]) for r in rows if not r[0].startswith("an4")]


def synthetic(vocab: Vocabulary, words: list[str], seconds: float,
              rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """(T, V) peaky log-probs of ``seconds`` of speech spelling random ``words``, and the text."""
    frames = max(1, round(seconds / FRAME_SHIFT_S))
    path: list[int] = [vocab.blank] * int(rng.integers(2, 10))
    said: list[str] = []
    while True:
        word = words[int(rng.integers(len(words)))]
        piece = [vocab.delimiter] if said else []
        for i, ch in enumerate(word):
            gap = max(int(rng.integers(0, 3)), 1 if i and ch == word[i - 1] else 0)
            piece += [vocab.blank] * gap + [vocab.label_to_id[ch]] * int(rng.integers(1, 4))
        if len(path) + len(piece) + 2 > frames:
            break
        path += piece
        said.append(word)
    path += [vocab.blank] * (frames - len(path))
    logits = rng.normal(size=(frames, vocab.size)).astype(np.float32)
    logits[np.arange(frames), path[:frames]] += SHARPNESS
    logits -= np.logaddexp.reduce(logits, axis=1, keepdims=True)
    return logits, " ".join(said).upper()


def make_cache(folder: Path, hours: float, lm: Path, seed: int) -> EmissionCache:
    """The synthetic cache of ``hours`` in ``folder`` (reused when it was made the same way)."""
    vocab = vocabulary()
    meta = CacheMeta(model="synthetic-peaky", revision=f"seed{seed}", source="synthetic",
                     split=f"{hours:g}h", vocabulary=vocab.to_dict(),
                     frame_shift_s=FRAME_SHIFT_S, dtype="float16",
                     details={"hours": hours, "seed": seed, "lengths": str(LENGTHS_FROM)})
    old = CacheMeta.read(folder)
    if old is not None and old.complete and old.details == meta.details:
        return EmissionCache.open(folder)
    rng = np.random.default_rng(seed)
    lengths = real_lengths()
    words = [w for w in read_unigrams(lm) if w and all(c in vocab.label_to_id for c in w)
             and " " not in w]
    start, total, count = time.perf_counter(), 0.0, 0
    with CacheWriter(folder, meta) as writer:
        batch = []
        while total < hours * 3600:
            seconds = float(lengths[int(rng.integers(len(lengths)))])
            log_probs, text = synthetic(vocab, words, seconds, rng)
            batch.append((f"syn-{count:07d}", text, seconds, log_probs))
            total, count = total + seconds, count + 1
            if len(batch) == UTTERANCES_PER_SHARD:
                writer.add_batch(batch)
                batch = []
        if batch:
            writer.add_batch(batch)
        cache = writer.finish()
    print(f"made {cache.path}: {count} utterances, {total / 3600:.1f} h, "
          f"{sum(p.stat().st_size for p in (folder / 'shards').iterdir()) / 2**20:.0f} MiB, "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return cache


def sample(cache: EmissionCache, hours: float) -> list:
    records, total = [], 0.0
    for record in cache.records:
        if total >= hours * 3600:
            break
        records.append(record)
        total += record.audio_seconds
    return records


def timed(factory: DecoderFactory, system, cache: EmissionCache, records: list
          ) -> tuple[float, list]:
    """(audio seconds per wall second of eval.runner.decode_records, its results)."""
    decoder, _ = factory.build(system, cache.meta.vocabulary, cache.frame_shift_s)
    decoder.decode(cache.log_probs(records[0].id))  # warm-up (every worker for Ray)
    start = time.perf_counter()
    results = decode_records(decoder, cache, records, 1, DEFAULT_NORMALIZER)
    return sum(r.audio_seconds for r in records) / (time.perf_counter() - start), results


class Replay:
    """A decoder that decodes elsewhere instantly: it hands eval.runner the hypotheses of an
    earlier pass, so that decode_records measures the driver's own share of a distributed
    decode (scoring, records, the results file), the ceiling of any cluster."""

    batch_size = 1

    def __init__(self, hyps: dict[str, Hypothesis]):
        self.hyps = hyps

    def decode_chunks(self, cache: EmissionCache, records: list, chunk: int):
        for start in range(0, len(records), chunk):
            part = records[start:start + chunk]
            yield part, [self.hyps[r.id] for r in part], 0.0


def driver_rate(cache: EmissionCache, records: list, results: list, references: bool) -> float:
    """Audio seconds per CPU-second the driver alone gets through (see Replay), results appended
    to a results folder as eval/run.py does; ``references`` False: empty references
    (pseudo-labels)."""
    hyps = {r.id: Hypothesis(r.hyp, r.score) for r in results}
    if not references:
        records = [dataclasses.replace(r, text="") for r in records]
    with tempfile.TemporaryDirectory() as folder:
        out = ResultsFolder(folder)
        start = time.process_time()  # CPU time: what a driver core must give, whatever the load
        decode_records(Replay(hyps), cache, records, 1, DEFAULT_NORMALIZER,  # type: ignore[arg-type]
                       sink=lambda rs: out.append_utterances("s", "x", rs))
        cpu = time.process_time() - start
    return sum(r.audio_seconds for r in records) / cpu


def real_rates(systems: list, repeat: int) -> dict[str, float]:
    """Audio seconds per CPU-second of each system decoding the real QuartzNet emissions in
    ../shared in this process (median of ``repeat`` passes after a warm-up): what real, less
    peaky output costs, against the synthetic cache."""
    root = LENGTHS_FROM.parent
    rows = [line.split("\t") for line in LENGTHS_FROM.read_text().splitlines()[1:]]
    arrays = [np.load(root / split / f"{utt}.npy").astype(np.float32) for split, utt, *_ in rows]
    seconds = sum(float(r[3]) for r in rows)
    out = {}
    for system in systems:
        decoder, _ = DecoderFactory().build(system, vocabulary().to_dict(), FRAME_SHIFT_S)
        decoder.decode_many(arrays[:4])
        passes = []
        for _ in range(repeat):
            start = time.process_time()
            decoder.decode_many(arrays)
            passes.append(seconds / (time.process_time() - start))
        out[system.label] = statistics.median(passes)
    return out


def measure(args: argparse.Namespace, cache: EmissionCache) -> dict:
    systems = build_systems(["greedy"], [None], {}) + build_systems(
        ["beam"], [str(args.lm)], {"beam_width": args.beam_width})
    records = sample(cache, args.decode_hours)
    rates: dict[str, dict[str, list[float]]] = {s.label: {} for s in systems}
    memory: dict[str, dict[str, list[int]]] = {s.label: {} for s in systems}
    per_cpu: dict[str, dict[str, list[float]]] = {s.label: {} for s in systems}
    scoring: dict[str, list[float]] = {"references": [], "pseudo-labels": []}
    load = os.getloadavg()[0]
    logs = REPO / "bench" / "out" / "ray-logs"
    with open_cluster(RayOptions(ray="local"), logs) as cluster:
        assert cluster is not None
        for _ in range(args.repeat):
            for system in systems:
                rate, results = timed(DecoderFactory(), system, cache, records)
                rates[system.label].setdefault("local", []).append(rate)
                if system.lm is None:
                    scoring["references"].append(driver_rate(cache, records, results, True))
                    scoring["pseudo-labels"].append(driver_rate(cache, records, results, False))
                for workers in (1, 2):
                    from ctclab.eval.distributed_decode import RayDecoderFactory

                    factory = RayDecoderFactory(cluster, RayOptions(ray="local",
                                                                    ray_workers=workers))
                    rate, _ = timed(factory, system, cache, records)
                    rates[system.label].setdefault(f"ray x{workers}", []).append(rate)
                    usage = factory.usage()
                    memory[system.label][f"ray x{workers}"] = [int(u["peak_rss"]) for u in usage]
                    per_cpu[system.label].setdefault(f"ray x{workers}", []).append(
                        sum(u["audio_seconds"] for u in usage)
                        / sum(u["cpu_seconds"] for u in usage))
                    factory.pool().close()
                print(f"{system.label}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v
                                                      in rates[system.label].items())
                      + " audio-s/s", file=sys.stderr)
    real = real_rates(systems, args.repeat)
    return {"records": len(records), "audio_hours": sum(r.audio_seconds for r in records) / 3600,
            "real": real,
            "rates": rates, "per_cpu": per_cpu, "memory": memory, "scoring": scoring,
            "load": [load, os.getloadavg()[0]], "cpus": os.cpu_count()}


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def plan(args: argparse.Namespace, measured: dict) -> str:
    """The plan for --plan-hours from the measured rates (text for the README)."""
    seconds = args.plan_hours * 3600
    frames = seconds * PLAN_FPS
    size = frames * PLAN_LABELS * PLAN_BYTES
    utterances = seconds / args.utterance_seconds
    caches = max(1, round(args.plan_hours / args.hours_per_cache))
    shards = seconds / args.batch_seconds
    lines = [f"plan for {args.plan_hours:g} h ({frames / 1e9:.1f} G frames at {PLAN_FPS}/s, "
             f"{PLAN_LABELS} labels, float16):",
             f"- cache: {size / 1e9:.0f} GB; {caches} caches (splits) of {args.hours_per_cache:g} h, "
             f"each {args.hours_per_cache * 3600 / args.batch_seconds:,.0f} shards of "
             f"{args.batch_seconds * PLAN_FPS * PLAN_LABELS * PLAN_BYTES / 2**20:.1f} MiB "
             f"({args.batch_seconds:g} s batches) and a manifest of "
             f"{utterances / caches:,.0f} rows; {shards:,.0f} shards, {utterances / 1e6:.1f} M "
             "utterances in all"]
    rows = []
    for gpus in args.gpus:
        wall = seconds / (args.gpu_rate * gpus) / 3600
        rows.append(("emission", f"{gpus} GPUs", f"{args.gpu_rate:g}x a GPU",
                     _duration(wall), f"{gpus * wall:.0f} GPU-h",
                     f"${gpus * wall * args.gpu_price:,.0f}",
                     f"writes {size / (wall * 3600) / 2**20:.0f} MiB/s"))
    driver = statistics.median(measured["scoring"]["references"])
    labels = statistics.median(measured["scoring"]["pseudo-labels"])
    for label, by in measured["per_cpu"].items():
        # The slower of a worker on the synthetic cache and this process on real emissions.
        one = min(statistics.median(by["ray x1"]), measured["real"][label])
        for nodes in args.cpu_nodes:
            cores = nodes * args.cores_per_node
            workers = one * cores * args.scaling
            rate = min(workers, driver * args.drivers)
            wall = seconds / rate / 3600
            bound = "driver-bound" if driver * args.drivers < workers else "worker-bound"
            rows.append((f"decode {label}", f"{nodes} x {args.cores_per_node} cores",
                         f"{one:.0f}x a core", _duration(wall),
                         f"{cores * wall:.0f} core-h", f"${cores * wall * args.core_price:,.0f}",
                         f"{bound}; reads {size / (wall * 3600) / 2**20:.0f} MiB/s"))
        # A sweep: each Ray Tune trial decodes the dev hours on one core, side by side.
        trial = args.dev_hours / one
        cores = min(args.grid_points, args.cpu_nodes[0] * args.cores_per_node)
        waves = -(-args.grid_points // cores)
        rows.append((f"sweep {label}", f"{cores} cores", f"{one:.0f}x a trial",
                     _duration(waves * trial), f"{args.grid_points * trial:.2f} core-h",
                     f"${args.grid_points * trial * args.core_price:,.2f}",
                     f"{args.grid_points} points x {args.dev_hours:g} h of dev audio"))
    table = Table(("stage", "machines", "rate (x real time)", "wall", "machine time", "cost",
                   "notes"), rows).text()
    notes = [
        "- decoding: per CPU-second, the slower of one Ray worker on the synthetic cache and "
        "one process on the real QuartzNet emissions (medians, measured), "
        f"{args.scaling:.0%} of linear scaling over cores assumed (workers share nothing but the "
        "cache; the 2 shared cores here cannot show it). The driver alone (scoring, records, the "
        f"results file) gets through {driver:,.0f} audio-s per CPU-second with references and "
        f"{labels:,.0f} without (pseudo-labels), medians measured: the ceiling of one eval/run.py "
        f"on any cluster. The table uses the first with {args.drivers} drivers (one eval/run.py "
        f"per group of caches, all on the cluster), {args.drivers * driver:,.0f}x."]
    return "\n".join([*lines, *notes, table])


def report(measured: dict) -> str:
    rows = []
    for label, by in measured["rates"].items():
        local = statistics.median(by["local"])
        for mode, values in by.items():
            mem = measured["memory"][label].get(mode)
            cpu = measured["per_cpu"][label].get(mode)
            rows.append((label, mode, f"{max(values):.0f}", f"{statistics.median(values):.0f}",
                         f"{statistics.median(values) / local:.2f}",
                         f"{max(cpu):.0f} / {statistics.median(cpu):.0f}" if cpu else "-",
                         " / ".join(f"{m / 2**20:.0f}" for m in mem) if mem else "-"))
    for label, rate in measured["real"].items():
        rows.append((label, "real QuartzNet, here", "-", "-", "-", f"- / {rate:.0f}", "-"))
    load = measured["load"]
    head = (f"decoding {measured['records']} utterances ({measured['audio_hours']:.2f} h) on "
            f"{measured['cpus']} CPUs at load average {load[0]:.1f}-{load[1]:.1f}; x real time "
            "= audio-s per wall-s end to end, and per CPU-second of the workers:")
    return head + "\n" + Table(("system", "run", "best", "median", "median / local",
                                "per worker CPU-s (best / median)", "peak MiB per worker"),
                               rows).text()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "scale-cache",
                   help="folder of the synthetic cache (made once)")
    p.add_argument("--hours", type=float, default=50.0, help="hours of the synthetic cache")
    p.add_argument("--decode-hours", type=float, default=1.0, help="hours decoded per pass")
    p.add_argument("--repeat", type=int, default=3, help="passes per run (best and median)")
    p.add_argument("--lm", type=Path, default=DEFAULT_LM, help="word LM of the beam")
    p.add_argument("--beam-width", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("the plan")
    g.add_argument("--plan-hours", type=float, default=60_000.0)
    g.add_argument("--gpus", type=int, nargs="+", default=[8, 32])
    g.add_argument("--gpu-rate", type=float, default=6000.0,
                   help="audio seconds a GPU emits per second (measured on an H200, README "
                   "Emission: 6,303 for the batched forward with the default 800 s batches, "
                   "6,716 for the stage with its cache writes with 1600 s)")
    g.add_argument("--gpu-price", type=float, default=2.5, help="$ per GPU-hour (assumed)")
    g.add_argument("--cpu-nodes", type=int, nargs="+", default=[1, 4])
    g.add_argument("--cores-per-node", type=int, default=64)
    g.add_argument("--core-price", type=float, default=0.04, help="$ per core-hour (assumed)")
    g.add_argument("--scaling", type=float, default=0.9,
                   help="share of linear speed-up over cores on dedicated nodes (assumed)")
    g.add_argument("--drivers", type=int, default=8,
                   help="eval/run.py processes decoding groups of caches at once on the cluster")
    g.add_argument("--hours-per-cache", type=float, default=1000.0)
    g.add_argument("--batch-seconds", type=float, default=DEFAULT_BATCH_SECONDS_GPU,
                   help="GPU batch = one shard")
    g.add_argument("--utterance-seconds", type=float, default=15.0)
    g.add_argument("--dev-hours", type=float, default=10.7, help="dev audio of a sweep")
    g.add_argument("--grid-points", type=int, default=25)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_freed_memory()   # the one-process run, as eval/run.py (the Ray workers do it too)
    cache = make_cache(args.out, args.hours, args.lm, args.seed)
    print(f"cache: {len(cache)} utterances, {cache.total_audio_seconds / 3600:.1f} h, "
          f"{cache.total_frames:,} frames, mean {cache.total_audio_seconds / len(cache):.1f} s")
    measured = measure(args, cache)
    print(report(measured))
    print()
    print(plan(args, measured))
    out = REPO / "bench" / "out" / "ray_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **measured},
                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
