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
from collections.abc import Sequence
from typing import Any

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
    # every (frame, label) of every range, flattened: range i covers offsets[i] ..
    # offsets[i]+lengths[i], frame start[i] + k at offsets[i] + k; as flat indices into
    # log_probs (frame * V + label: one take, cheaper than a 2-d fancy index)
    width = log_probs.shape[1]
    # 32-bit indices where every one (and every step to it) fits: millions of them per batch,
    # half the memory traffic (a fifth less time). Read by indexing, not take(): take converts
    # 32-bit indices to 64-bit first (5.6 M values a test-clean-sized batch: 54 -> 47 ms)
    total = int(lengths.sum())
    index: type[np.signedinteger[Any]] = \
        np.int32 if max(log_probs.size, total * width) < 2**31 else np.int64
    flat = np.arange(total, dtype=index)
    flat *= width
    flat += np.repeat((tokens - (offsets - start) * width).astype(index), lengths)
    values = np.ravel(log_probs)[flat]
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


def same_word_pairs(word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (i, j) of positions with word[i] == word[j] (i == j included).

    word: (n,) integer word ids. Returns two (P,) index arrays, P = sum of squared group sizes:
    the positions are sorted by word and each is paired with every position of its group.
    """
    n = len(word)
    order = np.argsort(word, kind="stable")
    ws = word[order]
    first = np.flatnonzero(np.r_[True, ws[1:] != ws[:-1]])    # group starts, in sorted order
    size = np.diff(np.r_[first, n])
    group = np.repeat(np.arange(len(first)), size)              # group of each sorted position
    reps = size[group]                                          # partners of each position
    a = np.repeat(np.arange(n), reps)
    within = np.arange(len(a)) - np.repeat(np.cumsum(reps) - reps, reps)
    b = first[group][a] + within
    return order[a], order[b]


def word_posteriors(entries: Sequence[Hypothesis]) -> list[np.ndarray]:
    """Per entry, (words,) the n-best posterior of each of its words.

    entries: the n-best list (scores comparable, best first). A word of entry e is supported by
    entry f when f has the same word over overlapping frames; its posterior is the summed
    posterior of the supporting entries (e itself included), so it lies in (0, 1].
    """
    return word_posteriors_many([entries])[0]


def word_posteriors_many(lists: Sequence[Sequence[Hypothesis]]) -> list[list[np.ndarray]]:
    """:func:`word_posteriors` of many n-best lists in one vectorised pass: every word of every
    entry is flattened, and only occurrences of the same word in the same list are paired."""
    post = np.concatenate([nbest_posteriors([e.score for e in entries]) for entries in lists]
                          + [np.zeros(0)])
    entries = [e for es in lists for e in es]
    sizes = [len(e.words) for e in entries]
    n = sum(sizes)
    values = np.zeros(n)
    if n:
        ids: dict[tuple[int, str], int] = {}
        flat = [(ids.setdefault((k, w.word), len(ids)), w.start_frame, w.end_frame)
                for k, es in enumerate(lists) for e in es for w in e.words]
        word, start, end = np.array(flat, np.int64).T
        bad = np.flatnonzero((start < 0) | (end <= start))
        if len(bad):
            k = int(np.searchsorted(np.cumsum(sizes), bad[0], side="right"))
            check_word_times(entries[k].words, "n-best entry")
        entry = np.repeat(np.arange(len(entries)), sizes)
        i, j = same_word_pairs(word)
        overlap = (start[i] < end[j]) & (start[j] < end[i])
        # each supporting entry counts once, however many of its words overlap
        pair = np.unique(i[overlap] * len(entries) + entry[j[overlap]])
        values = np.minimum(1.0, np.bincount(pair // len(entries),
                                             weights=post[pair % len(entries)], minlength=n))
    per_entry = np.split(values, np.cumsum(sizes)[:-1]) if entries else []
    out, at = [], 0
    for es in lists:
        out.append(per_entry[at:at + len(es)])
        at += len(es)
    return out


def with_confidence(hyp: Hypothesis) -> Hypothesis:
    """``hyp`` with ``confidence`` set on the words of every n-best entry (and of the best).

    confidence = n-best posterior x frame_confidence (a word without frame_confidence counts its
    n-best posterior alone). ValueError when ``hyp`` carries no n-best list (decode with nbest >= 2)
    or a word has no timestamps. A list that the search left with one entry is valid: every word
    then has posterior 1.
    """
    return with_confidence_many([hyp])[0]


def with_confidence_many(hyps: Sequence[Hypothesis]) -> list[Hypothesis]:
    """:func:`with_confidence` of many hypotheses, their posteriors in one pass."""
    if any(not h.nbest for h in hyps):
        raise ValueError("n-best word confidence needs the n-best list: decode with nbest >= 2 "
                         "(an n-best of one has posterior 1 for every word and says nothing)")
    posts = word_posteriors_many([h.nbest for h in hyps])
    out = []
    for hyp, per_entry in zip(hyps, posts, strict=True):
        scored = tuple(dataclasses.replace(e, words=_scored_words(e.words, p), nbest=())
                       for e, p in zip(hyp.nbest, per_entry, strict=True))
        out.append(dataclasses.replace(hyp, words=scored[0].words, nbest=scored))
    return out


def with_frame_confidence(hyp: Hypothesis) -> Hypothesis:
    """``hyp`` with confidence = frame_confidence on every word (greedy's confidence)."""
    words = tuple(WordTimestamp(w.word, w.start_frame, w.end_frame, w.start_s, w.end_s,
                                w.frame_confidence, w.frame_confidence) for w in hyp.words)
    return dataclasses.replace(hyp, words=words)


def _scored_words(words: Sequence[WordTimestamp], posterior: np.ndarray
                  ) -> tuple[WordTimestamp, ...]:
    frame = np.fromiter((w.frame_confidence for w in words), np.float64, len(words))
    conf = np.clip(posterior * np.where(np.isfinite(frame), frame, 1.0), 0.0, 1.0).tolist()
    # built directly: dataclasses.replace per word cost more than the posterior itself
    return tuple(WordTimestamp(w.word, w.start_frame, w.end_frame, w.start_s, w.end_s, c,
                               w.frame_confidence) for w, c in zip(words, conf, strict=True))
