"""Words (with timestamps and confidence) and n-best lists as they go into the per-utterance
JSONL, and back out for calibration, the oracle and the notebooks.

One word record: ``{"word", "start_s", "end_s", "start_frame", "end_frame", "confidence",
"frame_confidence", "correct"}`` plus ``"calibrated"`` when the run applies a calibration; the
four times are left out when the run does not record timestamps (``--no-word-timestamps``).
``confidence`` is the decoder's own (decoders/confidence.py; null when it has none, e.g. beam
with nbest 1); ``calibrated`` maps it through the dev-fitted calibration; ``correct`` is from
the WER's word alignment (null for a word the normaliser drops). One n-best record:
``{"text", "score", "errors"}`` (word errors of that entry by the same WER).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.normalize import TextNormalizer
from ctclab.eval.calibration import Calibrator
from ctclab.eval.confidence_metrics import word_correctness
from ctclab.eval.metrics import UtteranceScore, score_utterance


def _number(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def word_records(hyp: Hypothesis, score: UtteranceScore, normalizer: TextNormalizer,
                 calibrator: Calibrator | None = None, timestamps: bool = True
                 ) -> list[dict[str, Any]]:
    """The JSONL word records of ``hyp`` (scored as ``score``); ``timestamps``: with each word's
    start and end (seconds and frames). Words that do not spell the scored text (a decoder whose
    words and text disagree) get ``correct`` null: they are written but never scored."""
    try:
        correct = word_correctness([w.word for w in hyp.words], score.alignment, normalizer)
    except ValueError:
        correct = [None] * len(hyp.words)
    calibrated = calibrator.apply([w.confidence for w in hyp.words],
                                  [w.frame_confidence for w in hyp.words]) if calibrator else None
    out = []
    for k, (w, ok) in enumerate(zip(hyp.words, correct, strict=True)):
        rec: dict[str, Any] = {"word": w.word}
        if timestamps:
            rec.update(start_s=w.start_s, end_s=w.end_s, start_frame=w.start_frame,
                       end_frame=w.end_frame)
        rec.update(confidence=_number(w.confidence),
                   frame_confidence=_number(w.frame_confidence), correct=ok)
        if calibrated is not None:
            rec["calibrated"] = _number(calibrated[k])
        out.append(rec)
    return out


def nbest_records(hyp: Hypothesis, ref: str, normalizer: TextNormalizer
                  ) -> list[dict[str, Any]]:
    """The JSONL n-best records (empty without an n-best list)."""
    return [{"text": e.text, "score": _number(e.score),
             "errors": score_utterance(ref, e.text, normalizer).words.errors} for e in hyp.nbest]


class ScoredWords(NamedTuple):
    """Every scored word with a confidence, as arrays: confidence (the decoder's, or calibrated),
    frame (its frame confidence; NaN where unknown), correct, utterance (index in the results)."""

    confidence: np.ndarray
    frame: np.ndarray
    correct: np.ndarray
    utterance: np.ndarray


def scored_words(results: Sequence[Any], calibrator: Calibrator | None = None) -> ScoredWords:
    """The words of ``results`` (UtteranceResult with ``words``) that have a confidence and are
    scored: through ``calibrator`` when given, else the decoder's own."""
    conf, frame, right, utt = [], [], [], []
    for i, r in enumerate(results):
        for w in r.words:
            if w.get("confidence") is None or w.get("correct") is None:
                continue
            conf.append(w["confidence"])
            f = w.get("frame_confidence")
            frame.append(math.nan if f is None else f)
            right.append(bool(w["correct"]))
            utt.append(i)
    c, f = np.asarray(conf, np.float64), np.asarray(frame, np.float64)
    if calibrator is not None and len(c):
        c = calibrator.apply(c, f)
    return ScoredWords(c, f, np.asarray(right, bool), np.asarray(utt, np.int64))


def has_confidence(results: Sequence[Any]) -> bool:
    """True when any word of ``results`` carries a decoder confidence."""
    return any(w.get("confidence") is not None for r in results for w in r.words)


def word_table(results: Sequence[Any]) -> dict[str, np.ndarray]:
    """The scored words of ``results`` with a confidence, as arrays for plots: confidence (the
    decoder's), calibrated (NaN where the run applied no calibration), correct, utterance."""
    rows = [(w["confidence"], w.get("calibrated"), bool(w["correct"]), i)
            for i, r in enumerate(results) for w in r.words
            if w.get("confidence") is not None and w.get("correct") is not None]
    return {"confidence": np.array([r[0] for r in rows], np.float64),
            "calibrated": np.array([np.nan if r[1] is None else r[1] for r in rows], np.float64),
            "correct": np.array([r[2] for r in rows], bool),
            "utterance": np.array([r[3] for r in rows], np.int64)}
