"""The emission stage's one entry point: the cache of a split, found, imported or computed.

    from ctclab.emission.options import EmissionSpec, SourceOptions
    from ctclab.emission.stage import ModelLoader, open_emissions

    spec = EmissionSpec(model="facebook/wav2vec2-base-960h",
                        audio=SourceOptions(data_dir="/data/LibriSpeech"))
    models = ModelLoader()                       # several splits load the model once
    result = open_emissions(spec, "test-clean", models=models)
    result.cache                                 # the complete EmissionCache
    result.note                                  # "cached (no-op)", "computed", ...

eval/emit.py and eval/run.py both call it. Cheapest work first, so that a no-op, a refused
source or a bad manifest never waits for torch or the model:

1. ``import_dir``: import it (keyed by content, see importer.py); the same content is a no-op.
2. List the audio source (transcripts or manifest, and a stat per file): errors surface here.
3. Tell the model's revision without loading it (models.resolve_revision) and find the cache.
4. A complete cache: compare it with the listing (sync.plan_sync). Unchanged: a no-op, without
   importing torch. A removed or changed cached utterance: refused, saying which.
5. Otherwise, under the cache's lock: update references, record the source, probe the headers
   of what is left, and only when something readable remains load the model (once per
   ModelLoader) and run it; with ``workers`` (emission.distributed) the model loads and runs on
   Ray workers instead, one per GPU, and the cache comes out the same.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctclab.emission.audio_sources import AudioSource, SourceEntry, SourceRow, open_source
from ctclab.emission.cache import (
    CacheMeta,
    CacheWriter,
    EmissionCache,
    SkippedItem,
    cache_dir_for,
    check_compatible,
)
from ctclab.emission.distributed import EmissionWorkers
from ctclab.emission.importer import import_split
from ctclab.emission.locate import find_cache
from ctclab.emission.models import load_ctc_model, resolve_revision
from ctclab.emission.options import EmissionSpec
from ctclab.emission.sync import ExtractStats, FillReport, fill, plan_sync

ACTIONS = ("cached", "updated", "imported", "computed", "resumed", "extended")


class ModelLoader:
    """Loads each (model, revision) once, so that several splits share one model.
    :meth:`add` registers a model loaded elsewhere (tests, benchmarks)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str | None], Any] = {}

    def add(self, model: Any, revision: str | None = None) -> None:
        self._models[(model.name, revision)] = model

    def __call__(self, name: str, revision: str | None = None) -> Any:
        """The CTCModel of ``name`` at ``revision`` (loaded on first use)."""
        if (name, revision) not in self._models:
            self._models[(name, revision)] = load_ctc_model(name, revision=revision)
        return self._models[(name, revision)]


@dataclass(frozen=True)
class EmissionResult:
    """What :func:`open_emissions` did for one split.

    cache: the complete cache. action: one of ACTIONS: "cached" (nothing to do), "updated"
    (references corrected or skips recorded; nothing computed), "imported", "computed" (a new
    cache), "resumed" (an interrupted cache finished), "extended" (a complete cache grew by new
    or retried utterances). stats: the model run (None when the model did not run). changes: what
    changed in the source, in words. newly_skipped: unreadable audio found in this call (all of
    it: ``cache.skipped``). warnings: things worth a look. wall_seconds: the whole call.
    """

    cache: EmissionCache
    action: str
    wall_seconds: float
    stats: ExtractStats | None = None
    changes: tuple[str, ...] = ()
    newly_skipped: tuple[SkippedItem, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """The action in a few words, for a table."""
        computed = self.stats.utterances if self.stats is not None else 0
        if self.action == "cached":
            return "cached (no-op)"
        if self.action == "updated":
            return "cached, updated"
        if self.action == "resumed" and self.stats is not None:
            return f"computed {computed}, resumed after {self.stats.resumed}"
        if self.action == "extended":
            return f"extended by {computed}"
        return self.action

    def messages(self) -> list[str]:
        """Lines worth printing (newly skipped audio, what changed in the source, warnings)."""
        split = self.cache.meta.split
        return ([f"skipped {s.id}: {s.path}: {s.reason}" for s in self.newly_skipped]
                + [f"{split}: {line}" for line in self.changes]
                + [f"{split}: warning: {line}" for line in self.warnings])

    @property
    def device(self) -> str:
        return self.stats.device if self.stats is not None else "-"

    @property
    def speed(self) -> float | None:
        """Audio seconds computed per wall second (None when nothing was computed)."""
        return self.stats.speed if self.stats is not None and self.stats.utterances else None


def open_emissions(spec: EmissionSpec, split: str, *, models: ModelLoader | None = None,
                   progress: bool = True, on_batch: Callable[[int], None] | None = None,
                   workers: EmissionWorkers | None = None) -> EmissionResult:
    """The complete emission cache of ``split`` for ``spec``: found, imported or computed (see
    the module docstring for the order). on_batch(n): called after each stored batch (tests).
    workers: compute on a Ray cluster instead of here (emission.distributed; the model then
    loads on the workers only).

    Errors: ValueError/FileNotFoundError for bad input and refused caches, AudioReadError (a
    ValueError) for unreadable audio without skip_bad, RuntimeError for a locked cache or an
    unreachable hub, OSError from the disk (finished batches stay saved).
    """
    start = time.perf_counter()
    root = spec.cache_root()
    if spec.import_dir:
        cache, wrote = import_split(spec.import_dir, root, split=split, model=spec.model,
                                    dtype=spec.extract.store_dtype)
        return EmissionResult(cache, "imported" if wrote else "cached",
                              time.perf_counter() - start)
    if not spec.model:
        raise ValueError("--model is required to say which emissions (a HF id such as "
                         "facebook/wav2vec2-base-960h, a local model directory, or "
                         "torchaudio:BUNDLE), unless --import-emissions DIR is given")
    models = models or ModelLoader()
    name = spec.audio.source_name(spec.default_source)
    source = open_source(name, split, data_dir=spec.audio.data_dir,
                         manifest=spec.audio.manifest) if name else None
    listing, unlisted = _list(source)
    path = _locate(spec, root, split, name)
    meta = CacheMeta.read(path) if path is not None else None
    if meta is not None and path is not None:
        _check_request(meta, spec, source, path)
        if meta.complete:
            if listing is None:  # no audio named, or the hub's dataset is out of reach
                warnings = (f"could not check the audio source for changes ({unlisted})",) \
                    if unlisted else ()
                return EmissionResult(EmissionCache.open(path), "cached",
                                      time.perf_counter() - start, warnings=warnings)
            cache = EmissionCache.open(path)
            plan = plan_sync(cache.records, cache.meta.skipped, cache.source_snapshot(), listing)
            refusal = plan.refusal(path)
            if refusal:
                raise ValueError(refusal)
            if plan.is_noop:
                return EmissionResult(cache, "cached", time.perf_counter() - start)
            if plan.pending:  # audio to compute: refuse another precision before the cache
                _check_compute_dtype(meta, spec, path)  # is reopened (pending audio that all
                # proves unreadable would have run nothing; refusing it too is the safe side)
    if source is None:
        raise FileNotFoundError(
            f"no emission cache for model {spec.model!r}, split {split!r} under {root}. Make it "
            f"with:\n  python eval/emit.py --model {spec.model} --split {split} --data-dir DIR "
            f"--cache-dir {root}\nor re-run this command with --data-dir DIR (LibriSpeech "
            "folder) / --manifest FILE, or with --import-emissions DIR for emissions made "
            "elsewhere")
    if listing is None:
        raise unlisted or RuntimeError(f"cannot list {source.location}")
    if meta is not None and path is not None:
        cache, report = _fill_existing(spec, source, listing, path, meta, models, progress,
                                       on_batch, workers)
    elif workers is not None:
        source.probe(listing, spec.extract.skip_bad)
        cache, report = workers.extract_report(spec, source, root, listing, progress=progress,
                                               on_batch=on_batch)
    else:
        source.probe(listing, spec.extract.skip_bad)  # unreadable audio: an error before the model
        from ctclab.emission import extract  # torch: imported only once the model has to run

        model = models(spec.model, spec.revision)
        cache, report = extract.extract_report(model, source, root, options=spec.extract,
                                               progress=progress, on_batch=on_batch,
                                               listing=listing)
    return _result(cache, report, time.perf_counter() - start)


def _list(source: AudioSource | None) -> tuple[list[SourceRow] | None, RuntimeError | None]:
    """The source's listing; (None, error) when a hub dataset cannot be reached (a complete
    cache is then used as it is, with a warning)."""
    if source is None:
        return None, None
    try:
        return source.listing(), None
    except RuntimeError as exc:  # HFDatasetSource offline; other sources raise ValueError/OSError
        return None, exc


def _locate(spec: EmissionSpec, root: Path, split: str, source: str | None) -> Path | None:
    """Where the cache is or will be, told without loading the model: the exact folder when the
    revision and source are known, else the one complete cache that matches (None: unknown)."""
    assert spec.model is not None
    revision = resolve_revision(spec.model, spec.revision)
    if revision is not None and source is not None:
        return cache_dir_for(root, spec.model, revision, source, split)
    return find_cache(root, spec.model, split, source, revision or spec.revision)


def _check_request(meta: CacheMeta, spec: EmissionSpec, source: AudioSource | None,
                   path: Path) -> None:
    """ValueError when the options asked for explicitly contradict the cache (another storage
    dtype, another manifest; for an incomplete cache that the model is to finish, another
    compute dtype), before anything is loaded. A complete cache is read whatever --dtype says
    (eval/run.py passes its default); :func:`_check_compute_dtype` guards extending it."""
    wanted = dataclasses.replace(meta, dtype=spec.extract.store_dtype or meta.dtype,
                                 data_key=source.data_key if source is not None else meta.data_key)
    check_compatible(meta, wanted, path)
    if source is not None and not meta.complete:
        _check_compute_dtype(meta, spec, path)


def _check_compute_dtype(meta: CacheMeta, spec: EmissionSpec, path: Path) -> None:
    """ValueError when the model is to add to the cache in another precision than it was made in."""
    check_compatible(meta, dataclasses.replace(meta, compute_dtype=spec.extract.dtype), path)


def _fill_existing(spec: EmissionSpec, source: AudioSource, listing: list[SourceRow], path: Path,
                   meta: CacheMeta, models: ModelLoader, progress: bool,
                   on_batch: Callable[[int], None] | None, workers: EmissionWorkers | None
                   ) -> tuple[EmissionCache, FillReport]:
    """Bring an existing cache up to date; the model loads only if audio is left to compute."""
    with CacheWriter(path, meta) as writer:
        def compute(entries: list[SourceEntry]) -> ExtractStats:
            if workers is not None:
                return workers.compute(spec, source, writer, entries, progress=progress,
                                       on_batch=on_batch)
            from ctclab.emission import extract  # torch: imported only once the model must run

            assert spec.model is not None
            model = models(spec.model, spec.revision)
            check_compatible(writer.meta, extract.model_meta(model, source, writer.meta.dtype,
                                                             spec.extract.dtype), path)
            return extract.run_model(model, source, writer, entries, spec.extract,
                                     progress=progress, on_batch=on_batch)

        return fill(writer, source, listing, skip_bad=spec.extract.skip_bad, compute=compute)


def _result(cache: EmissionCache, report: FillReport, wall: float) -> EmissionResult:
    stats = report.stats
    if stats is None:
        action = "updated"
    else:
        stats = dataclasses.replace(stats, resumed=report.resumed)
        action = "extended" if report.was_complete else "resumed" if report.resumed else "computed"
    return EmissionResult(cache, action, wall, stats, tuple(report.plan.changes()),
                          report.newly_skipped, stats.warnings if stats is not None else ())
