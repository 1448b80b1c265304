"""Random but well-formed ARPA n-gram models of any order, for checking LM code against KenLM."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def random_arpa(path: Path, rng: np.random.Generator, order: int, vocab: int | list[str] = 12,
                per_order: int = 150, with_unk: bool = False, zero_backoffs: float = 0.3,
                missing_backoffs: float = 0.3) -> Path:
    """Write an ARPA of ``order`` over ``vocab`` (a word list, or a count of words w0, w1, ...)
    plus <s>, </s> (and <unk>).

    Every n-gram's context (first n-1 words) and suffix (last n-1 words) is itself an n-gram, as
    KenLM and lmplz expect. Middle-order backoffs are random, 0 (``zero_backoffs`` of them) or
    absent (``missing_backoffs``), so KenLM's state minimisation and its missing-backoff rule are
    both exercised; some n-grams keep a non-zero backoff without extending anything.
    """
    names = vocab if isinstance(vocab, list) else [f"w{i}" for i in range(vocab)]
    words = [*names, "</s>"] + (["<unk>"] if with_unk else [])
    grams: list[dict[tuple[str, ...], float]] = [{(w,): _logp(rng) for w in words}]
    grams[0][("<s>",)] = -99.0
    for _ in range(2, order + 1):
        lower = list(grams[-1])
        found: dict[tuple[str, ...], float] = {}
        for _ in range(per_order * 30):
            context = lower[rng.integers(len(lower))]
            if context[-1] == "</s>":
                continue
            word = words[rng.integers(len(words))] if rng.random() > 0.1 else "</s>"
            gram = context + (word,)
            if gram[1:] in grams[-1] and gram not in found:  # the suffix is an n-gram too
                found[gram] = _logp(rng)
            if len(found) >= per_order:
                break
        grams.append(found)
    lines = ["", "\\data\\"] + [f"ngram {n}={len(g)}" for n, g in enumerate(grams, 1)]
    for n, section in enumerate(grams, 1):
        lines += ["", f"\\{n}-grams:"]
        for gram, logp in section.items():
            text = f"{logp:.4f}\t{' '.join(gram)}"
            if n < order:
                draw = rng.random()
                if draw < missing_backoffs:
                    pass
                elif draw < missing_backoffs + zero_backoffs:
                    text += "\t0"
                else:
                    text += f"\t{-rng.random():.4f}"
            lines.append(text)
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _logp(rng: np.random.Generator) -> float:
    return float(-0.05 - 3 * rng.random())


def ngram_walks(path: Path, rng: np.random.Generator, count: int, length: int,
                extra_words: list[str], follow: float = 0.8) -> list[list[str]]:
    """Word sequences that mostly continue the longest n-gram of the ARPA they can (so every order
    is reached), else take a random word of the LM or of ``extra_words`` (unknown words, ...)."""
    from ctclab.lm.arpa import iter_numbered_entries

    following: dict[tuple[str, ...], list[str]] = {}
    words: list[str] = []
    for _, n, _, gram, _ in iter_numbered_entries(path):
        if n == 1:
            words.append(gram[0])
        following.setdefault(gram[:-1], []).append(gram[-1])
    pool = words + extra_words
    walks = []
    for _ in range(count):
        walk: list[str] = []
        for _ in range(length):
            nexts = next((following[tuple(walk[i:])] for i in range(len(walk))
                          if tuple(walk[i:]) in following), None)
            if nexts and rng.random() < follow:
                walk.append(nexts[rng.integers(len(nexts))])
            else:
                walk.append(pool[rng.integers(len(pool))])
        walks.append(walk)
    return walks
