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

import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from ctclab.core.atomic import atomic_write_text
from ctclab.core.options import neutral_fields
from ctclab.decoders.base import decoder_class, registered_decoders
from ctclab.eval.records import RunSettings, Summary, UtteranceResult
from ctclab.eval.report import summary_markdown, summary_tsv

# Held (flock) by the run writing the folder.
LOCK_FILE = ".lock"
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

    def check_resumable(self, settings: RunSettings, options: bool = True) -> None:
        """Raise ValueError when resuming this folder with ``settings`` would mix results made
        from other inputs, or leave a summary that covers part of the folder: another
        normaliser; a split decoded from another emission cache (cache identity); a system of
        the same label made with other options or other input files (the one differing key and
        its two values are named; ``options=False`` leaves these out, for a check before tuning
        sets them); or (split, system) results the run does not name."""
        old = self.read_settings()
        if old is None:
            return
        if old.normalizer != settings.normalizer:
            raise ValueError(f"{self.path} was scored with normaliser {old.normalizer['name']!r}, "
                             f"not {settings.normalizer['name']!r}; use a new --out folder")
        if old.word_timestamps != settings.word_timestamps:
            was = "--word-timestamps" if old.word_timestamps else "--no-word-timestamps"
            how = "with" if old.word_timestamps else "without"
            raise ValueError(f"{self.path} records words {how} timestamps ({was}); resume it "
                             f"with {was} (one JSONL, one layout) or use a new --out folder")
        for split, now in settings.splits.items():
            before = old.splits.get(split)
            if before is not None and self._holds_split(split, old):
                _check_same_cache(self.path, split, before, now)
        previous = {s.label: s for s in old.systems}
        for spec in settings.systems:
            earlier = previous.get(spec.label)
            if earlier is None or not options or not any(
                    self._holds(split, spec.label) for split in old.splits):
                continue
            # Options that never change a result (e.g. how the LM is scored) may differ, or be
            # absent from a folder made before they existed; so may the input fingerprints of a
            # folder made before they were recorded.
            ignored = (neutral_fields(decoder_class(spec.decoder).Options)
                       if spec.decoder in registered_decoders() else frozenset())
            differs = _first_difference(
                {"decoder": earlier.decoder, "options": _comparable(earlier.options, ignored),
                 **({"inputs": earlier.inputs} if earlier.inputs else {})},
                {"decoder": spec.decoder, "options": _comparable(spec.options, ignored),
                 **({"inputs": spec.inputs} if earlier.inputs else {})})
            if differs is not None:
                key, was, now_value = differs
                what = ("the file behind it changed (another file of the same name, or edited)"
                        if key.startswith("inputs.") else f"now {now_value!r}")
                raise ValueError(
                    f"{self.path} holds results of {spec.label!r} made with {key} = {was!r}, "
                    f"{what}; use a new --out folder (or delete "
                    f"{self.path / '*' / (spec.label + '.jsonl')} to decode it again)")
        labels, splits = {s.label for s in settings.systems}, set(settings.splits)
        held = [(split, system) for split in old.splits for system in previous
                if self._holds(split, system)]
        systems_left = list(dict.fromkeys(system for _, system in held if system not in labels))
        splits_left = list(dict.fromkeys(split for split, _ in held if split not in splits))
        if systems_left or splits_left:
            left = " and ".join(f"of {what} this run does not name ({', '.join(names)})"
                                for what, names in (("systems", systems_left),
                                                    ("splits", splits_left)) if names)
            raise ValueError(
                f"{self.path} also holds results {left}, and a folder's summary covers every "
                "system in it: name them too (finished utterances are not decoded again; the "
                f"folder's last command was: {' '.join(old.command)}), or use a new --out folder")
        if options and (old.git_commit != settings.git_commit
                        or old.versions != settings.versions):
            print(f"note: resuming {self.path}, made at commit {old.git_commit or '?'} with "
                  f"other package versions or code (now {settings.git_commit or '?'}); finished "
                  "utterances are kept as they are: use a new --out folder to re-decode them",
                  file=sys.stderr)

    def _holds(self, split: str, system: str) -> bool:
        """True when <split>/<system>.jsonl holds at least one byte of results."""
        try:
            path = self.utterance_path(split, system)
        except ValueError:
            return False
        return path.is_file() and path.stat().st_size > 0

    def _holds_split(self, split: str, old: RunSettings) -> bool:
        return any(self._holds(split, s.label) for s in old.systems)

    def write_settings(self, settings: RunSettings) -> None:
        """Store the settings of a run (which covers everything the folder holds: see
        check_resumable)."""
        atomic_write_text(self.settings_path, json.dumps(_jsonable(dataclasses.asdict(settings)),
                                                         indent=2, ensure_ascii=False) + "\n")

    # ----------------------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock (``.lock``, an flock) while writing it, so that two runs with
        the same --out never both append the same utterances; RuntimeError when another process
        holds it. The lock goes with the process, however it ends."""
        import fcntl

        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file, not a results folder; choose another "
                             "--out")
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 - held until the block ends
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip()
                raise RuntimeError(
                    f"another eval/run.py is writing {self.path}"
                    + (f" (pid {holder})" if holder else "") + "; wait for it to finish (or "
                    "stop it) and run again, or use another --out folder") from None
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.close()

    # ----------------------------------------------------------------------------- utterances
    def utterance_path(self, split: str, system: str) -> Path:
        return self.path / _safe_component(split, "split") / (
            _safe_component(system, "system label") + ".jsonl")

    def read_utterances(self, split: str, system: str, repair: bool = False
                        ) -> list[UtteranceResult]:
        """All complete lines of <split>/<system>.jsonl, one result per utterance id (the first:
        a line repeated by an earlier, unlocked run is read once). A torn last line (an
        interrupted write) is skipped, and with ``repair`` (the writer, holding the lock) cut
        off the file so that appending continues cleanly."""
        path = self.utterance_path(split, system)
        if not path.is_file():
            return []
        data = path.read_bytes()
        results: dict[str, UtteranceResult] = {}
        good_end = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                result = UtteranceResult.from_json(line.decode("utf-8"))
            except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
                if good_end + len(line) == len(data):
                    break  # torn final line
                raise ValueError(f"{path}: corrupt line after {len(results)} results ({exc}); "
                                 "delete the file to decode this system again") from exc
            results.setdefault(result.id, result)
            good_end += len(line)
        if repair and good_end != len(data):
            with open(path, "r+b") as f:
                f.truncate(good_end)
        return list(results.values())

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


def _check_same_cache(folder: Path, split: str, before: dict[str, Any], now: dict[str, Any]
                      ) -> None:
    """ValueError when ``split`` was decoded from another emission cache than now: another
    content (model, revision, utterances, references: the cache identity), or for a folder made
    before identities were recorded, another model, revision or cache folder."""
    keys = ("content_key",) if before.get("content_key") else ("model", "revision", "cache")
    if any(before.get(key) != now.get(key) for key in keys):
        def cache(c: dict[str, Any]) -> str:
            content = f", content {str(c['content_key'])[:12]}" if c.get("content_key") else ""
            return f"{c.get('cache')} ({c.get('model')}@{c.get('revision')}{content})"

        raise ValueError(f"{folder} holds {split!r} results decoded from another emission cache: "
                         f"{cache(before)} then, {cache(now)} now; use a new --out folder")


def _first_difference(a: Any, b: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted key, value in a, value in b) where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else str(k))
            if found is not None:
                return found
        return None
    return None if a == b else (key, a, b)


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
