"""Decoding on a Ray cluster: chunks of utterances decoded by workers that each load an LM once.

    factory = RayDecoderFactory(cluster, RayOptions(ray="local"))   # instead of DecoderFactory()
    summary = evaluate(systems, caches, folder, settings, command, factory)   # eval.runner

``factory.build`` returns a :class:`RemoteDecoder`: the decoder is built on every worker (its LM
loaded once per worker process by ctclab.lm.loaded) and the driver keeps only a handle. The runner
hands it chunks of utterance ids (its ``decode_chunks``); a worker reads their arrays from the
cache itself (the cache folder is on a filesystem every node shares), decodes the chunk exactly as
a single process would (``decode_many`` with one job: the same chunks, the same batches), and
returns the hypotheses. Chunks come back in order, so the results folder, the scores and the
progress bar are those of a single-process run; only the timings differ. A dead worker's chunk is
decoded again by another (cluster.workers).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctclab.cluster.connection import Cluster, RayOptions
from ctclab.cluster.workers import Worker, peak_rss_bytes
from ctclab.core.hypothesis import Hypothesis
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.base import Decoder
from ctclab.emission.cache import EmissionCache
from ctclab.eval.systems import DecoderFactory, System, SystemDecoder

# CPUs a decoding worker holds: decoders run one utterance batch at a time on one core.
DEFAULT_DECODE_CPUS = 1.0
# Audio seconds per job (several of the runner's chunks, each decoded as one decode_many call):
# a Ray task costs about a millisecond and a chunk of greedy decoding little more, so jobs of ten
# minutes of audio keep the overhead small (greedy ~0.1 s a job, the beam with an LM ~0.5 s)
# while a dead worker's job stays cheap to redo.
JOB_AUDIO_SECONDS = 600.0
# Utterances per job when arrays are sent to the workers (decode_many; the runner's chunks read
# them from the cache instead).
ARRAYS_PER_JOB = 16


@dataclass(frozen=True)
class DecoderSpec:
    """What a worker builds a decoder from (eval.systems.DecoderFactory.build's arguments)."""

    system: System
    vocabulary: dict
    frame_shift_s: float
    options: Any
    units: str | None = None   # DecoderFactory's units (phonemes with a pronunciation lexicon)


class DecodeWorker(Worker):
    """An actor holding decoders (and through them their LMs, loaded once per process) and the
    caches it reads."""

    def setup(self) -> None:
        self.factories: dict[str | None, DecoderFactory] = {}   # by units
        self.caches: dict[str, EmissionCache] = {}
        self.audio_seconds = 0.0   # decoded by this worker, and the CPU seconds it took
        self.cpu_seconds = 0.0

    def _decoder(self, spec: DecoderSpec) -> SystemDecoder:
        factory = self.factories.setdefault(spec.units, DecoderFactory(spec.units))
        decoder, seconds = factory.build(spec.system, spec.vocabulary, spec.frame_shift_s,
                                         spec.options)
        if seconds:
            self.log(f"built {spec.system.label} ({spec.options!r:.200}) in {seconds:.2f} s; "
                     f"peak memory {peak_rss_bytes() / 2**20:.0f} MiB")
        return decoder

    def prepare(self, spec: DecoderSpec) -> int:
        """Build the decoder (loading its LM); its batch size."""
        return self._decoder(spec).batch_size

    def warm(self, spec: DecoderSpec, log_probs: np.ndarray) -> Hypothesis:
        """One untimed decode (lazy imports, first allocations, LM pages)."""
        return self._decoder(spec).decode(log_probs)

    def decode(self, spec: DecoderSpec, cache_path: str, chunks: list[list[str]]
               ) -> list[tuple[list[Hypothesis], float]]:
        """For each chunk of utterance ids of the cache at ``cache_path``: its hypotheses (one
        decode_many call, as in eval.runner) and the seconds decoding took (reading the arrays
        excluded)."""
        decoder = self._decoder(spec)
        if cache_path not in self.caches:
            self.caches[cache_path] = EmissionCache.open(cache_path)
        cache = self.caches[cache_path]
        out = []
        cpu = time.process_time()
        for ids in chunks:
            arrays = [cache.log_probs(i) for i in ids]
            began = time.perf_counter()
            hyps = decoder.decode_many(arrays, jobs=1)
            out.append((hyps, time.perf_counter() - began))
            self.audio_seconds += sum(cache.record(i).audio_seconds for i in ids)
        self.cpu_seconds += time.process_time() - cpu
        return out

    def usage(self) -> dict[str, float]:
        """Audio seconds decoded from caches, the CPU seconds that took (reading included), and
        the peak resident memory in bytes: what a worker costs, whatever else runs beside it."""
        return {"audio_seconds": self.audio_seconds, "cpu_seconds": self.cpu_seconds,
                "peak_rss": float(peak_rss_bytes())}

    def decode_arrays(self, spec: DecoderSpec, arrays: list[np.ndarray]) -> list[Hypothesis]:
        return self._decoder(spec).decode_many(arrays, jobs=1)

    def forget(self, label: str) -> None:
        for factory in self.factories.values():
            factory.forget(label)


class RemoteDecoder(Decoder[Any]):
    """A decoder built on the workers of a pool; decodes there. Made by RayDecoderFactory."""

    def __init__(self, pool: Any, spec: DecoderSpec, spec_ref: Any, batch_size: int):
        # Decoder.__init__ is not called: the decoder itself (and its option checks) lives on
        # the workers; these are the attributes callers read.
        self.vocab = Vocabulary.from_dict(spec.vocabulary)
        self.options = spec.options
        self.frame_shift_s = float(spec.frame_shift_s)
        self.pool, self.spec, self._ref, self._batch_size = pool, spec, spec_ref, batch_size

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def decode(self, log_probs: np.ndarray) -> Hypothesis:
        """Decode one utterance on every worker (a warm-up for all of them); its hypothesis."""
        return self.pool.broadcast(lambda actor: actor.warm.remote(self._ref, log_probs))[0]

    def decode_many(self, emissions: Sequence[np.ndarray], jobs: int = 1,
                    on_done: Callable[[int], None] | None = None) -> list[Hypothesis]:
        """Arrays sent to the workers in chunks; hypotheses in order (``jobs`` is not used: the
        workers are the parallelism)."""
        size = max(ARRAYS_PER_JOB, self._batch_size)
        parts = [list(emissions[i:i + size]) for i in range(0, len(emissions), size)]
        out: list[Hypothesis] = []
        with closing(self.pool.map_ordered(
                parts, lambda actor, part, attempt: actor.decode_arrays.remote(self._ref, part),
                lambda part: f"{len(part)} utterances of {self.spec.system.label}")) as results:
            for hyps in results:
                out += hyps
                if on_done is not None:
                    on_done(len(hyps))
        return out

    def decode_chunks(self, cache: EmissionCache, records: Sequence[Any], chunk: int
                      ) -> Iterator[tuple[Sequence[Any], list[Hypothesis], float]]:
        """(records, hypotheses, decode seconds) of consecutive chunks of ``records`` (cache
        records), in order; the workers read the arrays from the cache (eval.runner)."""
        path = str(cache.path.resolve())
        parts = [records[i:i + chunk] for i in range(0, len(records), chunk)]
        jobs = job_groups(parts)
        label = self.spec.system.label

        def call(actor: Any, job: list[Sequence[Any]], attempt: int) -> Any:
            return actor.decode.remote(self._ref, path, [[r.id for r in part] for part in job])

        def describe(job: list[Sequence[Any]]) -> str:
            return f"{cache.meta.split} {label} utterances {job[0][0].id}..{job[-1][-1].id}"

        with closing(self.pool.map_ordered(jobs, call, describe)) as results:
            for job, answers in zip(jobs, results, strict=True):
                for part, (hyps, wall) in zip(job, answers, strict=True):
                    yield part, hyps, wall


def job_groups(parts: list[Sequence[Any]], seconds: float | None = None
               ) -> list[list[Sequence[Any]]]:
    """Consecutive chunks grouped into jobs of at least ``seconds`` of audio (JOB_AUDIO_SECONDS)
    each; every chunk is still decoded on its own, so its batches are the single process's."""
    seconds = JOB_AUDIO_SECONDS if seconds is None else seconds
    jobs: list[list[Sequence[Any]]] = []
    held = seconds
    for part in parts:
        if held >= seconds:
            jobs.append([])
            held = 0.0
        jobs[-1].append(part)
        held += sum(float(r.audio_seconds) for r in part)
    return jobs


def check_cpu_search(options: Any, label: str) -> None:
    """ValueError when ``options`` ask for a search on a GPU: decoding workers and tuning trials
    hold CPUs only, and Ray hides the GPUs from them (the emission workers get the GPUs)."""
    device = str(getattr(options, "device", None) or "cpu")
    if device.split(":")[0] == "cuda":
        raise ValueError(f"{label}: --device {device} runs the beam search on a GPU, but with "
                         "--ray the decoding workers and tuning trials hold CPUs only (the "
                         "emission workers get the GPUs): use --device auto (GPU emission, CPU "
                         "decoding), or decode without --ray")


class RayDecoderFactory(DecoderFactory):
    """eval.systems.DecoderFactory whose decoders run on Ray workers (started on first use: one
    per CPU of the cluster unless --ray-workers says otherwise; closed with the cluster)."""

    def __init__(self, cluster: Cluster, options: RayOptions, units: str | None = None, *,
                 progress: bool = True):
        super().__init__(units, progress=progress)
        self.cluster, self.options = cluster, options
        self._pool: Any = None
        self._remote: dict[tuple, RemoteDecoder] = {}

    def pool(self) -> Any:
        """The decoding workers (started on first use)."""
        if self._pool is None or self._pool.closed:
            cpus = self.options.ray_cpus or DEFAULT_DECODE_CPUS
            count = self.options.ray_workers or max(
                1, int(self.cluster.resources().get("CPU", 1) // cpus))
            self._pool = self.cluster.workers(DecodeWorker, role="decode", count=count,
                                              num_cpus=cpus)
            self._remote.clear()
        return self._pool

    def build(self, system: System, vocab_dict: dict, frame_shift_s: float,
              options: Any = None) -> tuple[SystemDecoder, float]:
        """(RemoteDecoder, seconds spent building it on the workers, LM loading included; 0.0
        when memoised)."""
        options = options or system.options
        check_cpu_search(options, system.label)
        pool = self.pool()
        key = (system.label, repr(options), repr(vocab_dict), frame_shift_s)
        if key in self._remote:
            return self._remote[key], 0.0
        start = time.perf_counter()
        spec = DecoderSpec(system, vocab_dict, frame_shift_s, options, self.units)
        ref = self.cluster.ray.put(spec)
        sizes = pool.broadcast(lambda actor: actor.prepare.remote(ref))
        decoder = RemoteDecoder(pool, spec, ref, int(sizes[0]))
        self._remote[key] = decoder
        return decoder, time.perf_counter() - start

    def forget(self, label: str) -> None:
        super().forget(label)
        self._remote = {k: v for k, v in self._remote.items() if k[0] != label}
        if self._pool is not None and not self._pool.closed:
            self._pool.broadcast(lambda actor: actor.forget.remote(label))

    def usage(self) -> list[dict[str, float]]:
        """DecodeWorker.usage of every worker (for the benchmark)."""
        return list(self.pool().broadcast(lambda actor: actor.usage.remote()))
