"""Where eval finds the emission caches it decodes: found under a cache root, imported, or made
by the emission stage; and a cache opened by path for the notebooks.

    open_split_cache(args, "test-clean")   # eval/run.py's arguments -> EmissionCache
    find_cache(root, model, split)         # the complete cache of model/split under root, or None
    open_cache(path)                       # a cache folder, or the first complete one below a root

(Kept together here so that the emission stage's own discovery API can replace them in one place.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ctclab.emission.cache import EmissionCache, default_cache_root, slug
from ctclab.emission.importer import import_emissions


def find_cache(root: Path, model: str, split: str, source: str | None = None,
               revision: str | None = None) -> Path | None:
    """The complete cache of ``model`` for ``split`` under ``root`` (any revision/source unless
    ``revision``/``source`` is given: a revision matches the recorded commit or its folder name);
    ValueError when several match."""
    model_dir = Path(root) / slug(model)
    if not model_dir.is_dir():
        return None
    pattern = f"*/{slug(source) if source else '*'}/{slug(split)}/meta.json"
    found = sorted(p.parent for p in model_dir.glob(pattern))
    complete = [p for p in found if _is_complete(p)]
    if revision:  # the folder of that revision, else caches whose meta records it (a commit)
        complete = ([p for p in complete if p.parent.parent.name == slug(revision)]
                    or [p for p in complete if EmissionCache.open(p).meta.revision == revision])
    if len(complete) > 1:
        raise ValueError(f"several caches of {model} / {split} under {root}: "
                         f"{[str(p) for p in complete]}; choose one with --revision or --source")
    return complete[0] if complete else None


def _is_complete(path: Path) -> bool:
    try:
        return EmissionCache.open(path).is_complete
    except (FileNotFoundError, ValueError):
        return False


def open_split_cache(args: argparse.Namespace, split: str) -> EmissionCache:
    """The emission cache of ``split``: imported (--import-emissions), found, or made by the
    emission stage (--data-dir / --manifest / --source hf); else an error naming the command."""
    root = Path(args.cache_dir) if args.cache_dir else default_cache_root()
    if args.import_emissions:
        return import_emissions(args.import_emissions, root, split=split, model=args.model)
    if not args.model:
        raise ValueError("say which emissions to decode: --model NAME (cached or to emit) or "
                         "--import-emissions DIR")
    path = find_cache(root, args.model, split, args.source, args.revision)
    if path is not None:
        return EmissionCache.open(path)
    if args.data_dir or args.manifest or args.source == "hf":
        return emit_split(args, split, root)
    raise FileNotFoundError(
        f"no emission cache for model {args.model!r}, split {split!r} under {root}. Make it with:\n"
        f"  python eval/emit.py --model {args.model} --split {split} --data-dir DIR "
        f"--cache-dir {root}\nor re-run this command with --data-dir DIR (LibriSpeech folder) / "
        "--manifest FILE, or with --import-emissions DIR for emissions made elsewhere")


def emit_split(args: argparse.Namespace, split: str, root: Path) -> EmissionCache:
    """Run the acoustic model over the split's audio (eval.extract) and return the new cache."""
    from ctclab.emission.audio_sources import open_source
    from ctclab.emission.extract import extract
    from ctclab.emission.models import load_ctc_model

    source_name = args.source or ("manifest" if args.manifest else "openslr")
    source = open_source(source_name, split, data_dir=args.data_dir, manifest=args.manifest)
    print(f"[emit] no cache for {args.model} / {split}: running the model over {source_name} audio")
    model = load_ctc_model(args.model, revision=args.revision)
    cache, _ = extract(model, source, root)
    return cache


def open_cache(path: str | Path) -> EmissionCache:
    """A cache directory, or the first (sorted by path) complete cache below a cache root."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return EmissionCache.open(path)
    if not path.exists():
        raise FileNotFoundError(f"cache path {path} does not exist; make one with eval/emit.py "
                                "or eval/run.py --import-emissions DIR")
    found = sorted(p.parent for p in path.rglob("meta.json")
                   if json.loads(p.read_text("utf-8")).get("complete"))
    if not found:
        raise FileNotFoundError(f"no complete emission cache under {path}")
    return EmissionCache.open(found[0])
