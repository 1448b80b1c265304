"""Finding caches under a cache root (``<root>/<model>/<revision>/<source>/<split>/``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctclab.emission.cache import META_FILE, CacheMeta, EmissionCache, slug


def find_cache(root: str | Path, model: str, split: str, source: str | None = None,
               revision: str | None = None) -> Path | None:
    """The complete cache of ``model`` for ``split`` under ``root`` (any revision/source unless
    ``revision``/``source`` is given: a revision matches its folder name or the commit a cache
    records); None when there is none; ValueError when several match."""
    model_dir = Path(root) / slug(model)
    if not model_dir.is_dir():
        return None
    pattern = f"*/{slug(source) if source else '*'}/{slug(split)}/{META_FILE}"
    complete = []
    for path in sorted(p.parent for p in model_dir.glob(pattern)):
        try:
            meta = CacheMeta.read(path)
        except ValueError:  # a broken meta.json is not a cache to use
            continue
        if meta is not None and meta.complete:
            complete.append((path, meta))
    if revision:  # the folder of that revision, else caches whose meta records it (a commit)
        complete = ([(p, m) for p, m in complete if p.parent.parent.name == slug(revision)]
                    or [(p, m) for p, m in complete if m.revision == revision])
    if len(complete) > 1:
        raise ValueError(f"several caches of {model} / {split} under {root}: "
                         f"{[str(p) for p, _ in complete]}; choose one with --revision or --source")
    return complete[0][0] if complete else None


def open_cache(path: str | Path) -> EmissionCache:
    """A cache directory, or the first (sorted by path) complete cache below a cache root."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return EmissionCache.open(path)
    if not path.exists():
        raise FileNotFoundError(f"cache path {path} does not exist; make one with eval/emit.py "
                                "or eval/run.py --import-emissions DIR")
    for meta_file in sorted(path.rglob(META_FILE)):
        try:
            meta = CacheMeta.read(meta_file.parent)
        except ValueError:
            continue
        if meta is not None and meta.complete:
            return EmissionCache.open(meta_file.parent)
    raise FileNotFoundError(f"no complete emission cache under {path}")


@dataclass(frozen=True)
class CacheInfo:
    """One complete cache found under a root (what a notebook lists to choose from)."""

    path: Path
    model: str
    revision: str
    source: str
    split: str
    utterances: int


def list_caches(root: str | Path) -> list[CacheInfo]:
    """Every complete cache at or under ``root``, sorted by (model, split, path); [] for none.
    utterances: how many its manifest lists."""
    root = Path(root)
    found = []
    files = [root / META_FILE] if (root / META_FILE).is_file() else sorted(root.rglob(META_FILE))
    for meta_file in files:
        try:
            meta = CacheMeta.read(meta_file.parent)
        except ValueError:  # a broken meta.json is not a cache to use
            continue
        if meta is None or not meta.complete:
            continue
        found.append(CacheInfo(meta_file.parent, meta.model, meta.revision, meta.source,
                               meta.split, len(EmissionCache.open(meta_file.parent))))
    return sorted(found, key=lambda c: (c.model, c.split, str(c.path)))
