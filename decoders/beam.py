"""``beam``: our CTC prefix beam search in vectorized numpy, with KenLM shallow fusion.

    dec = create_decoder("beam", vocab, beam_width=100, lm_path="lm.arpa", alpha=0.5, beta=1.5)
    hyps = dec.decode_many(emissions)     # many utterances searched together (batch_size at once)

The array engine is decoders/beam_search.py; word scoring (LM, lexicon, hotwords) is
decoders/lm_fusion.py; defaults and why they are what they are: decoders/constants.py.

alpha = beta = 0 gives exactly the result without an LM when lexicon_mode="none"; with the
default soft lexicon it gives exactly the result of the same lexicon (unigrams) without an LM.

Speed against pyctcdecode and the C++ peers: python bench/decode_speed.py (figures and the exact
command in the README's Speed section).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders import constants as C
from ctclab.decoders.base import Decoder, register
from ctclab.decoders.beam_search import BatchSearch, SearchSettings
from ctclab.decoders.lm_fusion import WordScorer
from ctclab.lm.casing import make_word_mapper
from ctclab.lm.language_model import LanguageModel
from ctclab.lm.shared import load_lm_and_unigrams


@dataclass(frozen=True)
class BeamOptions:
    """Options of the ``beam`` decoder (names shared with pyctcdecode's adapter mean the same).

    beam_width: beams kept per utterance. token_min_logp: labels below this ln prob in a frame are
    not usable in that frame, blank and the continuing last label included (the best label always
    is). token_top_k: at most k labels per frame tried as extensions (None = no limit).
    beam_prune_logp: drop beams this far (ln) below the utterance's best (-inf = never).
    blank_skip_threshold: skip frames whose blank probability is >= this (None = never skip).
    lm_path: KenLM .arpa / .arpa.gz / .binary or a known LM name. unigrams_path: known words
    (word list, lexicon or ARPA; default: the LM's ARPA unigrams). alpha, beta: LM weight and word
    bonus. lexicon_mode: 'none' | 'soft' (unknown partial words penalised by
    unknown_prefix_penalty) | 'hard' (forbidden). hotwords / hotword_weight: words to boost.
    nbest: alternatives in Hypothesis.nbest. batch_size: utterances searched together.
    """

    beam_width: int = C.DEFAULT_BEAM_WIDTH
    token_min_logp: float = C.DEFAULT_TOKEN_MIN_LOGP
    token_top_k: int | None = C.DEFAULT_TOKEN_TOP_K
    beam_prune_logp: float = C.DEFAULT_BEAM_PRUNE_LOGP
    blank_skip_threshold: float | None = C.DEFAULT_BLANK_SKIP_THRESHOLD
    lm_path: str | None = None
    unigrams_path: str | None = None
    alpha: float = C.DEFAULT_ALPHA
    beta: float = C.DEFAULT_BETA
    lexicon_mode: str = C.DEFAULT_LEXICON_MODE
    unknown_prefix_penalty: float = C.DEFAULT_UNKNOWN_PREFIX_PENALTY
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = C.DEFAULT_HOTWORD_WEIGHT
    nbest: int = C.DEFAULT_NBEST
    batch_size: int = C.DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if isinstance(self.hotwords, str):
            raise TypeError("hotwords must be a sequence of words, e.g. ('ravi',), not one string")
        object.__setattr__(self, "hotwords", tuple(str(w) for w in self.hotwords))
        for name in ("beam_width", "nbest", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.token_top_k is not None and (
                isinstance(self.token_top_k, bool)
                or not isinstance(self.token_top_k, (int, np.integer)) or self.token_top_k < 1):
            raise ValueError(f"token_top_k must be a positive integer or None, got "
                             f"{self.token_top_k!r}")
        for name in ("token_min_logp", "beam_prune_logp", "unknown_prefix_penalty"):
            value = float(getattr(self, name))
            if math.isnan(value) or value > 0:
                raise ValueError(f"{name} is a ln probability / penalty and must be <= 0, got "
                                 f"{value}")
        if self.blank_skip_threshold is not None and not 0.5 < self.blank_skip_threshold <= 1:
            raise ValueError("blank_skip_threshold is a blank probability in (0.5, 1] (or None to "
                             f"never skip), got {self.blank_skip_threshold}")
        for name in ("alpha", "beta", "hotword_weight"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.alpha < 0:
            raise ValueError(f"alpha (LM weight) must be >= 0, got {self.alpha}")
        if self.lexicon_mode not in C.LEXICON_MODES:
            raise ValueError(f"unknown lexicon_mode {self.lexicon_mode!r}; valid: "
                             f"{', '.join(C.LEXICON_MODES)}")
        if self.nbest > self.beam_width:
            raise ValueError(f"nbest ({self.nbest}) cannot exceed beam_width ({self.beam_width})")


@register("beam")
class BeamSearchDecoder(Decoder[BeamOptions]):
    """CTC prefix beam search, vectorized over (beam, label) candidates and over utterances.

    language_model: an already-loaded LanguageModel (instead of options.lm_path), e.g. shared
    between decoders or a test double. The LM is loaded once here; forked workers of
    ``decode_many(jobs=N)`` inherit it.
    """

    Options = BeamOptions

    def __init__(self, vocab: Vocabulary, options: BeamOptions | None = None, *,
                 frame_shift_s: float = 0.02, language_model: LanguageModel | None = None):
        super().__init__(vocab, options, frame_shift_s=frame_shift_s)
        opts = self.options
        lm, unigrams = load_lm_and_unigrams(opts.lm_path, opts.unigrams_path, language_model)
        mapper = make_word_mapper(vocab, unigrams, lm)
        self.language_model = lm
        self.scorer = WordScorer(
            vocab, lm, unigrams, mapper, alpha=opts.alpha, beta=opts.beta,
            lexicon_mode=opts.lexicon_mode, unknown_prefix_penalty=opts.unknown_prefix_penalty,
            hotwords=opts.hotwords, hotword_weight=opts.hotword_weight)
        gain = (max(opts.beta, 0.0) if lm is not None else 0.0) + (
            max(opts.hotword_weight, 0.0) if opts.hotwords else 0.0)
        self.settings = SearchSettings(
            beam_width=opts.beam_width, token_min_logp=float(opts.token_min_logp),
            token_top_k=opts.token_top_k, beam_prune_logp=float(opts.beam_prune_logp),
            blank_skip_threshold=opts.blank_skip_threshold, nbest=opts.nbest,
            max_word_gain=gain)

    def decode(self, log_probs: np.ndarray) -> Hypothesis:
        """Decode one utterance. log_probs: (T, V) float32 natural-log probabilities."""
        return self._decode_chunk([log_probs])[0]

    def _decode_chunk(self, emissions: Sequence[np.ndarray],
                      on_done: Callable[[int], None] | None = None) -> list[Hypothesis]:
        """Decode in batches of ``batch_size`` utterances of similar length, results in order.

        T = 0 gives Hypothesis.empty() without a search (with an LM the search would score the
        empty sentence, </s> after <s>).
        """
        checked = [self._check(e) for e in emissions]
        out: list[Hypothesis | None] = [None if len(x) else Hypothesis.empty() for x in checked]
        empty = len(checked) - out.count(None)
        if empty and on_done:
            on_done(empty)
        order = sorted((i for i, x in enumerate(checked) if len(x)), key=lambda i: len(checked[i]))
        size = self.options.batch_size
        for start in range(0, len(order), size):
            part = order[start:start + size]
            self.scorer.trim()
            results = BatchSearch([checked[i] for i in part], self.vocab, self.settings,
                                  self.scorer, self.frame_shift_s).run()
            for i, hyps in zip(part, results, strict=True):
                out[i] = _with_nbest(hyps, self.options.nbest)
            if on_done:
                on_done(len(part))
        return out  # type: ignore[return-value]


def _with_nbest(hyps: list[Hypothesis], nbest: int) -> Hypothesis:
    best = hyps[0]
    if nbest <= 1:
        return best
    return Hypothesis(best.text, best.score, best.tokens, best.words, tuple(hyps),
                      best.acoustic_score, best.lm_score)
