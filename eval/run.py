"""Decode cached CTC emissions with several decoders and compare them by WER, CER and speed.

    python eval/run.py --decoder greedy beam pyctcdecode --lm none ../shared/lm/x.arpa.gz \
        --import-emissions ../shared/emissions/quartznet15x5-base-en --split test-clean \
        --out results/demo
    python eval/run.py ... --tune alpha beta --tune-split dev-clean      # then --params FILE

Every (decoder, LM) pair is a *system* labelled ``decoder`` or ``decoder+<lm name>``; LM options
only go to decoders that have them (greedy runs once). Per split and system it prints WER (with a
bootstrap interval), CER, S, D, I, words and RTF, then paired bootstrap tests between systems, and
writes a results folder (see eval/results.py) that a re-run with the same --out resumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.core.normalize import NORMALIZERS, TextNormalizer, get_normalizer
from ctclab.core.options import add_option_flags, field_names, flag_of, given_options
from ctclab.decoders.base import Decoder, available_decoders, decoder_class
from ctclab.decoders.options import LMOptions
from ctclab.emission.audio_sources import SOURCE_NAMES
from ctclab.emission.cache import (
    EmissionCache,
    default_cache_root,
    import_emissions,
    slug,
)
from ctclab.eval.metrics import corpus_from_counts, score_utterance
from ctclab.eval.results import (
    Comparison,
    ResultsFolder,
    RunSettings,
    Summary,
    SystemSpec,
    SystemSummary,
    UtteranceResult,
    environment_fields,
)
from ctclab.eval.stats import DEFAULT_RESAMPLES, bootstrap_wer, paired_bootstrap
from ctclab.eval.tune import (
    DEFAULT_OPTUNA_TRIALS,
    TUNE_METHODS,
    Trial,
    TunedParams,
    check_tune_split,
    grid_search,
    load_params,
    optuna_search,
    parse_tune_values,
    save_params,
)

DEFAULT_SPLITS = ("test-clean", "test-other")
DEFAULT_DECODERS = ("greedy",)
# Decoder modules that register themselves on import; absent ones are simply not offered.
DECODER_MODULES = ("ctclab.decoders.greedy", "ctclab.decoders.beam", "ctclab.decoders.pyctc")
# Utterances decoded between two appends to the JSONL, per --jobs: small enough that an interrupt
# loses little, large enough that the fork pool stays busy. A chunk is never smaller than a batched
# decoder's batch_size (beam searches that many utterances together: chunks of 16 made its
# no-LM decoding of the 94 QuartzNet utterances 1.4x slower than chunks of 256).
CHUNK_PER_JOB = 16
NO_LM = "none"


@dataclasses.dataclass(frozen=True)
class System:
    """A decoder class with its options under a label; ``lm`` is the LM path/name or None."""

    label: str
    cls: type[Decoder]
    options: Any
    lm: str | None

    def spec(self) -> SystemSpec:
        return SystemSpec(self.label, self.cls.name, dataclasses.asdict(self.options))


def import_decoders() -> None:
    """Import the decoder modules that exist so that their names are registered."""
    for module in DECODER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


# ----------------------------------------------------------------------------- caches
def find_cache(root: Path, model: str, split: str, source: str | None = None,
               revision: str | None = None) -> Path | None:
    """The complete cache of ``model`` for ``split`` under ``root`` (any revision/source unless
    ``revision``/``source`` is given: a revision matches the recorded commit or its folder name);
    ValueError when several match."""
    model_dir = Path(root) / slug(model)
    if not model_dir.is_dir():
        return None
    pattern = f"*/{slug(source) if source else '*'}/{slug(split)}/meta.json"
    found = sorted(p.parent for p in model_dir.glob(pattern))
    complete = [p for p in found if _is_complete(p)]
    if revision:  # the folder of that revision, else caches whose meta records it (a commit)
        complete = ([p for p in complete if p.parent.parent.name == slug(revision)]
                    or [p for p in complete if EmissionCache.open(p).meta.revision == revision])
    if len(complete) > 1:
        raise ValueError(f"several caches of {model} / {split} under {root}: "
                         f"{[str(p) for p in complete]}; choose one with --revision or --source")
    return complete[0] if complete else None


def _is_complete(path: Path) -> bool:
    try:
        return EmissionCache.open(path).is_complete
    except (FileNotFoundError, ValueError):
        return False


def open_split_cache(args: argparse.Namespace, split: str) -> EmissionCache:
    """The emission cache of ``split``: imported (--import-emissions), found, or made by the
    emission stage (--data-dir / --manifest / --source hf); else an error naming the command."""
    root = Path(args.cache_dir) if args.cache_dir else default_cache_root()
    if args.import_emissions:
        return import_emissions(args.import_emissions, root, split=split, model=args.model)
    if not args.model:
        raise ValueError("say which emissions to decode: --model NAME (cached or to emit) or "
                         "--import-emissions DIR")
    path = find_cache(root, args.model, split, args.source, args.revision)
    if path is not None:
        return EmissionCache.open(path)
    if args.data_dir or args.manifest or args.source == "hf":
        return emit_split(args, split, root)
    raise FileNotFoundError(
        f"no emission cache for model {args.model!r}, split {split!r} under {root}. Make it with:\n"
        f"  python eval/emit.py --model {args.model} --split {split} --data-dir DIR "
        f"--cache-dir {root}\nor re-run this command with --data-dir DIR (LibriSpeech folder) / "
        "--manifest FILE, or with --import-emissions DIR for emissions made elsewhere")


def emit_split(args: argparse.Namespace, split: str, root: Path) -> EmissionCache:
    """Run the acoustic model over the split's audio (eval.extract) and return the new cache."""
    from ctclab.emission.audio_sources import open_source
    from ctclab.emission.extract import extract
    from ctclab.emission.models import load_ctc_model

    source_name = args.source or ("manifest" if args.manifest else "openslr")
    source = open_source(source_name, split, data_dir=args.data_dir, manifest=args.manifest)
    print(f"[emit] no cache for {args.model} / {split}: running the model over {source_name} audio")
    model = load_ctc_model(args.model, revision=args.revision)
    cache, _ = extract(model, source, root)
    return cache


# ----------------------------------------------------------------------------- systems
def lm_label(lm: str) -> str:
    """``../x/en-us-70k-3gram.arpa.gz`` -> ``en-us-70k-3gram`` (the LM part of a system label)."""
    name = Path(lm).name
    for suffix in (".gz", ".arpa", ".binary", ".klm", ".bin"):
        name = name.removesuffix(suffix)
    return name


def decoder_options() -> dict[str, type]:
    """Every registered decoder's options class, by name (the decoder flags are made of them)."""
    import_decoders()
    return {name: decoder_class(name).Options for name in available_decoders()}


def _flag(name: str) -> str:
    for cls in decoder_options().values():
        for f in dataclasses.fields(cls):
            if f.name == name and flag_of(f):
                return flag_of(f)
    return name


def build_systems(args: argparse.Namespace, tuned: TunedParams | None) -> list[System]:
    """One System per (decoder, LM) pair; decoders without ``lm_path`` get one system.

    ``tuned`` values replace the command line's for the systems with the same label.
    """
    lms = [None if x.lower() == NO_LM else x for x in (args.lm or [NO_LM])]
    values = given_options(args, decoder_options())
    taken = set().union(*(field_names(decoder_class(d).Options) for d in args.decoder))
    unused = sorted(k for k in values if k not in taken)
    if unused:
        raise ValueError(f"{', '.join(map(_flag, unused))}: not an option of any chosen decoder "
                         f"({', '.join(args.decoder)}); drop it or add a decoder that has it")
    systems: list[System] = []
    for name in args.decoder:
        cls = decoder_class(name)
        fields = field_names(cls.Options)
        for lm in (lms if issubclass(cls.Options, LMOptions) else [None]):
            label = name if lm is None else f"{name}+{lm_label(lm)}"
            mapping = {k: v for k, v in values.items() if k in fields}
            if lm is None:
                mapping.pop("unigrams_path", None)
            else:
                mapping["lm_path"] = lm
            if tuned is not None and label in tuned.systems:
                mapping.update(tuned.systems[label])
            try:
                options = cls.Options(**mapping)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"decoder {name!r}: {exc}") from exc
            if label in {s.label for s in systems}:
                raise ValueError(f"system {label!r} is listed twice; give each --decoder/--lm once")
            systems.append(System(label, cls, options, lm))
    if tuned is not None and not set(tuned.systems) & {s.label for s in systems}:
        raise ValueError(f"the --params file has values for {sorted(tuned.systems)}, none of "
                         f"this run's systems {[s.label for s in systems]}; pass the same "
                         "--decoder and --lm as the tuning run")
    return systems


class DecoderFactory:
    """Builds decoders (LMs are loaded once per process by the decoders themselves)."""

    def __init__(self) -> None:
        self._decoders: dict[tuple, Decoder] = {}

    def build(self, system: System, vocab_dict: dict, frame_shift_s: float,
              options: Any = None) -> tuple[Decoder, float]:
        """(decoder, seconds this call spent building it incl. LM loading: 0.0 when it is
        memoised, e.g. for a later split with the same vocabulary)."""
        from ctclab.core.vocabulary import Vocabulary

        options = options or system.options
        key = (system.label, repr(options), repr(vocab_dict), frame_shift_s)
        if key in self._decoders:
            return self._decoders[key], 0.0
        start = time.perf_counter()
        decoder = system.cls(Vocabulary.from_dict(vocab_dict), options,
                             frame_shift_s=frame_shift_s)
        self._decoders[key] = decoder
        return decoder, time.perf_counter() - start

    def forget(self, label: str) -> None:
        """Drop memoised decoders of ``label`` (tuning builds many; keep memory bounded)."""
        self._decoders = {k: v for k, v in self._decoders.items() if k[0] != label}


# ----------------------------------------------------------------------------- decoding
def decode_records(decoder: Decoder, cache: EmissionCache, records: Sequence[Any], jobs: int,
                   normalizer: TextNormalizer, progress: Any = None,
                   sink: Any = None) -> list[UtteranceResult]:
    """Decode ``records`` of ``cache`` chunk by chunk, scoring each utterance.

    sink(list[UtteranceResult]) is called after each chunk (the results folder appends it).
    decode_seconds of an utterance = its share, by frames, of its chunk's wall time.
    """
    out: list[UtteranceResult] = []
    chunk = max(CHUNK_PER_JOB * max(1, jobs), decoder.batch_size)
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        arrays = [cache.log_probs(r.id) for r in part]
        began = time.perf_counter()
        hyps = decoder.decode_many(arrays, jobs=jobs)
        wall = time.perf_counter() - began
        frames = sum(max(1, r.num_frames) for r in part)
        results = []
        for r, hyp in zip(part, hyps, strict=True):
            s = score_utterance(r.text, hyp.text, normalizer)
            results.append(UtteranceResult(
                id=r.id, ref=r.text, hyp=hyp.text, ref_norm=s.ref, hyp_norm=s.hyp,
                substitutions=s.words.substitutions, deletions=s.words.deletions,
                insertions=s.words.insertions, ref_words=s.words.ref_len,
                char_substitutions=s.chars.substitutions, char_deletions=s.chars.deletions,
                char_insertions=s.chars.insertions, ref_chars=s.chars.ref_len,
                score=float(hyp.score), decode_seconds=wall * max(1, r.num_frames) / frames,
                audio_seconds=float(r.audio_seconds), num_frames=int(r.num_frames)))
        if sink is not None:
            sink(results)
        out.extend(results)
        if progress is not None:
            progress(results, wall)
    return out


class _Progress:
    """tqdm bar of utterances with audio seconds decoded per wall second in the postfix."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="utt", disable=not enabled,
                        dynamic_ncols=True, leave=False)
        self.audio = 0.0
        self.wall = 0.0

    def __call__(self, results: list[UtteranceResult], wall: float) -> None:
        self.audio += sum(r.audio_seconds for r in results)
        self.wall += wall
        self.bar.update(len(results))
        if self.wall > 0:
            self.bar.set_postfix_str(f"{self.audio / self.wall:.0f} audio s/s")

    def close(self) -> None:
        self.bar.close()


def evaluate_system(system: System, cache: EmissionCache, split: str, folder: ResultsFolder,
                    factory: DecoderFactory, args: argparse.Namespace,
                    normalizer: TextNormalizer) -> tuple[list[UtteranceResult], float]:
    """Decode the utterances of ``split`` not yet in the results folder; all results in cache
    order and the decoder build seconds (0 when nothing was left to decode)."""
    done = {r.id: r for r in folder.read_utterances(split, system.label)}
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
        bar = _Progress(len(cache), len(done), f"{split} {system.label}", not args.quiet)
        try:
            new = decode_records(decoder, cache, todo, args.jobs, normalizer, bar,
                                 lambda rs: folder.append_utterances(split, system.label, rs))
        finally:
            bar.close()
        done.update((r.id, r) for r in new)
    return [done[i] for i in cache.ids], load_seconds


def summarise(split: str, system: System, results: list[UtteranceResult], load_seconds: float,
              resamples: int) -> SystemSummary:
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
        rtf=decode / audio if audio > 0 else float("nan"), load_seconds=load_seconds)


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


# ----------------------------------------------------------------------------- tuning
def tune_plan(args: argparse.Namespace,
              systems: list[System]) -> tuple[dict[str, tuple[float, ...]], list[System]]:
    """Check the --tune flags before any decoding: (grid per parameter, the LM systems to tune)."""
    for split in args.tune_split:
        check_tune_split(split)
    grids = parse_tune_values(args.tune_values or [], args.tune)
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
    return grids, targets


def tune_systems(args: argparse.Namespace, grids: dict[str, tuple[float, ...]],
                 targets: list[System], factory: DecoderFactory, normalizer: TextNormalizer,
                 caches: list[EmissionCache]) -> TunedParams:
    """Search ``grids`` for every system of ``targets`` on ``caches`` (the --tune-split splits,
    pooled: the objective is the corpus WER over all their utterances); the best values per
    system."""
    split_name = "+".join(args.tune_split)
    best_params, best_wer, all_trials = {}, {}, {}
    for s in targets:
        def objective(params: dict[str, float], s: System = s) -> float:
            options = dataclasses.replace(s.options, **params)
            results: list[UtteranceResult] = []
            for cache in caches:
                decoder, _ = factory.build(s, cache.meta.vocabulary, cache.frame_shift_s, options)
                bar = _Progress(len(cache), 0, f"[tune] {cache.meta.split} {s.label}",
                                not args.quiet)
                try:
                    results += decode_records(decoder, cache, cache.records, args.jobs,
                                              normalizer, bar)
                finally:
                    bar.close()
            factory.forget(s.label)
            return corpus_from_counts([r.word_counts for r in results],
                                      [r.char_counts for r in results]).wer

        def report(t: Trial, s: System = s) -> None:
            if not args.quiet:
                shown = " ".join(f"{k}={v:.3g}" for k, v in t.params.items())
                print(f"[tune] {split_name} {s.label} {shown}: WER {100 * t.wer:.2f}%",
                      flush=True)

        if args.tune_method == "optuna":
            best, trials = optuna_search(objective, grids, args.tune_trials, on_trial=report)
        else:
            best, trials = grid_search(objective, grids, on_trial=report)
        best_params[s.label], best_wer[s.label], all_trials[s.label] = best.params, best.wer, trials
    return TunedParams(split=split_name, method=args.tune_method, systems=best_params,
                       wer=best_wer, trials=all_trials, lm={s.label: s.lm for s in targets})


# ----------------------------------------------------------------------------- output
def format_table(summaries: list[SystemSummary], comparisons: list[Comparison]) -> str:
    """The side-by-side console table (percentages) and the paired tests."""
    sw = max([len("split"), *(len(s.split) for s in summaries)])
    yw = max([len("system"), *(len(s.system) for s in summaries)])
    head = (f"{'split':<{sw}} {'system':<{yw}} {'WER%':>6} {'95% CI':>13} {'CER%':>6} {'S':>5} "
            f"{'D':>5} {'I':>5} {'words':>7} {'RTF':>8}")
    lines = [head, "-" * len(head)]
    for s in summaries:
        ci = "" if np.isnan(s.wer_low) else f"{100 * s.wer_low:.2f}-{100 * s.wer_high:.2f}"
        lines.append(f"{s.split:<{sw}} {s.system:<{yw}} {100 * s.wer:6.2f} {ci:>13} "
                     f"{100 * s.cer:6.2f} {s.substitutions:5d} {s.deletions:5d} "
                     f"{s.insertions:5d} {s.words:7d} {s.rtf:8.4f}")
    # Pairs whose per-utterance error counts are all equal have a degenerate [0, 0] interval: they
    # stay in summary.* but would drown the informative pairs on the console.
    differing = [c for c in comparisons if not c.delta_low == c.delta_high == 0]
    if comparisons:
        lines += ["", ("paired bootstrap over utterances: delta = WER(B) - WER(A) in points, "
                  "95% interval, two-sided p")]
        for c in differing:
            lines.append(f"{c.split:<{sw}} {c.system_a:<{yw}} vs {c.system_b:<{yw}} "
                         f"{100 * c.delta:+6.2f} [{100 * c.delta_low:+.2f}, "
                         f"{100 * c.delta_high:+.2f}]  p={c.p_value:.3f}")
        if len(differing) < len(comparisons):
            lines.append(f"({len(comparisons) - len(differing)} pairs with identical errors on "
                         "every utterance not shown; all pairs are in summary.md)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--decoder", nargs="+", default=list(DEFAULT_DECODERS),
                   help="decoders to compare (registered names)")
    p.add_argument("--lm", nargs="+", help="KenLM .arpa/.arpa.gz/.binary or a known name; "
                   f"'{NO_LM}' for a run without LM; several give one system each")
    p.add_argument("--split", nargs="+", default=list(DEFAULT_SPLITS))
    p.add_argument("--cache-dir", help="emission cache root (default $CTCLAB_CACHE_DIR or "
                   "~/.cache/ctclab)")
    p.add_argument("--model", help="acoustic model whose cached emissions to decode (or emit)")
    p.add_argument("--revision", help="model revision when emitting")
    p.add_argument("--source", choices=SOURCE_NAMES,
                   help="audio source when emitting / to pick among caches")
    p.add_argument("--data-dir", help="audio folder for the emission stage (LibriSpeech layout)")
    p.add_argument("--manifest", help="audio manifest for the emission stage")
    p.add_argument("--import-emissions", metavar="DIR",
                   help="import <DIR>/<split>/<id>.npy + labels.json + manifest.tsv as the cache")
    add_option_flags(p.add_argument_group("decoder options (generated from decoders/options.py; "
                                          "each goes to the decoders in brackets)"),
                     decoder_options())
    p.add_argument("--jobs", type=int, default=1, help="decoding processes")
    p.add_argument("--out", help="results folder (default results/<UTC time>)")
    p.add_argument("--normalizer", default="default", choices=sorted(NORMALIZERS))
    p.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES,
                   help="bootstrap resamples for intervals and paired tests (0: off)")
    t = p.add_argument_group("tuning")
    t.add_argument("--tune", nargs="+", metavar="PARAM", help="tune these options, e.g. alpha beta")
    t.add_argument("--tune-split", nargs="+", default=["dev-clean"],
                   help="dev split(s) to tune on; several are pooled into one corpus WER")
    t.add_argument("--tune-method", choices=TUNE_METHODS, default="grid")
    t.add_argument("--tune-values", nargs="+", metavar="NAME=V1,V2",
                   help="grid per parameter (defaults: alpha and beta grids in eval/tune.py)")
    t.add_argument("--tune-trials", type=int, default=DEFAULT_OPTUNA_TRIALS)
    t.add_argument("--params", help="JSON written by --tune: apply its values per system")
    t.add_argument("--params-out", help="where --tune saves (default <out>/params.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.bootstrap < 0:
        p.error("--bootstrap must be >= 0")
    if args.tune and args.params:
        p.error("--tune and --params exclude each other: tune first, then pass the file")
    return args


def run(argv: Sequence[str] | None = None) -> Summary:
    """Everything ``main`` does, returning the Summary (for tests and notebooks)."""
    args = parse_args(argv)
    import_decoders()
    unknown = [d for d in args.decoder if d not in available_decoders()]
    if unknown:
        raise ValueError(f"unknown decoder(s) {unknown}; valid names: "
                         f"{', '.join(available_decoders())}")
    normalizer = get_normalizer(args.normalizer)
    out = Path(args.out or Path("results") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))
    folder = ResultsFolder(out)
    tuned = load_params(args.params) if args.params else None
    systems = build_systems(args, tuned)
    factory = DecoderFactory()
    plan = tune_plan(args, systems) if args.tune else None
    # Every cache before any decoding: a missing one fails now, not after a long tuning run.
    caches = {split: open_split_cache(args, split) for split in args.split}
    if plan is not None:
        tune_caches = [caches.get(t) or open_split_cache(args, t) for t in args.tune_split]
        tuned = tune_systems(args, *plan, factory, normalizer, tune_caches)
        params_path = Path(args.params_out) if args.params_out else out / "params.json"
        save_params(params_path, tuned)
        print(f"[tune] best on {tuned.split}: " + "; ".join(
            f"{k}: {v} (WER {100 * tuned.wer[k]:.2f}%)" for k, v in tuned.systems.items())
            + f"\n[tune] saved to {params_path} (reuse with --params {params_path})")
        systems = build_systems(args, tuned)

    settings = RunSettings(
        command=list(sys.argv if argv is None else ["eval/run.py", *argv]),
        systems=[s.spec() for s in systems],
        splits={k: {"cache": str(c.path), "model": c.meta.model, "revision": c.meta.revision,
                    "source": c.meta.source, "utterances": len(c),
                    "audio_seconds": c.total_audio_seconds} for k, c in caches.items()},
        normalizer=normalizer.to_dict(), bootstrap_resamples=args.bootstrap, jobs=args.jobs,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **environment_fields())
    folder.check_resumable(settings)
    folder.write_settings(settings)

    summaries, comparisons = [], []
    for split, cache in caches.items():
        labelled = []
        for system in systems:
            results, load_s = evaluate_system(system, cache, split, folder, factory, args,
                                              normalizer)
            summaries.append(summarise(split, system, results, load_s, args.bootstrap))
            labelled.append((system.label, results))
        comparisons += compare(split, labelled, args.bootstrap)
    summary = Summary(summaries, comparisons)
    folder.write_summary(summary)
    print(format_table(summaries, comparisons))
    print(f"\nresults: {out}/ (summary.md, summary.tsv, summary.json, settings.json, "
          "<split>/<system>.jsonl)")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(argv)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished utterances are saved; re-run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
