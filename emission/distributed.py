"""The emission stage on a Ray cluster: utterances computed by workers (one per GPU, each loading
the model once), stored in the one cache on a shared filesystem.

    with open_cluster(RayOptions(ray="local"), logs) as cluster:           # cluster.connection
        workers = EmissionWorkers(cluster, RayOptions(ray="local"))
        result = open_emissions(spec, "test-clean", workers=workers)       # emission.stage

Who writes what. The driver plans the batches exactly as a single-process run would
(extract.plan_batches over the same probed utterances, the same batch seconds) and hands them to
the workers in parts of BATCHES_PER_JOB consecutive batches. A worker runs the model over a
part and writes each batch's shard itself, beside the cache's shards under a temp name in the
run's staging folder (``shards/.stage-<run>/<attempt>-<batch>.tmp``, fsynced;
emission.cache.CacheWriter.staging), with the same bytes the cache writer would write; it returns
only the batch's manifest rows. The driver, which alone holds the cache's lock, takes the parts
in plan order and commits each batch as CacheWriter.add_batch would:
it checks the file, renames it to the next shard name and appends its manifest rows (fsynced).
So the emissions never pass through the driver, and yet:

- writes are atomic: a shard is published by one rename, its rows appended only after it;
- no utterance is stored twice or lost: the driver commits each batch once, in order; a batch of
  a dead worker is run again by another one (under a new temp name, so a late write of the dead
  one cannot land in a published shard), and a killed run resumes like a single-process one;
- nothing is left behind: Ray kills workers asynchronously, so a worker of an interrupted run may
  write on for a moment after its run ended; the run's staging folder is removed for good by then,
  and creating a file in it fails;
- the finished cache has the same content as a single-process run's: the same batches in the
  same order give the same shard names, shard bytes and manifest rows (equal bytes need the same
  kernels: the same device type and, on CPUs, the same number of torch threads; otherwise the
  values agree within emission.cache.storage_tolerance);
- a resumed run equals an uninterrupted one: commits go in plan order, so what is left is the
  tail of the plan, which plan_batches splits the same way again.

Workers need the audio, the model and the cache folder at the same paths as the driver.
"""
from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctclab.cluster.connection import Cluster, RayOptions
from ctclab.cluster.workers import Worker
from ctclab.core.progress import progress_bar
from ctclab.emission.audio_sources import AudioSource, SourceEntry, SourceRow, open_source
from ctclab.emission.cache import (
    DEFAULT_DTYPE,
    CacheMeta,
    CacheWriter,
    EmissionCache,
    SkippedItem,
    cache_dir_for,
    check_compatible,
    shard_array,
    write_shard,
)
from ctclab.emission.options import EmissionSpec, ExtractOptions
from ctclab.emission.sync import ExtractStats, FillReport, fill

# Batches per job: enough that the worker's loader thread keeps the model busy across batches,
# few enough that a dead worker's job is cheap to redo (4 x 800 s of audio on a GPU, a few
# seconds; 4 x 16 s on a CPU, about a minute).
BATCHES_PER_JOB = 4
# CPUs an emission worker on a GPU holds at most: they decode FLAC for the GPU (one core makes
# ~3,200x real time of model input, an H200 takes ~6,300x: 2 cores; 8 leave room for slower cores,
# resampling and larger GPUs. emission.options.DEFAULT_LOADER_THREADS has the reasoning).
MAX_CPUS_PER_GPU_WORKER = 8


@dataclass(frozen=True)
class WorkerPlan:
    """How many emission workers, what each holds, and the torch device they run on.
    threads: audio decoding threads (GPU workers) or torch threads (CPU workers)."""

    count: int
    num_cpus: float
    num_gpus: float
    device: str
    threads: int


def plan_workers(resources: Mapping[str, float], device: str, workers: int | None = None,
                 cpus: float | None = None) -> WorkerPlan:
    """One worker per GPU of the cluster (``resources``: ray.cluster_resources()) for device
    auto or cuda, CPU workers for cpu or a cluster without GPUs. ValueError for a device Ray
    cannot place (cuda:N, mps), cuda on a cluster without GPUs, or more GPU workers than GPUs."""
    kind = device.split(":")[0]
    if kind == "mps" or (kind == "cuda" and ":" in device):
        raise ValueError(f"--device {device} names a device of this machine; with --ray each "
                         "worker gets its own GPU from Ray: use --device auto, cuda or cpu")
    gpus = int(resources.get("GPU", 0))
    total_cpus = float(resources.get("CPU", 0))
    if kind in ("auto", "cuda") and gpus > 0:
        count = workers or gpus
        if count > gpus:
            raise ValueError(f"--ray-workers {count}: one emission worker per GPU, and the "
                             f"cluster has {gpus} GPUs")
        share = cpus if cpus is not None else max(1.0, min(float(MAX_CPUS_PER_GPU_WORKER),
                                                           total_cpus // gpus))
        return WorkerPlan(count, share, 1.0, "cuda", max(1, int(share)))
    if kind == "cuda":
        raise ValueError("--device cuda, but the Ray cluster has no GPU (resources: "
                         f"{dict(resources)}); use --device cpu or auto")
    share = cpus if cpus is not None else 1.0
    count = workers or max(1, int(total_cpus // share))
    return WorkerPlan(count, share, 0.0, "cpu", max(1, int(share)))


@dataclass(frozen=True)
class SourceKey:
    """How a worker opens the driver's audio source (absolute paths)."""

    name: str
    split: str
    data_dir: str | None
    manifest: str | None


@dataclass(frozen=True)
class ModelInfo:
    """The model as the driver knows it (the weights, the front end and the cache meta's fields
    stay on the workers): name as given, revision, receptive field in samples, sample rate."""

    name: str
    revision: str
    min_samples: int
    sample_rate: int


@dataclass(frozen=True)
class Job:
    """Consecutive batches of the plan: ``batches[k]`` is batch number ``first + k``."""

    first: int
    batches: tuple[tuple[SourceEntry, ...], ...]


@dataclass(frozen=True)
class BatchDone:
    """A batch a worker ran: its number, the manifest rows (id, text, audio seconds, frames) of
    the utterances in its staged shard file (None when all were unreadable), those skipped, and
    the worker's peak GPU memory so far (None on a CPU)."""

    number: int
    rows: tuple[tuple[str, str, float, int], ...]
    staged: str | None
    skipped: tuple[SkippedItem, ...]
    peak_gpu_bytes: int | None


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


class EmissionWorker(Worker):
    """An actor that loads the model once and runs parts of batch plans (any split)."""

    def setup(self, name: str, load_from: str, revision: str | None, options: ExtractOptions,
              threads: int) -> None:
        import torch

        from ctclab.emission import extract
        from ctclab.emission.models import load_ctc_model

        if options.device == "cpu":
            torch.set_num_threads(threads)
        start = time.perf_counter()
        # Loaded from the absolute path, recorded under the name as given (caches are found by it).
        self.model = dataclasses.replace(load_ctc_model(load_from, revision=revision), name=name)
        self.options = options
        self.runner = extract.model_runner(self.model, options)
        self.sources: dict[SourceKey, AudioSource] = {}
        self.log(f"model {name} (revision {self.model.revision}) on {self.runner.device} in "
                 f"{time.perf_counter() - start:.1f} s; torch threads {torch.get_num_threads()}")

    def info(self) -> ModelInfo:
        """What the driver needs to know of the model (the model itself stays here)."""
        m = self.model
        return ModelInfo(m.name, m.revision, m.min_samples, m.sample_rate)

    def meta(self, key: SourceKey, store_dtype: str, compute_dtype: str) -> CacheMeta:
        """The cache meta of this model over the source ``key`` (extract.model_meta)."""
        from ctclab.emission import extract

        return extract.model_meta(self.model, self._source(key), store_dtype, compute_dtype)

    def _source(self, key: SourceKey) -> AudioSource:
        if key not in self.sources:
            source = open_source(key.name, key.split, data_dir=key.data_dir,
                                 manifest=key.manifest)
            if key.name == "hf":  # rows are read from the dataset, not from paths
                source.listing()
            self.sources[key] = source
        return self.sources[key]

    def run(self, key: SourceKey, job: Job, staging: str, dtype: str, tag: str
            ) -> list[BatchDone]:
        """Run the batches of ``job`` and stage each batch's shard in the run's ``staging``
        folder, as ``<tag>-<batch>.tmp`` (tag: the attempt, so a rerun never meets a dead
        worker's file)."""
        import torch

        from ctclab.emission import extract

        folder = Path(staging)   # in the cache's shards/
        if not folder.is_dir():
            if folder.parent.is_dir():   # the run ended (interrupted): nothing is to be written
                raise FileNotFoundError(f"{folder}: the run this job belongs to has ended")
            raise FileNotFoundError(f"the cache folder {folder.parent.parent} is not visible on "
                                    "this node: --cache-dir must be on a filesystem that every "
                                    "node mounts at the same path")
        start = time.perf_counter()
        source = self._source(key)
        entries = [e for batch in job.batches for e in batch]
        bounds = [0]
        for batch in job.batches:
            bounds.append(bounds[-1] + len(batch))
        plan = [list(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
        done = []
        numbers = range(job.first, job.first + len(job.batches))
        with closing(extract.run_batches(self.model, source, entries, plan, self.options,
                                         self.runner)) as outputs:
            for number, out in zip(numbers, outputs, strict=True):
                staged = None
                if out.entries:
                    staged = folder / f"{tag}-{number:06d}.tmp"
                    with open(staged, "wb") as handle:
                        write_shard(handle, shard_array(out.log_probs, dtype))
                        handle.flush()
                        os.fsync(handle.fileno())
                rows = tuple((utt, text, float(seconds), int(lp.shape[0])) for utt, text, seconds, lp
                             in out.items(self.model.sample_rate))
                peak = int(torch.cuda.max_memory_allocated()) \
                    if self.runner.device.type == "cuda" else None
                done.append(BatchDone(number, rows, str(staged) if staged else None,
                                      tuple(out.skipped), peak))
        seconds = sum(e.seconds for e in entries)
        self.log(f"{key.split}: batches {job.first}-{job.first + len(job.batches) - 1}, "
                 f"{len(entries)} utterances, {seconds:.0f} audio-s in "
                 f"{time.perf_counter() - start:.1f} s")
        return done


@dataclass
class _Workers:
    pool: Any
    plan: WorkerPlan
    model: ModelInfo

    def meta(self, key: SourceKey, store_dtype: str, compute_dtype: str) -> CacheMeta:
        """The cache meta of the model over ``key``, as a worker makes it."""
        return self.pool.broadcast(
            lambda actor: actor.meta.remote(key, store_dtype, compute_dtype))[0]


class EmissionWorkers:
    """The emission stage's workers on a cluster, started per model (and extraction options)
    when something has to be computed, and kept for the next split; closed with the cluster."""

    def __init__(self, cluster: Cluster, options: RayOptions):
        self.cluster, self.options = cluster, options
        self._pools: dict[tuple, _Workers] = {}

    def _workers(self, spec: EmissionSpec) -> _Workers:
        assert spec.model is not None
        key = (spec.model, spec.revision, spec.extract)
        if key in self._pools and not self._pools[key].pool.closed:
            return self._pools[key]
        plan = plan_workers(self.cluster.resources(), spec.extract.device,
                            self.options.ray_workers, self.options.ray_cpus)
        options = dataclasses.replace(spec.extract, device=plan.device,
                                      loader_threads=plan.threads)
        local = Path(spec.model).expanduser()
        load_from = str(local.resolve()) if local.is_dir() else spec.model
        pool = self.cluster.workers(EmissionWorker, role="emit", count=plan.count,
                                    num_cpus=plan.num_cpus, num_gpus=plan.num_gpus,
                                    setup=(spec.model, load_from, spec.revision, options,
                                           plan.threads))
        try:
            models = pool.broadcast(lambda actor: actor.info.remote())
            revisions = sorted({m.revision for m in models})
            if len(revisions) > 1:
                raise ValueError(f"the workers loaded different versions of {spec.model} "
                                 f"({', '.join(revisions)}): every node must hold the same "
                                 "model files")
        except BaseException:
            pool.close()
            raise
        self._pools[key] = _Workers(pool, plan, models[0])
        return self._pools[key]

    @staticmethod
    def _key(spec: EmissionSpec, source: AudioSource) -> SourceKey:
        """How the workers open ``source`` (absolute paths: their working directory may differ)."""
        from ctclab.emission import extract

        return SourceKey(source.name, extract.source_split(source),
                         _absolute(spec.audio.data_dir), _absolute(spec.audio.manifest))

    def ready_workers(self) -> list[Any]:
        """cluster.workers.WorkerInfo of every ready worker (all models)."""
        return [info for w in self._pools.values() for info in w.pool.ready_workers]

    def close(self) -> None:
        """Stop the workers (their resources go back to the cluster); a later split starts new
        ones."""
        for workers in self._pools.values():
            workers.pool.close()
        self._pools.clear()

    def extract_report(self, spec: EmissionSpec, source: AudioSource, root: Path,
                       listing: list[SourceRow], *, progress: bool,
                       on_batch: Callable[[int], None] | None
                       ) -> tuple[EmissionCache, FillReport]:
        """A new (or unlocated) cache made by the workers: extract.extract_report's twin, the
        model loaded on the workers only."""
        workers = self._workers(spec)
        key = self._key(spec, source)
        path = cache_dir_for(root, workers.model.name, workers.model.revision, source.name,
                             key.split)
        existing = CacheMeta.read(path)
        store = spec.extract.store_dtype or (existing.dtype if existing else DEFAULT_DTYPE)
        with CacheWriter(path, workers.meta(key, store, spec.extract.dtype)) as writer:
            return fill(writer, source, listing, skip_bad=spec.extract.skip_bad,
                        compute=lambda entries: self.compute(spec, source, writer, entries,
                                                             progress=progress,
                                                             on_batch=on_batch))

    def compute(self, spec: EmissionSpec, source: AudioSource, writer: CacheWriter,
                entries: list[SourceEntry], *, progress: bool,
                on_batch: Callable[[int], None] | None) -> ExtractStats:
        """Run the model over ``entries`` on the workers and commit every batch to ``writer``
        in plan order (the ``compute`` of emission.sync.fill)."""
        from ctclab.emission import extract

        start = time.perf_counter()
        workers = self._workers(spec)
        key = self._key(spec, source)
        check_compatible(writer.meta, workers.meta(key, writer.meta.dtype, spec.extract.dtype),
                         writer.path)
        batches = extract.plan_batches([e.seconds for e in entries], spec.extract.batch_seconds
                                       or extract.default_batch_seconds(workers.plan.device))
        planned = [sum(entries[i].seconds for i in b) for b in batches]
        jobs = [Job(k, tuple(tuple(entries[i] for i in b) for b in batches[k:k + BATCHES_PER_JOB]))
                for k in range(0, len(batches), BATCHES_PER_JOB)]
        run = uuid.uuid4().hex[:8]
        split = key.split
        count, seconds, frames, short, peak = 0, 0.0, 0, [], 0
        skipped: list[SkippedItem] = []
        n = workers.plan.count

        def describe(job: Job) -> str:
            return f"{split} batches {job.first}-{job.first + len(job.batches) - 1}"

        def call(actor: Any, job: Job, attempt: int) -> Any:   # (staging: made below)
            return actor.run.remote(key, job, str(staging.resolve()), writer.meta.dtype,
                                    str(attempt))

        # The run's own staging folder: a late write of a dead run never meets this run's files.
        # Leaving the block stops the workers (closing the results), then removes the folder, so
        # no late write lands.
        with writer.staging(run) as staging, \
                closing(progress_bar(sum(planned), f"{spec.model} {split} (ray, {n} workers)",
                                     "audio-s", enabled=progress)) as bar, \
                closing(workers.pool.map_ordered(jobs, call, describe)) as results:
            for part in results:
                for done in part:
                    if done.skipped:
                        writer.add_skipped(done.skipped)
                        skipped += done.skipped
                    if done.staged is not None:
                        writer.add_shard_file(done.staged, done.rows)
                        count += len(done.rows)
                        seconds += sum(r[2] for r in done.rows)
                        frames += sum(r[3] for r in done.rows)
                        short += [r[0] for r in done.rows if r[3] == 0]
                    peak = max(peak, done.peak_gpu_bytes or 0)
                    bar.update(planned[done.number])
                    if on_batch is not None:
                        on_batch(len(done.rows))
        return ExtractStats(count, seconds, frames, time.perf_counter() - start,
                            f"ray {n}x {workers.plan.device}", spec.extract.dtype, 0,
                            tuple(skipped), peak or None,
                            extract.short_warning(workers.model.min_samples,
                                                  workers.model.sample_rate, short))

