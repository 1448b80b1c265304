"""Bring a cache up to date with its audio source, without the model until something must run.

:func:`plan_sync` compares the source as listed now (ids, references, each file's size and
mtime) with what the cache holds and with the source it recorded (source.tsv):

- new utterances, and skipped ones whose file changed since: to compute (the cache is extended);
- a corrected reference: updated in place (emissions do not depend on the text);
- a cached utterance removed from the source, or whose audio changed: refused, with the reason
  (its emissions would belong to audio that is no longer there).

:func:`fill` applies a plan under the cache's lock and calls ``compute`` only for the utterances
whose audio can be read, so a run with nothing to compute never loads torch or the model.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ctclab.emission.audio_sources import AudioSource, SourceEntry, SourceRow
from ctclab.emission.cache import CacheWriter, EmissionCache, SkippedItem, UtteranceRecord

# Ids (or changes) quoted as examples in a message; the rest are counted.
EXAMPLES = 3


@dataclass(frozen=True)
class ExtractStats:
    """What one run did. utterances/audio_seconds/frames count utterances computed in this run;
    resumed: utterances already in the cache when it started; wall_seconds: time incl. I/O;
    skipped: utterances found unreadable in this run (all skipped ones: ``cache.skipped``);
    warnings: things worth a look (e.g. clips too short to give a frame)."""

    utterances: int
    audio_seconds: float
    frames: int
    wall_seconds: float
    device: str
    dtype: str
    resumed: int
    skipped: tuple[SkippedItem, ...] = field(default_factory=tuple)
    peak_memory_bytes: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def speed(self) -> float:
        """Audio seconds per wall second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _examples(items: Sequence[str]) -> str:
    more = f", ... ({len(items) - EXAMPLES} more)" if len(items) > EXAMPLES else ""
    return ", ".join(items[:EXAMPLES]) + more


def _audio_change(old: tuple[int, int], row: SourceRow) -> str:
    if row.size < 0:
        return f"{row.id}: {row.path} is missing"
    if old[0] != row.size:
        return f"{row.id}: {row.path} changed size ({old[0]} -> {row.size} bytes)"
    return f"{row.id}: {row.path} was modified (same size, new modification time)"


@dataclass(frozen=True)
class SourceSync:
    """How the listed source differs from the cache. Ids are in listing order.

    pending: listed, neither cached nor (still) skipped: to compute. new: those of pending that
    the recorded source did not list. retry: skipped ids whose audio changed (tried again).
    gone_skipped: skipped ids no longer listed. texts: cached id -> (old, new) reference.
    removed: cached ids no longer listed. changed: cached id -> how its audio changed.
    source_stale: the recorded source (source.tsv) differs from the listing, or is missing.
    """

    pending: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    retry: tuple[str, ...] = ()
    gone_skipped: tuple[str, ...] = ()
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    changed: dict[str, str] = field(default_factory=dict)
    source_stale: bool = False

    @property
    def is_noop(self) -> bool:
        """Nothing to compute, update or record."""
        return not (self.pending or self.retry or self.gone_skipped or self.texts
                    or self.source_stale)

    def refusal(self, path: Path) -> str | None:
        """Why the cache at ``path`` cannot follow the source (None when it can)."""
        reasons = []
        if self.removed:
            reasons.append(f"{_plural(len(self.removed), 'cached utterance')} no longer listed "
                           f"({_examples(list(self.removed))})")
        if self.changed:
            reasons.append(f"the audio of {_plural(len(self.changed), 'cached utterance')} "
                           f"changed ({_examples(list(self.changed.values()))})")
        if not reasons:
            return None
        return (f"the audio source changed since the emission cache at {path} was made: "
                f"{'; '.join(reasons)}. Its emissions would no longer match the audio: restore "
                f"the source, or delete {path} to compute the split again (or pass another "
                "--cache-dir).")

    def changes(self) -> list[str]:
        """What changed, in words (for the run's report)."""
        out = []
        if self.new:
            out.append(f"{_plural(len(self.new), 'new utterance')} in the source "
                       f"({_examples(list(self.new))})")
        if self.retry:
            out.append(f"{_plural(len(self.retry), 'skipped utterance')} tried again (the file "
                       f"changed: {_examples(list(self.retry))})")
        if self.gone_skipped:
            out.append(f"{_plural(len(self.gone_skipped), 'skipped utterance')} left the source")
        if self.texts:
            shown = [f"{k}: {old!r} -> {new!r}" for k, (old, new) in self.texts.items()]
            out.append(f"{_plural(len(self.texts), 'reference')} updated ({_examples(shown)})")
        return out


def _norm(text: str) -> str:
    return " ".join(text.split())  # as stored in manifest.tsv


def plan_sync(records: Iterable[UtteranceRecord], skipped: Iterable[SkippedItem],
              snapshot: dict[str, tuple[int, int]] | None,
              listing: Sequence[SourceRow]) -> SourceSync:
    """Compare a cache (its records, skipped items, recorded source) with the listed source.

    snapshot None (a cache made before sources were recorded): audio changes cannot be told,
    and every skipped utterance still listed is tried again.
    """
    rows = {r.id: r for r in listing}
    cached = {r.id: r for r in records}
    skipped_ids = [s.id for s in skipped if s.id not in cached]
    removed = tuple(i for i in cached if i not in rows)
    changed = {i: _audio_change(snapshot[i], rows[i]) for i in cached
               if i in rows and snapshot is not None and i in snapshot
               and snapshot[i] != rows[i].stat}
    texts = {i: (cached[i].text, _norm(rows[i].text)) for i in cached
             if i in rows and cached[i].text != _norm(rows[i].text)}
    retry = tuple(i for i in skipped_ids if i in rows
                  and (snapshot is None or snapshot.get(i) != rows[i].stat))
    still_skipped = set(skipped_ids) - set(retry)
    pending = tuple(r.id for r in listing if r.id not in cached and r.id not in still_skipped)
    new = tuple(i for i in pending if snapshot is not None and i not in snapshot)
    stale = snapshot is None or snapshot != {r.id: r.stat for r in listing}
    return SourceSync(pending=pending, new=new, retry=retry,
                      gone_skipped=tuple(i for i in skipped_ids if i not in rows), texts=texts,
                      removed=removed, changed=changed, source_stale=stale)


@dataclass(frozen=True)
class FillReport:
    """What :func:`fill` did: the plan, whether the cache was complete before, how many
    utterances it already held, and the compute stats (None when nothing ran)."""

    plan: SourceSync
    was_complete: bool
    resumed: int
    newly_skipped: tuple[SkippedItem, ...]
    stats: ExtractStats | None
    wall_seconds: float


Compute = Callable[[list[SourceEntry]], ExtractStats]


def fill(writer: CacheWriter, source: AudioSource, listing: Sequence[SourceRow], *,
         skip_bad: bool, compute: Compute) -> tuple[EmissionCache, FillReport]:
    """Bring the cache of ``writer`` up to date with ``listing`` and finish it.

    Refuses (ValueError) a source that lost or changed cached audio; updates references; records
    the source; probes the headers of what is left to compute (unreadable ones are skipped with
    ``skip_bad``, else AudioReadError); and calls ``compute(entries)`` when any remain.
    """
    start = time.perf_counter()
    plan = plan_sync(writer.records, writer.meta.skipped, writer.snapshot, listing)
    refusal = plan.refusal(writer.path)
    if refusal:
        raise ValueError(refusal)
    was_complete = writer.is_complete
    writer.update_texts({i: new for i, (_, new) in plan.texts.items()})
    writer.forget_skipped(plan.retry + plan.gone_skipped)
    writer.record_source((r.id, r.size, r.mtime_ns, r.path) for r in listing)
    wanted = set(plan.pending)
    rows = [r for r in listing if r.id in wanted]
    if rows:
        writer.reopen()
    entries, bad = source.probe(rows, skip_bad)
    newly = tuple(SkippedItem(e.utt_id, e.path, e.reason) for e in bad)
    writer.add_skipped(newly)
    resumed = len(writer.done_ids)
    stats = compute(entries) if entries else None
    if stats is not None:
        newly += stats.skipped
    cache = writer.finish()
    return cache, FillReport(plan, was_complete, resumed, newly, stats,
                             time.perf_counter() - start)
