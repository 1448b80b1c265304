"""The environment the suite runs in is the one .ci/setup made: README's test command runs the suite
twice, in .venv (numpy 1.26 with pyctcdecode) and in .venv-np2 (numpy 2 without it), and this test
makes sure neither run is silently a copy of the other."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT

from ctclab.decoders import available_decoders

NUMPY_MAJOR = int(np.__version__.split(".")[0])


def test_environment_is_the_one_setup_made():
    here = Path(sys.prefix).resolve()
    has_pyctcdecode = importlib.util.find_spec("pyctcdecode") is not None
    if here == (REPO_ROOT / ".venv-np2").resolve():
        assert NUMPY_MAJOR >= 2, f"{here} must have numpy 2, has {np.__version__}"
        assert not has_pyctcdecode, f"{here} must not have pyctcdecode (it pins numpy<2)"
        assert "pyctcdecode" not in available_decoders()
    elif here == (REPO_ROOT / ".venv").resolve():
        assert NUMPY_MAJOR == 1, f"{here} must have numpy 1.x for pyctcdecode, has {np.__version__}"
        assert has_pyctcdecode, f"{here} must have pyctcdecode: bash .ci/setup installs it"
        assert "pyctcdecode" in available_decoders()
    else:
        pytest.skip(f"{here} is not one of .ci/setup's environments (.venv, .venv-np2)")


def test_every_module_imports_without_loading_pyctcdecode():
    """pyctcdecode is optional: no ctclab module imports it at import time (only the adapter does,
    when a pyctcdecode decoder is built), so everything imports where it is missing."""
    code = ("import importlib, pkgutil, sys\n"
            "for stage in ('core', 'emission', 'lm', 'decoders', 'eval'):\n"
            "    package = importlib.import_module('ctclab.' + stage)\n"
            "    for info in pkgutil.iter_modules(package.__path__):\n"
            "        importlib.import_module(f'ctclab.{stage}.{info.name}')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyctcdecode'))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]"
