"""The decode-and-score loop: every system over every split's cache, scored per utterance, summed
per corpus, compared in pairs, and written to a results folder that a re-run resumes.

    settings = EvalSettings(jobs=4, bootstrap=1000, normalizer=DEFAULT_NORMALIZER)
    summary = evaluate(systems, {"test-clean": cache}, ResultsFolder("results/x"), settings,
                       command=["eval/run.py", ...])

Utterances already in the folder are not decoded again; finished chunks are appended as they
complete, so an interrupted run loses at most one chunk. Each utterance keeps its words (timestamps,
confidence, right/wrong; calibrated when the system carries a calibrator) and its n-best list
(eval/word_records.py); the summary adds the n-best oracle WER, word-confidence figures (ECE, AUC)
and, for rescored systems, a paired test against the system they re-rank.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.normalize import DEFAULT_NORMALIZER, TextNormalizer
from ctclab.emission.cache import EmissionCache
from ctclab.eval.calibration import Calibrator
from ctclab.eval.confidence_metrics import confidence_stats, expected_calibration_error
from ctclab.eval.metrics import corpus_from_counts, score_utterance
from ctclab.eval.oracle import oracle_wer
from ctclab.eval.progress import DecodeProgress
from ctclab.eval.records import (
    Comparison,
    ConfidenceRow,
    RescoreRow,
    RunSettings,
    Summary,
    SystemSummary,
    UtteranceResult,
)
from ctclab.eval.results import ResultsFolder, environment_fields
from ctclab.eval.stats import DEFAULT_RESAMPLES, bootstrap_wer, paired_bootstrap
from ctclab.eval.systems import DecoderFactory, System, SystemDecoder
from ctclab.eval.token_scoring import TOKEN_UNIT, PhonemeScoring, outputs_words
from ctclab.eval.word_records import has_confidence, nbest_records, scored_words, word_records

# Utterances decoded between two appends to the JSONL, per --jobs: small enough that an interrupt
# loses little, large enough that the fork pool stays busy. A chunk is never smaller than a batched
# decoder's batch_size (beam searches that many utterances together: chunks of 16 made its
# no-LM decoding of the 94 QuartzNet utterances 1.4x slower than chunks of 256).
CHUNK_PER_JOB = 16


@dataclass(frozen=True)
class EvalSettings:
    """How systems are run and scored (the same for every system of a run).

    jobs: decoding processes. bootstrap: resamples for intervals and paired tests (0: none).
    normalizer: applied to references and hypotheses before scoring. progress: draw bars.
    word_timestamps: the per-utterance JSONL gives each word's start and end (seconds, frames).
    """

    jobs: int = 1
    bootstrap: int = DEFAULT_RESAMPLES
    normalizer: TextNormalizer = DEFAULT_NORMALIZER
    progress: bool = True
    word_timestamps: bool = True

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {self.jobs}")
        if self.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0, got {self.bootstrap}")


def decode_records(decoder: SystemDecoder, cache: EmissionCache, records: Sequence[Any],
                   jobs: int, normalizer: TextNormalizer, progress: DecodeProgress | None = None,
                   sink: Callable[[list[UtteranceResult]], None] | None = None,
                   calibrator: Calibrator | None = None,
                   tokens: PhonemeScoring | None = None, timestamps: bool = True
                   ) -> list[UtteranceResult]:
    """Decode ``records`` of ``cache`` chunk by chunk, scoring each utterance.

    tokens: score the output tokens as phonemes against the reference spelled through the
    lexicon (the "word" counts are then phoneme counts, and no word records are kept), for
    decoders that output no words.
    sink(results) is called after each chunk (the results folder appends it).
    decode_seconds of an utterance = its share, by frames, of its chunk's wall time. Words go
    with their confidence (``calibrator`` adds calibrated values) and, with ``timestamps``, their
    start and end; n-best lists with each entry's word errors and the oracle
    (eval/word_records.py).
    """
    out: list[UtteranceResult] = []
    chunk = max(CHUNK_PER_JOB * max(1, jobs), decoder.batch_size)
    for part, hyps, wall in decode_chunks(decoder, cache, records, chunk, jobs):
        frames = sum(max(1, r.num_frames) for r in part)
        results = []
        for r, hyp in zip(part, hyps, strict=True):
            if tokens is not None:  # phonemes: a PER, no word records
                counts, chars, ref_norm, hyp_norm = tokens.score(r.text, hyp.tokens, normalizer)
                results.append(UtteranceResult(
                    id=r.id, ref=r.text, hyp=hyp.text, ref_norm=ref_norm, hyp_norm=hyp_norm,
                    substitutions=counts.substitutions, deletions=counts.deletions,
                    insertions=counts.insertions, ref_words=counts.ref_len,
                    char_substitutions=chars.substitutions, char_deletions=chars.deletions,
                    char_insertions=chars.insertions, ref_chars=chars.ref_len,
                    score=float(hyp.score), decode_seconds=wall * max(1, r.num_frames) / frames,
                    audio_seconds=float(r.audio_seconds), num_frames=int(r.num_frames)))
                continue
            s = score_utterance(r.text, hyp.text, normalizer)
            nbest = nbest_records(hyp, r.text, normalizer)
            results.append(UtteranceResult(
                id=r.id, ref=r.text, hyp=hyp.text, ref_norm=s.ref, hyp_norm=s.hyp,
                substitutions=s.words.substitutions, deletions=s.words.deletions,
                insertions=s.words.insertions, ref_words=s.words.ref_len,
                char_substitutions=s.chars.substitutions, char_deletions=s.chars.deletions,
                char_insertions=s.chars.insertions, ref_chars=s.chars.ref_len,
                score=float(hyp.score), decode_seconds=wall * max(1, r.num_frames) / frames,
                audio_seconds=float(r.audio_seconds), num_frames=int(r.num_frames),
                words=word_records(hyp, s, normalizer, calibrator, timestamps), nbest=nbest,
                oracle_errors=min(e["errors"] for e in nbest) if nbest else None))
        if sink is not None:
            sink(results)
        out.extend(results)
        if progress is not None:
            progress(results, wall)
    return out


def decode_chunks(decoder: SystemDecoder, cache: EmissionCache, records: Sequence[Any], chunk: int,
                  jobs: int) -> Iterator[tuple[Sequence[Any], list[Hypothesis], float]]:
    """(records, hypotheses, decode wall seconds) of consecutive chunks of ``records``, in order.
    A decoder that decodes elsewhere (eval.distributed_decode.RemoteDecoder) has its own
    ``decode_chunks``: it reads the arrays where it decodes them."""
    elsewhere = getattr(decoder, "decode_chunks", None)
    if elsewhere is not None:
        yield from elsewhere(cache, records, chunk)
        return
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        arrays = [cache.log_probs(r.id) for r in part]
        began = time.perf_counter()
        hyps = decoder.decode_many(arrays, jobs=jobs)
        yield part, hyps, time.perf_counter() - began


def evaluate_system(system: System, cache: EmissionCache, split: str, folder: ResultsFolder,
                    factory: DecoderFactory, settings: EvalSettings,
                    tokens: PhonemeScoring | None = None) -> tuple[list[UtteranceResult], float]:
    """Decode the utterances of ``split`` not yet in the results folder; all results in cache
    order and the decoder build seconds (0 when nothing was left to decode)."""
    done = {r.id: r for r in folder.read_utterances(split, system.label, repair=True)}
    stale = sorted(set(done) - set(cache.ids))
    if stale:
        raise ValueError(f"{folder.utterance_path(split, system.label)} holds ids not in the "
                         f"cache of {split} (e.g. {stale[:3]}); use a new --out folder")
    todo = [r for r in cache.records if r.id not in done]
    load_seconds = 0.0
    if todo:
        decoder, load_seconds = factory.build(system, cache.meta.vocabulary, cache.frame_shift_s)
        # One untimed warm-up decode (lazy imports, first-call allocations, LM page-in) so that
        # RTF measures steady-state decoding; its time is reported with load_seconds.
        began = time.perf_counter()
        decoder.decode(cache.log_probs(todo[0].id))
        load_seconds += time.perf_counter() - began
        with DecodeProgress(len(cache), len(done), f"{split} {system.label}",
                            settings.progress) as bar:
            new = decode_records(decoder, cache, todo, settings.jobs, settings.normalizer, bar,
                                 lambda rs: folder.append_utterances(split, system.label, rs),
                                 system.calibrator, tokens, settings.word_timestamps)
        done.update((r.id, r) for r in new)
    return [done[i] for i in cache.ids], load_seconds


def summarise(split: str, system: System, results: list[UtteranceResult], load_seconds: float,
              resamples: int, unit: str = "words") -> SystemSummary:
    """Corpus sums, bootstrap interval and real-time factor of one system on one split."""
    total = corpus_from_counts([r.word_counts for r in results], [r.char_counts for r in results])
    low = high = float("nan")
    if resamples > 0 and total.words.ref_len > 0:
        ci = bootstrap_wer([r.word_errors for r in results], [r.ref_words for r in results],
                           resamples=resamples)
        low, high = ci.low, ci.high
    audio = sum(r.audio_seconds for r in results)
    decode = sum(r.decode_seconds for r in results)
    return SystemSummary(
        split=split, system=system.label, decoder=system.cls.name, utterances=total.utterances,
        wer=total.wer, wer_low=low, wer_high=high, cer=total.cer,
        substitutions=total.words.substitutions, deletions=total.words.deletions,
        insertions=total.words.insertions, words=total.words.ref_len, chars=total.chars.ref_len,
        ser=total.ser, audio_seconds=audio, decode_seconds=decode,
        rtf=decode / audio if audio > 0 else float("nan"), load_seconds=load_seconds,
        oracle_wer=oracle_wer(results), unit=unit)


def compare(split: str, labelled: list[tuple[str, list[UtteranceResult]]],
            resamples: int) -> list[Comparison]:
    """Paired bootstrap between every pair of systems on ``split`` (in the order given)."""
    out = []
    for (la, ra), (lb, rb) in itertools.combinations(labelled, 2):
        words = [r.ref_words for r in ra]
        if sum(words) == 0 or resamples <= 0:
            continue
        t = paired_bootstrap([r.word_errors for r in ra], [r.word_errors for r in rb], words,
                             resamples=resamples)
        out.append(Comparison(split, la, lb, t.wer_a, t.wer_b, t.delta, t.delta_low,
                              t.delta_high, t.p_value))
    return out


def confidence_row(split: str, system: System, results: Sequence[UtteranceResult],
                   resamples: int) -> ConfidenceRow | None:
    """ECE / AUC of one system's word confidence on one split, calibrated when the system
    carries a calibrator (None when its words have no confidence)."""
    if not has_confidence(results):
        return None
    cal = system.calibrator
    words = scored_words(results, cal)
    s = confidence_stats(words.confidence, words.correct, words.utterance, resamples=resamples)
    raw = expected_calibration_error(scored_words(results).confidence, words.correct) \
        if cal is not None else s.ece
    in_sample = cal is not None and split in cal.fitted_on.split("+")
    return ConfidenceRow(split, system.label, cal.describe() if cal else "none", in_sample,
                         s.words, s.wrong, s.mean_confidence, s.accuracy, s.ece, s.ece_low,
                         s.ece_high, s.auc, s.auc_low, s.auc_high, s.bins, raw)


def rescore_row(split: str, base: str, base_results: Sequence[UtteranceResult], rescored: str,
                results: Sequence[UtteranceResult], resamples: int) -> RescoreRow | None:
    """Paired bootstrap of a rescored system against its base on one split (None when there
    are no reference words or no resamples)."""
    words = [r.ref_words for r in base_results]
    if sum(words) == 0 or resamples <= 0:
        return None
    t = paired_bootstrap([r.word_errors for r in base_results], [r.word_errors for r in results],
                         words, resamples=resamples)
    return RescoreRow(split, base, rescored, t.wer_a, t.wer_b, oracle_wer(base_results),
                      t.delta, t.delta_low, t.delta_high, t.p_value, t.significant)


def cache_identity(cache: EmissionCache) -> dict[str, str]:
    """What a cache is (emission.cache.CacheIdentity: model, revision, source, split and a
    content key over what its emissions were made from and hold), for settings.json."""
    return dict(cache.identity.to_dict())


def skipped(cache: EmissionCache) -> list[tuple[str, str]]:
    """(id, reason) of the utterances of the split that the emission stage could not read
    (--skip-bad): not in the cache, so not scored."""
    return [(s.id, s.reason) for s in cache.skipped]


def run_settings(systems: Sequence[System], caches: Mapping[str, EmissionCache],
                 settings: EvalSettings, command: Sequence[str]) -> RunSettings:
    """What settings.json records for this run (enough to trace and re-make every number)."""
    return RunSettings(
        command=list(command), systems=[s.spec() for s in systems],
        splits={k: {"cache": str(c.path), **cache_identity(c), "utterances": len(c),
                    "audio_seconds": c.total_audio_seconds,
                    "skipped": [{"id": i, "reason": why} for i, why in skipped(c)]}
                for k, c in caches.items()},
        normalizer=settings.normalizer.to_dict(), bootstrap_resamples=settings.bootstrap,
        word_timestamps=settings.word_timestamps,
        jobs=settings.jobs, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **environment_fields())


def evaluate(systems: Sequence[System], caches: Mapping[str, EmissionCache],
             folder: ResultsFolder, settings: EvalSettings, command: Sequence[str],
             factory: DecoderFactory | None = None, phonemes: PhonemeScoring | None = None
             ) -> Summary:
    """Every system on every split (the order given), resuming what ``folder`` holds; writes
    settings.json first and summary.{json,tsv,md} at the end, holding the folder's lock
    throughout. ValueError when the folder holds results made from other options, input files,
    normaliser or emissions (resuming would mix them), or results this run does not name (its
    summary would not cover them); RuntimeError when another run holds the lock.

    phonemes: the tokens are phonemes of this lexicon (eval.token_scoring): systems that output
    no words are scored by phoneme error rate, and compared only with each other."""
    factory = factory or DecoderFactory(progress=settings.progress)
    record = run_settings(systems, caches, settings, command)
    with folder.lock():
        folder.check_resumable(record)
        folder.write_settings(record)
        summary = _evaluate_all(systems, caches, folder, settings, factory, phonemes)
        folder.write_summary(summary)
    return summary


def _evaluate_all(systems: Sequence[System], caches: Mapping[str, EmissionCache],
                  folder: ResultsFolder, settings: EvalSettings, factory: DecoderFactory,
                  phonemes: PhonemeScoring | None) -> Summary:
    """The decode-and-score loop of :func:`evaluate` (which holds the folder's lock)."""
    summaries, comparisons = [], []
    confidence: list[ConfidenceRow] = []
    rescoring: list[RescoreRow] = []
    for split, cache in caches.items():
        labelled = []
        units: dict[str, str] = {}
        for system in systems:
            words = outputs_words(system.options, phonemes)
            results, load_s = evaluate_system(system, cache, split, folder, factory, settings,
                                              None if words else phonemes)
            units[system.label] = "words" if words else TOKEN_UNIT
            summaries.append(summarise(split, system, results, load_s, settings.bootstrap,
                                       units[system.label]))
            labelled.append((system.label, results))
            row = confidence_row(split, system, results, settings.bootstrap)
            if row is not None:
                confidence.append(row)
            if system.base is not None:
                rescored = rescore_row(split, system.base, dict(labelled)[system.base],
                                       system.label, results, settings.bootstrap)
                if rescored is not None:
                    rescoring.append(rescored)
        for unit in dict.fromkeys(units.values()):  # a PER is not compared with a WER
            comparisons += compare(split, [x for x in labelled if units[x[0]] == unit],
                                   settings.bootstrap)
    return Summary(summaries, comparisons, confidence=confidence, rescoring=rescoring)
