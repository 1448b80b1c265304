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

import numpy as np

from ctclab.core.hypothesis import Hypothesis, WordTimestamp
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.base import Decoder, fused_lm, register
from ctclab.decoders.confidence import with_confidence, word_frame_confidence
from ctclab.decoders.hotwords import hotword_spellings
from ctclab.decoders.options import PyctcdecodeOptions
from ctclab.decoders.pyctc_support import pyctc_language_model
from ctclab.lm.casing import make_word_mapper
from ctclab.lm.loaded import LoadedLM

__all__ = ["PyctcdecodeDecoder", "PyctcdecodeOptions"]

# pyctcdecode's alphabet normalisation logs at INFO for every decoder built; keep it quiet.
logging.getLogger("pyctcdecode").setLevel(logging.WARNING)


# pyctcdecode is an optional extra: its last release, 0.5.0 (2023), declares numpy<2, so the extra
# holds numpy at 1.x. Without it, the rest of ctclab runs on numpy 2 and this name says what to do.
INSTALL_HINT = "pip install 'ctclab[pyctcdecode]' (numpy 1.x: pyctcdecode 0.5.0 declares numpy<2)"


@register("pyctcdecode", requires="pyctcdecode", install=INSTALL_HINT)
class PyctcdecodeDecoder(Decoder[PyctcdecodeOptions]):
    """CTC prefix beam search by pyctcdecode, optionally fused with a KenLM word n-gram.

    lm: an already loaded LM (lm.loaded.LoadedLM over a KenLM model) instead of
    ``options.lm_path``, which is otherwise loaded once per process; pyctcdecode's unigram trie is
    built once per LM and shared by decoders that differ only in their weights.
    """

    Options = PyctcdecodeOptions

    def __init__(self, vocab: Vocabulary, options: PyctcdecodeOptions | None = None, *,
                 frame_shift_s: float = 0.02, lm: LoadedLM | None = None,
                 progress: bool = True):
        super().__init__(vocab, options, frame_shift_s=frame_shift_s,  # ImportError without it
                         progress=progress)
        if vocab.units == "phonemes":
            raise ValueError("pyctcdecode decodes letters and word pieces, whose labels spell the "
                             "words; this model emits phonemes, whose words come only through a "
                             "pronunciation lexicon: decode it with the beam decoder and "
                             "--lexicon FILE (lexicon_path=)")
        import pyctcdecode
        opts = self.options
        self.lm = fused_lm(opts, lm, progress=progress)
        # acoustic word -> LM word (identity without an LM); raises on an all-OOV setup, also for
        # a binary LM without a word list (its casing is probed with common words).
        self.word_mapper: Callable[[str], str] = (
            make_word_mapper(vocab, None) if self.lm is None else self.lm.word_mapper(vocab))
        self._columns = np.array([i for i in range(vocab.size) if i not in vocab.unused], np.int64)
        self._labels = [self._pyctc_label(int(i)) for i in self._columns]
        self._label_to_id = _check_labels(self._labels, self._columns, vocab)
        self._max_label_len = max(len(lab) for lab in self._labels)
        self._hotwords = [self._to_pyctc_text(w) for w in opts.hotwords]
        if self.lm is not None and self.lm.unigrams is None:
            warnings.warn(f"{self.lm.path or 'the LM'}: no word list for this binary LM, so "
                          "pyctcdecode penalises every partial word; give one: --unigrams FILE "
                          "(a word list, lexicon or the ARPA; unigrams_path= in Python)",
                          stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyctcdecode warns about small test LMs
            alphabet = pyctcdecode.Alphabet.build_alphabet(self._labels)
            fused = None if self.lm is None else pyctc_language_model(self.lm, opts)
            self._decoder = pyctcdecode.BeamSearchDecoderCTC(alphabet, fused)
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
        label, marker = self.vocab.labels[token], self.vocab.word_start
        if marker is not None and label.startswith(marker):  # pyctcdecode's BPE style: keep ▁
            return marker + self.word_mapper(label[len(marker):])
        return self.word_mapper(label)

    def _to_pyctc_text(self, word: str) -> str:
        """A hotword in any casing -> pyctcdecode's label casing; ValueError if not spellable."""
        spelled = hotword_spellings([word], self.vocab)  # recased to the labels, checked
        return " ".join(self.word_mapper(self.vocab.decode_tokens(ids)) for _, ids in spelled)

    def _word_tokens(self, word: str) -> list[int]:
        """A word in pyctcdecode's labels -> label ids (longest label match first; word pieces
        start with the word-start marker)."""
        if self.vocab.word_start is not None:
            word = self.vocab.word_start + word
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
        arr = full = self._check(log_probs)
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
            hyp = self._to_hypothesis(text, word_frames, logit_score, combined_score, full)
            if hyp.text not in seen:
                seen.add(hyp.text)
                hyps.append(hyp)
            if len(hyps) == opts.nbest:
                break
        if not hyps:  # pyctcdecode always keeps a beam; defensive for future versions
            return Hypothesis.empty()
        if opts.nbest > 1:
            best = hyps[0]
            listed = Hypothesis(best.text, best.score, best.tokens, best.words, tuple(hyps),
                                best.acoustic_score, best.lm_score)
            # word confidence: n-best posterior x frame posterior
            return with_confidence(listed) if opts.word_confidence else listed
        return hyps[0]

    def _to_hypothesis(self, text: str, word_frames: list[tuple[str, tuple[int, int]]],
                       logit_score: float, combined_score: float,
                       log_probs: np.ndarray) -> Hypothesis:
        """log_probs: (T, V) all columns (frame confidence: each label's highest probability
        within the word's frames, the least of them for the word)."""
        tokens: list[int] = []
        spelled: list[list[int]] = []
        spans: list[tuple[int, int]] = []
        pieces = text.split()
        frames = [f for _, f in word_frames]
        for index, piece in enumerate(pieces):
            if tokens and self.vocab.delimiter is not None:
                tokens.append(self.vocab.delimiter)
            word_tokens = self._word_tokens(piece)
            tokens.extend(word_tokens)
            start, end = frames[index] if index < len(frames) else (-1, -1)
            spelled.append(word_tokens)
            spans.append((int(start), int(end)))
        # the frame confidence of all words at once (NaN with word_confidence off)
        conf = word_frame_confidence(log_probs, spelled, spans).tolist() \
            if self.options.word_confidence else [math.nan] * len(spans)
        words = tuple(WordTimestamp("".join(self.vocab.token_text(t) for t in word_tokens).strip(),
                                    start, end, round(start * self.frame_shift_s, 4),
                                    round(end * self.frame_shift_s, 4), frame_confidence=c)
                      for word_tokens, (start, end), c in zip(spelled, spans, conf, strict=True))
        return Hypothesis(text=self.vocab.decode_tokens(tokens), score=float(combined_score),
                          tokens=tuple(tokens), words=words,
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
        if token not in (vocab.blank, vocab.delimiter) and label[:1] == "▁" and len(label) > 1 \
                and vocab.word_start is None:
            raise ValueError(f"label {label!r} looks like a sentencepiece piece, but the "
                             "vocabulary has a word delimiter; build it with "
                             "Vocabulary.from_labels(labels) (word pieces mark word starts)")
        out[label] = int(token)
    return {k: v for k, v in out.items() if v not in (vocab.blank, vocab.delimiter)}
