"""Every notebook in notebooks/ executes (nbclient, the venv's python3 kernel) on a tiny cache and
results folders made here: a decoder comparison, a beam-width sweep and an alpha/beta tuning run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from eval_fixtures import write_tiny_arpa, write_tiny_emissions

from ctclab.decoders import available_decoders
from ctclab.eval import run as run_mod
from ctclab.eval.analysis import (
    emission_stats,
    find_results_folders,
    open_cache,
    pareto_front,
    system_rows,
    tuning_trials,
)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
KERNEL_DIR = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "python3"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    emissions, lm = write_tiny_emissions(root), write_tiny_arpa(root / "tiny.arpa")
    cache, results = root / "cache", root / "results"
    lm_decoder = next(d for d in ("beam", "pyctcdecode")
                      if d in available_decoders())
    common = ["--import-emissions", str(emissions), "--cache-dir", str(cache), "--quiet",
              "--bootstrap", "100", "--split", "dev-a", "test-a"]
    run_mod.run([*common, "--decoder", "greedy", lm_decoder, "--lm", "none", str(lm),
                 "--out", str(results / "demo")])
    for width in (1, 4):
        run_mod.run([*common, "--decoder", lm_decoder, "--beam-width", str(width),
                     "--out", str(results / f"beam{width}")])
    run_mod.run([*common[:-2], "test-a", "--decoder", lm_decoder, "--lm", str(lm),
                 "--tune", "alpha", "beta", "--tune-split", "dev-a", "--tune-values",
                 "alpha=0,0.5", "beta=0,1", "--out", str(results / "tuned")])
    return {"cache": cache, "results": results}


def test_analysis_readers(made):
    rows = system_rows(made["results"])
    assert {r.summary.system for r in rows} >= {"greedy"}
    assert sorted({r.beam_width for r in rows if r.beam_width}) >= [1, 4]
    trials = tuning_trials(made["results"])
    assert len(trials) == 4 and {(t.alpha, t.beta) for t in trials} == {
        (0.0, 0.0), (0.0, 1.0), (0.5, 0.0), (0.5, 1.0)}
    cache = open_cache(made["cache"])
    stats = emission_stats(cache)
    assert len(stats) == len(cache)
    # The synthetic emissions: each character 2 frames, then a blank (plus one leading blank).
    for s in stats:
        chars = (s.frames - 1) // 3
        assert s.blank_ratio == pytest.approx((chars + 1) / s.frames)
        assert 0.8 < s.peakiness <= 1.0


def test_no_results_folder_names_the_fix(tmp_path):
    for root in (tmp_path, tmp_path / "missing"):      # empty, and absent
        with pytest.raises(FileNotFoundError, match="eval/run.py --out"):
            find_results_folders(root)


def test_pareto_front():
    points = [(1.0, 0.10), (2.0, 0.08), (3.0, 0.09), (0.5, 0.20), (4.0, 0.05)]
    assert pareto_front(points) == [3, 0, 1, 4]


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(notebook, made, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    assert KERNEL_DIR.is_dir(), f"the venv's ipykernel kernelspec is missing: {KERNEL_DIR} " \
                                "(pip install ipykernel into the venv)"
    book = nbformat.read(notebook, as_version=4)
    assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code"), \
        f"{notebook.name} has committed outputs; strip them"
    monkeypatch.setenv("CTCLAB_RESULTS", str(made["results"]))
    cache_dir = next(p.parent for p in made["cache"].rglob("meta.json") if "dev-a" in str(p))
    monkeypatch.setenv("CTCLAB_CACHE", str(cache_dir))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend makes PNGs
    client = NotebookClient(book, kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()
    text = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "Error" not in text
    if notebook.stem == "emission_statistics":   # the results of the same cache were joined
        assert "corr(confidence, WER)" in text
    images = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{notebook.name} drew no plot"
