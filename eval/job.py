"""One evaluation job, as ``eval/run.py`` asks for it: find or make the caches, build the systems,
tune and calibrate them on dev when asked, decode and score every split, and report.

The job is a plain value (:class:`EvalJob`) that the command line builds from its flags; the work
is in the modules it calls (emission.stage, eval.systems, eval.tuning, eval.calibrating,
eval.runner, eval.report). :func:`run_job` only sequences them, so that every input is checked
before anything is decoded and a results folder that cannot be resumed is refused before tuning.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctclab.cluster.connection import Cluster, RayOptions
from ctclab.emission.cache import EmissionCache
from ctclab.emission.distributed import EmissionWorkers
from ctclab.emission.options import EmissionSpec
from ctclab.emission.stage import EmissionResult, ModelLoader, open_emissions
from ctclab.eval.cached_models import model_tokenizer, pick_model
from ctclab.eval.calibrating import calibrate_systems, with_calibration
from ctclab.eval.calibration import load_calibration, save_calibration
from ctclab.eval.distributed_decode import RayDecoderFactory
from ctclab.eval.distributed_tune import RayTuneSearch
from ctclab.eval.records import Summary
from ctclab.eval.report import calibration_table, console_table, skipped_text
from ctclab.eval.results import ResultsFolder
from ctclab.eval.runner import EvalSettings, evaluate, run_settings, skipped
from ctclab.eval.systems import DecoderFactory, System, build_systems, check_input_files
from ctclab.eval.token_scoring import phoneme_scoring
from ctclab.eval.tune import load_params, save_params
from ctclab.eval.tuning import tune_plan, tune_systems


@dataclass(frozen=True)
class TuneRequest:
    """--tune and its companions."""

    names: tuple[str, ...]                   # decoder options to tune (alpha, beta, ...)
    values: tuple[str, ...]                  # NAME=V1,V2 grids; empty: eval/tune.py's defaults
    splits: tuple[str, ...]                  # dev splits, pooled into one corpus WER
    method: str                              # grid or optuna
    trials: int                              # optuna's trials
    params_out: str | None                   # where the params file goes (None: <out>/params.json)


@dataclass(frozen=True)
class CalibrationRequest:
    """--calibrate-split / --calibration and their companions (at most one of the two)."""

    splits: tuple[str, ...] = ()             # dev splits to fit on (pooled); never test
    method: str = "auto"                     # eval/calibration.py's methods
    out: str | None = None                   # where the fit goes (None: <out>/calibration.json)
    file: str | None = None                  # a calibration.json to apply instead of fitting


@dataclass(frozen=True)
class EvalJob:
    """Everything one evaluation run is made from (eval/run.py builds it from its flags)."""

    decoders: tuple[str, ...]                # registered decoder names
    lms: tuple[str | None, ...]              # LM files or names; None = the system without LM
    decoder_values: dict[str, Any]           # the decoder options given (field name -> value)
    splits: tuple[str, ...]                  # splits to decode and score, in this order
    emission: EmissionSpec                   # where the caches come from (or how to make them)
    out: Path                                # the results folder
    settings: EvalSettings                   # jobs, bootstrap, normaliser, progress, timestamps
    command: list[str]                       # the command line, recorded in settings.json
    ray: RayOptions = field(default_factory=RayOptions)   # the cluster, when there is one
    params: str | None = None                # a params file from an earlier --tune
    rescore_models: tuple[str, ...] = ()     # second-pass LMs, one extra system each
    rescore_values: dict[str, Any] = field(default_factory=dict)  # RescoreOptions given
    tune: TuneRequest | None = None
    calibration: CalibrationRequest = field(default_factory=CalibrationRequest)

    @property
    def progress(self) -> bool:
        return self.settings.progress


def report_emission(result: EmissionResult) -> None:
    """Say what the emission stage did when it did more than find a cache."""
    if result.action != "cached":
        print(f"[emit] {result.cache.meta.split}: {result.note} ({result.cache.path})")
    for line in result.messages():
        print(f"[emit] {line}", file=sys.stderr)


def run_job(job: EvalJob, cluster: Cluster | None) -> Summary:
    """Run ``job`` (on ``cluster``'s workers when there is one) and return its Summary."""
    calibration = load_calibration(job.calibration.file) if job.calibration.file else None
    values = job.decoder_values
    tuned = load_params(job.params) if job.params else None
    rescore = (list(job.rescore_models), job.rescore_values)

    def systems_and_plan(values: dict[str, Any], warn: bool = True) -> tuple[list[System], Any]:
        systems = build_systems(list(job.decoders), list(job.lms), values, tuned, *rescore,
                                warn=warn)
        plan = tune_plan(list(job.tune.names), list(job.tune.values), list(job.tune.splits),
                         systems) if job.tune else None
        return systems, plan

    systems, plan = systems_and_plan(values)
    # Every input before any decoding: a missing LM, word list or cache fails now, not after
    # other systems (or a long tuning run) were decoded. Without --data-dir/--manifest/--source
    # only existing caches are used (no hub download).
    check_input_files(systems, progress=job.progress)
    spec, models = job.emission, ModelLoader()
    if spec.model is None and spec.import_dir is None:
        spec = dataclasses.replace(
            spec, model=pick_model(spec, [*job.splits, *(plan.splits if plan else ())]))

    workers = EmissionWorkers(cluster, job.ray) if cluster is not None else None

    def cache_of(split: str) -> EmissionCache:
        result = open_emissions(spec, split, models=models, progress=job.progress,
                                workers=workers)
        report_emission(result)
        return result.cache

    caches = {split: cache_of(split) for split in job.splits}
    calibrate_on = [caches.get(t) or cache_of(t) for t in job.calibration.splits]
    dev = [caches.get(t) or cache_of(t) for t in plan.splits] if plan else []
    if workers is not None:
        workers.close()  # their CPUs and GPUs go to the tuning trials and decoding workers
    tokenizer = model_tokenizer(list(job.decoders), list(job.lms), values,
                                [*caches.values(), *calibrate_on, *dev])
    if tokenizer is not None:  # the model's own tokenizer, as if given with --tokenizer
        values = {**values, "tokenizer_path": tokenizer}
        systems, plan = systems_and_plan(values, warn=False)
    folder = ResultsFolder(job.out)
    # The folder too: one that cannot be resumed with these caches and systems is refused before
    # tuning or calibrating (the options they set are checked again after them).
    folder.check_resumable(run_settings(systems, caches, job.settings, job.command),
                           options=plan is None and not calibrate_on and calibration is None)
    # A pronunciation lexicon (--lexicon) makes the tokens phonemes: token-only outputs get a PER.
    first = next(iter(caches.values()), None)
    phonemes = phoneme_scoring(first.vocabulary, values.get("lexicon_path")) \
        if first is not None else None
    units = "phonemes" if phonemes is not None else None
    factory = RayDecoderFactory(cluster, job.ray, units, progress=job.progress) \
        if cluster is not None else DecoderFactory(units, progress=job.progress)
    if phonemes is not None:
        print(f"[lexicon] {values['lexicon_path']} spells words in the model's phonemes: words "
              "come from it; decoders that output only tokens are scored by phoneme error rate "
              "[PER]")
    if plan is not None and job.tune is not None:
        search = RayTuneSearch(cluster, dev, job.settings, job.out / "ray-tune", units) \
            if cluster is not None else None
        tuned = tune_systems(plan, dev, job.tune.method, job.tune.trials, factory, job.settings,
                             search)
        params_path = Path(job.tune.params_out) if job.tune.params_out \
            else job.out / "params.json"
        save_params(params_path, tuned)
        print(f"[tune] best on {tuned.split}: " + "; ".join(
            f"{k}: {v} (WER {100 * tuned.wer[k]:.2f}%)" for k, v in tuned.systems.items())
            + f"\n[tune] saved to {params_path} (reuse with --params {params_path})")
        systems = build_systems(list(job.decoders), list(job.lms), values, tuned, *rescore,
                                warn=False)
    if calibrate_on:
        calibration = calibrate_systems(systems, calibrate_on, job.calibration.method, factory,
                                        job.settings)
        path = Path(job.calibration.out) if job.calibration.out else folder.calibration_path
        save_calibration(path, calibration)
        print(calibration_table(calibration) + f"\n[calibrate] saved to {path} (reuse on test "
              f"with --calibration {path})")
    if calibration is not None:
        systems = with_calibration(systems, calibration)
    summary = evaluate(systems, caches, folder, job.settings, job.command, factory, phonemes)
    print(console_table(summary))
    if phonemes is not None and phonemes.unspellable:
        print(f"[PER] {phonemes.unspellable} decoded utterances have reference words the lexicon "
              "lacks: they are left out of the phoneme error rate")
    not_scored = skipped_text({split: skipped(c) for split, c in caches.items()})
    if not_scored:
        print("\n" + not_scored)
    print(f"\nresults: {job.out}/ (summary.md, summary.tsv, summary.json, settings.json, "
          "<split>/<system>.jsonl)")
    return summary
