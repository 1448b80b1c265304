"""Re-ranking n-best lists with a second LM: a KenLM n-gram or a causal LM (eval/causal_lm.py).

    scorer = open_rescorer("4gram.arpa", vocab)       # or "gpt2" / a save_pretrained directory
    rescored = rescore_many(hyps, scorer, weight=0.5)  # hyps decoded with nbest >= 2

Each entry's new score is its decoder score plus ``weight`` x ln P_rescorer(text) plus ``bonus`` per
word (the first pass's alpha x n-gram and beta stay in it: the second LM corrects the first, and
its weight is tuned on dev together with alpha and beta, eval/tuning.py). The list is sorted by
the new score and the word confidences are recomputed from the new n-best posteriors. The best a
re-ranking can reach is the n-best oracle (eval/oracle.py).

How a rescored evaluation system re-ranks is declared once, in :class:`RescoreOptions` (its
command-line flags --rescore-weight, --rescore-bonus and --rescore-case are generated from it).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.options import NO_FLAG, option
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.base import Decoder
from ctclab.decoders.confidence import with_confidence
from ctclab.eval.causal_lm import CASES, DEFAULT_CASE, CausalLMScorer
from ctclab.lm.arpa import looks_like_arpa
from ctclab.lm.fetch import KNOWN_RESOURCES
from ctclab.lm.loaded import load_lm
from ctclab.lm.sentence import KenLMSentenceScorer, SentenceScorer

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


def open_rescorer(spec: str, vocab: Vocabulary, case: str = DEFAULT_CASE, *,
                  progress: bool = True) -> SentenceScorer:
    """A KenLM sentence scorer (file / known name; words mapped to its casing) or a causal LM
    (hub id / directory; text in ``case``). progress: show the progress of first-use work on a
    large KenLM file (lm.loaded.load_lm) and of a causal LM's scoring."""
    if is_kenlm(spec):
        # the one loaded object: shared with decoders that fuse the same file
        lm = load_lm(spec, progress=progress)
        return KenLMSentenceScorer(lm.model, lm.word_mapper(vocab), Path(spec).name)
    return CausalLMScorer.load(spec, case=case, progress=progress)


def check_nbest(nbest: int, what: str = "rescoring") -> None:
    """ValueError unless an n-best list of >= 2 entries is asked for."""
    if nbest < 2:
        raise ValueError(f"{what} needs n-best lists: decode with --nbest 10 (an n-best of one "
                         "leaves nothing to re-rank)")


def rerank(hyp: Hypothesis, lm_scores: Sequence[float] | np.ndarray, weight: float, bonus: float = 0.0
           ) -> Hypothesis:
    """``hyp``'s n-best list re-scored and sorted (best first); words' confidences recomputed
    where the decoder computed them (not with ``word_confidence`` off: they stay NaN).

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
    reranked = dataclasses.replace(ranked[0], nbest=ranked)
    confident = any(not (math.isnan(w.confidence) and math.isnan(w.frame_confidence))
                    for e in entries for w in e.words)
    return with_confidence(reranked) if confident else reranked


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


@dataclass(frozen=True)
class RescoreOptions:
    """A second-pass LM and how its score enters a rescored system's ranking.

    The tunable values (--tune rescore_weight rescore_bonus) have the names of their flags.
    """

    # Given on the command line as --rescore MODEL (one rescored system each), so no flag here.
    rescore_lm: str = option(
        "", "KenLM file / known LM name, or a causal LM hub id / directory", flag=NO_FLAG)
    rescore_weight: float = option(
        DEFAULT_RESCORE_WEIGHT, "weight of the second LM's ln P (tune it with --tune "
        "rescore_weight)")
    rescore_bonus: float = option(DEFAULT_RESCORE_BONUS, "per-word bonus with rescoring")
    rescore_case: str = option(DEFAULT_CASE, "case of the words a causal LM reads", choices=CASES)

    def __post_init__(self) -> None:
        for name in ("rescore_weight", "rescore_bonus"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.rescore_weight < 0:
            raise ValueError(f"--rescore-weight must be >= 0, got {self.rescore_weight}")
        if self.rescore_case not in CASES:
            raise ValueError(f"unknown --rescore-case {self.rescore_case!r}; valid: "
                             f"{', '.join(CASES)}")


# The RescoreOptions values that --tune takes (the others name a model and a case).
RESCORE_TUNABLE = ("rescore_weight", "rescore_bonus")


class RescoringDecoder:
    """A decoder followed by n-best re-ranking: what the evaluation decodes a rescored system
    with (eval.systems.DecoderFactory builds it).

    Has what the evaluation needs of a decoder (``options``, ``batch_size``, ``decode``,
    ``decode_many``); the base decoder must return n-best lists (nbest >= 2).
    """

    def __init__(self, base: Decoder, scorer: SentenceScorer, rescore: RescoreOptions):
        check_nbest(int(getattr(base.options, "nbest", 1)))
        self.base, self.scorer, self.rescore = base, scorer, rescore
        self.options = base.options

    @property
    def batch_size(self) -> int:
        return self.base.batch_size

    def decode(self, log_probs: np.ndarray) -> Hypothesis:
        return self.decode_many([log_probs])[0]

    def decode_many(self, emissions: Sequence[np.ndarray], jobs: int = 1,
                    on_done: Callable[[int], None] | None = None) -> list[Hypothesis]:
        hyps = self.base.decode_many(emissions, jobs=jobs, on_done=on_done)
        return rescore_many(hyps, self.scorer, self.rescore.rescore_weight,
                            self.rescore.rescore_bonus)
