"""What a results folder holds (eval/results.py reads and writes the folder): one decoded
utterance, the run's settings, and the corpus summaries with the paired comparisons.

Rates are fractions (0.034 = 3.4 %), times are seconds, scores natural logs.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ctclab.eval.metrics import ErrorCounts

SCHEMA_VERSION = 1


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
    # Added with word confidence and n-best output (absent in older files: the defaults).
    # words: eval.word_records.word_records (word, times, confidence, correct, ...);
    # nbest: eval.word_records.nbest_records (text, score, errors); oracle_errors: the fewest word
    # errors of any n-best entry (None without an n-best list).
    words: list[dict[str, Any]] = field(default_factory=list)
    nbest: list[dict[str, Any]] = field(default_factory=list)
    oracle_errors: int | None = None

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
    """A decoder configuration evaluated under one label (e.g. ``beam+en-us-70k-3gram``).

    inputs: what the files its options name were (field -> lm.files.file_fingerprint), so that a
    file replaced under the same name is not taken for the one the results were made with.
    """

    label: str
    decoder: str
    options: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSettings:
    """Everything needed to trace and re-make a run (stored as settings.json)."""

    command: list[str]
    systems: list[SystemSpec]
    splits: dict[str, dict[str, Any]]
    normalizer: dict[str, Any]
    bootstrap_resamples: int
    jobs: int
    # the JSONL's words carry start/end times (folders made before the flag existed: they do)
    word_timestamps: bool = True
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
    # the n-best oracle: corpus WER if every utterance took its best n-best entry (NaN: no n-best)
    oracle_wer: float = float("nan")
    unit: str = "words"   # what wer counts: words, or phonemes (a token-only output's PER)

    @property
    def shown_system(self) -> str:
        """The label, marked [PER] when the rate counts phonemes rather than words."""
        return self.system if self.unit == "words" else f"{self.system} [PER]"


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
class ConfidenceRow:
    """How well one system's word confidence did on one split (eval.confidence_metrics).

    calibration: what the confidences went through ('none' = the decoder's own, or e.g.
    'temperature (T=1.89) fit on dev-clean+dev-other'); in_sample: the split was part of that fit
    (its figures are then not a held-out measurement); ece_raw: the ECE the decoder's own
    confidence had on these words. Rates are fractions; NaN where undefined.
    """

    split: str
    system: str
    calibration: str
    in_sample: bool
    words: int
    wrong: int
    mean_confidence: float
    accuracy: float
    ece: float
    ece_low: float
    ece_high: float
    auc: float
    auc_low: float
    auc_high: float
    bins: int
    # ECE of the decoder's own confidence on the same words (= ece without calibration)
    ece_raw: float = float("nan")


@dataclass(frozen=True)
class RescoreRow:
    """Did re-ranking the n-best of ``base`` with a second LM change its WER on ``split``?

    delta = WER(rescored) - WER(base), its 95% paired-bootstrap interval and p; significant when
    p < 0.05. oracle_wer: the n-best oracle, the floor any re-ranking of these lists can reach.
    """

    split: str
    base: str
    rescored: str
    wer_base: float
    wer_rescored: float
    oracle_wer: float
    delta: float
    delta_low: float
    delta_high: float
    p_value: float
    significant: bool


@dataclass(frozen=True)
class Summary:
    """What summary.json holds (confidence and rescoring rows when the run has them)."""

    systems: list[SystemSummary]
    comparisons: list[Comparison]
    schema_version: int = SCHEMA_VERSION
    confidence: list[ConfidenceRow] = field(default_factory=list)
    rescoring: list[RescoreRow] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """Inverse of writing summary.json: the None that JSON holds for NaN (no bootstrap
        interval, no audio seconds) becomes NaN again, so every rate field is a float."""
        def floats(row: dict[str, Any]) -> dict[str, Any]:
            return {k: float("nan") if v is None else v for k, v in row.items()}

        return cls([SystemSummary(**floats(s)) for s in data["systems"]],
                   [Comparison(**floats(c)) for c in data["comparisons"]],
                   data.get("schema_version", SCHEMA_VERSION),
                   [ConfidenceRow(**floats(c)) for c in data.get("confidence", [])],
                   [RescoreRow(**floats(c)) for c in data.get("rescoring", [])])
