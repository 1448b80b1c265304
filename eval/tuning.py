"""Tuning decoder options of evaluation systems on dev splits: the plan is checked before anything
is decoded, then every LM system is searched (the search itself is eval/tune.py) with the corpus
WER over the pooled dev splits as the objective.

    plan = tune_plan(["alpha", "beta"], ["alpha=0,0.5,1"], ["dev-clean"], systems)
    tuned = tune_systems(plan, [dev_cache], "grid", 30, DecoderFactory(), EvalSettings())
    save_params("params.json", tuned)        # applied later with build_systems(..., tuned)

A rescored system (--rescore) is tuned over its decoder options and its rescore_weight /
rescore_bonus: the dev splits are decoded once per decoder setting and the same n-best lists are
re-ranked for every rescoring value.
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.options import field_names
from ctclab.emission.cache import EmissionCache
from ctclab.eval.metrics import ErrorCounts, corpus_from_counts, score_utterance
from ctclab.eval.progress import DecodeProgress
from ctclab.eval.records import UtteranceResult
from ctclab.eval.rescore import RESCORE_TUNABLE, rescore_many
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

# Decoder settings whose dev n-best lists a rescored system's tuning keeps to re-rank again (a
# grid varies the rescoring values fastest when they are named last; a few more cover the rest).
KEPT_DECODES = 4


@dataclass(frozen=True)
class TunePlan:
    """What to search: a grid per option name for each system label to tune, the systems to
    tune, the dev split names."""

    grids: dict[str, dict[str, tuple[float, ...]]]
    targets: list[System]
    splits: tuple[str, ...]


def tunable(system: System) -> frozenset[str]:
    """The option names ``system`` can be tuned over: its decoder options, and rescore_weight /
    rescore_bonus when it re-ranks with a second LM."""
    names = field_names(system.cls.Options)
    return names | frozenset(RESCORE_TUNABLE) if system.rescore is not None else names


def tune_plan(names: Sequence[str], value_specs: Sequence[str], splits: Sequence[str],
              systems: Sequence[System]) -> TunePlan:
    """Check a tuning request before any decoding: dev splits only, grids for every name (given
    as ``NAME=V1,V2`` or eval/tune.py's defaults), and systems with an LM or a second-pass LM
    whose options have them. A system is tuned over the names it has (rescore_weight and
    rescore_bonus only for rescored systems); a name that no system has is an error."""
    for split in splits:
        check_tune_split(split)
    grids = parse_tune_values(value_specs, names)
    candidates = [s for s in systems if s.lm is not None or s.rescore is not None]
    if not candidates:
        raise ValueError("--tune needs a system with a language model: add --lm FILE and a "
                         "decoder that takes one (beam, pyctcdecode), or --rescore")
    plan: dict[str, dict[str, tuple[float, ...]]] = {}
    for s in candidates:
        fields = tunable(s)
        missing = sorted(set(grids) - fields)
        if missing and not set(missing) <= set(RESCORE_TUNABLE):
            raise ValueError(f"decoder {s.cls.name!r} has no option(s) {missing} to tune; "
                             f"valid: {sorted(fields)}")
        own = {k: v for k, v in grids.items() if k in fields}
        if own:
            plan[s.label] = own
    unused = sorted(set(grids) - {k for g in plan.values() for k in g})
    if unused:
        raise ValueError(f"--tune {' '.join(unused)}: no system has it (rescore_weight and "
                         "rescore_bonus need --rescore)")
    return TunePlan(plan, [s for s in candidates if s.label in plan], tuple(splits))


def _decoded_wer(s: System, options: object, caches: Sequence[EmissionCache],
                 factory: DecoderFactory, settings: EvalSettings) -> float:
    """Corpus WER of ``s`` with decoder ``options`` over the pooled ``caches``."""
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


class _RescoredObjective:
    """Corpus WER of a rescored system: its base decoder's n-best lists on the dev splits
    (decoded once per decoder setting, the last KEPT_DECODES kept) re-ranked with the values."""

    def __init__(self, s: System, caches: Sequence[EmissionCache], factory: DecoderFactory,
                 settings: EvalSettings):
        self.s, self.caches, self.factory, self.settings = s, caches, factory, settings
        self.decoded: OrderedDict[str, list[list[Hypothesis]]] = OrderedDict()

    def _nbest_lists(self, options: object) -> list[list[Hypothesis]]:
        key = repr(options)
        if key in self.decoded:
            self.decoded.move_to_end(key)
            return self.decoded[key]
        base_system = dataclasses.replace(self.s, rescore=None)
        lists = []
        for cache in self.caches:
            base, _ = self.factory.build(base_system, cache.meta.vocabulary, cache.frame_shift_s,
                                         options)
            with DecodeProgress(len(cache), 0, f"[tune] {cache.meta.split} {self.s.label}",
                                self.settings.progress) as bar:
                lists.append(base.decode_many([cache.log_probs(r.id) for r in cache.records],
                                              jobs=self.settings.jobs, on_done=bar.bar.update))
        self.factory.forget(self.s.label)
        self.decoded[key] = lists
        while len(self.decoded) > KEPT_DECODES:
            self.decoded.popitem(last=False)
        return lists

    def __call__(self, params: dict[str, float]) -> float:
        assert self.s.rescore is not None
        rescore = dataclasses.replace(
            self.s.rescore,
            rescore_weight=float(params.get("rescore_weight", self.s.rescore.rescore_weight)),
            rescore_bonus=float(params.get("rescore_bonus", self.s.rescore.rescore_bonus)))
        options = dataclasses.replace(self.s.options, **{
            k: v for k, v in params.items() if k not in RESCORE_TUNABLE})
        total = ErrorCounts()
        for cache, hyps in zip(self.caches, self._nbest_lists(options), strict=True):
            scorer = self.factory.rescorer(rescore, cache.meta.vocabulary)
            ranked = rescore_many(hyps, scorer, rescore.rescore_weight, rescore.rescore_bonus)
            for r, h in zip(cache.records, ranked, strict=True):
                total += score_utterance(r.text, h.text, self.settings.normalizer).words
        return total.rate


# A search run elsewhere (eval.distributed_tune.RayTuneSearch): (system, its grids, method,
# trials, on_trial) -> (best trial, all trials); the trials build objective_for where they run.
Search = Callable[[System, dict[str, tuple[float, ...]], str, int, Callable[[Trial], None]],
                  tuple[Trial, list[Trial]]]


def objective_for(s: System, caches: Sequence[EmissionCache], factory: DecoderFactory,
                  settings: EvalSettings) -> Callable[[dict[str, float]], float]:
    """The tuning objective of ``s``: option values -> corpus WER over the pooled ``caches``
    (re-ranked n-best lists for a rescored system)."""
    rescored = _RescoredObjective(s, caches, factory, settings) if s.rescore is not None else None

    def objective(params: dict[str, float]) -> float:
        if rescored is not None:
            return rescored(params)
        return _decoded_wer(s, dataclasses.replace(s.options, **params), caches, factory,
                            settings)

    return objective


def tune_systems(plan: TunePlan, caches: Sequence[EmissionCache], method: str, trials: int,
                 factory: DecoderFactory, settings: EvalSettings,
                 search: Search | None = None) -> TunedParams:
    """Search each target's grids of ``plan`` on ``caches`` (the dev splits, pooled: the
    objective is the corpus WER over all their utterances); the best values per system.
    method: 'grid' or 'optuna' (``trials`` of them). search: run the trials elsewhere (Ray
    Tune) instead of one after another here."""
    split_name = "+".join(plan.splits)
    best_params, best_wer, all_trials = {}, {}, {}
    for s in plan.targets:
        objective = objective_for(s, caches, factory, settings)
        grids = plan.grids[s.label]
        # Trials of this system, for the count on each line (on Ray they finish in any order).
        total = trials if method == "optuna" else math.prod(len(v) for v in grids.values())
        done = [0]

        def report(t: Trial, s: System = s, total: int = total, done: list[int] = done) -> None:
            done[0] += 1
            if settings.progress:
                shown = " ".join(f"{k}={v:.3g}" for k, v in t.params.items())
                print(f"[tune] {split_name} {s.label} trial {done[0]}/{total} {shown}: "
                      f"WER {100 * t.wer:.2f}%", flush=True)

        if search is not None:
            best, found = search(s, grids, method, trials, report)
        elif method == "optuna":
            best, found = optuna_search(objective, grids, trials, on_trial=report)
        else:
            best, found = grid_search(objective, grids, on_trial=report)
        best_params[s.label], best_wer[s.label], all_trials[s.label] = best.params, best.wer, found
    return TunedParams(split=split_name, method=method, systems=best_params, wer=best_wer,
                       trials=all_trials, lm={s.label: s.lm for s in plan.targets},
                       files={s.label: s.input_files() for s in plan.targets},
                       inputs={s.label: s.input_fingerprints() for s in plan.targets})
