"""Command line: how many words of a set of reference texts an LM does not know.

    python -m ctclab.eval.oov --lm ../shared/lm/en-us-70k-3gram.arpa.gz --texts <emission-cache dir> ...
    python -m ctclab.eval.oov --lm lexicon.txt --texts refs.txt --vocab labels.json

--texts takes emission-cache folders (their reference texts, and their vocabulary when --vocab is
not given) or text files with one sentence a line. The LM's words come from lm.unigrams (ARPA,
.arpa.gz, word list or lexicon); acoustic words are mapped to the LM's casing with
lm.casing.make_word_mapper first, so the rate is the one a decoder fusing this LM would see.
Texts are spelled as the acoustic labels spell them first (lm.corpus normalisation).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctclab.core.options import HelpFormatter
from ctclab.core.vocabulary import Vocabulary
from ctclab.emission.cache import EmissionCache
from ctclab.lm.casing import OovReport, make_word_mapper, oov_rate
from ctclab.lm.corpus import CorpusNormalizer, NormalizeStats, load_vocabulary
from ctclab.lm.unigrams import read_unigrams


def read_texts(spec: str | Path) -> tuple[list[str], Vocabulary | None]:
    """Reference texts of ``spec``: an emission-cache folder (with its vocabulary) or a text
    file, one sentence a line (vocabulary None)."""
    path = Path(spec)
    if path.is_dir():
        cache = EmissionCache.open(path, allow_incomplete=True)
        return [r.text for r in cache.records], cache.vocabulary
    if not path.is_file():
        raise FileNotFoundError(f"--texts {spec}: not found; give an emission-cache folder or a "
                                "text file with one sentence a line")
    try:
        return path.read_text(encoding="utf-8").splitlines(), None
    except UnicodeDecodeError as exc:
        raise ValueError(f"--texts {spec}: not UTF-8 text ({exc.reason})") from None


def report(lm: str | Path, texts: list[str], vocab: Vocabulary
           ) -> tuple[OovReport, str, NormalizeStats]:
    """OOV report of ``texts`` against the words of ``lm``, the casing mapping used, and what
    normalisation did. Texts are first spelled as the decoder would (lm.corpus: the labels'
    case, apostrophes, punctuation); words the labels cannot spell are not counted."""
    normalizer, stats = CorpusNormalizer.for_vocabulary(vocab), NormalizeStats()
    spelled = [normalizer.normalize_line(t, stats) for t in texts]
    words = read_unigrams(lm)
    mapper = make_word_mapper(vocab, words, sample_words=[w for t in spelled for w in t.split()])
    return oov_rate(spelled, set(words), mapper), mapper.mode, stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ctclab.eval.oov", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--lm", required=True, help="ARPA (.gz allowed), word list or lexicon")
    parser.add_argument("--texts", nargs="+", required=True,
                        help="emission-cache folder(s) or text file(s), one sentence a line")
    parser.add_argument("--vocab", help="cache folder / meta.json / labels.json (default: the "
                        "first cache's vocabulary, else English A-Z and ')")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        texts: list[str] = []
        vocab = load_vocabulary(args.vocab) if args.vocab else None
        for spec in args.texts:
            lines, cache_vocab = read_texts(spec)
            texts += lines
            vocab = vocab or cache_vocab
        result, mode, stats = report(args.lm, texts, vocab or load_vocabulary(None))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"LM {args.lm}: words mapped with {mode!r}; {stats.dropped_words} word(s) the labels "
          "cannot spell not counted")
    print(f"{'words':>8} {'OOV':>8} {'rate %':>7}")
    print(f"{result.words:>8} {result.oov:>8} {100 * result.rate:>7.2f}")
    if result.top_oov:
        print("most frequent OOV words: "
              + ", ".join(f"{w} ({n})" for w, n in result.top_oov))
    return 0


if __name__ == "__main__":
    sys.exit(main())
