"""Calibrating the word confidence of evaluation systems on dev splits: every system is decoded on
the pooled dev splits and a calibrator (eval/calibration.py) is fitted on its scored words; the
calibrators then travel with the systems to the test splits.

    data = calibrate_systems(systems, [dev_cache], "temperature", DecoderFactory(), EvalSettings())
    save_calibration(folder.calibration_path, data)            # reused later with --calibration
    systems = with_calibration(systems, load_calibration(path))  # refused for other systems

Test splits are refused, as for tuning: their confidence figures would be fitted, not measured.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ctclab.emission.cache import EmissionCache
from ctclab.eval.calibration import CalibrationFile, SystemCalibration, fit_calibrator
from ctclab.eval.confidence_metrics import expected_calibration_error
from ctclab.eval.progress import DecodeProgress
from ctclab.eval.records import UtteranceResult
from ctclab.eval.runner import EvalSettings, decode_records
from ctclab.eval.systems import DecoderFactory, System
from ctclab.eval.tune import check_tune_split
from ctclab.eval.word_records import has_confidence, scored_words


def check_calibration_split(split: str) -> None:
    """Refuse test splits for fitting, as for tuning (their confidence figures would be
    fitted, not measured)."""
    try:
        check_tune_split(split)
    except ValueError:
        raise ValueError(f"refusing to calibrate on {split!r}: fit the calibration on dev splits "
                         "(--calibrate-split dev-clean dev-other ...) and measure it on test"
                         ) from None


def calibrate_systems(systems: Sequence[System], caches: Sequence[EmissionCache], method: str,
                      factory: DecoderFactory, settings: EvalSettings) -> CalibrationFile:
    """One calibrator per system, fitted with ``method`` on the words of ``caches`` (dev splits,
    pooled). ValueError when a split is a test split or a system gives no word confidence (a
    beam decoder needs nbest >= 2)."""
    for cache in caches:
        check_calibration_split(cache.meta.split)
    split_name = "+".join(c.meta.split for c in caches)
    out = {}
    for system in systems:
        results: list[UtteranceResult] = []
        for cache in caches:
            decoder, _ = factory.build(system, cache.meta.vocabulary, cache.frame_shift_s)
            with DecodeProgress(len(cache), 0, f"[calibrate] {cache.meta.split} {system.label}",
                                settings.progress) as bar:
                results += decode_records(decoder, cache, cache.records, settings.jobs,
                                          settings.normalizer, bar)
        if not has_confidence(results):
            raise ValueError(f"system {system.label!r} gives no word confidence to calibrate: a "
                             "beam decoder needs n-best lists (--nbest 10), and no decoder "
                             "computes any with --no-word-confidence")
        words = scored_words(results)
        try:
            cal = fit_calibrator(method, words.confidence, words.correct, words.frame,
                                 words.utterance)
        except ValueError as exc:
            raise ValueError(f"calibrating {system.label!r} on {split_name}: {exc}") from None
        cal = dataclasses.replace(cal, fitted_on=split_name)
        right = words.correct
        out[system.label] = SystemCalibration(
            cal, system.identity(), len(right), int((~right).sum()),
            expected_calibration_error(words.confidence, right),
            expected_calibration_error(cal.apply(words.confidence, words.frame), right))
    return CalibrationFile(split_name, out)


def with_calibration(systems: Sequence[System], data: CalibrationFile) -> list[System]:
    """``systems`` carrying the calibrators of ``data``; ValueError when it has none for a
    system or fitted it for another (other decoder, options or rescoring)."""
    return [dataclasses.replace(s, calibrator=data.for_system(s.label, s.identity()))
            for s in systems]
