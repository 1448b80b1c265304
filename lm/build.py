"""Build a word n-gram LM from text with KenLM: normalise, lmplz, optionally build_binary.

    python lm/build.py --text corpus.txt --order 4 --out 4gram.arpa [--prune 0 0 1]
                       [--vocab CACHE_DIR|labels.json] [--binary [--binary-type probing|trie]
                       [--quantize 8]]

Text is normalised to the acoustic vocabulary first (see lm/corpus.py). Outputs are written to
temporary files and renamed into place, so an interrupted build never leaves a truncated LM.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import itertools
import os
import re
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctclab.core.atomic import publish
from ctclab.core.options import HelpFormatter
from ctclab.core.progress import Progress, progress_bar
from ctclab.core.table import Table
from ctclab.core.vocabulary import Vocabulary
from ctclab.lm.arpa import open_text, read_arpa_header
from ctclab.lm.corpus import CorpusNormalizer, NormalizeStats, load_vocabulary
from ctclab.lm.tools import KENLM_MAX_ORDER, find_tool

BINARY_TYPES = ("probing", "trie")
# lmplz sorts in this much RAM and spills the rest to disk; its own default (80% of RAM) is rude
# on a shared machine. Raise it with --memory for corpora of many GB.
DEFAULT_LMPLZ_MEMORY = "1G"
# Quantisation bits KenLM supports for trie probabilities/backoffs.
QUANTIZE_BITS = range(1, 26)
# Characters of a failing tool's stderr quoted in the error.
ERROR_TAIL_CHARS = 3000
# lmplz -S accepts a number with an optional unit or percent of physical memory.
_MEMORY_SPEC = re.compile(r"^\d+(\.\d+)?[%bBkKmMgGtT]?$")


@dataclass(frozen=True)
class BuildOptions:
    """What to build. order: n-gram order (1..6); prune: lmplz thresholds per order (first 0,
    non-decreasing; empty = none); binary_type/quantize apply to build_binary (quantize: trie only).
    """

    order: int = 4
    prune: tuple[int, ...] = ()
    memory: str = DEFAULT_LMPLZ_MEMORY
    binary_type: str = "probing"
    quantize: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prune", tuple(int(p) for p in self.prune))
        if not 1 <= self.order <= KENLM_MAX_ORDER:
            raise ValueError(f"--order must be 1..{KENLM_MAX_ORDER} (KenLM's build limit), "
                             f"got {self.order}")
        if self.prune:
            if len(self.prune) > self.order:
                raise ValueError(f"--prune has {len(self.prune)} thresholds for order "
                                 f"{self.order}; give at most one per order")
            if self.prune[0] != 0:
                raise ValueError("--prune: the unigram threshold must be 0 (lmplz cannot prune "
                                 "unigrams), e.g. --prune 0 0 1")
            if any(b < a for a, b in itertools.pairwise(self.prune)) or min(self.prune) < 0:
                raise ValueError(f"--prune thresholds must be non-negative and non-decreasing, "
                                 f"got {list(self.prune)}")
        if not _MEMORY_SPEC.match(self.memory):
            raise ValueError(f"--memory {self.memory!r}: give a size like 1G, 500M or 20%")
        if self.binary_type not in BINARY_TYPES:
            raise ValueError(f"unknown --binary-type {self.binary_type!r}; valid: "
                             f"{list(BINARY_TYPES)}")
        if self.quantize is not None:
            if self.binary_type != "trie":
                raise ValueError("--quantize needs --binary-type trie (probing is not quantised)")
            if self.quantize not in QUANTIZE_BITS:
                raise ValueError(f"--quantize must be 1..25 bits, got {self.quantize}")


@dataclass(frozen=True)
class BuildResult:
    """What was built: counts[n-1] = number of n-grams; sizes in bytes; normalisation stats."""

    arpa: Path
    counts: tuple[int, ...]
    arpa_bytes: int
    binary: Path | None
    binary_bytes: int | None
    stats: NormalizeStats


def _run_tool(cmd: list[str], what: str, echo: bool = False) -> None:
    """Run a KenLM tool; its stderr (progress bars, statistics) is echoed live when ``echo`` and
    its tail is kept for the error message either way."""
    tail: collections.deque[str] = collections.deque(maxlen=ERROR_TAIL_CHARS)
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        stderr = proc.stderr
        assert stderr is not None  # stderr=PIPE
        for chunk in iter(lambda: stderr.read(4096), b""):
            text = chunk.decode("utf-8", "replace")
            tail.extend(text)
            if echo:
                sys.stderr.write(text)
                sys.stderr.flush()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                           + "".join(tail))


def _counted(lines: Iterable[str], bar: Progress, every: int = 10_000) -> Iterator[str]:
    """``lines`` unchanged, telling ``bar`` every ``every`` lines (a bar update per line of a
    large corpus would cost more than the normalising)."""
    count = 0
    for count, line in enumerate(lines, 1):
        if count % every == 0:
            bar.update(every)
        yield line
    bar.update(count % every)


def normalize_corpus(text_paths: Sequence[Path], out_path: Path, vocab: Vocabulary,
                     progress: bool = False) -> NormalizeStats:
    """Write the normalised sentences of all ``text_paths`` (UTF-8, gzip allowed) to out_path."""
    normalizer = CorpusNormalizer.for_vocabulary(vocab)
    stats = NormalizeStats()
    with open(out_path, "w", encoding="utf-8", newline="\n") as out:
        for path in text_paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"--text {path}: file not found")
            try:
                with open_text(path) as f, contextlib.closing(progress_bar(
                        None, f"normalise {Path(path).name}", "lines", enabled=progress,
                        leave=False)) as bar:
                    out.writelines(s + "\n" for s in normalizer.normalize_lines(
                        _counted(f, bar), stats))
            except UnicodeDecodeError as exc:
                raise ValueError(f"--text {path}: not UTF-8 text ({exc.reason})") from None
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise ValueError(f"--text {path}: the gzip file is damaged or truncated "
                                 f"({exc})") from None
    if stats.words == 0:
        raise ValueError(f"no usable words in {[str(p) for p in text_paths]} after normalising "
                         "to the vocabulary's characters; check --vocab and the text's language")
    return stats


def build_arpa(text_paths: Sequence[str | Path], out: str | Path, options: BuildOptions,
               vocab: Vocabulary | None = None, verbose: bool = False
               ) -> tuple[Path, NormalizeStats]:
    """Normalise the text and run ``lmplz --discount_fallback`` into ``out`` (atomic).
    verbose: show normalisation progress and lmplz's own progress output."""
    out = Path(out)
    vocab = vocab or load_vocabulary(None)
    lmplz = find_tool("lmplz")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        stats = normalize_corpus([Path(p) for p in text_paths], corpus, vocab, verbose)
        tmp_arpa = Path(tmp) / "model.arpa"
        # --discount_fallback: Kneser-Ney discounts cannot be estimated from a small corpus
        # (no n-grams seen exactly 1..4 times); fall back to KenLM's defaults instead of failing.
        cmd = [str(lmplz), "-o", str(options.order), "--discount_fallback", "-S", options.memory,
               "-T", tmp, "--text", str(corpus), "--arpa", str(tmp_arpa)]
        if options.prune:
            cmd += ["--prune", *(str(p) for p in options.prune)]
        _run_tool(cmd, "lmplz", echo=verbose)
        os.replace(tmp_arpa, out)
    return out, stats


def build_binary(arpa: str | Path, out: str | Path, binary_type: str = "probing",
                 quantize: int | None = None, verbose: bool = False) -> Path:
    """KenLM binary from an ARPA (atomic). quantize: bits for trie probabilities and backoffs."""
    arpa, out = Path(arpa), Path(out)
    if not arpa.is_file():
        raise FileNotFoundError(f"ARPA file not found: {arpa}")
    BuildOptions(binary_type=binary_type, quantize=quantize)  # validates the pair
    tool = find_tool("build_binary")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    os.close(fd)
    try:
        cmd = [str(tool)]
        if quantize is not None:
            cmd += ["-q", str(quantize), "-b", str(quantize)]
        _run_tool([*cmd, binary_type, str(arpa), tmp], "build_binary", echo=verbose)
        publish(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def build(text_paths: Sequence[str | Path], out: str | Path, options: BuildOptions,
          vocab: Vocabulary | None = None, binary_out: str | Path | None = None,
          verbose: bool = False) -> BuildResult:
    """ARPA (and, when ``binary_out`` is given, a binary) from text. See the module docstring."""
    arpa, stats = build_arpa(text_paths, out, options, vocab, verbose)
    binary = None
    if binary_out is not None:
        binary = build_binary(arpa, binary_out, options.binary_type, options.quantize, verbose)
    return BuildResult(arpa=arpa, counts=read_arpa_header(arpa).counts,
                       arpa_bytes=arpa.stat().st_size, binary=binary,
                       binary_bytes=binary.stat().st_size if binary else None, stats=stats)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def print_summary(result: BuildResult) -> None:
    """The table the CLI ends with."""
    s = result.stats
    print(f"\ntext: {s.lines} lines -> {s.sentences} sentences, {s.words} words "
          f"({s.dropped_words} dropped as unspellable"
          + (f", e.g. {list(s.dropped_examples)[:5]}" if s.dropped_examples else "") + ")")
    print(Table(("order", "n-grams"), [(str(n), f"{count:,}") for n, count in
                                       enumerate(result.counts, 1)], align=">>").text())
    files = [("arpa", _human(result.arpa_bytes), str(result.arpa))]
    if result.binary is not None:
        files.append(("binary", _human(result.binary_bytes or 0), str(result.binary)))
    print("\n" + Table(("file", "size", "path"), files, align="<><").text())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python lm/build.py", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--text", nargs="+", required=True, type=Path,
                        help="training text, one sentence a line (UTF-8; .gz allowed)")
    parser.add_argument("--order", type=int, default=BuildOptions.order,
                        help=f"n-gram order (1..{KENLM_MAX_ORDER})")
    parser.add_argument("--out", required=True, type=Path, help="output ARPA path")
    parser.add_argument("--prune", nargs="+", type=int, default=(),
                        help="lmplz count thresholds per order, e.g. 0 0 1 (default: no pruning)")
    parser.add_argument("--vocab", help="emission-cache folder / meta.json / labels.json whose "
                        "labels the words must be spelled with (default: English A-Z and ')")
    parser.add_argument("--memory", default=DEFAULT_LMPLZ_MEMORY,
                        help="lmplz sort memory (its -S: e.g. 1G, 4G or 50%%)")
    parser.add_argument("--binary", action="store_true", help="also write a KenLM binary")
    parser.add_argument("--binary-out", type=Path, help="binary path (default: OUT with .binary)")
    parser.add_argument("--binary-type", default=BuildOptions.binary_type, choices=BINARY_TYPES,
                        help="KenLM binary layout: probing (fastest) or trie (smallest)")
    parser.add_argument("--quantize", type=int, help="bits per trie probability and backoff "
                        "(e.g. 8; --binary-type trie only; default: none, full floats)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = BuildOptions(order=args.order, prune=tuple(args.prune), memory=args.memory,
                               binary_type=args.binary_type, quantize=args.quantize)
        if (args.binary_out or args.quantize is not None) and not args.binary:
            raise ValueError("--binary-out/--quantize need --binary")
        vocab = load_vocabulary(args.vocab)
        binary_out = None
        if args.binary:
            binary_out = args.binary_out or args.out.with_suffix(".binary")
        print(f"building a {options.order}-gram from {len(args.text)} file(s), vocabulary "
              f"{vocab.case} case, lmplz -S {options.memory}", flush=True)
        result = build(args.text, args.out, options, vocab, binary_out, verbose=True)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
