"""The n-best oracle: the fewest word errors any entry of an n-best list reaches.

It bounds what re-ranking the list (a stronger LM, eval/rescore.py) can win: rescoring can only
pick among the entries, so its WER can never go below the oracle WER.

    errors, index = oracle_errors("THE CAT", ["the cap", "the cat"], normalizer)   # (0, 1)
    oracle_wer(results)        # corpus WER of the oracle over a split's UtteranceResults
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from ctclab.core.normalize import TextNormalizer
from ctclab.eval.metrics import score_utterance
from ctclab.eval.records import UtteranceResult


def oracle_errors(ref: str, texts: Sequence[str], normalizer: TextNormalizer) -> tuple[int, int]:
    """(fewest word errors, index of the first entry with them) over the n-best ``texts``, each
    scored by the one WER (eval.metrics.score_utterance). ValueError for an empty list."""
    if not texts:
        raise ValueError("the n-best oracle needs at least one entry")
    errors = [score_utterance(ref, t, normalizer).words.errors for t in texts]
    best = min(range(len(errors)), key=errors.__getitem__)
    return errors[best], best


def oracle_wer(results: Sequence[UtteranceResult]) -> float:
    """Corpus WER of the n-best oracle (NaN when some utterance has no n-best list)."""
    words = sum(r.ref_words for r in results)
    if not results or words == 0 or any(r.oracle_errors is None for r in results):
        return math.nan
    return sum(int(r.oracle_errors or 0) for r in results) / words
