"""Where ctclab keeps what it makes: one cache root for emission caches and LM files."""
from __future__ import annotations

import os
from pathlib import Path

# Environment variable that moves the cache root (emission caches under it, LMs under <root>/lm).
CACHE_DIR_ENV = "CTCLAB_CACHE_DIR"


def default_cache_root() -> Path:
    """The ctclab cache root (emission caches and LM files): ``$CTCLAB_CACHE_DIR``, else
    ``ctclab`` under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ctclab"
