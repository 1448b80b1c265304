"""Decode cached CTC emissions with several decoders and compare them by WER, CER and speed.

    python eval/run.py --decoder greedy beam pyctcdecode --lm none ../shared/lm/x.arpa.gz \
        --import-emissions ../shared/emissions/quartznet15x5-base-en --split test-clean \
        --out results/demo
    python eval/run.py ... --tune alpha beta --tune-split dev-clean      # then --params FILE
    python eval/run.py ... --nbest 10 --calibrate-split dev-clean        # then --calibration FILE
    python eval/run.py ... --nbest 10 --rescore 4gram.arpa --tune rescore_weight   # or a causal LM
    python eval/run.py ... --ray HOST:6379     # decode (and tune, and emit) on a Ray cluster

Every (decoder, LM) pair is a *system* labelled ``decoder`` or ``decoder+<lm name>``; decoder
options go to the decoders that have them (greedy has none and runs once; a value that reaches no
system is an error, one that misses some a warning). Per split and system it prints WER (with a
bootstrap interval), CER, S, D, I, words and speed (x real time), then paired bootstrap tests
between systems, and writes a results folder (eval/results.py) that a re-run with the same --out
resumes (the same inputs, every system the folder holds). With n-best lists it adds the n-best
oracle WER and word-confidence figures (ECE, AUC; calibrated on dev with --calibrate-split), and
with --rescore re-ranked systems and whether they changed the WER. This module only parses
arguments into an EvalJob and hands it to eval/job.py, which sequences the work of eval/systems.py,
eval/runner.py, eval/tuning.py, eval/calibrating.py and eval/report.py.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from ctclab.cluster.connection import RayOptions, open_cluster, ray_options
from ctclab.core.logs import show_notes
from ctclab.core.memory import keep_freed_memory
from ctclab.core.normalize import NORMALIZERS, get_normalizer
from ctclab.core.options import HelpFormatter, add_option_flags, given_options
from ctclab.decoders.base import available_decoders
from ctclab.emission.options import add_emission_flags, spec_from_flags
from ctclab.eval.calibrating import check_calibration_split
from ctclab.eval.calibration import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD
from ctclab.eval.job import CalibrationRequest, EvalJob, TuneRequest, run_job
from ctclab.eval.records import Summary
from ctclab.eval.rescore import RescoreOptions
from ctclab.eval.runner import EvalSettings
from ctclab.eval.stats import DEFAULT_RESAMPLES
from ctclab.eval.systems import NO_LM, decoder_options
from ctclab.eval.tune import DEFAULT_OPTUNA_TRIALS, TUNE_METHODS

DEFAULT_SPLITS = ("test-clean", "test-other")
DEFAULT_DECODERS = ("greedy",)
DEFAULT_TUNE_SPLITS = ("dev-clean",)
# The options of rescored systems (flags generated from eval/rescore.py's RescoreOptions).
RESCORE_OPTIONS = {"rescore": RescoreOptions}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python eval/run.py", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--decoder", nargs="+", default=list(DEFAULT_DECODERS),
                   help=f"decoders to compare ({', '.join(available_decoders())})")
    p.add_argument("--lm", nargs="+", help="KenLM .arpa / .arpa.gz / .binary, or a known name "
                   f"(python -m ctclab.lm.fetch list); '{NO_LM}' for a system without LM; several "
                   f"give one system each per decoder that takes an LM (default: {NO_LM})")
    p.add_argument("--split", nargs="+", default=list(DEFAULT_SPLITS),
                   help="splits to decode and score, in this order")
    add_emission_flags(p)  # generated from emission/options.py
    add_option_flags(p.add_argument_group(
        "decoder options (generated from decoders/options.py; each goes to the decoders in "
        "brackets)"), decoder_options())
    p.add_argument("--jobs", type=int, default=1, help="decoding processes (a fork pool)")
    p.add_argument("--out", help="results folder; a re-run into it resumes, a run with other "
                   "inputs is refused (default: results/<UTC time>)")
    p.add_argument("--normalizer", default="default", choices=sorted(NORMALIZERS),
                   help="text normaliser of references and hypotheses before scoring "
                   "(core/normalize.py)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES,
                   help="bootstrap resamples for intervals and paired tests (0: off)")
    p.add_argument("--word-timestamps", action=argparse.BooleanOptionalAction, default=True,
                   help="give each word's start and end (seconds and frames) in the "
                   "per-utterance JSONL; --no-word-timestamps leaves them out (n-best lists, "
                   "written with --nbest N, and word confidence are always there)")
    t = p.add_argument_group("tuning")
    t.add_argument("--tune", nargs="+", metavar="PARAM",
                   help="decoder options to tune on --tune-split, e.g. alpha beta; the best "
                   "values are saved (--params-out) and applied to this run's splits")
    t.add_argument("--tune-split", nargs="+", default=list(DEFAULT_TUNE_SPLITS),
                   help="dev split(s) to tune on; several are pooled into one corpus WER")
    t.add_argument("--tune-method", choices=TUNE_METHODS, default="grid",
                   help="grid: every combination of the values; optuna: TPE search over their "
                   "ranges (needs optuna)")
    t.add_argument("--tune-values", nargs="+", metavar="NAME=V1,V2",
                   help="values per tuned option (default: the alpha and beta grids of "
                   "eval/tune.py)")
    t.add_argument("--tune-trials", type=int, default=DEFAULT_OPTUNA_TRIALS,
                   help="trials of --tune-method optuna")
    t.add_argument("--params", help="params file written by --tune: its values replace the "
                   "options of the systems it names")
    t.add_argument("--params-out", help="where --tune saves its params file (default: "
                   "<out>/params.json)")
    c = p.add_argument_group("word confidence and rescoring (decode with --nbest 10)")
    c.add_argument("--calibrate-split", nargs="+", metavar="SPLIT",
                   help="fit a word-confidence calibration per system on these dev splits "
                   "(pooled; never test) and apply it")
    c.add_argument("--calibration-method", choices=CALIBRATION_METHODS,
                   default=DEFAULT_CALIBRATION_METHOD,
                   help="auto: none, temperature or platt, whichever predicts held-out dev words "
                   "best (eval/calibration.py)")
    c.add_argument("--calibration", metavar="FILE",
                   help="calibration.json written by --calibrate-split: apply it")
    c.add_argument("--calibration-out", help="where --calibrate-split saves (default: "
                   "<out>/calibration.json)")
    c.add_argument("--rescore", nargs="+", metavar="MODEL",
                   help="re-rank n-best lists with a second LM: a KenLM file or name, or a causal "
                   "LM (hub id or directory); one extra system each")
    add_option_flags(c, RESCORE_OPTIONS)
    add_option_flags(p.add_argument_group(
        "Ray cluster (decoding chunks, tuning trials and the emission stage on Ray workers)"),
        {"ray": RayOptions})
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no notes (warnings and errors still print)")
    return p


# Flags that only mean something beside another one: (flag's dest, what it needs, its flag).
DEPENDENT_FLAGS = (("tune_split", "tune", "--tune"), ("tune_method", "tune", "--tune"),
                   ("tune_values", "tune", "--tune"), ("tune_trials", "tune", "--tune"),
                   ("params_out", "tune", "--tune"), ("calibration_method", "calibrate_split",
                                                      "--calibrate-split"),
                   ("calibration_out", "calibrate_split", "--calibrate-split"))


def check_flag_pairs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """ValueError for a flag given without the one it goes with (it would be silently unused)."""
    defaults = {a.dest: a.default for a in parser._actions}
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    for dest, needs, needed_flag in DEPENDENT_FLAGS:
        if getattr(args, dest) != defaults[dest] and not getattr(args, needs):
            raise ValueError(f"{flags[dest]} only applies with {needed_flag}; add {needed_flag} "
                             "or drop it")
    if args.tune and args.tune_trials != defaults["tune_trials"] and args.tune_method != "optuna":
        raise ValueError("--tune-trials only applies with --tune-method optuna (the grid tries "
                         "every combination of --tune-values)")


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace,
                on_cluster: bool) -> None:
    """ValueError for flags that contradict each other or go unused."""
    check_flag_pairs(parser, args)
    if on_cluster and args.jobs > 1:
        raise ValueError("--jobs starts decoding processes on this machine; with --ray the Ray "
                         "workers decode: set their number with --ray-workers")
    if args.tune and args.params:
        raise ValueError("--tune and --params exclude each other: tune first, then pass the file")
    if args.calibrate_split and args.calibration:
        raise ValueError("--calibrate-split and --calibration exclude each other: fit on dev "
                         "first, then pass the file")
    for split in args.calibrate_split or []:
        check_calibration_split(split)


def job_from_flags(args: argparse.Namespace, argv: Sequence[str] | None, ray: RayOptions,
                   out: Path) -> EvalJob:
    """The EvalJob the flags ask for, its results going to ``out``."""
    settings = EvalSettings(jobs=args.jobs, bootstrap=args.bootstrap,
                            normalizer=get_normalizer(args.normalizer), progress=not args.quiet,
                            word_timestamps=args.word_timestamps)
    tune = TuneRequest(tuple(args.tune), tuple(args.tune_values or ()), tuple(args.tune_split),
                       args.tune_method, args.tune_trials, args.params_out) if args.tune else None
    return EvalJob(
        decoders=tuple(args.decoder),
        lms=tuple(None if x.lower() == NO_LM else x for x in (args.lm or [NO_LM])),
        decoder_values=given_options(args, decoder_options()), splits=tuple(args.split),
        emission=spec_from_flags(args, default_source=None), out=out, settings=settings,
        command=list(sys.argv if argv is None else ["eval/run.py", *argv]), ray=ray,
        params=args.params, rescore_models=tuple(args.rescore or ()),
        rescore_values=given_options(args, RESCORE_OPTIONS), tune=tune,
        calibration=CalibrationRequest(tuple(args.calibrate_split or ()), args.calibration_method,
                                       args.calibration_out, args.calibration))


def run(argv: Sequence[str] | None = None) -> Summary:
    """Everything ``main`` does, returning the Summary (for tests and notebooks)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out or Path("results") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))
    ray = ray_options(args)
    with open_cluster(ray, Path(ray.ray_logs) if ray.ray_logs else out / "ray-logs") as cluster:
        show_notes(not args.quiet)
        check_flags(parser, args, cluster is not None)
        return run_job(job_from_flags(args, argv, ray, out), cluster)


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()   # batch after batch, numpy's large temporaries reuse the same memory
    try:
        run(argv)
    except (ValueError, RuntimeError, OSError, ImportError) as exc:
        # ValueError: bad input; RuntimeError: an unreachable hub or dataset, a locked cache or
        # results folder; OSError: a missing file, no network, a full disk, --out naming a file.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished utterances are saved; re-run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
