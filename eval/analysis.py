"""What the analysis notebooks read about runs and systems, so that the notebooks only plot
(per-utterance and per-word readers: eval/utterance_analysis.py).

    runs = list_runs("results")              # every results folder, oldest first, with its settings
    run = choose_run(runs, name)             # the one asked for, else the newest
    rows = system_rows("results")            # every (split, system) of every run, labelled
    latest_rows(rows)                        # the newest result per (split, configuration)
    pooled_sweeps(rows)                      # beam-width sweeps, splits pooled: a point per width
    config_label("beam", options)            # 'beam + 3gram (α 0.5, β 1.5), width 100, soft lexicon'
    tuning_runs("results")                   # one TuningRun per params.json, never pooled
    alpha_beta_grid(trials)                  # (alphas, betas, WER matrix) of one system of one run
    pareto_front([(rtf, wer), ...])          # indices of the speed/accuracy trade-off curve

When a notebook section has nothing to draw it prints the command that makes its data: MAKE_*.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.core.options import neutral_fields
from ctclab.decoders.base import available_decoders, decoder_class
from ctclab.eval.records import RunSettings, Summary, SystemSummary
from ctclab.eval.results import ResultsFolder
from ctclab.eval.systems import lm_label
from ctclab.eval.tune import Trial, load_params

__all__ = ["MAKE_CONFIDENCE", "MAKE_RESULTS", "MAKE_SWEEP", "MAKE_TUNING", "RunInfo", "SweepPoint",
           "SystemRow", "TuningRun", "alpha_beta_grid", "axis_limit", "choose_run",
           "config_label", "env_path", "find_results_folders", "latest_rows", "list_runs",
           "pareto_front", "pooled_sweeps", "rate_name", "sweep_rows", "system_rows",
           "tuning_runs"]

# What makes the data of a notebook section (printed when the section has nothing to draw).
_RUN = "python eval/run.py --import-emissions ../shared/emissions/quartznet15x5-base-en"
_LM = "../shared/lm/en-us-70k-3gram.arpa.gz"
MAKE_RESULTS = (f"{_RUN} --decoder greedy beam pyctcdecode --lm none {_LM} --split test-clean "
                "dev-clean dev-other an4-test an4-train an4-clstk --out results/demo "
                "(README command 1)")
MAKE_SWEEP = (f"for W in 4 16 64; do {_RUN} --decoder beam --lm {_LM} --beam-width $W --split "
              "test-clean dev-clean --out results/beam$W; done   (one run per width, the other "
              "options alike, in folders beside each other)")
MAKE_TUNING = (f"{_RUN} --decoder beam --lm {_LM} --tune alpha beta --tune-split dev-clean "
               "--split test-clean --out results/tuned")
MAKE_CONFIDENCE = (f"{_RUN} --decoder greedy beam --lm none {_LM} --nbest 10 --calibrate-split "
                   "dev-clean --split test-clean --out results/confidence")

# Options every label names in its own words (config_label); any other option is named only
# when it differs from its decoder's default. Calibration changes confidences, never the text.
_NAMED = frozenset({"lm_path", "unigrams_path", "alpha", "beta", "beam_width", "lexicon_mode",
                    "lexicon_path", "tokenizer_path", "hotwords", "hotword_weight", "nbest",
                    "rescore", "calibration"})


# ------------------------------------------------------------------------------------ labels
def rate_name(unit: str) -> str:
    """What a SystemSummary's ``wer`` counts: 'WER' for words, 'PER' for phonemes."""
    return {"words": "WER", "phonemes": "PER"}.get(unit, f"{unit} error rate")


def config_label(decoder: str, options: Mapping[str, Any], *, width: bool = True,
                 weights: bool = True) -> str:
    """A system's whole configuration in words, from its options as settings.json stores them:
    decoder, LM with alpha/beta, beam width, lexicon mode, hotwords, n-best, rescoring, then any
    other option that is not its default (``name=value``). Options that have no effect are left
    out (alpha/beta without an LM, the lexicon without known words, the hotword weight without
    hotwords). ``width=False`` / ``weights=False`` leave out the beam width / alpha and beta
    (for a sweep's curve, a tuning heatmap's title).

    >>> config_label("beam", {"lm_path": "x/3gram.arpa.gz", "alpha": 0.5, "beta": 1.5,
    ...                       "beam_width": 100, "lexicon_mode": "hard"})
    'beam + 3gram (α 0.5, β 1.5), width 100, hard lexicon'
    """
    o = dict(options)
    lm = o.get("lm_path")
    head = decoder
    if lm:
        head += f" + {lm_label(str(lm))}"
        if weights and "alpha" in o:
            head += f" (α {o['alpha']:g}, β {o.get('beta', 0):g})"
    elif "lm_path" in o:
        head += ", no LM"
    parts = [head]
    if width and o.get("beam_width") is not None:
        parts.append(f"width {o['beam_width']}")
    lexicon = o.get("lexicon_path")
    if "lexicon_mode" in o and (lm or o.get("unigrams_path") or lexicon):  # known words
        mode = o["lexicon_mode"] or ("hard" if lexicon else "soft")
        parts.append((f"{mode} lexicon" if mode != "none" else "no lexicon")
                     + (f" {Path(str(lexicon)).name}" if lexicon else ""))
    for key, what in (("unigrams_path", "unigrams"), ("tokenizer_path", "tokenizer")):
        if o.get(key):
            parts.append(f"{what} {Path(str(o[key])).name}")
    if o.get("hotwords"):
        parts.append(f"hotwords {' '.join(o['hotwords'])} (+{o.get('hotword_weight', 0):g})")
    if (o.get("nbest") or 1) > 1:
        parts.append(f"{o['nbest']}-best")
    if o.get("rescore"):
        r = o["rescore"]
        parts.append(f"rescored by {lm_label(str(r.get('rescore_lm')))} "
                     f"(w {r.get('rescore_weight', 0):g})")
    parts += [f"{k}={v}" for k, v in _changed_options(decoder, o).items()]
    return ", ".join(parts)


def _changed_options(decoder: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Options of ``decoder`` not named by config_label whose value is not the default, left out
    where they change no result: neutral ones (the LM backend) and those the options call inert
    with these values (the soft-lexicon penalty under a hard lexicon)."""
    if decoder not in available_decoders():
        return {}
    cls = decoder_class(decoder).Options
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        inert = set(cls(**{k: v for k, v in options.items() if k in names}).inert())
    except (TypeError, ValueError):  # options stored by another version: name them all
        inert = set()
    skip = _NAMED | neutral_fields(cls) | inert
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name not in options or f.default is dataclasses.MISSING:
            continue
        value, default = options[f.name], f.default
        if _plain(value) != _plain(default):
            out[f.name] = value
    return out


def _plain(value: Any) -> Any:
    """Stored (JSON) and default values compare equal: lists as tuples, NaN as None."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def env_path(name: str, default: str | Path) -> Path:
    """The path in environment variable ``name`` (else ``default``). A relative path is taken from
    the repository root (the nearest folder at or above the working directory that holds
    pyproject.toml and eval/), where eval/run.py is run, so a notebook in notebooks/ finds it."""
    path = Path(os.environ.get(name) or default).expanduser()
    if path.is_absolute():
        return path
    here = Path.cwd()
    root = next((p for p in [here, *here.parents]
                 if (p / "pyproject.toml").is_file() and (p / "eval").is_dir()), here)
    return root / path


# ------------------------------------------------------------------------------ results folders
def find_results_folders(root: str | Path) -> list[Path]:
    """``root`` itself when it holds summary.json, else every folder below it that does (sorted
    by path). FileNotFoundError, saying how to make one, when there is none."""
    root = Path(root)
    if (root / "summary.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob("summary.json")) if root.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no results folder (summary.json) at or under {root}; make one "
                                f"with eval/run.py --out {root}, e.g. {MAKE_RESULTS}; or point "
                                "the notebook's environment variable at an existing one")
    return found


@dataclass(frozen=True)
class RunInfo:
    """One results folder. created: when its settings were written (ISO, UTC); labels: system
    label -> configuration label (config_label)."""

    path: Path
    created: str
    settings: RunSettings | None
    summary: Summary

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def labels(self) -> dict[str, str]:
        specs = self.settings.systems if self.settings else []
        return {s.label: config_label(s.decoder, s.options) for s in specs}

    def label(self, system: str) -> str:
        """The configuration label of ``system`` (its own label when settings.json lacks it)."""
        return self.labels.get(system, system)


def list_runs(root: str | Path) -> list[RunInfo]:
    """Every results folder at or under ``root``, oldest first (by settings.json's creation
    time, else summary.json's modification time)."""
    runs = []
    for path in find_results_folders(root):
        folder = ResultsFolder(path)
        settings = folder.read_settings()
        created = settings.created if settings and settings.created else datetime.fromtimestamp(
            (path / "summary.json").stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        runs.append(RunInfo(path, created, settings, folder.read_summary()))
    return sorted(runs, key=lambda r: (r.created, str(r.path)))


def choose_run(runs: Sequence[RunInfo], name: str | None = None,
               need_confidence: bool = False) -> RunInfo:
    """The run called ``name`` (folder name or path), else the newest; with ``need_confidence``
    only runs with word-confidence rows count. ValueError naming the runs there are, or the
    command that makes one, when none fits."""
    pool = [r for r in runs if r.summary.confidence] if need_confidence else list(runs)
    if not pool:
        raise ValueError("no results folder with word confidences among "
                         f"{[r.name for r in runs]}; make one with {MAKE_CONFIDENCE}")
    if name is None:
        return pool[-1]
    found = [r for r in pool if name in (r.name, str(r.path))]
    if not found:
        raise ValueError(f"no results folder {name!r}"
                         f"{' with word confidences' if need_confidence else ''}; there are: "
                         f"{', '.join(r.name for r in pool)}")
    return found[-1]


@dataclass(frozen=True)
class SystemRow:
    """One (split, system) of one run, with the options the notebooks group by.

    config: the configuration in words (config_label); curve: the same without the beam width
    (the curve of a beam-width sweep); label: config, marked [PER] when the rate counts
    phonemes. beam_width / alpha / beta are None for decoders without them (alpha and beta also
    without an LM). created: when the run was made (ISO); model: whose emissions were decoded.
    """

    run: str
    summary: SystemSummary
    beam_width: int | None
    alpha: float | None
    beta: float | None
    lm: str | None
    decoder: str = ""
    config: str = ""
    curve: str = ""
    created: str = ""
    model: str = ""

    @property
    def label(self) -> str:
        unit = self.summary.unit
        return self.config if unit == "words" else f"{self.config} [{rate_name(unit)}]"

    def record(self) -> dict[str, Any]:
        """A flat dict for a table: the summary's fields, then run, configuration and options."""
        return {**dataclasses.asdict(self.summary), "run": Path(self.run).name,
                "label": self.label, "config": self.config, "curve": self.curve,
                "created": self.created, "model": self.model, "beam_width": self.beam_width,
                "alpha": self.alpha, "beta": self.beta, "lm": self.lm,
                "rate": rate_name(self.summary.unit)}


def system_rows(root: str | Path) -> list[SystemRow]:
    """Every SystemSummary of every results folder under ``root``, joined with its options."""
    rows = []
    for run in list_runs(root):
        specs = {s.label: s for s in run.settings.systems} if run.settings else {}
        made = run.settings.splits if run.settings else {}
        for s in run.summary.systems:
            spec = specs.get(s.system)
            opts: dict[str, Any] = spec.options if spec else {}
            decoder = spec.decoder if spec else s.decoder
            lm = opts.get("lm_path")
            rows.append(SystemRow(
                str(run.path), s, opts.get("beam_width"), opts.get("alpha") if lm else None,
                opts.get("beta") if lm else None, lm, decoder,
                config_label(decoder, opts) if spec else s.system,
                config_label(decoder, opts, width=False) if spec else s.system, run.created,
                str(made.get(s.split, {}).get("model", ""))))
    return rows


def latest_rows(rows: Iterable[SystemRow]) -> list[SystemRow]:
    """The newest row per (model, split, label): a configuration run twice is shown once."""
    newest: dict[tuple[str, str, str], SystemRow] = {}
    for row in sorted(rows, key=lambda r: (r.created, r.run)):
        newest[(row.model, row.summary.split, row.label)] = row
    return list(newest.values())


def sweep_rows(rows: Iterable[SystemRow]) -> list[SystemRow]:
    """The rows of beam-width sweeps: the newest row per (model, split, curve, unit, width), kept
    only where a (model, split, curve, unit) has several widths. A curve is one configuration but
    for its width, so runs that differ in anything else (LM, alpha/beta, lexicon mode, hotwords,
    the model's emissions) are never joined."""
    newest: dict[tuple[str, str, str, str, int], SystemRow] = {}
    for row in sorted(rows, key=lambda r: (r.created, r.run)):
        if row.beam_width is not None:
            key = (row.model, row.summary.split, row.curve, row.summary.unit, row.beam_width)
            newest[key] = row
    widths = Counter(key[:4] for key in newest)
    return [row for key, row in newest.items() if widths[key[:4]] > 1]


@dataclass(frozen=True)
class SweepPoint:
    """One width of a beam-width sweep, its splits pooled: errors / words (the corpus rate over
    ``splits``, the splits every width of the curve has) and decode / audio seconds."""

    model: str
    curve: str
    beam_width: int
    splits: tuple[str, ...]
    errors: int
    words: int
    decode_seconds: float
    audio_seconds: float

    @property
    def rate(self) -> float:
        return self.errors / self.words if self.words else float("nan")

    @property
    def rtf(self) -> float:
        return self.decode_seconds / self.audio_seconds if self.audio_seconds else float("nan")


def pooled_sweeps(rows: Iterable[SystemRow]) -> list[SweepPoint]:
    """sweep_rows with the splits pooled: per (model, curve) the splits every width has, summed
    (so tiny splits do not make a curve of timing noise). curve carries [PER] for phonemes.
    Sorted by (model, curve, width)."""
    groups: dict[tuple[str, str], list[SystemRow]] = {}
    for row in sweep_rows(rows):
        unit = row.summary.unit
        curve = row.curve if unit == "words" else f"{row.curve} [{rate_name(unit)}]"
        groups.setdefault((row.model, curve), []).append(row)
    out = []
    for (model, curve), group in groups.items():
        widths = sorted({r.beam_width for r in group if r.beam_width is not None})
        splits = set.intersection(*({r.summary.split for r in group if r.beam_width == w}
                                    for w in widths))
        order = tuple(dict.fromkeys(r.summary.split for r in group if r.summary.split in splits))
        for w in widths:
            part = [r.summary for r in group if r.beam_width == w and r.summary.split in splits]
            if len(widths) < 2 or not part:
                continue
            out.append(SweepPoint(model, curve, w, order,
                                  sum(s.substitutions + s.deletions + s.insertions for s in part),
                                  sum(s.words for s in part), sum(s.decode_seconds for s in part),
                                  sum(s.audio_seconds for s in part)))
    return sorted(out, key=lambda p: (p.model, p.curve, p.beam_width))


def axis_limit(rates: Sequence[float], highs: Sequence[float]) -> float:
    """Right end of an error-rate axis (same unit as ``rates``) that one outlying system (a 37 %
    run among 2 % ones) does not squash: the largest interval end ``highs`` among the rates no
    more than 5 x the median + 10, with 10 % room; at least 1. Rates past it are outliers to
    draw at the edge. NaN rates (no reference words) are ignored."""
    r, h = np.asarray(rates, float), np.asarray(highs, float)
    ok = np.isfinite(r)
    if not ok.any():
        return 1.0
    typical = r[ok] <= 5 * np.median(r[ok]) + 10
    ends = np.fmax(h[ok][typical], r[ok][typical])
    return max(1.0, 1.1 * float(np.nanmax(ends)))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (cost, error), both lower-is-better; sorted by
    cost. A point is dominated when another is no worse in both and better in one."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


# ------------------------------------------------------------------------------------- tuning
def _params_files(root: Path) -> list[Path]:
    return [root] if root.is_file() else sorted(root.rglob("params.json"))


@dataclass(frozen=True)
class TuningRun:
    """One ``--tune`` run (one params.json). split: the tuning split(s), '+'-joined; configs:
    system label -> its configuration without alpha/beta (from the settings.json beside the
    file; the label itself when there is none); trials / best / wer per system label."""

    params_file: Path
    split: str
    method: str
    created: str
    configs: dict[str, str]
    trials: dict[str, list[Trial]]
    best: dict[str, dict[str, float]]
    wer: dict[str, float]

    @property
    def name(self) -> str:
        """The results folder's name (where --params-out did not move the file elsewhere)."""
        return self.params_file.parent.name


def tuning_runs(root: str | Path) -> list[TuningRun]:
    """Every params.json at or under ``root``, oldest first; each is one run, never pooled."""
    out = []
    for file in _params_files(Path(root)):
        tuned = load_params(file)
        settings = ResultsFolder(file.parent).read_settings()
        specs = {s.label: s for s in settings.systems} if settings else {}
        configs = {label: config_label(specs[label].decoder, specs[label].options,
                                       weights=False) if label in specs else label
                   for label in tuned.trials}
        out.append(TuningRun(file, tuned.split, tuned.method, tuned.created, configs,
                             dict(tuned.trials), dict(tuned.systems), dict(tuned.wer)))
    return sorted(out, key=lambda r: (r.created, str(r.params_file)))


def alpha_beta_grid(trials: Sequence[Trial]) -> tuple[list[float], list[float], np.ndarray]:
    """(alphas, betas, wer) of one system's trials: wer[i, j] is the lowest WER (fraction) tried
    at alphas[i], betas[j] (the lowest over any other tuned parameter, e.g. rescore_weight);
    NaN where no trial was. Empty lists when alpha and beta were not both tuned."""
    points = [(t.params["alpha"], t.params["beta"], t.wer) for t in trials
              if "alpha" in t.params and "beta" in t.params]
    alphas = sorted({a for a, _, _ in points})
    betas = sorted({b for _, b, _ in points})
    grid = np.full((len(alphas), len(betas)), np.nan)
    for a, b, wer in points:
        i, j = alphas.index(a), betas.index(b)
        grid[i, j] = wer if np.isnan(grid[i, j]) else min(grid[i, j], wer)
    return alphas, betas, grid
