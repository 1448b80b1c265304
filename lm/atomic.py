"""Atomic publication of finished files: write to a temp file beside the target, then rename."""
from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, dest: str | os.PathLike, mode: int = 0o666) -> Path:
    """Give ``tmp`` the usual permissions (``mode`` minus the umask; mkstemp makes 0600) and
    rename it onto ``dest`` in one step, so readers see the whole old or the whole new file."""
    os.chmod(tmp, mode & ~_umask())
    os.replace(tmp, dest)
    return Path(dest)
