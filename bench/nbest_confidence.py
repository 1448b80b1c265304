"""What word confidence from n-best lists costs: the beam decoder with --nbest 10 against the same
decoder with nbest 1 (its peer, in the same run), and the n-best posterior step alone against the
plain-Python per-word loop it replaced (kept here as the reference; both must agree).

    python bench/nbest_confidence.py --repeat 5 --lm ../shared/lm/en-us-70k-3gram.arpa.gz

Decodes the shared QuartzNet emissions (94 utterances). Prints, per LM: ms per pass over all
utterances (best and median of the repeats; passes alternate between the peers so that a noisy
machine disturbs both alike) and the ratios nbest 10 / nbest 1 and vectorised / loop (the
vectorised posterior takes all 94 lists in one pass, as the beam decoder does per batch).
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
from decode_speed import DEFAULT_LM, EMISSIONS_DIR, FRAME_SHIFT_S, load_real, quartznet_vocab

from ctclab.core.hypothesis import Hypothesis
from ctclab.core.table import Table
from ctclab.decoders.base import create_decoder
from ctclab.decoders.confidence import nbest_posteriors, word_posteriors_many

NBEST = 10


def loop_word_posteriors(entries: Sequence[Hypothesis]) -> list[np.ndarray]:
    """The reference: for every word of every entry, the entries holding the same word over
    overlapping frames, found by a Python loop (what decoders/confidence.py did before)."""
    post = nbest_posteriors([e.score for e in entries])
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


def timed_passes(peers: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """ms per call of each peer, ``repeat`` times, the peers alternating."""
    out: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(repeat):
        for name, call in peers.items():
            began = time.perf_counter()
            call()
            out[name].append(1000 * (time.perf_counter() - began))
    return out


def rows(label: str, times: dict[str, list[float]], reference: str) -> list[tuple[str, ...]]:
    best_ref = min(times[reference])
    return [(label, name, f"{min(t):.1f}", f"{statistics.median(t):.1f}",
             f"{min(t) / best_ref:.2f}") for name, t in times.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--lm", nargs="+", default=["none", str(DEFAULT_LM)],
                   help="'none' and/or KenLM files")
    args = p.parse_args(argv)
    data = load_real(EMISSIONS_DIR)
    vocab = quartznet_vocab()
    table: list[tuple[str, ...]] = []
    for lm in args.lm:
        lm_path = None if lm == "none" else lm
        label = "none" if lm_path is None else "3-gram" if lm_path == str(DEFAULT_LM) else lm
        decoders = {n: create_decoder("beam", vocab, frame_shift_s=FRAME_SHIFT_S, lm_path=lm_path,
                                      nbest=n) for n in (1, NBEST)}
        for d in decoders.values():   # warm-up: LM page-in, first-call allocations
            d.decode_many(data.emissions[:4])
        times = timed_passes({f"beam nbest {n}": (lambda d=d: d.decode_many(data.emissions))
                              for n, d in decoders.items()}, args.repeat)
        table += rows(label, times, "beam nbest 1")
        lists = [h.nbest for h in decoders[NBEST].decode_many(data.emissions)]
        for entries, fast in zip(lists, word_posteriors_many(lists), strict=True):
            for a, b in zip(fast, loop_word_posteriors(entries), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-12)   # they agree, or times mean nothing
        times = timed_passes({
            "posterior: loop": lambda ls=lists: [loop_word_posteriors(e) for e in ls],
            "posterior: vectorised": lambda ls=lists: word_posteriors_many(ls)}, args.repeat)
        table += rows(label, times, "posterior: loop")
    print(f"{len(data.emissions)} utterances, {data.audio_seconds:.0f} s of audio, beam width "
          f"100, {args.repeat} passes each; ratio = best / best of the first peer of the group")
    print(Table(("LM", "what", "best ms", "median ms", "ratio"), table, align="<<>>>").text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
