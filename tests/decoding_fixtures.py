"""Test data defined once: the QuartzNet label layout, synthetic emissions, and the one writer of
tiny ARPA language models (used by the decoder, LM and evaluation tests)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ctclab.decoders import Vocabulary

# The array backends the beam search is tested on: numpy, and torch on the CPU, which runs the
# code path a GPU runs (decoders/search_*.py are written once against ctclab.core.arrays).
BEAM_BACKENDS = {"numpy": {}, "torch": {"device": "cpu", "array_backend": "torch"}}


def log_softmax(x: np.ndarray) -> np.ndarray:
    """(T, V) -> (T, V) float32 natural-log softmax over the last axis."""
    x = np.asarray(x, np.float64)
    out = x - np.logaddexp.reduce(x, axis=1, keepdims=True)
    return out.astype(np.float32)


def peaky(path: Sequence[int], vocab_size: int, peak: float = 0.9) -> np.ndarray:
    """(T, V) log-probs whose argmax per frame follows ``path`` with probability ``peak``."""
    probs = np.full((len(path), vocab_size), (1 - peak) / (vocab_size - 1), np.float64)
    probs[np.arange(len(path)), path] = peak
    return np.log(probs).astype(np.float32)


def frames(vocab: Vocabulary, spec: Sequence[Mapping[str, float] | str], floor: float = 1e-4
           ) -> np.ndarray:
    """(T, V) log-probs from per-frame {label: prob} dicts (a plain label string means 0.98).

    ``"_"`` stands for the blank. Leftover probability mass is spread over the other labels.
    """
    out = np.full((len(spec), vocab.size), 0.0)
    for t, frame in enumerate(spec):
        frame = {frame: 0.98} if isinstance(frame, str) else frame
        ids = {(vocab.blank if lab == "_" else vocab.label_to_id[lab]): p
               for lab, p in frame.items()}
        rest = max(1.0 - sum(ids.values()), floor * vocab.size)
        out[t] = rest / (vocab.size - len(ids))
        for i, p in ids.items():
            out[t, i] = p
    return np.log(out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def spell(vocab: Vocabulary, text: str, peak: float = 0.95, blank_between: bool = True
          ) -> np.ndarray:
    """Peaky log-probs spelling ``text`` (words split at the delimiter), blanks around labels."""
    path = [vocab.blank]
    for token in vocab.encode_text(text):
        path += [token, vocab.blank] if blank_between else [token]
    return peaky(path, vocab.size, peak)


def random_peaky(rng: np.random.Generator, length: int, vocab_size: int, blank: int,
                 sharpness: float = 6.0, blank_rate: float = 0.5) -> np.ndarray:
    """(T, V) random peaky log-probs: one label per frame boosted by ``sharpness`` logits."""
    logits = rng.normal(size=(length, vocab_size))
    hot = rng.integers(0, vocab_size, size=length)
    hot = np.where(rng.random(length) < blank_rate, blank, hot)
    logits[np.arange(length), hot] += sharpness
    return log_softmax(logits)


# The NeMo QuartzNet labels (the real emissions in ../shared use them): space delimiter first,
# lower-case letters, apostrophe, blank last.
QUARTZNET_LABELS = (" ", *"abcdefghijklmnopqrstuvwxyz", "'", "<blank>")


def quartznet_vocab() -> Vocabulary:
    """The NeMo QuartzNet layout: space delimiter first, lower case, apostrophe, blank last."""
    return Vocabulary.from_labels(QUARTZNET_LABELS, blank=len(QUARTZNET_LABELS) - 1, delimiter=" ")


def arpa_text(unigrams: Mapping[str, float | tuple[float, float]],
              bigrams: Mapping[str, float] | None = None) -> str:
    """The text of a unigram or bigram ARPA file, entries in the order given, numbers as given.

    unigrams: word -> log10 P, or (log10 P, log10 backoff); bigrams: "a b" -> log10 P. Nothing
    is added: list ``<s>``, ``</s>`` and ``<unk>`` as the test needs them.
    """
    counts = [f"ngram 1={len(unigrams)}"] + ([f"ngram 2={len(bigrams)}"] if bigrams else [])
    lines = ["\\data\\", *counts, "", "\\1-grams:"]
    for word, value in unigrams.items():
        logp, backoff = value if isinstance(value, tuple) else (value, None)
        lines.append(f"{logp}\t{word}" + ("" if backoff is None else f"\t{backoff}"))
    if bigrams:
        lines += ["", "\\2-grams:", *(f"{logp}\t{pair}" for pair, logp in bigrams.items())]
    return "\n".join([*lines, "", "\\end\\", ""])


def write_arpa(path: Path, unigrams: Mapping[str, float],
               bigrams: Mapping[tuple[str, str], float] | None = None) -> Path:
    """Write a tiny bigram ARPA: ``unigrams`` word -> P (probability, not log), bigrams likewise.

    ``<s>``, ``</s>`` and ``<unk>`` are added, and ``<s> w`` for every word; every unigram gets a
    backoff weight of 0.
    """
    def log10(p: float) -> float:
        return round(math.log10(p), 6)

    words = {"<unk>": 1e-6, "</s>": 0.1, **unigrams}
    pairs = {("<s>", w): p for w, p in unigrams.items()}
    pairs.update(bigrams or {})
    text = arpa_text({"<s>": (-99, 0), **{w: (log10(p), 0) for w, p in words.items()}},
                     {f"{a} {b}": log10(p) for (a, b), p in pairs.items()})
    path.write_text(text, encoding="utf-8")
    return path
