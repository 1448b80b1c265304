"""``beam``: our CTC prefix beam search in vectorized arrays, with word n-gram shallow fusion.

    dec = create_decoder("beam", vocab, beam_width=100, lm_path="lm.arpa", alpha=0.5, beta=1.5)
    hyps = dec.decode_many(emissions)     # many utterances searched together (batch_size at once)
    dec = create_decoder("beam", vocab, device="cuda")   # the same search on a GPU (torch)

The array engine is decoders/beam_search.py; word scoring (LM, lexicon, hotwords) is
decoders/lm_fusion.py; defaults and why they are what they are: decoders/constants.py.

alpha = beta = 0 gives exactly the result without an LM when lexicon_mode="none"; with the
default soft lexicon it gives exactly the result of the same lexicon (unigrams) without an LM.

Speed against pyctcdecode and the C++ peers: python bench/decode_speed.py (figures and the exact
command in the README's Speed section).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ctclab.core.arrays import arrays_for, on_gpu
from ctclab.core.hypothesis import Hypothesis
from ctclab.core.memory import gc_paused
from ctclab.core.validation import emission_arrays, validate_log_probs
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders import constants as C
from ctclab.decoders.base import Decoder, fused_lm, register
from ctclab.decoders.beam_search import BatchSearch
from ctclab.decoders.confidence import with_confidence_many
from ctclab.decoders.lm_fusion import WordScorer
from ctclab.decoders.options import BeamOptions
from ctclab.decoders.search_state import SearchMemory
from ctclab.lm.casing import WordMapper, make_word_mapper
from ctclab.lm.lexicon import read_lexicon
from ctclab.lm.loaded import LoadedLM, load_word_list
from ctclab.lm.spelling import Spelling, load_tokenizer, spelled_words

__all__ = ["BeamOptions", "BeamSearchDecoder"]


@register("beam")
class BeamSearchDecoder(Decoder[BeamOptions]):
    """CTC prefix beam search, vectorized over (beam, label) candidates and over utterances.

    lm: an already loaded LM (lm.loaded.LoadedLM, e.g. a test double made with LoadedLM.of)
    instead of ``options.lm_path``, which is otherwise loaded once per process, as the array LM
    unless ``options.lm_backend`` says otherwise (lm.array_lm: KenLM's scores, every word a search
    step finishes scored in one call; an array LM's pages are shared, being mmap'd). Forked workers of
    ``decode_many(jobs=N)`` inherit it. Options: decoders/options.py (BeamOptions); the search
    engine reads the same object. ``options.device`` / ``array_backend`` choose the array
    namespace the search and its word tables run in (ctclab.core.arrays), once, here.
    One decoder serves one thread at a time: its word and LM memos and the buffer its batches
    are concatenated into are reused from call to call (decode_many(jobs=N) forks processes,
    each with its own copy).
    """

    Options = BeamOptions

    def __init__(self, vocab: Vocabulary, options: BeamOptions | None = None, *,
                 frame_shift_s: float = 0.02, lm: LoadedLM | None = None,
                 progress: bool = True):
        super().__init__(vocab, options, frame_shift_s=frame_shift_s, progress=progress)
        opts = self.options
        self.xp = arrays_for(opts.device, opts.array_backend)
        self.lm = fused_lm(opts, lm, opts.lm_backend, opts.lm_arrays_max_mib, progress)
        self.spelling = make_spelling(vocab, opts.lexicon_path, opts.tokenizer_path,
                                      opts.skip_unknown_tokens)
        mode = opts.lexicon_mode or (C.DEFAULT_LEXICON_MODE if self.spelling.from_tokens
                                     else C.PRONUNCIATION_LEXICON_MODE)
        if not self.spelling.from_tokens and mode == "none":
            raise ValueError("lexicon_mode='none' cannot be used with a pronunciation lexicon: "
                             "its words are the only way from tokens to text (use soft or hard)")
        self.lexicon_mode = mode
        if self.lm is not None:
            unigrams = self.lm.unigrams
        else:  # a lexicon without an LM (unigrams_path alone), or neither
            unigrams = None if opts.unigrams_path is None else load_word_list(opts.unigrams_path)
        if not self.spelling.from_tokens:  # lexicon words meet the LM's casing in lm.lexicon
            mapper = WordMapper("identity")
        elif self.lm is not None:
            mapper = self.lm.word_mapper(vocab)
        else:
            mapper = make_word_mapper(vocab, unigrams)
        known = None
        if mode != "none" and (unigrams is not None or self.spelling.lexicon is not None):
            known = spelled_words(self.spelling, unigrams, mapper)
        self.scorer = WordScorer(
            vocab, None if self.lm is None else self.lm.model, known, mapper, alpha=opts.alpha,
            beta=opts.beta, lexicon_mode=mode, unknown_prefix_penalty=opts.unknown_prefix_penalty,
            hotwords=opts.hotwords, hotword_weight=opts.hotword_weight, spelling=self.spelling,
            xp=self.xp)
        # the host memory of its batches' searches (their emissions' concatenation, the node
        # table): allocated for the largest batch, kept with the decoder (search_state)
        self._memory = SearchMemory()

    @property
    def batch_size(self) -> int:
        """options.batch_size, or the device's default (decoders/constants.py)."""
        if self.options.batch_size is not None:
            return self.options.batch_size
        return C.DEFAULT_BATCH_SIZE_GPU if on_gpu(self.xp) else C.DEFAULT_BATCH_SIZE_CPU

    def _batch_frames(self) -> int | None:
        """The most frames a batch may hold: with the CPU's default batch size, what
        DEFAULT_BATCH_CELLS_CPU allows at this vocabulary's size; else no bound."""
        if self.options.batch_size is not None or on_gpu(self.xp):
            return None
        return max(1, C.DEFAULT_BATCH_CELLS_CPU // self.vocab.size)

    def decode(self, log_probs: np.ndarray) -> Hypothesis:
        """Decode one utterance. log_probs: (T, V) float32 natural-log probabilities."""
        return self._decode_chunk([log_probs])[0]

    def _decode_chunk(self, emissions: Sequence[np.ndarray],
                      on_done: Callable[[int], None] | None = None) -> list[Hypothesis]:
        """Decode in batches of ``batch_size`` utterances of similar length, results in order.

        T = 0 gives Hypothesis.empty() without a search (with an LM the search would score the
        empty sentence, </s> after <s>). Shapes and dtypes are checked up front, the values
        batch by batch on the concatenation the search reads (validate_log_probs' errors, naming
        the utterance's index, either way).
        """
        labels = self.vocab.size
        checked = emission_arrays(emissions, labels)
        out: list[Hypothesis | None] = [None if len(x) else Hypothesis.empty() for x in checked]
        empty = len(checked) - out.count(None)
        if empty and on_done:
            on_done(empty)
        order = sorted((i for i, x in enumerate(checked) if len(x)), key=lambda i: len(checked[i]))
        lengths = [len(checked[i]) for i in order]
        for start, stop in batch_cuts(lengths, self.batch_size, self._batch_frames()):
            part = order[start:stop]
            self.scorer.trim()
            batch = [checked[i] for i in part]
            search = BatchSearch(batch, self.vocab, self.options, self.scorer,
                                 self.frame_shift_s, self.xp, self._memory)
            if not search.values_look_valid():
                for i in sorted(part):   # the first bad one raises its error
                    validate_log_probs(checked[i], labels, f"emission[{i}]")
            # a batch's results are ~20 word objects an utterance, and the search makes no
            # reference cycles: the cyclic collector's passes over them cost ~3% of a
            # test-clean-sized decode (core/memory.py)
            with gc_paused():
                results = _with_nbest(search.run(), self.options.nbest,
                                      self.options.word_confidence)
            for i, hyp in zip(part, results, strict=True):
                out[i] = hyp
            if on_done:
                on_done(len(part))
        return out  # type: ignore[return-value]


def batch_cuts(lengths: Sequence[int], size: int, max_frames: int | None
               ) -> list[tuple[int, int]]:
    """(start, stop) of each batch over utterances sorted by length (``lengths``, ascending):
    at most ``size`` utterances and, unless None, ``max_frames`` frames (or one utterance),
    cut from the longest down, so that the one short batch holds the shortest: a batch takes
    as many steps as its longest utterance, each step a fixed cost (on a test-clean-sized set,
    1,643 steps instead of 2,100 at 512 a batch)."""
    cuts = []
    stop = len(lengths)
    while stop > 0:
        start, frames = stop - 1, lengths[stop - 1]
        while start > 0 and stop - start < size and (
                max_frames is None or frames + lengths[start - 1] <= max_frames):
            start -= 1
            frames += lengths[start]
        cuts.append((start, stop))
        stop = start
    return cuts


def make_spelling(vocab: Vocabulary, lexicon_path: str | None, tokenizer_path: str | None,
                  skip_unknown_tokens: bool = False) -> Spelling:
    """How the decoder spells words: a lexicon file, a word-piece tokenizer, or the labels."""
    if lexicon_path is not None and tokenizer_path is not None:
        raise ValueError("give a lexicon or a tokenizer, not both: the lexicon already spells "
                         "every word it knows")
    lexicon = read_lexicon(lexicon_path, vocab, skip_unknown_tokens=skip_unknown_tokens) \
        if lexicon_path is not None else None
    if tokenizer_path is not None and vocab.word_start is None:
        raise ValueError(f"tokenizer {tokenizer_path} given, but the vocabulary has no word "
                         f"pieces (no label starts with '▁'): letters spell themselves")
    tokenize = load_tokenizer(tokenizer_path) if tokenizer_path is not None else None
    return Spelling(vocab, lexicon, tokenize)


def _with_nbest(results: list[list[Hypothesis]], nbest: int, confidence: bool = True
                ) -> list[Hypothesis]:
    """The best hypothesis of each utterance; with nbest >= 2 carrying the list and (unless
    ``confidence`` is off) word confidences (n-best posterior x frame posterior,
    decoders/confidence.py, all utterances in one pass). With nbest = 1 words have only their
    frame_confidence: one entry gives no posterior."""
    if nbest <= 1:
        return [hyps[0] for hyps in results]
    listed = [Hypothesis(h[0].text, h[0].score, h[0].tokens, h[0].words, tuple(h),
                         h[0].acoustic_score, h[0].lm_score) for h in results]
    return with_confidence_many(listed) if confidence else listed
