"""A results folder per evaluation run, written so that finished work is never lost.

Layout of ``results/NAME/``:

    settings.json              RunSettings: command, systems and their options, normaliser, caches,
                               package versions, git commit (enough to trace and re-make any number)
    <split>/<system>.jsonl     one UtteranceResult per line (id, ref, hyp, counts, score, times;
                               words with timestamps and confidence, n-best lists with their errors)
    summary.json / .tsv / .md  one SystemSummary per (split, system) + the paired comparisons,
                               word-confidence rows and rescoring rows when the run has them
    params.json                tuned values (--tune; eval/tune.py)
    calibration.json           word-confidence calibration (--calibrate-split; eval/calibration.py)

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
from importlib import metadata
from pathlib import Path
from typing import Any

from ctclab.core.atomic import atomic_write_text
from ctclab.core.options import neutral_fields
from ctclab.decoders.base import available_decoders, decoder_class
from ctclab.eval.records import RunSettings, Summary, UtteranceResult
from ctclab.eval.report import summary_markdown, summary_tsv

# Packages whose versions can change a WER or a timing; recorded in settings.json.
TRACKED_PACKAGES = ("ctclab", "numpy", "torch", "transformers", "pyctcdecode", "kenlm", "jiwer",
                    "rapidfuzz", "datasets", "flashlight-text", "ctc-beam-decoder")


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
            # Options that never change a result (e.g. how the LM is scored) may differ, or be
            # absent from a folder made before they existed.
            ignored = (neutral_fields(decoder_class(spec.decoder).Options)
                       if spec.decoder in available_decoders() else frozenset())
            if earlier is not None and (earlier.decoder, _comparable(earlier.options, ignored)) != (
                    spec.decoder, _comparable(spec.options, ignored)):
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

    # ----------------------------------------------------------------------------- calibration
    @property
    def calibration_path(self) -> Path:
        """Where --calibrate-split saves the calibration by default (eval/calibration.py reads
        and writes the file)."""
        return self.path / "calibration.json"

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


def _comparable(options: dict[str, Any], ignored: frozenset[str]) -> Any:
    """Stored or fresh options as compared for resuming: JSON values, ``ignored`` fields left out."""
    return _jsonable({k: v for k, v in options.items() if k not in ignored})


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
