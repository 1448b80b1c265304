"""A results folder per evaluation run, written so that finished work is never lost.

Layout of ``results/NAME/``:

    settings.json              RunSettings: command, systems and their options, normaliser, caches,
                               package versions, git commit (enough to trace and re-make any number)
    <split>/<system>.jsonl     one UtteranceResult per line (id, ref, hyp, counts, score, times)
    summary.json / .tsv / .md  one SystemSummary per (split, system) + the paired comparisons

JSONL lines are appended and fsync'ed after each decoded chunk; a run that is interrupted leaves
at most one torn last line, which :meth:`ResultsFolder.read_utterances` cuts off, so a re-run
resumes with the utterances not yet in the file. Every other file is written to a temporary file
and moved into place with ``os.replace``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ctclab.core.atomic import atomic_write_text
from ctclab.eval.metrics import ErrorCounts

SCHEMA_VERSION = 1
# Packages whose versions can change a WER or a timing; recorded in settings.json.
TRACKED_PACKAGES = ("ctclab", "numpy", "torch", "transformers", "pyctcdecode", "kenlm", "jiwer",
                    "rapidfuzz", "datasets", "flashlight-text", "ctc-beam-decoder")


@dataclass(frozen=True)
class UtteranceResult:
    """One decoded utterance. Texts as produced; ``*_norm`` after the shared normaliser.

    Word counts: substitutions, deletions, insertions against ref_words normalised reference words;
    char_* likewise against ref_chars characters. score: the decoder's ranking score (natural log).
    decode_seconds: this utterance's share (by frames) of its chunk's wall-clock decode time.
    """

    id: str
    ref: str
    hyp: str
    ref_norm: str
    hyp_norm: str
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    char_substitutions: int
    char_deletions: int
    char_insertions: int
    ref_chars: int
    score: float
    decode_seconds: float
    audio_seconds: float
    num_frames: int

    @property
    def word_counts(self) -> ErrorCounts:
        return ErrorCounts(self.substitutions, self.deletions, self.insertions, self.ref_words)

    @property
    def char_counts(self) -> ErrorCounts:
        return ErrorCounts(self.char_substitutions, self.char_deletions, self.char_insertions,
                           self.ref_chars)

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if not math.isfinite(data["score"]):
            data["score"] = None  # JSON has no NaN/inf
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> UtteranceResult:
        data = json.loads(line)
        if data.get("score") is None:
            data["score"] = float("nan")
        return cls(**data)


@dataclass(frozen=True)
class SystemSpec:
    """A decoder configuration evaluated under one label (e.g. ``beam+en-us-70k-3gram``)."""

    label: str
    decoder: str
    options: dict[str, Any]


@dataclass(frozen=True)
class RunSettings:
    """Everything needed to trace and re-make a run (stored as settings.json)."""

    command: list[str]
    systems: list[SystemSpec]
    splits: dict[str, dict[str, Any]]
    normalizer: dict[str, Any]
    bootstrap_resamples: int
    jobs: int
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str = ""
    python: str = ""
    platform: str = ""
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        data = dict(data)
        data["systems"] = [SystemSpec(**s) for s in data.get("systems", [])]
        return cls(**data)


@dataclass(frozen=True)
class SystemSummary:
    """Corpus figures of one system on one split. Rates are fractions (0.034 = 3.4 %).

    rtf: decode_seconds / audio_seconds (decode wall time only; LM/decoder loading is load_seconds).
    """

    split: str
    system: str
    decoder: str
    utterances: int
    wer: float
    wer_low: float
    wer_high: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    words: int
    chars: int
    ser: float
    audio_seconds: float
    decode_seconds: float
    rtf: float
    load_seconds: float


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of system_a vs system_b on one split; delta = WER(b) - WER(a)."""

    split: str
    system_a: str
    system_b: str
    wer_a: float
    wer_b: float
    delta: float
    delta_low: float
    delta_high: float
    p_value: float


@dataclass(frozen=True)
class Summary:
    """What summary.json holds."""

    systems: list[SystemSummary]
    comparisons: list[Comparison]
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """Inverse of writing summary.json: the None that JSON holds for NaN (no bootstrap
        interval, no audio seconds) becomes NaN again, so every rate field is a float."""
        def floats(row: dict[str, Any]) -> dict[str, Any]:
            return {k: float("nan") if v is None else v for k, v in row.items()}

        return cls([SystemSummary(**floats(s)) for s in data["systems"]],
                   [Comparison(**floats(c)) for c in data["comparisons"]],
                   data.get("schema_version", SCHEMA_VERSION))


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` ("not installed" when absent)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(repo: Path | None = None) -> str:
    """The repository's HEAD commit (+ "-dirty" with uncommitted changes), or "" outside git."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               check=False, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("-dirty" if dirty else "")


def environment_fields() -> dict[str, Any]:
    """python / platform / versions / git_commit fields for RunSettings."""
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "versions": package_versions(), "git_commit": git_commit()}


def _safe_component(name: str, what: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{what} {name!r} cannot be used as a file name in the results folder")
    return name


class ResultsFolder:
    """Reads and writes one run's results folder (see the module docstring for the layout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # ----------------------------------------------------------------------------- settings
    @property
    def settings_path(self) -> Path:
        return self.path / "settings.json"

    def read_settings(self) -> RunSettings | None:
        """The stored settings, or None for a new folder."""
        if not self.settings_path.is_file():
            return None
        try:
            return RunSettings.from_dict(json.loads(self.settings_path.read_text("utf-8")))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{self.settings_path} is not a ctclab settings file ({exc}); "
                             "choose another --out folder") from exc

    def check_resumable(self, settings: RunSettings) -> None:
        """Raise ValueError when this folder holds results of the same system label made with
        other options, another normaliser, or a split decoded from another model's emissions
        (resuming would mix them)."""
        old = self.read_settings()
        if old is None:
            return
        for split, now in settings.splits.items():
            before = old.splits.get(split)
            if before is not None and (before.get("model"), before.get("revision")) != (
                    now.get("model"), now.get("revision")):
                raise ValueError(
                    f"{self.path} holds {split!r} results decoded from emissions of "
                    f"{before.get('model')}@{before.get('revision')}, not "
                    f"{now.get('model')}@{now.get('revision')}; use a new --out folder")
        if old.git_commit != settings.git_commit or old.versions != settings.versions:
            print(f"note: resuming {self.path}, made at commit {old.git_commit or '?'} with "
                  f"other package versions or code (now {settings.git_commit or '?'}); finished "
                  "utterances are kept as they are: use a new --out folder to re-decode them",
                  file=sys.stderr)
        if old.normalizer != settings.normalizer:
            raise ValueError(f"{self.path} was scored with normaliser {old.normalizer['name']!r}, "
                             f"not {settings.normalizer['name']!r}; use a new --out folder")
        previous = {s.label: s for s in old.systems}
        for spec in settings.systems:
            earlier = previous.get(spec.label)
            if earlier is not None and (earlier.decoder, _jsonable(earlier.options)) != (
                    spec.decoder, _jsonable(spec.options)):
                raise ValueError(
                    f"{self.path} already holds results for {spec.label!r} made with options "
                    f"{earlier.options}, now {spec.options}; use a new --out folder (or delete "
                    f"{self.path / '*' / (spec.label + '.jsonl')})")

    def write_settings(self, settings: RunSettings) -> None:
        """Store settings, keeping systems of an earlier run that this run does not repeat."""
        old = self.read_settings()
        if old is not None:
            labels = {s.label for s in settings.systems}
            kept = [s for s in old.systems if s.label not in labels]
            splits = {**old.splits, **settings.splits}
            settings = dataclasses.replace(settings, systems=kept + list(settings.systems),
                                           splits=splits)
        atomic_write_text(self.settings_path, json.dumps(_jsonable(dataclasses.asdict(settings)),
                                                         indent=2, ensure_ascii=False) + "\n")

    # ----------------------------------------------------------------------------- utterances
    def utterance_path(self, split: str, system: str) -> Path:
        return self.path / _safe_component(split, "split") / (
            _safe_component(system, "system label") + ".jsonl")

    def read_utterances(self, split: str, system: str) -> list[UtteranceResult]:
        """All complete lines of <split>/<system>.jsonl; a torn last line (interrupted write) is
        cut off the file so that appending continues cleanly."""
        path = self.utterance_path(split, system)
        if not path.is_file():
            return []
        data = path.read_bytes()
        results, good_end = [], 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                results.append(UtteranceResult.from_json(line.decode("utf-8")))
            except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
                if good_end + len(line) == len(data):
                    break  # torn final line
                raise ValueError(f"{path}: corrupt line after {len(results)} results ({exc}); "
                                 "delete the file to decode this system again") from exc
            good_end += len(line)
        if good_end != len(data):
            with open(path, "r+b") as f:
                f.truncate(good_end)
        return results

    def append_utterances(self, split: str, system: str,
                          results: Sequence[UtteranceResult]) -> None:
        """Append results as JSONL lines and fsync (one chunk of finished work is then durable)."""
        if not results:
            return
        path = self.utterance_path(split, system)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(r.to_json() + "\n" for r in results))
            f.flush()
            os.fsync(f.fileno())

    # ----------------------------------------------------------------------------- summary
    def write_summary(self, summary: Summary) -> None:
        """summary.json, summary.tsv and summary.md, each written atomically."""
        atomic_write_text(self.path / "summary.json",
                          json.dumps(_jsonable(dataclasses.asdict(summary)), indent=2) + "\n")
        atomic_write_text(self.path / "summary.tsv", summary_tsv(summary))
        atomic_write_text(self.path / "summary.md", summary_markdown(summary))

    def read_summary(self) -> Summary:
        path = self.path / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"no summary.json in {self.path}; run eval/run.py --out "
                                    f"{self.path} first")
        return Summary.from_dict(json.loads(path.read_text("utf-8")))


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, NaN/inf -> None, recursively, so stored and fresh settings compare equal."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


SUMMARY_COLUMNS = ("split", "system", "utterances", "wer", "wer_low", "wer_high", "cer",
                   "substitutions", "deletions", "insertions", "words", "ser", "audio_seconds",
                   "decode_seconds", "rtf", "load_seconds")


def summary_tsv(summary: Summary) -> str:
    """Machine-readable table, one row per (split, system); rates as fractions."""
    lines = ["\t".join(SUMMARY_COLUMNS)]
    for s in summary.systems:
        lines.append("\t".join(str(getattr(s, c)) for c in SUMMARY_COLUMNS))
    return "\n".join(lines) + "\n"


def summary_markdown(summary: Summary) -> str:
    """Human-readable tables: WER/CER in percent with the bootstrap interval, then paired tests."""
    out = ["| split | system | WER % | 95% CI | CER % | S | D | I | words | RTF |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for s in summary.systems:
        ci = "" if math.isnan(s.wer_low) else f"{100 * s.wer_low:.2f}–{100 * s.wer_high:.2f}"
        out.append(f"| {s.split} | {s.system} | {100 * s.wer:.2f} | {ci} | {100 * s.cer:.2f} | "
                   f"{s.substitutions} | {s.deletions} | {s.insertions} | {s.words} | "
                   f"{s.rtf:.4f} |")
    if summary.comparisons:
        out += ["", "| split | A | B | WER(B) − WER(A) % | 95% CI | p |",
                "|---|---|---|---:|---|---:|"]
        for c in summary.comparisons:
            out.append(f"| {c.split} | {c.system_a} | {c.system_b} | {100 * c.delta:+.2f} | "
                       f"{100 * c.delta_low:+.2f}…{100 * c.delta_high:+.2f} | {c.p_value:.3f} |")
    return "\n".join(out) + "\n"
