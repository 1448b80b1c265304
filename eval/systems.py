"""What an evaluation compares: *systems*, each a registered decoder with its options under a label
(``decoder``, or ``decoder+<lm name>`` for a decoder fusing an LM).

    systems = build_systems(["greedy", "beam"], [None, "x/3gram.arpa.gz"], {"beam_width": 50})
    [s.label for s in systems]           # ['greedy', 'beam', 'beam+3gram']
    factory = DecoderFactory()
    decoder, seconds = factory.build(systems[2], cache.meta.vocabulary, cache.frame_shift_s)

Option values go to the decoders whose options have them (greedy has none, so it runs once); a
value no chosen decoder takes is an error. The LM is part of the options (``lm_path``): decoders
load it once per process (ctclab.lm.loaded), so nothing here loads or keeps one.

With second-pass LMs (``rescore_models``), every system that makes n-best lists gets a *rescored*
twin per LM, labelled ``<system>+rescore-<lm name>``, decoded by the same decoder and re-ranked
(eval/rescore.py). A system may carry a word-confidence calibrator (eval/calibration.py; fitted on
dev by eval/calibrating.py), which is then part of what its results were made with.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.options import field_names, flag_of
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.base import Decoder, decoder_class, registered_decoders, require_decoder
from ctclab.decoders.options import LMOptions, PrefixSearchOptions
from ctclab.eval.calibration import Calibrator
from ctclab.eval.records import SystemSpec
from ctclab.eval.rescore import (
    KENLM_SUFFIXES,
    RescoreOptions,
    RescoringDecoder,
    check_nbest,
    is_kenlm,
    open_rescorer,
)
from ctclab.eval.tune import TunedParams
from ctclab.lm.arpa import looks_like_arpa
from ctclab.lm.files import file_fingerprint, resolve_lm_path
from ctclab.lm.sentence import SentenceScorer
from ctclab.lm.unigrams import is_kenlm_binary

# What --lm takes for "this system has no LM".
NO_LM = "none"
LOG = logging.getLogger("ctclab.eval")


def decoder_options() -> dict[str, type]:
    """Every registered decoder's options class, by decoder name (what the CLIs make flags of),
    usable here or not: the flags are the same in every environment. Importing any
    ctclab.decoders module registers greedy, beam and pyctcdecode."""
    return {name: decoder_class(name).Options for name in registered_decoders()}


class SystemDecoder(Protocol):
    """What the evaluation needs of a system's decoder: a Decoder, or a RescoringDecoder."""

    @property
    def batch_size(self) -> int: ...

    def decode(self, log_probs: np.ndarray) -> Hypothesis: ...

    def decode_many(self, emissions: Sequence[np.ndarray], jobs: int = 1,
                    on_done: Callable[[int], None] | None = None) -> list[Hypothesis]: ...


@dataclass(frozen=True)
class System:
    """A decoder class with its options under a label.

    rescore: the second-pass LM re-ranking its n-best lists, if any; base: the label of the
    system it re-ranks. calibrator: maps its word confidences to calibrated ones, if any.
    """

    label: str
    cls: type[Decoder]
    options: Any
    rescore: RescoreOptions | None = None
    base: str | None = None
    calibrator: Calibrator | None = None

    @property
    def lm(self) -> str | None:
        """The LM this system fuses (as named by the user), or None."""
        return self.options.lm_path if isinstance(self.options, LMOptions) else None

    @property
    def nbest(self) -> int:
        """Entries of its n-best lists (1: none)."""
        return int(getattr(self.options, "nbest", 1))

    def identity(self) -> dict[str, Any]:
        """What makes its hypotheses and confidences (what a calibration is valid for)."""
        return {"decoder": self.cls.name, "options": dataclasses.asdict(self.options),
                "rescore": dataclasses.asdict(self.rescore) if self.rescore else None}

    def input_files(self) -> dict[str, str]:
        """The files the options read, by field (decoders/options.py), and a rescoring KenLM
        (``rescore_lm``; a causal LM is a hub id or a model folder, not fingerprinted)."""
        files = getattr(self.options, "input_files", None)
        out = dict(files()) if callable(files) else {}
        if self.rescore is not None and (is_kenlm(self.rescore.rescore_lm)
                                         or self.rescore.rescore_lm.endswith(KENLM_SUFFIXES)):
            out["rescore_lm"] = self.rescore.rescore_lm
        return out

    def input_fingerprints(self) -> dict[str, str]:
        """What the input files are (lm.files.file_fingerprint), by field."""
        return {k: file_fingerprint(v) for k, v in self.input_files().items()}

    def spec(self) -> SystemSpec:
        """For settings.json; rescoring and calibration are part of the options, so a results
        folder made with others is not resumed; the input files are recorded by fingerprint."""
        options = dataclasses.asdict(self.options)
        if self.rescore is not None:
            options["rescore"] = dataclasses.asdict(self.rescore)
        if self.calibrator is not None:
            options["calibration"] = dataclasses.asdict(self.calibrator)
        return SystemSpec(self.label, self.cls.name, options, self.input_fingerprints())


def lm_label(lm: str) -> str:
    """``../x/en-us-70k-3gram.arpa.gz`` -> ``en-us-70k-3gram``, ``org/model/`` -> ``model`` (the
    LM part of a system label)."""
    name = Path(lm.rstrip("/")).name or lm
    for suffix in (".gz", ".arpa", ".binary", ".klm", ".bin"):
        name = name.removesuffix(suffix)
    return name


def lm_labels(lms: Sequence[str]) -> dict[str, str]:
    """The LM part of the system labels of one run: the file's stem, or, where two LMs share a
    stem (``4gram.binary`` and ``4gram.arpa``), the file name, and where two share that too, the
    folder and the file name (``a-4gram.arpa``). ValueError for one file given twice."""
    files: dict[str, str] = {}
    for lm in lms:
        key = str(Path(lm).expanduser().resolve()) if Path(lm).expanduser().exists() else lm
        if key in files:
            raise ValueError(f"--lm names {key} twice ({files[key]!r} and {lm!r}); give each LM "
                             "once")
        files[key] = lm
    labels = {lm: lm_label(lm) for lm in lms}
    for shorten in (lambda lm: Path(lm).name,
                    lambda lm: f"{Path(lm).expanduser().resolve().parent.name}-{Path(lm).name}"):
        clashing = [lm for lm in lms if list(labels.values()).count(labels[lm]) > 1]
        for lm in clashing:
            labels[lm] = shorten(lm)
    clashing = [lm for lm in lms if list(labels.values()).count(labels[lm]) > 1]
    if clashing:
        raise ValueError(f"--lm {' '.join(clashing)}: these LMs cannot be told apart by their "
                         "file and folder names; rename one")
    return labels


def _flag(name: str) -> str:
    """The command-line flag of option ``name`` (for error messages)."""
    for cls in decoder_options().values():
        for f in dataclasses.fields(cls):
            if f.name == name and flag_of(f):
                return flag_of(f)
    return name


def _inert(options: Any) -> dict[str, str]:
    """The options' own account of what has no effect (decoders/options.py), or none."""
    inert = getattr(options, "inert", None)
    return inert() if callable(inert) else {}


def build_systems(decoders: Sequence[str], lms: Sequence[str | None],
                  values: Mapping[str, Any], tuned: TunedParams | None = None,
                  rescore_models: Sequence[str] = (),
                  rescore_values: Mapping[str, Any] | None = None,
                  warn: bool = True) -> list[System]:
    """One System per (decoder, LM) pair; decoders without LM options get one system; then one
    rescored system per (system with n-best lists, second LM in ``rescore_models``).

    values: option values by field name (the ones the user gave), given to every decoder whose
    options have the field. tuned: values found by tuning replace those of the systems with the
    same label. rescore_values: RescoreOptions values (rescore_weight, ...) for every rescored
    system. ValueError for an unknown decoder, an LM or a value that no system of the run uses,
    or a bad value; a warning (logger ``ctclab.eval``; ``warn``) names the systems a given value
    or LM does not reach, and why.
    ImportError (what to install) for a decoder whose optional package is missing (pyctcdecode).
    """
    for name in decoders:
        require_decoder(name)
    taken = set().union(*(field_names(decoder_class(d).Options) for d in decoders))
    unused = sorted(k for k in values if k not in taken)
    if unused:
        raise ValueError(f"{', '.join(map(_flag, unused))}: not an option of any chosen decoder "
                         f"({', '.join(decoders)}); drop it or add a decoder that has it")
    _check_lm_takers(decoders, lms, warn)
    labels = lm_labels([lm for lm in lms if lm is not None])
    systems: list[System] = []
    for name in decoders:
        cls = decoder_class(name)
        fields = field_names(cls.Options)
        for lm in (lms if issubclass(cls.Options, LMOptions) else [None]):
            label = name if lm is None else f"{name}+{labels[lm]}"
            mapping = {k: v for k, v in values.items() if k in fields}
            if lm is None:
                mapping.pop("unigrams_path", None)  # known words come with an LM here
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
            systems.append(System(label, cls, options))
    systems += rescored_systems(systems, rescore_models, rescore_values or {}, tuned)
    if tuned is not None:
        _check_tuned(systems, tuned)
    _check_option_reach(systems, values, warn)
    return systems


def rescored_systems(systems: Sequence[System], models: Sequence[str],
                     values: Mapping[str, Any], tuned: TunedParams | None) -> list[System]:
    """One system per (system of ``systems`` with n-best lists, second LM), labelled
    ``<system>+rescore-<lm name>``; tuned values of that label (decoder options and
    rescore_weight / rescore_bonus) apply to it."""
    if not models:
        if values:
            flag = "--" + sorted(values)[0].replace("_", "-")
            raise ValueError(f"{flag} without --rescore: name the second LM (--rescore "
                             "4gram.arpa or a causal LM)")
        return []
    bases = [s for s in systems if issubclass(s.cls.Options, PrefixSearchOptions)]
    if not bases:
        raise ValueError("--rescore re-ranks n-best lists: add a decoder that makes them (beam, "
                         "pyctcdecode) with --nbest 10")
    rescore_fields = field_names(RescoreOptions)
    names = lm_labels(models)
    out: list[System] = []
    for base in bases:
        check_nbest(base.nbest)
        for model in models:
            label = f"{base.label}+rescore-{names[model]}"
            found = dict(tuned.systems.get(label, {})) if tuned is not None else {}
            own = {k: v for k, v in found.items() if k not in rescore_fields}
            options = dataclasses.replace(base.options, **own) if own else base.options
            try:
                rescore = RescoreOptions(model, **{**values, **{
                    k: v for k, v in found.items() if k in rescore_fields}})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"--rescore {model}: {exc}") from exc
            if label in {s.label for s in systems} | {s.label for s in out}:
                raise ValueError(f"system {label!r} is listed twice; give each --rescore once")
            out.append(System(label, base.cls, options, rescore, base.label))
    return out


def _check_tuned(systems: Sequence[System], tuned: TunedParams) -> None:
    """Tuned values apply to the systems they were tuned for: the same label and the same input
    files (an LM of the same name in another folder, or replaced in place, is another LM)."""
    if not set(tuned.systems) & {s.label for s in systems}:
        raise ValueError(f"the --params file has values for {sorted(tuned.systems)}, none of "
                         f"this run's systems {[s.label for s in systems]}; pass the same "
                         "--decoder and --lm as the tuning run")
    for s in systems:
        if s.label not in tuned.systems:
            continue
        was = tuned.inputs.get(s.label)
        if was is None:  # a params file from before inputs were recorded: compare the paths
            lm = tuned.lm.get(s.label)
            if lm and s.lm and _where(lm) != _where(s.lm):
                raise ValueError(f"the --params values for {s.label!r} were tuned with the LM "
                                 f"{lm}, not {s.lm}; tune again with this LM (--tune) or pass "
                                 "the LM they were tuned with")
            continue
        now = s.input_fingerprints()
        for name in sorted(set(was) | set(now)):
            if was.get(name) != now.get(name):
                then = (tuned.files.get(s.label) or {}).get(name, "?")
                raise ValueError(
                    f"the --params values for {s.label!r} were tuned with {name} = {then} "
                    f"({was.get(name) or 'none'}), but this run's is {s.input_files().get(name)} "
                    f"({now.get(name) or 'none'}): another file of the same name, or the file "
                    "changed since; tune again with it (--tune) or pass the file they were tuned "
                    "with")


def _where(path: str) -> str:
    """An LM as given, resolved to an absolute path when it is a file (else the name)."""
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path


def _check_lm_takers(decoders: Sequence[str], lms: Sequence[str | None], warn: bool) -> None:
    """An LM that no chosen decoder fuses is an error; a decoder without LM options beside an LM
    list without ``none`` runs once without an LM, which a warning says."""
    given = [lm for lm in lms if lm is not None]
    if not given:
        return
    takers = [d for d in decoders if issubclass(decoder_class(d).Options, LMOptions)]
    if not takers:
        raise ValueError(f"--lm {' '.join(given)}: no chosen decoder ({', '.join(decoders)}) "
                         "fuses an LM; add --decoder beam or pyctcdecode, or drop --lm")
    others = [d for d in decoders if d not in takers]
    if others and None not in lms and warn:
        LOG.warning(f"{', '.join(others)} takes no LM: it runs once, without "
                    f"{' '.join(given)} (add --lm {NO_LM} to compare the LM decoders without "
                    "one too)")


def _check_option_reach(systems: Sequence[System], values: Mapping[str, Any], warn: bool
                        ) -> None:
    """ValueError for a given value that changes no system; a warning naming the systems it does
    not change (and why) when it changes some. Values with the same reach share one line."""
    missed: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for name in values:
        why: list[tuple[str, str]] = []
        for s in systems:
            if name not in field_names(s.cls.Options):
                why.append((s.label, "not its option"))
            elif name == "unigrams_path" and s.lm is None:
                why.append((s.label, "no language model (a word list goes with --lm here)"))
            elif name in _inert(s.options):
                why.append((s.label, _inert(s.options)[name]))
        shown = f"{_flag(name)} {_shown(values[name])}"
        if len(why) == len(systems):
            reasons = "; ".join(f"{label}: {reason}" for label, reason in why)
            fix = "add --lm FILE" if all("language model" in r for _, r in why) else \
                "change what the reasons name"
            raise ValueError(f"{shown} has no effect on any system of this run ({reasons}); "
                             f"{fix}, or drop it")
        if why:
            missed.setdefault(tuple(why), []).append(shown)
    for reach, flags in missed.items() if warn else ():
        by_reason: dict[str, list[str]] = {}
        for label, reason in reach:
            by_reason.setdefault(reason, []).append(label)
        LOG.warning(f"{', '.join(flags)} {'does' if len(flags) == 1 else 'do'} not apply to "
                    + "; ".join(f"{', '.join(labels)} ({reason})"
                                for reason, labels in by_reason.items()))


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def check_input_files(systems: Sequence[System], *, progress: bool = True) -> None:
    """Every file the systems read, checked before anything is decoded (a missing LM must not
    surface after other systems ran for an hour): each LM resolved (an .arpa.gz decompressed
    once, a known name downloaded: offline that fails now, saying how to get the file) and
    recognised as an ARPA or a KenLM binary (a rescoring KenLM too); each word list present.
    progress: show a large decompression's progress.
    FileNotFoundError, ValueError or ConnectionError naming the file and the fix."""
    seen: set[tuple[str, str]] = set()
    for s in systems:
        for name, value in s.input_files().items():
            if (name, value) in seen:
                continue
            seen.add((name, value))
            if name in ("lm_path", "rescore_lm"):
                path = resolve_lm_path(value, progress=progress)
                if not (looks_like_arpa(path) or is_kenlm_binary(path)):
                    flag = "--lm" if name == "lm_path" else "--rescore"
                    raise ValueError(f"{flag} {value}: {path} is neither an ARPA file (its first "
                                     "line \\data\\) nor a KenLM binary; pass a KenLM .arpa, "
                                     ".arpa.gz or .binary file")
            elif not Path(value).expanduser().is_file():
                raise FileNotFoundError(f"{_flag(name)} {value}: file not found")


class DecoderFactory:
    """Builds the decoder of a system for a cache's vocabulary, once per (system, options,
    vocabulary, frame shift): a later split with the same vocabulary reuses it. A rescored
    system's decoder is its base decoder followed by the re-ranking (second LM loaded once)."""

    def __init__(self, units: str | None = None, *, progress: bool = True) -> None:
        """units: what the tokens are when the cache cannot say (phonemes: --lexicon is a
        pronunciation lexicon), or None to keep the cache's vocabulary as it is. progress: let
        decoders show the progress of slow set-up work (decompressing or building an LM)."""
        self._decoders: dict[tuple, Decoder] = {}
        self.units = units
        self.progress = progress
        self._rescorers: dict[tuple, SentenceScorer] = {}

    def rescorer(self, rescore: RescoreOptions, vocab_dict: dict) -> SentenceScorer:
        """The second-pass LM of ``rescore`` (eval.rescore.open_rescorer), loaded once per run."""
        key = (rescore.rescore_lm, rescore.rescore_case, repr(vocab_dict))
        if key not in self._rescorers:
            self._rescorers[key] = open_rescorer(rescore.rescore_lm, Vocabulary.from_dict(vocab_dict),
                                                 rescore.rescore_case, progress=self.progress)
        return self._rescorers[key]

    def build(self, system: System, vocab_dict: dict, frame_shift_s: float,
              options: Any = None) -> tuple[SystemDecoder, float]:
        """(decoder, seconds this call spent building it incl. LM loading: 0.0 when it is
        memoised). ``options`` replace the system's (tuning tries many)."""
        options = options or system.options
        if system.rescore is None:
            return self._decoder(system, vocab_dict, frame_shift_s, options)
        start = time.perf_counter()   # the base decoder, then the re-ranking
        base, _ = self._decoder(system, vocab_dict, frame_shift_s, options)
        scorer = self.rescorer(system.rescore, vocab_dict)
        return RescoringDecoder(base, scorer, system.rescore), time.perf_counter() - start

    def _decoder(self, system: System, vocab_dict: dict, frame_shift_s: float,
                 options: Any) -> tuple[Decoder, float]:
        key = (system.label, repr(options), repr(vocab_dict), frame_shift_s)
        if key in self._decoders:
            return self._decoders[key], 0.0
        start = time.perf_counter()
        vocab = Vocabulary.from_dict(vocab_dict)
        if self.units is not None:
            vocab = dataclasses.replace(vocab, units=self.units)
        decoder = system.cls(vocab, options, frame_shift_s=frame_shift_s, progress=self.progress)
        self._decoders[key] = decoder
        return decoder, time.perf_counter() - start

    def forget(self, label: str) -> None:
        """Drop memoised decoders of ``label`` (tuning builds many; keep memory bounded)."""
        self._decoders = {k: v for k, v in self._decoders.items() if k[0] != label}
