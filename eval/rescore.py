"""Re-ranking n-best lists with a second LM: a KenLM n-gram or a causal LM (eval/causal_lm.py).

    scorer = open_rescorer("4gram.arpa", vocab)       # or "gpt2" / a save_pretrained directory
    rescored = rescore_many(hyps, scorer, weight=0.5)  # hyps decoded with nbest >= 2

Each entry's new score is its decoder score plus ``weight`` x ln P_rescorer(text) plus ``bonus`` per
word (the first pass's alpha x n-gram and beta stay in it: the second LM corrects the first, and
its weight is tuned on dev together with alpha and beta, eval/tune.py). The list is sorted by
the new score and the word confidences are recomputed from the new n-best posteriors. The best a
re-ranking can reach is the n-best oracle (eval/oracle.py).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.confidence import with_confidence
from ctclab.eval.causal_lm import DEFAULT_CASE, CausalLMScorer
from ctclab.lm.arpa import looks_like_arpa
from ctclab.lm.casing import make_word_mapper
from ctclab.lm.fetch import KNOWN_RESOURCES
from ctclab.lm.sentence import KenLMSentenceScorer, SentenceScorer
from ctclab.lm.shared import load_lm_and_unigrams

# Weight of the second LM's ln P: the same scale as alpha (a natural-log word LM probability),
# and tuned on dev (grid eval/tune.py DEFAULT_GRIDS["rescore_weight"], 0 = no rescoring).
DEFAULT_RESCORE_WEIGHT = 0.5
DEFAULT_RESCORE_BONUS = 0.0
# File names KenLM loads; anything else that is not a directory is read as an ARPA by content.
KENLM_SUFFIXES = (".arpa", ".gz", ".binary", ".klm", ".bin", ".lm")


def is_kenlm(spec: str) -> bool:
    """True when ``spec`` names a KenLM model (a file or a known LM name), not a causal LM."""
    if spec in KNOWN_RESOURCES and KNOWN_RESOURCES[spec].is_lm:
        return True
    path = Path(spec).expanduser()
    return path.is_file() and (path.name.endswith(KENLM_SUFFIXES) or looks_like_arpa(path))


def rescorer_name(spec: str) -> str:
    """Short name for system labels: the file stem or the model id's last part."""
    name = Path(spec.rstrip("/")).name or spec
    for suffix in (".gz", ".arpa", ".binary", ".klm", ".bin"):
        name = name.removesuffix(suffix)
    return name


def open_rescorer(spec: str, vocab: Vocabulary, case: str = DEFAULT_CASE) -> SentenceScorer:
    """A KenLM sentence scorer (file / known name; words mapped to its casing) or a causal LM
    (hub id / directory; text in ``case``)."""
    if is_kenlm(spec):
        lm, unigrams = load_lm_and_unigrams(spec, None)
        assert lm is not None
        return KenLMSentenceScorer(lm, make_word_mapper(vocab, unigrams, lm), rescorer_name(spec))
    return CausalLMScorer.load(spec, case=case)


def check_nbest(nbest: int, what: str = "rescoring") -> None:
    """ValueError unless an n-best list of >= 2 entries is asked for."""
    if nbest < 2:
        raise ValueError(f"{what} needs n-best lists: decode with --nbest 10 (an n-best of one "
                         "leaves nothing to re-rank)")


def rerank(hyp: Hypothesis, lm_scores: Sequence[float] | np.ndarray, weight: float, bonus: float = 0.0
           ) -> Hypothesis:
    """``hyp``'s n-best list re-scored and sorted (best first); words' confidences recomputed.

    lm_scores: (len(hyp.nbest),) ln P of each entry's text under the second LM.
    """
    entries = hyp.nbest
    if not entries:
        raise ValueError("rescoring needs the hypothesis' n-best list: decode with --nbest >= 2")
    if len(lm_scores) != len(entries):
        raise ValueError(f"{len(lm_scores)} LM scores for {len(entries)} n-best entries")
    rescored = []
    for e, s in zip(entries, lm_scores, strict=True):
        score = e.score + weight * float(s) + bonus * len(e.words)
        lm = score - e.acoustic_score if math.isfinite(e.acoustic_score) else math.nan
        rescored.append(dataclasses.replace(e, score=score, lm_score=lm))
    order = sorted(range(len(rescored)), key=lambda i: -rescored[i].score)  # stable on ties
    ranked = tuple(rescored[i] for i in order)
    best = ranked[0]
    return with_confidence(dataclasses.replace(best, nbest=ranked))


def rescore_many(hyps: Sequence[Hypothesis], scorer: SentenceScorer, weight: float,
                 bonus: float = 0.0) -> list[Hypothesis]:
    """:func:`rerank` for many hypotheses, the second LM scoring all their texts at once (one
    batched pass for a causal LM). An empty hypothesis (T = 0) stays as it is."""
    texts = [e.text for h in hyps for e in h.nbest]
    scores = scorer.score_texts(texts) if texts else np.zeros(0)
    out, at = [], 0
    for h in hyps:
        n = len(h.nbest)
        if n == 0 and not h.words:
            out.append(h)
            continue
        out.append(rerank(h, scores[at:at + n], weight, bonus))
        at += n
    return out
