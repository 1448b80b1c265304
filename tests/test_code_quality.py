"""The habits a maintainer expects, checked by the test suite (so .ci/run checks them): ruff with
E, F, I, B, UP, W clean over the whole repo, and mypy clean over the ctclab packages."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from test_layout import ALLOWED


def _tool(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e .[dev] installs it)")


def test_ruff_is_clean():
    _tool("ruff")
    exe = shutil.which("ruff", path=os.path.dirname(sys.executable)) or "ruff"
    run = subprocess.run([exe, "check", "--no-cache", "."], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_mypy_is_clean(tmp_path):
    """mypy over the installed names. The packages are mapped from top-level folders by an import
    hook that mypy cannot follow, so it reads them through a tree of links named like the
    installed packages (ctclab/decoders -> decoders/ ...)."""
    _tool("mypy")
    tree = tmp_path / "ctclab"
    tree.mkdir()
    for package in ALLOWED:
        (tree / package).symlink_to(REPO_ROOT / package, target_is_directory=True)
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO_ROOT / "pyproject.toml"),
         # one cache per environment: .venv and .venv-np2 see different numpy stubs
         "--cache-dir", str(REPO_ROOT / ".mypy_cache" / os.path.basename(sys.prefix)),
         "--namespace-packages",
         "--explicit-package-bases", "-p", "ctclab"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
