"""KenLM formats on the real English 3-gram: ARPA vs probing binary vs 8-bit trie.

    python bench/lm_formats.py [--lm ../shared/lm/en-us-70k-3gram.arpa.gz] [--repeats 3]

Prints, per format: file size, build time, load time, resident memory after load, and the
speed of scoring the LibriSpeech-mini transcripts word by word through lm.language_model
(fresh model, so the score cache only helps within the text). Also the time to stream the
unigram list vs a full ARPA validation pass. Ratios are against the ARPA in the same run.
Binaries go to the LM cache (<cache root>/lm), never into the repo.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from ctclab.decoders import Vocabulary
from ctclab.lm.build import build_binary
from ctclab.lm.casing import make_word_mapper
from ctclab.lm.fetch import lm_cache_dir
from ctclab.lm.files import resolve_lm_path
from ctclab.lm.unigrams import read_unigrams

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LM = REPO.parent / "shared" / "lm" / "en-us-70k-3gram.arpa.gz"
DEFAULT_TEXT = REPO.parent / "shared" / "librispeech-mini" / "LibriSpeech"

# Measured in a child process so each format starts with nothing loaded.
_CHILD = r"""
import resource, sys, time
from ctclab.lm.language_model import KenLMLanguageModel
words = [line.split() for line in open(sys.argv[3]).read().splitlines()]
t0 = time.perf_counter(); lm = KenLMLanguageModel(sys.argv[2]); t1 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
n, total = 0, 0.0
t2 = time.perf_counter()
for sentence in words:
    state = lm.start_state()
    for w in sentence:
        p, state = lm.score(state, w); total += p; n += 1
    total += lm.end_score(state)
t3 = time.perf_counter()
print(t1 - t0, rss, n / (t3 - t2), total)
"""


def _measure(model: Path, text_file: Path, repeats: int) -> tuple[float, float, float, float]:
    best = None
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), str(model), str(text_file)],
                             capture_output=True, text=True, check=True).stdout.split()
        load, rss, wps, total = map(float, out)
        best = (load, rss, wps, total) if best is None or load < best[0] else best
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lm", type=Path, default=DEFAULT_LM)
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT, help="LibriSpeech folder")
    parser.add_argument("--repeats", type=int, default=3, help="loads per format (best kept)")
    args = parser.parse_args(argv)
    if not args.lm.is_file():
        print(f"error: {args.lm} not found (the ../shared folder beside the repo)", file=sys.stderr)
        return 1
    vocab = Vocabulary.wav2vec2_english()
    t0 = time.perf_counter()
    words = read_unigrams(args.lm)
    unigram_s = time.perf_counter() - t0
    mapper = make_word_mapper(vocab, words)
    texts = [line.split(" ", 1)[1] for f in sorted(args.text.rglob("*.trans.txt"))
             for line in f.read_text().splitlines() if " " in line]
    if not texts:  # scoring nothing would print 0 words/s as if it were a measurement
        print(f"error: no *.trans.txt transcripts under --text {args.text}", file=sys.stderr)
        return 1
    cache = lm_cache_dir()
    text_file = cache / "bench-lm-formats-text.txt"
    cache.mkdir(parents=True, exist_ok=True)
    text_file.write_text("\n".join(" ".join(mapper(w) for w in t.split()) for t in texts))

    t0 = time.perf_counter()
    arpa = resolve_lm_path(args.lm)
    gunzip_s = time.perf_counter() - t0
    formats: list[tuple[str, Path, float]] = [("arpa", arpa, gunzip_s)]
    for kind, quant in (("probing", None), ("trie", 8)):
        out = arpa.with_name(arpa.stem + (f"-{kind}" + (f"-q{quant}" if quant else "")) + ".binary")
        t0 = time.perf_counter()
        if not out.is_file():
            build_binary(arpa, out, kind, quant)
        formats.append((kind + (f" q{quant}" if quant else ""), out, time.perf_counter() - t0))

    print(f"LM: {args.lm.name}; unigrams streamed in {unigram_s:.2f} s ({len(words)} words); "
          f"scoring {sum(len(t.split()) for t in texts)} words of {len(texts)} transcripts; "
          f"best of {args.repeats} loads; build = gunzip for arpa, build_binary otherwise "
          "(0 when cached)")
    print(f"{'format':<12} {'size MB':>8} {'build s':>8} {'load ms':>8} {'x arpa':>7} "
          f"{'maxRSS MB':>9} {'words/s':>9} {'sum ln P':>10}")
    base_load = None
    for name, path, build_s in formats:
        load, rss, wps, total = _measure(path, text_file, args.repeats)
        base_load = base_load or load
        print(f"{name:<12} {path.stat().st_size / 1e6:>8.1f} {build_s:>8.1f} {load * 1000:>8.1f} "
              f"{base_load / load:>6.1f}x {rss:>9.0f} {wps:>9.0f} {total:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
