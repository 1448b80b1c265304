"""Shared fixtures. Real data lives in ../shared beside the repo (override with CTCLAB_SHARED)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_path(*parts: str) -> Path:
    """Path inside the shared real-data folder (may not exist)."""
    base = Path(os.environ.get("CTCLAB_SHARED", REPO_ROOT.parent / "shared"))
    return base.joinpath(*parts)


def require_shared(*parts: str) -> Path:
    """The shared path, or skip the calling test with a reason when it is absent."""
    path = shared_path(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path} (the ../shared folder beside the repo)")
    return path


@pytest.fixture(scope="session", autouse=True)
def isolated_cache_root(tmp_path_factory):
    """Point the ctclab cache root (emission caches, decompressed LMs) at a per-session temp
    folder, so tests neither read a user's caches nor leave files in ~/.cache/ctclab."""
    root = tmp_path_factory.mktemp("ctclab-cache")
    previous = os.environ.get("CTCLAB_CACHE_DIR")
    os.environ["CTCLAB_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("CTCLAB_CACHE_DIR", None)
    else:
        os.environ["CTCLAB_CACHE_DIR"] = previous


@pytest.fixture
def wav2vec2_vocab():
    from ctclab.decoders import Vocabulary

    return Vocabulary.wav2vec2_english()
