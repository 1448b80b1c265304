"""pyctcdecode behind the Decoder protocol: the reference beam search our own is compared with.

What the adapter does that pyctcdecode does not do by itself:
- Vocabulary mapping (explicit, never pyctcdecode's guessing): blank -> "", word delimiter -> " ",
  unused tokenizer specials (``<s>``, ``</s>``, ``<unk>``) are *dropped* as columns before
  decoding, so they can never be emitted (not even as a frame's argmax).
- Casing: pyctcdecode changes no case, so the labels are mapped to the LM's casing
  (``ctclab.lm.casing.make_word_mapper``, as for the ``beam`` decoder: from the word list, or
  for a binary LM without one by probing common words) and the result mapped back to the acoustic
  labels' casing.
- Results as :class:`Hypothesis`: tokens (label ids rebuilt from the text), word timestamps from
  pyctcdecode's word frames, n-best from ``decode_beams``.
- Parallel decoding goes through ``Decoder.decode_many``'s fork pool: pyctcdecode keeps its KenLM
  model in a class-level container, which forked workers inherit without copying or pickling.
"""
from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctclab.core.hypothesis import Hypothesis, WordTimestamp
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders import constants as C
from ctclab.decoders.base import Decoder, register
from ctclab.decoders.hotwords import hotword_spellings
from ctclab.decoders.pyctc_support import pyctc_language_model
from ctclab.lm.casing import make_word_mapper
from ctclab.lm.language_model import KenLMLanguageModel, LanguageModel
from ctclab.lm.shared import load_lm_and_unigrams

# pyctcdecode's alphabet normalisation logs at INFO for every decoder built; keep it quiet.
logging.getLogger("pyctcdecode").setLevel(logging.WARNING)


@dataclass(frozen=True)
class PyctcdecodeOptions:
    """Options for pyctcdecode; names shared with the ``beam`` decoder mean the same thing.

    Defaults are pyctcdecode's own, the same values as the ``beam`` decoder's (decoders/constants.py;
    unk_score_offset is its unknown_prefix_penalty), so both at defaults are matched settings.

    beam_width: beams kept per frame. token_min_logp: per-frame token pruning (ln prob).
    beam_prune_logp: drop beams scoring this far below the best (ln). prune_history: pyctcdecode's
    dedup of beams sharing the LM-visible history (faster, but loses n-best diversity and deviates
    from exact prefix search; off by default so results match the ``beam`` decoder's semantics).
    lm_path: KenLM .arpa / .arpa.gz / .binary or a known LM name (see lm.files). unigrams_path:
    word list, lexicon or ARPA giving the known words (default: the LM's own ARPA unigrams).
    alpha, beta: LM weight and word bonus. unk_score_offset: ln penalty for unknown words and
    partial words. lm_score_boundary: score <s> and </s>. hotwords / hotword_weight: words to boost
    (written in either casing). nbest: alternatives returned in ``Hypothesis.nbest``.
    """

    beam_width: int = C.DEFAULT_BEAM_WIDTH
    token_min_logp: float = C.DEFAULT_TOKEN_MIN_LOGP
    beam_prune_logp: float = C.DEFAULT_BEAM_PRUNE_LOGP
    prune_history: bool = False
    lm_path: str | None = None
    unigrams_path: str | None = None
    alpha: float = C.DEFAULT_ALPHA
    beta: float = C.DEFAULT_BETA
    unk_score_offset: float = C.DEFAULT_UNKNOWN_PREFIX_PENALTY
    lm_score_boundary: bool = True
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = C.DEFAULT_HOTWORD_WEIGHT
    nbest: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.hotwords, str):
            raise TypeError("hotwords must be a sequence of words, e.g. ('ravi',), not one string")
        object.__setattr__(self, "hotwords", tuple(str(w) for w in self.hotwords))
        if self.lm_path is not None:
            object.__setattr__(self, "lm_path", str(self.lm_path))
        if self.unigrams_path is not None:
            object.__setattr__(self, "unigrams_path", str(self.unigrams_path))
        if isinstance(self.beam_width, bool) or not isinstance(self.beam_width, (int, np.integer)) \
                or self.beam_width < 1:
            raise ValueError(f"beam_width must be an integer >= 1, got {self.beam_width!r}")
        if isinstance(self.nbest, bool) or not isinstance(self.nbest, (int, np.integer)) \
                or not 1 <= self.nbest <= self.beam_width:
            raise ValueError(f"nbest must be an integer in [1, beam_width={self.beam_width}], "
                             f"got {self.nbest!r}")
        for name in ("token_min_logp", "beam_prune_logp"):
            value = getattr(self, name)
            if not math.isfinite(value) or value > 0:
                raise ValueError(f"{name} is a ln-probability threshold and must be finite and "
                                 f"<= 0, got {value!r}")
        for name in ("alpha", "beta", "unk_score_offset", "hotword_weight"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha (LM weight) must be >= 0, got {self.alpha}")
        if self.unigrams_path is not None and self.lm_path is None:
            raise ValueError("unigrams_path only applies with a language model; set lm_path too")
        if any(not w.strip() for w in self.hotwords):
            raise ValueError(f"hotwords must be non-empty words, got {self.hotwords!r}")


@register("pyctcdecode")
class PyctcdecodeDecoder(Decoder[PyctcdecodeOptions]):
    """CTC prefix beam search by pyctcdecode, optionally fused with a KenLM word n-gram."""

    Options = PyctcdecodeOptions

    def __init__(self, vocab: Vocabulary, options: PyctcdecodeOptions | None = None, *,
                 frame_shift_s: float = 0.02, language_model: LanguageModel | None = None):
        """``language_model``: an already loaded KenLMLanguageModel to share (its KenLM model is
        reused, not reloaded); otherwise ``options.lm_path`` is loaded (once per process)."""
        super().__init__(vocab, options, frame_shift_s=frame_shift_s)
        try:
            import pyctcdecode
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ImportError("the pyctcdecode decoder needs pyctcdecode: "
                              "pip install pyctcdecode==0.5.0 kenlm") from exc
        opts = self.options
        if language_model is not None and not isinstance(language_model, KenLMLanguageModel):
            raise TypeError("pyctcdecode fuses a KenLM model only: pass a KenLMLanguageModel "
                            f"(lm.language_model), not {type(language_model).__name__}, or "
                            "set lm_path")
        loaded, unigrams = load_lm_and_unigrams(opts.lm_path, opts.unigrams_path, language_model)
        assert loaded is None or isinstance(loaded, KenLMLanguageModel)  # what lm.shared loads
        language_model = loaded
        self.lm_file: Path | None = None if language_model is None else Path(language_model.path)
        if language_model is None:
            unigrams = None  # pyctcdecode uses a word list only through its LM
        # acoustic word -> LM word (identity without an LM); raises on an all-OOV setup, also for
        # a binary LM without a word list (its casing is probed with common words).
        self.word_mapper: Callable[[str], str] = make_word_mapper(vocab, unigrams, language_model)
        self._columns = np.array([i for i in range(vocab.size) if i not in vocab.unused], np.int64)
        self._labels = [self._pyctc_label(int(i)) for i in self._columns]
        self._label_to_id = _check_labels(self._labels, self._columns, vocab)
        self._max_label_len = max(len(lab) for lab in self._labels)
        self._hotwords = [self._to_pyctc_text(w) for w in opts.hotwords]
        if unigrams is None and self.lm_file is not None:
            warnings.warn(f"{self.lm_file}: no word list for this binary LM, so pyctcdecode "
                          "penalises every partial word; pass unigrams_path=<word list or ARPA>",
                          stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyctcdecode warns about small test LMs
            alphabet = pyctcdecode.Alphabet.build_alphabet(self._labels)
            lm = None if language_model is None else pyctc_language_model(
                language_model.kenlm_model, unigrams, opts)
            self._decoder = pyctcdecode.BeamSearchDecoderCTC(alphabet, lm)
        if alphabet.labels != self._labels:  # pyctcdecode re-normalises labels; ours must stand
            raise ValueError(f"pyctcdecode rewrote the labels {self._labels} to {alphabet.labels}; "
                             "the vocabulary has labels pyctcdecode treats specially (e.g. '<pad>' "
                             "that is not the blank); mark them unused or rename them")

    def __del__(self) -> None:
        # pyctcdecode parks every decoder's LM in a class-level dict that is never emptied; without
        # this, tuning (one decoder per alpha/beta) would keep every LM wrapper alive.
        decoder = getattr(self, "_decoder", None)
        if decoder is not None:
            # interpreter teardown may have removed pyctcdecode's module state already
            with contextlib.suppress(Exception):
                decoder.cleanup()

    # ----------------------------------------------------------------------------- label mapping
    def _pyctc_label(self, token: int) -> str:
        if token == self.vocab.blank:
            return ""
        if token == self.vocab.delimiter:
            return " "
        return self.word_mapper(self.vocab.labels[token])

    def _to_pyctc_text(self, word: str) -> str:
        """A hotword in any casing -> pyctcdecode's label casing; ValueError if not spellable."""
        spelled = hotword_spellings([word], self.vocab)  # recased to the labels, checked
        return " ".join(self.word_mapper("".join(self.vocab.labels[i] for i in ids))
                        for _, ids in spelled)

    def _word_tokens(self, word: str) -> list[int]:
        """A word in pyctcdecode's labels -> label ids (longest label match first)."""
        out, at = [], 0
        while at < len(word):
            for size in range(min(self._max_label_len, len(word) - at), 0, -1):
                token = self._label_to_id.get(word[at:at + size])
                if token is not None:
                    out.append(token)
                    at += size
                    break
            else:  # cannot happen: pyctcdecode only concatenates our labels
                raise RuntimeError(f"pyctcdecode returned {word!r}, not made of the labels")
        return out

    # ----------------------------------------------------------------------------- decoding
    def decode(self, log_probs: np.ndarray) -> Hypothesis:
        """Decode one utterance. log_probs: (T, V) float32 natural-log probabilities."""
        arr = self._check(log_probs)
        if arr.shape[0] == 0:
            return Hypothesis.empty()
        if len(self._columns) != arr.shape[1]:
            # Drop the unused columns. pyctcdecode re-normalises each frame (log_softmax), which
            # adds the same constant to every beam, so the ranking is unchanged; only the
            # token_min_logp test sees values raised by the (tiny) mass the specials held.
            arr = np.ascontiguousarray(arr[:, self._columns])
        opts = self.options
        beams = self._decoder.decode_beams(
            arr,
            beam_width=int(opts.beam_width),
            beam_prune_logp=float(opts.beam_prune_logp),
            token_min_logp=float(opts.token_min_logp),
            prune_history=bool(opts.prune_history),
            hotwords=self._hotwords or None,
            hotword_weight=float(opts.hotword_weight),
        )
        hyps: list[Hypothesis] = []
        seen: set[str] = set()
        for text, _state, word_frames, logit_score, combined_score in beams:
            hyp = self._to_hypothesis(text, word_frames, logit_score, combined_score)
            if hyp.text not in seen:
                seen.add(hyp.text)
                hyps.append(hyp)
            if len(hyps) == opts.nbest:
                break
        if not hyps:  # pyctcdecode always keeps a beam; defensive for future versions
            return Hypothesis.empty()
        if opts.nbest > 1:
            best = hyps[0]
            return Hypothesis(best.text, best.score, best.tokens, best.words, tuple(hyps),
                              best.acoustic_score, best.lm_score)
        return hyps[0]

    def _to_hypothesis(self, text: str, word_frames: list[tuple[str, tuple[int, int]]],
                       logit_score: float, combined_score: float) -> Hypothesis:
        tokens: list[int] = []
        words: list[WordTimestamp] = []
        pieces = text.split()
        frames = [f for _, f in word_frames]
        for index, piece in enumerate(pieces):
            if tokens and self.vocab.delimiter is not None:
                tokens.append(self.vocab.delimiter)
            word_tokens = self._word_tokens(piece)
            tokens.extend(word_tokens)
            start, end = frames[index] if index < len(frames) else (-1, -1)
            word = "".join(self.vocab.token_text(t) for t in word_tokens)
            words.append(WordTimestamp(word, int(start), int(end),
                                       round(start * self.frame_shift_s, 4),
                                       round(end * self.frame_shift_s, 4)))
        return Hypothesis(text=self.vocab.decode_tokens(tokens), score=float(combined_score),
                          tokens=tuple(tokens), words=tuple(words),
                          acoustic_score=float(logit_score),
                          lm_score=float(combined_score - logit_score))

    @property
    def pyctc_labels(self) -> tuple[str, ...]:
        """The labels handed to pyctcdecode (unused columns dropped, LM casing), in column order."""
        return tuple(self._labels)


def _check_labels(labels: list[str], columns: np.ndarray, vocab: Vocabulary) -> dict[str, int]:
    """Mapped label -> original id; ValueError when the mapping is not one-to-one."""
    out: dict[str, int] = {}
    for label, token in zip(labels, columns, strict=True):
        if label in out:
            raise ValueError(f"labels {vocab.labels[out[label]]!r} and {vocab.labels[token]!r} "
                             f"both map to {label!r} for pyctcdecode (blank -> '', delimiter -> "
                             "' ', letters -> the LM's casing); fix the vocabulary's blank/"
                             "delimiter or use an LM with the labels' casing")
        if token not in (vocab.blank, vocab.delimiter) and (label.strip() != label or not label):
            raise ValueError(f"label {vocab.labels[token]!r} (id {token}) is empty or has spaces; "
                             "pyctcdecode cannot tell it from the blank or the word delimiter")
        if token not in (vocab.blank, vocab.delimiter) and label[:1] == "▁" and len(label) > 1:
            raise ValueError(f"label {label!r} looks like a sentencepiece piece; the pyctcdecode "
                             "adapter supports character vocabularies only")
        out[label] = int(token)
    return {k: v for k, v in out.items() if v not in (vocab.blank, vocab.delimiter)}
