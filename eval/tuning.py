"""Tuning decoder options of evaluation systems on dev splits: the plan is checked before anything
is decoded, then every LM system is searched (the search itself is eval/tune.py) with the corpus
WER over the pooled dev splits as the objective.

    plan = tune_plan(["alpha", "beta"], ["alpha=0,0.5,1"], ["dev-clean"], systems)
    tuned = tune_systems(plan, [dev_cache], "grid", 30, DecoderFactory(), EvalSettings())
    save_params("params.json", tuned)        # applied later with build_systems(..., tuned)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ctclab.core.options import field_names
from ctclab.emission.cache import EmissionCache
from ctclab.eval.metrics import corpus_from_counts
from ctclab.eval.progress import DecodeProgress
from ctclab.eval.records import UtteranceResult
from ctclab.eval.runner import EvalSettings, decode_records
from ctclab.eval.systems import DecoderFactory, System
from ctclab.eval.tune import (
    Trial,
    TunedParams,
    check_tune_split,
    grid_search,
    optuna_search,
    parse_tune_values,
)


@dataclass(frozen=True)
class TunePlan:
    """What to search: a grid per option name, the systems to tune, the dev split names."""

    grids: dict[str, tuple[float, ...]]
    targets: list[System]
    splits: tuple[str, ...]


def tune_plan(names: Sequence[str], value_specs: Sequence[str], splits: Sequence[str],
              systems: Sequence[System]) -> TunePlan:
    """Check a tuning request before any decoding: dev splits only, grids for every name (given
    as ``NAME=V1,V2`` or eval/tune.py's defaults), and LM systems whose options have them."""
    for split in splits:
        check_tune_split(split)
    grids = parse_tune_values(value_specs, names)
    targets = [s for s in systems if s.lm is not None]
    if not targets:
        raise ValueError("--tune needs a system with a language model: add --lm FILE and a "
                         "decoder that takes one (beam, pyctcdecode)")
    for s in targets:
        fields = field_names(s.cls.Options)
        missing = sorted(set(grids) - fields)
        if missing:
            raise ValueError(f"decoder {s.cls.name!r} has no option(s) {missing} to tune; "
                             f"valid: {sorted(fields)}")
    return TunePlan(grids, targets, tuple(splits))


def tune_systems(plan: TunePlan, caches: Sequence[EmissionCache], method: str, trials: int,
                 factory: DecoderFactory, settings: EvalSettings) -> TunedParams:
    """Search ``plan.grids`` for every target system on ``caches`` (the dev splits, pooled: the
    objective is the corpus WER over all their utterances); the best values per system.
    method: 'grid' or 'optuna' (``trials`` of them)."""
    split_name = "+".join(plan.splits)
    best_params, best_wer, all_trials = {}, {}, {}
    for s in plan.targets:
        def objective(params: dict[str, float], s: System = s) -> float:
            options = dataclasses.replace(s.options, **params)
            results: list[UtteranceResult] = []
            for cache in caches:
                decoder, _ = factory.build(s, cache.meta.vocabulary, cache.frame_shift_s, options)
                with DecodeProgress(len(cache), 0, f"[tune] {cache.meta.split} {s.label}",
                                    settings.progress) as bar:
                    results += decode_records(decoder, cache, cache.records, settings.jobs,
                                              settings.normalizer, bar)
            factory.forget(s.label)
            return corpus_from_counts([r.word_counts for r in results],
                                      [r.char_counts for r in results]).wer

        def report(t: Trial, s: System = s) -> None:
            if settings.progress:
                shown = " ".join(f"{k}={v:.3g}" for k, v in t.params.items())
                print(f"[tune] {split_name} {s.label} {shown}: WER {100 * t.wer:.2f}%",
                      flush=True)

        if method == "optuna":
            best, found = optuna_search(objective, plan.grids, trials, on_trial=report)
        else:
            best, found = grid_search(objective, plan.grids, on_trial=report)
        best_params[s.label], best_wer[s.label], all_trials[s.label] = best.params, best.wer, found
    return TunedParams(split=split_name, method=method, systems=best_params, wer=best_wer,
                       trials=all_trials, lm={s.label: s.lm for s in plan.targets})
