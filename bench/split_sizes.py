"""Decoding a few utterances at a time: each split of the real QuartzNet set in one call, as
eval/run.py decodes README command 1's splits, by our beam and its peers, with the LM.

    python bench/split_sizes.py --decoder beam pyctcdecode --lm ../shared/lm/en-us-70k-3gram.arpa.gz

Per split, each decoder is built fresh (its memos empty), warmed up on the split's first
utterance (the runner's own warm-up), then timed on the whole split twice: the first call is what
a run pays, the second what a decoder that has seen the split pays. A search step of our beam
costs about the same whatever the number of utterances in it, so the fewer utterances a call
holds, the less its batching pays (README, Speed).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import peers  # bench/peers.py, beside this script
from decode_speed import DEFAULT_LM, EMISSIONS_DIR, FRAME_SHIFT_S, InputSet, load_real, manifest_rows

from ctclab.core.memory import keep_freed_memory
from ctclab.core.table import Table
from ctclab.decoders.options import PyctcdecodeOptions
from ctclab.lm.files import resolve_lm_path


def split_sets(root: Path, data: InputSet) -> dict[str, list[np.ndarray]]:
    """The real set's emissions (``data``, read from ``root``) by split, in manifest order."""
    rows = manifest_rows(root)
    out: dict[str, list[np.ndarray]] = {}
    for row, emission in zip(rows, data.emissions, strict=True):
        out.setdefault(row[0], []).append(emission)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/split_sizes.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoder", nargs="+", default=["beam", "pyctcdecode"],
                   help="ctclab decoders and peers (bench/peers.py) to time")
    p.add_argument("--lm", default=str(DEFAULT_LM), help="KenLM .arpa/.arpa.gz, or 'none'")
    p.add_argument("--emissions", default=str(EMISSIONS_DIR),
                   help="folder of the real inputs (labels.json, manifest.tsv, <split>/<id>.npy)")
    args = p.parse_args(argv)
    keep_freed_memory()   # as README command 1's runner does (eval/run.py)
    root = Path(args.emissions)
    if not (root / "manifest.tsv").is_file():
        p.error(f"{root}/manifest.tsv not found: pass --emissions DIR")
    lm_file = None if args.lm.lower() == "none" else resolve_lm_path(args.lm)
    settings = peers.Settings(PyctcdecodeOptions(lm_path=None if lm_file is None
                                                 else str(lm_file)), lm_file)
    data = load_real(root)
    rows = []
    for split, emissions in split_sets(root, data).items():
        audio = sum(len(e) for e in emissions) * FRAME_SHIFT_S
        row = [split, str(len(emissions)), f"{audio:.1f}"]
        for name in args.decoder:
            decode = peers.build(name, data.vocabulary, settings, 1)
            decode(emissions[:1])
            times = []
            for _ in range(2):
                start = time.perf_counter()
                decode(emissions)
                times.append(1000 * (time.perf_counter() - start))
            row.append(f"{times[0]:.1f} / {times[1]:.1f}")
        rows.append(row)
    header = ["split", "utts", "audio s", *(f"{d} ms (1st / 2nd)" for d in args.decoder)]
    print(Table(header, rows, align="<>>" + ">" * len(args.decoder)).text())
    print(f"\nLM: {lm_file or 'none'}; beam width and pruning: pyctcdecode's defaults, every "
          "decoder alike; each split decoded in one call by a fresh decoder warmed up on its "
          "first utterance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
