"""Shared fixtures. Real data lives in ../shared beside the repo (override with CTCLAB_SHARED)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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


def _registry():
    """ctclab.decoders.base, with every decoder registered (importing ctclab.decoders does it)."""
    import ctclab.decoders  # noqa: F401
    from ctclab.decoders import base

    return base


def needs_decoder(name: str) -> pytest.MarkDecorator:
    """Mark: skip, with the reason and the install command, where decoder ``name``'s optional
    package is missing (pyctcdecode: the numpy-2 environment, .venv-np2, has none)."""
    missing = _registry().missing_requirement(name)
    return pytest.mark.skipif(missing is not None, reason=f"optional extra missing: {missing}")


# The tests of the pyctcdecode adapter and of what compares with it.
needs_pyctcdecode = needs_decoder("pyctcdecode")


def decoder_params(names: list[str] | None = None) -> list:
    """pytest params over decoder ``names`` (default: every registered one), each marked with
    needs_decoder, so one whose optional package is missing skips with the reason."""
    return [pytest.param(name, marks=needs_decoder(name))
            for name in (names if names is not None else _registry().registered_decoders())]


@contextmanager
def torch_on_one_thread() -> Iterator[None]:
    """torch on one CPU thread inside the block, the previous count restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny torch models on one thread, restoring the count after. They are
    tiny: on a shared 2-core machine two torch threads mostly wait for each other. Measured on
    test_extract, test_emission_stage, test_emit_cli, test_model_tokenizer and the model test of
    test_run_e2e, 4 runs each alternated: one thread 17.5-24.9 s (median 18.2), two 22.2-37.6 s
    (median 31.4), pytest's own times. Modules use it with ``pytestmark``, so it is set before
    their module-scoped model fixtures."""
    with torch_on_one_thread():
        yield


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


@pytest.fixture(scope="session")
def analysis_results(tmp_path_factory):
    """Tiny results folders of every kind the notebooks read (eval/analysis.py's readers): a
    decoder comparison; a beam-width sweep (widths 1 and 4, no LM) beside a hard-lexicon run at
    width 4 with the LM; two alpha/beta tuning runs on different dev splits; a 4-best run with
    word confidence calibrated on dev-a. {"cache", "results", "lm", "decoder"}."""
    from eval_fixtures import write_tiny_arpa, write_tiny_emissions

    from ctclab.eval import run as run_mod

    root = tmp_path_factory.mktemp("analysis")
    emissions, lm = write_tiny_emissions(root), write_tiny_arpa(root / "tiny.arpa")
    cache, results = root / "cache", root / "results"
    common = ["--import-emissions", str(emissions), "--cache-dir", str(cache), "--quiet",
              "--bootstrap", "100"]
    both = [*common, "--split", "dev-a", "test-a"]
    run_mod.run([*both, "--decoder", "greedy", "beam", "--lm", "none", str(lm),
                 "--out", str(results / "demo")])
    for width in (1, 4):
        run_mod.run([*both, "--decoder", "beam", "--beam-width", str(width),
                     "--out", str(results / f"beam{width}")])
    run_mod.run([*both, "--decoder", "beam", "--lm", str(lm), "--lexicon-mode", "hard",
                 "--beam-width", "4", "--out", str(results / "hard4")])
    for name, split in (("tuned", "dev-a"), ("tuned-b", "dev-b")):
        run_mod.run([*common, "--split", "test-a", "--decoder", "beam", "--lm", str(lm),
                     "--tune", "alpha", "beta", "--tune-split", split, "--tune-values",
                     "alpha=0,0.5", "beta=0,1", "--out", str(results / name)])
    run_mod.run([*common, "--split", "test-a", "dev-a", "--decoder", "greedy", "beam", "--lm",
                 "none", str(lm), "--nbest", "4", "--calibrate-split", "dev-a",
                 "--out", str(results / "confidence")])
    return {"cache": cache, "results": results, "lm": lm}


@pytest.fixture(autouse=True)
def _one_torch_thread_for_torch_backend_tests(request):
    """Tests parametrised onto the beam's torch backend (a parameter value naming torch) run it
    with one CPU thread: torch's small operations spin-wait for their worker threads, which on a
    shared, loaded machine turns microseconds into milliseconds. The setting is restored after."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or not any("torch" in str(v) for v in callspec.params.values()):
        yield
        return
    with torch_on_one_thread():
        yield
