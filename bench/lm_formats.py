"""LM formats on the real English 3-gram: KenLM's ARPA, probing binary and 8-bit trie, and the
array LM (lm.array_lm) the beam fuses by default.

    python bench/lm_formats.py [--lm ../shared/lm/en-us-70k-3gram.arpa.gz] [--repeats 3]

Prints, per format: file size, build time (0 when already built), load time and resident memory
after load in a fresh process (best of --repeats), and the speed of scoring the LibriSpeech-mini
transcripts: word by word through lm.language_model for KenLM (fresh model, so its score cache
only helps within the text), all sentences in lockstep through the array interface for the array
LM. The summed ln P must agree (bar the quantised trie); +RSS is the resident memory the load
added. Then the array LM's memory against the probing binary, and the query speed of KenLM's own
BaseScore against the array LM on the same 50,000 (history, word) pairs, in batches the size of
a beam search step (23), of 1000 and all at once, without and with its memo.
Ratios are against the ARPA (load) or KenLM (queries) in the same run. Everything built goes to
the LM cache (<cache root>/lm), never into the repo.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from ctclab.core.options import HelpFormatter
from ctclab.decoders import Vocabulary
from ctclab.lm.array_lm import array_lm_file, load_array_lm
from ctclab.lm.build import build_binary
from ctclab.lm.casing import make_word_mapper
from ctclab.lm.fetch import lm_cache_dir
from ctclab.lm.files import resolve_lm_path
from ctclab.lm.unigrams import read_unigrams

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LM = REPO.parent / "shared" / "lm" / "en-us-70k-3gram.arpa.gz"
DEFAULT_TEXT = REPO.parent / "shared" / "librispeech-mini" / "LibriSpeech"
# Words a beam search step finishes at once on the real set (median 14, mean 23, p90 47).
STEP_BATCH = 23

# Measured in a child process so each format starts with nothing loaded.
_CHILD = r"""
import sys, time
import numpy as np
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
kind, path, text = sys.argv[1:4]
words = [line.split() for line in open(text).read().splitlines()]
import kenlm, ctclab.lm.array_lm  # imports before the baseline: only the LM's own memory counts
before = rss_mb()
t0 = time.perf_counter()
if kind == "arrays":
    from ctclab.lm.array_lm import load_array_lm
    lm = load_array_lm(path, progress=False)
    lm.is_oov("the")  # the word -> id table is built on first use: part of loading
else:
    from ctclab.lm.language_model import KenLMLanguageModel
    lm = KenLMLanguageModel(path)
t1 = time.perf_counter()
rss = rss_mb() - before
n, total = sum(map(len, words)), 0.0
t2 = time.perf_counter()
if kind == "arrays":  # every sentence at once, position by position
    longest = max(map(len, words))
    ids = np.zeros((len(words), longest), np.int64)
    for i, sentence in enumerate(words):
        ids[i, :len(sentence)] = lm.word_ids(sentence)
    lengths = np.array([len(s) for s in words])
    context = np.full(len(words), lm.start_context, np.int64)
    for t in range(longest):
        rows = np.flatnonzero(lengths > t)
        ln, context[rows] = lm.score_batch(context[rows], ids[rows, t])
        total += float(ln.sum())
    total += float(lm.end_score_batch(context).sum())
else:
    for sentence in words:
        state = lm.start_state()
        for w in sentence:
            p, state = lm.score(state, w); total += p
        total += lm.end_score(state)
t3 = time.perf_counter()
print(t1 - t0, rss, n / (t3 - t2), total)
"""

# Query speed on the same (history, word) pairs: KenLM's BaseScore from Python vs the arrays.
# The pairs come from random walks along the LM's own 2-grams (histories that occur, so every
# order is looked up), 10 words a sentence from <s>.
_QUERIES = r"""
import sys, time
import numpy as np, kenlm
from ctclab.lm.array_lm import load_array_lm
arpa, binary, sentences, repeats, *sizes = sys.argv[1:]
sentences, repeats, sizes = int(sentences), int(repeats), [int(x) for x in sizes]
model, lm = kenlm.Model(binary), load_array_lm(arpa, progress=False)
rng = np.random.default_rng(0)
V = len(lm.words)
keys = lm._arrays["keys"]
bigram_keys = keys[: np.searchsorted(keys, (1 + V) * V)]
word = np.full(sentences, lm.word_ids(["<s>"])[0])
context = np.full(sentences, lm.start_context, np.int64)
contexts, ids = [], []
for _ in range(10):
    lo, hi = np.searchsorted(bigram_keys, (1 + word) * V), np.searchsorted(bigram_keys, (2 + word) * V)
    pick = np.where(hi > lo, lo + (rng.random(sentences) * (hi - lo)).astype(np.int64), -1)
    word = np.where(pick >= 0, bigram_keys[np.maximum(pick, 0)] % V, rng.integers(1, V, sentences))
    contexts.append(context); ids.append(word)
    context = lm.lookup_log10(context, word)[1]
contexts, ids = np.concatenate(contexts), np.concatenate(ids)
# KenLM's states for the same histories
text = [lm.words[i] for i in ids.tolist()]
by_sentence = []  # KenLM state before word t of sentence s, at s * 10 + t
for s in range(sentences):
    state = kenlm.State(); model.BeginSentenceWrite(state)
    for t in range(10):
        by_sentence.append(state)
        out = kenlm.State(); model.BaseScore(state, text[t * sentences + s], out); state = out
# the pairs run word position by position: pair t * sentences + s
states = [by_sentence[i] for i in np.arange(10 * sentences).reshape(sentences, 10).T.ravel()]
n = len(ids)
def best(fn):
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return n / min(times)
def kenlm_all():
    out = kenlm.State()
    for s, w in zip(states, text):
        model.BaseScore(s, w, out)
def arrays(size, memo):
    query = lm.score_log10 if memo else lm.lookup_log10
    def run():
        for i in range(0, n, size):
            query(contexts[i:i + size], ids[i:i + size])
    return run
ken = np.array([model.BaseScore(s, w, kenlm.State()) for s, w in zip(states, text)], np.float32)
assert np.array_equal(ken, lm.lookup_log10(contexts, ids)[0]), "arrays differ from KenLM"
results = [n, best(kenlm_all)]
for size in sizes:
    results.append(best(arrays(size, False)))
    arrays(size, True)()  # fill the memo
    results.append(best(arrays(size, True)))
print(*results)
"""
QUERY_SENTENCES = 5000
QUERY_BATCHES = (STEP_BATCH, 1000, 10 * QUERY_SENTENCES)


def _measure(kind: str, model: Path, text_file: Path, repeats: int
             ) -> tuple[float, float, float, float]:
    best = None
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _CHILD, kind, str(model), str(text_file)],
                             capture_output=True, text=True, check=True).stdout.split()
        load, rss, wps, total = map(float, out)
        best = (load, rss, wps, total) if best is None or load < best[0] else best
    assert best is not None
    return best


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/lm_formats.py", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--lm", type=Path, default=DEFAULT_LM,
                        help="the ARPA (.arpa or .arpa.gz) to compare with its binaries")
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT,
                        help="LibriSpeech folder whose *.trans.txt transcripts are scored")
    parser.add_argument("--repeats", type=int, default=3, help="loads per format (best kept)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.lm.is_file():
        print(f"error: {args.lm} not found (the ../shared folder beside the repo)", file=sys.stderr)
        return 2
    vocab = Vocabulary.wav2vec2_english()
    t0 = time.perf_counter()
    words = read_unigrams(args.lm)
    unigram_s = time.perf_counter() - t0
    mapper = make_word_mapper(vocab, words)
    texts = [line.split(" ", 1)[1] for f in sorted(args.text.rglob("*.trans.txt"))
             for line in f.read_text().splitlines() if " " in line]
    if not texts:  # scoring nothing would print 0 words/s as if it were a measurement
        print(f"error: no *.trans.txt transcripts under --text {args.text}", file=sys.stderr)
        return 2
    cache = lm_cache_dir()
    text_file = cache / "bench-lm-formats-text.txt"
    cache.mkdir(parents=True, exist_ok=True)
    text_file.write_text("\n".join(" ".join(mapper(w) for w in t.split()) for t in texts))

    t0 = time.perf_counter()
    arpa = resolve_lm_path(args.lm)
    gunzip_s = time.perf_counter() - t0
    # (name, kind, file the child loads, file whose size is shown, build seconds)
    formats: list[tuple[str, str, Path, Path, float]] = [("arpa", "kenlm", arpa, arpa, gunzip_s)]
    for kind, quant in (("probing", None), ("trie", 8)):
        out = arpa.with_name(arpa.stem + (f"-{kind}" + (f"-q{quant}" if quant else "")) + ".binary")
        t0 = time.perf_counter()
        if not out.is_file():
            build_binary(arpa, out, kind, quant)
        formats.append((kind + (f" q{quant}" if quant else ""), "kenlm", out, out,
                        time.perf_counter() - t0))
    t0 = time.perf_counter()
    built = array_lm_file(arpa).is_file()
    array_lm = load_array_lm(arpa)
    assert array_lm.file is not None
    formats.append(("arrays", "arrays", arpa, array_lm.file,
                    0.0 if built else time.perf_counter() - t0))

    print(f"LM: {args.lm.name}; unigrams streamed in {unigram_s:.2f} s ({len(words)} words); "
          f"scoring {sum(len(t.split()) for t in texts)} words of {len(texts)} transcripts; "
          f"best of {args.repeats} loads; build = gunzip for arpa, build_binary or the array "
          "build otherwise (0 when cached); arrays score all sentences in lockstep")
    print(f"{'format':<12} {'size MB':>8} {'build s':>8} {'load ms':>8} {'x arpa':>7} "
          f"{'+RSS MB':>8} {'words/s':>9} {'sum ln P':>10}")
    base_load = None
    for name, kind, path, sized, build_s in formats:
        load, rss, wps, total = _measure(kind, path, text_file, args.repeats)
        base_load = base_load or load
        print(f"{name:<12} {sized.stat().st_size / 1e6:>8.1f} {build_s:>8.1f} {load * 1000:>8.1f} "
              f"{base_load / load:>6.1f}x {rss:>8.0f} {wps:>9.0f} {total:>10.2f}")

    probing = formats[1][2]
    print(f"\narray LM memory: {array_lm.nbytes / 1e6:.1f} MB of arrays = "
          f"{array_lm.nbytes / probing.stat().st_size:.2f}x the probing binary "
          f"({probing.stat().st_size / 1e6:.1f} MB)")
    out = subprocess.run([sys.executable, "-c", _QUERIES, str(arpa), str(probing),
                          str(QUERY_SENTENCES), str(max(args.repeats, 3)),
                          *map(str, QUERY_BATCHES)],
                         capture_output=True, text=True, check=True).stdout.split()
    n, kenlm_wps, *rates = map(float, out)
    print(f"queries: {n:.0f} (history, word) pairs along the LM's 2-grams, best of "
          f"{max(args.repeats, 3)}; words/s (x KenLM's BaseScore, one Python call a word: "
          f"{kenlm_wps:,.0f}/s):")
    print(f"  {'batch size':>10} {'arrays':>12} {'x KenLM':>8} {'+memo, warm':>12} {'x KenLM':>8}")
    for size, plain, memo in zip(QUERY_BATCHES, rates[::2], rates[1::2], strict=True):
        print(f"  {size:>10} {plain:>12,.0f} {plain / kenlm_wps:>7.2f}x {memo:>12,.0f} "
              f"{memo / kenlm_wps:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
