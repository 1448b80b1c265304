"""Two versions of ctclab's beam decoder timed in one process, pass by pass: an A/B that the
host's drift does not decide.

    python bench/ab_trees.py REV_A [REV_B] [--inputs corpus|real] [--lm PATH | --lm none]

REV_A and REV_B are git revisions of this repository (a commit, branch or tag), or "." for the
working tree (REV_B's default). Each is exported into a temporary folder with its packages
renamed (ctclab_a, ctclab_b: every ``ctclab.`` import rewritten), so both import side by side in
one interpreter. Their beam decoders, at bench/peers.py's matched settings (pyctcdecode's
defaults, as bench/decode_speed.py runs them), decode the same emissions once and must give the
same texts; then they take turns, one pass each, the order flipped every round. Printed: each
one's best and median pass, and B's as a fraction of A's. On this shared host the speed drifts
by ~5% within a minute: two processes timed one after the other measure the drift, two decoders
alternating in one process measure the code.

The inputs are bench/decode_speed.py's: ``corpus`` (synthetic peaky utterances with
LibriSpeech's lengths and the LM's words, test-clean-sized by default) or ``real`` (the shared
QuartzNet emissions).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import decode_speed as ds  # bench/decode_speed.py, beside this script
import numpy as np
import peers
from durations import TEST_CLEAN

from ctclab.core.memory import keep_freed_memory
from ctclab.core.options import HelpFormatter
from ctclab.decoders import Vocabulary
from ctclab.decoders.options import PyctcdecodeOptions
from ctclab.lm.files import resolve_lm_path

REPO = Path(__file__).resolve().parents[1]
# the top-level folders that are ctclab's packages (those a revision has are exported)
PACKAGES = ("core", "cluster", "lm", "decoders", "emission", "eval")
_IMPORT = re.compile(r"\bctclab(?=\.|\s+import\b)")


def export(revision: str, into: Path, name: str) -> Path:
    """The packages of ``revision`` ("." = the working tree) under ``into``/``name``, their
    imports of ctclab rewritten to ``name``, registered as the package ``name`` (its modules
    then import from that folder); returns the folder."""
    root = into / name
    root.mkdir(parents=True)
    if revision == ".":
        for package in PACKAGES:
            if (REPO / package).is_dir():
                shutil.copytree(REPO / package, root / package,
                                ignore=shutil.ignore_patterns("__pycache__"))
    else:
        listed = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", revision],
                                capture_output=True, text=True)
        if listed.returncode:
            raise SystemExit(f"{revision!r} is no revision of {REPO}: {listed.stderr.strip()}")
        present = [p for p in PACKAGES if p in listed.stdout.split()]
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, *present],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    (root / "__init__.py").write_text("")
    for source in root.rglob("*.py"):
        text = source.read_text()
        renamed = _IMPORT.sub(name, text)
        if renamed != text:
            source.write_text(renamed)
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return root


def decoder(name: str, vocab: Vocabulary, lm_file: Path | None) -> Any:
    """The beam decoder of package ``name`` at the matched settings."""
    vocabulary = importlib.import_module(f"{name}.core.vocabulary").Vocabulary
    labels = list(vocab.labels)
    theirs = vocabulary.from_labels(labels, blank=labels[vocab.blank],
                                    delimiter=labels[vocab.delimiter])
    beam = importlib.import_module(f"{name}.decoders").decoder_class("beam")
    matched = PyctcdecodeOptions(lm_path=None if lm_file is None else str(lm_file))
    return beam(theirs, peers.matched_options(beam.Options, matched))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("revision_a", help="git revision of the reference (A), or . for the working tree")
    p.add_argument("revision_b", nargs="?", default=".",
                   help="git revision timed against it (B), or . for the working tree")
    p.add_argument("--inputs", choices=("corpus", "real"), default="corpus",
                   help="the emissions (bench/decode_speed.py's)")
    p.add_argument("--lm", default=str(ds.DEFAULT_LM), help="LM file, or none")
    p.add_argument("--passes", type=int, default=12, help="timed passes of each decoder")
    p.add_argument("--corpus-utterances", type=int, default=TEST_CLEAN[0],
                   help="utterances of the synthetic corpus")
    p.add_argument("--corpus-hours", type=float, default=TEST_CLEAN[1],
                   help="its hours of audio")
    p.add_argument("--emissions", default=str(ds.EMISSIONS_DIR),
                   help="folder of the real emissions (manifest.tsv)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.passes < 1 or args.corpus_utterances < 1 or not args.corpus_hours > 0:
        print("--passes and --corpus-utterances must be >= 1, --corpus-hours > 0", file=sys.stderr)
        return 2
    lm_file = None
    if args.lm != "none":
        if not Path(args.lm).exists():
            print(f"{args.lm} not found: pass --lm PATH or --lm none", file=sys.stderr)
            return 2
        lm_file = resolve_lm_path(args.lm)
    vocab = ds.quartznet_vocab()
    if args.inputs == "real":
        if not (Path(args.emissions) / "manifest.tsv").is_file():
            print(f"{args.emissions}/manifest.tsv not found: pass --emissions", file=sys.stderr)
            return 2
        data = ds.load_real(Path(args.emissions))
    else:
        words = ds.peaky_lexicon([("lm", lm_file)])
        data = ds.make_corpus(vocab, np.random.default_rng(args.seed), args.corpus_utterances,
                              args.corpus_hours, words)
    emissions = data.emissions
    keep_freed_memory()
    with tempfile.TemporaryDirectory(prefix="ab_trees_") as tmp:
        decoders = {}
        for label, revision in (("a", args.revision_a), ("b", args.revision_b)):
            export(revision, Path(tmp) / label, f"ctclab_{label}")
            decoders[label] = decoder(f"ctclab_{label}", vocab, lm_file)
        texts = {k: [h.text for h in d.decode_many(emissions)] for k, d in decoders.items()}
        if texts["a"] != texts["b"]:
            differ = sum(x != y for x, y in zip(texts["a"], texts["b"], strict=True))
            print(f"the two revisions' texts differ on {differ} of {len(emissions)} utterances: "
                  "timing them against each other compares different searches", file=sys.stderr)
            return 1
        times: dict[str, list[float]] = {"a": [], "b": []}
        for round_ in range(args.passes):
            for label in ("a", "b") if round_ % 2 == 0 else ("b", "a"):
                start = time.perf_counter()
                [h.text for h in decoders[label].decode_many(emissions)]
                times[label].append(time.perf_counter() - start)
    lm_name = "no LM" if lm_file is None else lm_file.name
    print(f"{data.name}, {len(emissions)} utterances, {data.audio_seconds:.0f} s of audio, {lm_name}; "
          f"{args.passes} passes each, alternating in one process")
    print(f"{'revision':<24} {'best s':>8} {'median s':>9}")
    for label, revision in (("a", args.revision_a), ("b", args.revision_b)):
        print(f"{label.upper()} {revision:<22} {min(times[label]):8.4f} "
              f"{statistics.median(times[label]):9.4f}")
    print(f"B / A: {min(times['b']) / min(times['a']):.3f} best, "
          f"{statistics.median(times['b']) / statistics.median(times['a']):.3f} median "
          "(< 1: B is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
