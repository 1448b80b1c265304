"""Word confidence: how likely each decoded word is to be right, as a probability in [0, 1].

Two pieces of evidence, both probabilities the decoder already has:

- **frame posterior** (every decoder): each label of the word counts with its highest frame
  probability inside the word (the CTC spike); the word gets the least certain of its labels
  (one wrong letter makes a wrong word). Greedy's confidence is this alone.
- **n-best posterior** (beam, pyctcdecode): the n-best entries' scores as a distribution,
  softmax(score) over the list, and a word's posterior is the mass of the entries that hold the
  same word at an overlapping time. An n-best list is a truncated lattice: words on which all the
  alternatives agree get 1.

    confidence = n-best posterior x frame posterior

This raw value is the decoder's own estimate; eval/calibration.py fits a map from it to the
observed accuracy on dev data (never on test) and measures ECE and AUC.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from ctclab.core.hypothesis import Hypothesis, WordTimestamp


def token_peak_probs(log_probs: np.ndarray, tokens: np.ndarray, start_frames: np.ndarray,
                     end_frames: np.ndarray) -> np.ndarray:
    """(N,) highest probability of each label over its frames.

    log_probs: (T, V) natural-log probabilities. tokens: (N,) label ids; start_frames /
    end_frames: (N,) the frames [start, end) each label may claim (its run, or up to the next
    label). A label with an empty range gets the probability of its start frame.
    """
    tokens = np.asarray(tokens, np.int64)
    if not len(tokens):
        return np.zeros(0, np.float64)
    t_max = len(log_probs)
    start = np.clip(np.asarray(start_frames, np.int64), 0, max(t_max - 1, 0))
    end = np.clip(np.asarray(end_frames, np.int64), start + 1, max(t_max, 1))
    lengths = end - start
    offsets = np.cumsum(lengths) - lengths
    # every frame of every range, flattened: range i covers offsets[i] .. offsets[i]+lengths[i]
    frames = np.arange(int(lengths.sum())) - np.repeat(offsets - start, lengths)
    values = log_probs[frames, np.repeat(tokens, lengths)]
    return np.exp(np.maximum.reduceat(values, offsets).astype(np.float64))


def word_frame_confidence(log_probs: np.ndarray, word_tokens: Sequence[Sequence[int]],
                          spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """(W,) frame posterior of each word: every label of the word counts with its highest
    probability within the word's frames [start, end), and the word gets the least of them.

    log_probs: (T, V) of the utterance. word_tokens: label ids per word; spans: frames per word.
    A word without labels or frames gets NaN.
    """
    n = len(word_tokens)
    out = np.full(n, np.nan)
    if not n:
        return out
    sizes = np.fromiter((len(t) for t in word_tokens), np.int64, n)
    se = np.asarray(spans, np.int64).reshape(n, 2)
    valid = (sizes > 0) & (se[:, 0] >= 0) & (se[:, 1] > se[:, 0])
    if not valid.all():
        sizes = np.where(valid, sizes, 0)
        word_tokens = [t for t, v in zip(word_tokens, valid.tolist(), strict=True) if v]
        if not word_tokens:
            return out
    counts = sizes[valid]
    tokens = np.fromiter(itertools.chain.from_iterable(word_tokens), np.int64, int(counts.sum()))
    peaks = token_peak_probs(log_probs, tokens, np.repeat(se[valid, 0], counts),
                             np.repeat(se[valid, 1], counts))
    out[valid] = np.minimum.reduceat(peaks, np.cumsum(counts) - counts)
    return out


def check_word_times(words: Sequence[WordTimestamp], what: str = "hypothesis") -> None:
    """ValueError when a word has no timestamps (negative or empty frame range)."""
    for w in words:
        if w.start_frame < 0 or w.end_frame <= w.start_frame:
            raise ValueError(f"word {w.word!r} of the {what} has no timestamps (frames "
                             f"{w.start_frame}..{w.end_frame}); word confidence needs each word's "
                             "frames (decoders give them; a hand-made Hypothesis must too)")


def nbest_posteriors(scores: Sequence[float]) -> np.ndarray:
    """(n,) softmax of n-best scores (natural logs); -inf entries get 0, all -inf: uniform."""
    s = np.asarray(scores, np.float64)
    if not np.isfinite(s).any():
        return np.full(len(s), 1.0 / max(len(s), 1))
    s = np.where(np.isfinite(s), s, -np.inf)
    p = np.exp(s - s.max())
    return p / p.sum()


def word_posteriors(entries: Sequence[Hypothesis]) -> list[np.ndarray]:
    """Per entry, (words,) the n-best posterior of each of its words.

    entries: the n-best list (scores comparable, best first). A word of entry e is supported by
    entry f when f has the same word over overlapping frames; its posterior is the summed
    posterior of the supporting entries (e itself included), so it lies in (0, 1].
    """
    for e in entries:
        check_word_times(e.words, "n-best entry")
    post = nbest_posteriors([e.score for e in entries])
    # word -> list of (entry index, start, end), one table for all entries
    spans: dict[str, list[tuple[int, int, int]]] = {}
    for k, e in enumerate(entries):
        for w in e.words:
            spans.setdefault(w.word, []).append((k, w.start_frame, w.end_frame))
    out = []
    for e in entries:
        values = np.empty(len(e.words))
        for j, w in enumerate(e.words):
            support = {k for k, s, t in spans[w.word] if s < w.end_frame and w.start_frame < t}
            values[j] = min(1.0, float(post[list(support)].sum()))
        out.append(values)
    return out


def with_confidence(hyp: Hypothesis) -> Hypothesis:
    """``hyp`` with ``confidence`` set on the words of every n-best entry (and of the best).

    confidence = n-best posterior x frame_confidence (a word without frame_confidence counts its
    n-best posterior alone). ValueError when ``hyp`` carries no n-best list (decode with nbest >= 2)
    or a word has no timestamps. A list that the search left with one entry is valid: every word
    then has posterior 1.
    """
    entries = hyp.nbest
    if not entries:
        raise ValueError("n-best word confidence needs the n-best list: decode with nbest >= 2 "
                         "(an n-best of one has posterior 1 for every word and says nothing)")
    posts = word_posteriors(entries)
    scored = tuple(dataclasses.replace(e, words=_scored_words(e.words, p), nbest=())
                   for e, p in zip(entries, posts, strict=True))
    best = scored[0]
    return dataclasses.replace(hyp, words=best.words, nbest=scored)


def with_frame_confidence(hyp: Hypothesis) -> Hypothesis:
    """``hyp`` with confidence = frame_confidence on every word (greedy's confidence)."""
    words = tuple(dataclasses.replace(w, confidence=w.frame_confidence) for w in hyp.words)
    return dataclasses.replace(hyp, words=words)


def _scored_words(words: Sequence[WordTimestamp], posterior: np.ndarray
                  ) -> tuple[WordTimestamp, ...]:
    out = []
    for w, p in zip(words, posterior.tolist(), strict=True):
        frame = w.frame_confidence if math.isfinite(w.frame_confidence) else 1.0
        out.append(dataclasses.replace(w, confidence=min(1.0, max(0.0, p * frame))))
    return tuple(out)
