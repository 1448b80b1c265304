"""Every notebook in notebooks/ executes (nbclient, the venv's python3 kernel) on the tiny
results folders of conftest.analysis_results (a decoder comparison, a beam-width sweep, a
hard-lexicon run, two tuning runs, a run with word confidence), and, with only a decoder
comparison, says which command makes the data of each section it cannot draw."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ctclab.emission.locate import open_cache
from ctclab.eval.analysis import (
    MAKE_CONFIDENCE,
    MAKE_SWEEP,
    MAKE_TUNING,
    find_results_folders,
    pareto_front,
)
from ctclab.eval.utterance_analysis import emission_stats

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
KERNEL_DIR = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "python3"


def test_emission_stats(analysis_results):
    cache = open_cache(next(p.parent for p in analysis_results["cache"].rglob("meta.json")
                            if "dev-a" in str(p)))
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


def execute(notebook: Path, monkeypatch, env: dict[str, str]):
    """Run ``notebook`` with ``env``; (its text output, its images)."""
    import nbformat
    from nbclient import NotebookClient

    assert KERNEL_DIR.is_dir(), f"the venv's ipykernel kernelspec is missing: {KERNEL_DIR} " \
                                "(pip install ipykernel into the venv)"
    book = nbformat.read(notebook, as_version=4)
    assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code"), \
        f"{notebook.name} has committed outputs; strip them"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend makes PNGs
    client = NotebookClient(book, kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    return text, [o for o in outputs if "image/png" in o.get("data", {})]


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(notebook, analysis_results, monkeypatch):
    results = analysis_results["results"]
    env = {"CTCLAB_RESULTS": str(results), "CTCLAB_CACHE": str(analysis_results["cache"]),
           "CTCLAB_SPLIT": "dev-a", "CTCLAB_RUN": "confidence"}
    if notebook.stem == "emission_statistics":
        env["CTCLAB_RESULTS"] = str(results / "demo")
    text, images = execute(notebook, monkeypatch, env)
    assert "Error" not in text
    assert images, f"{notebook.name} drew no plot"
    expected = {
        # every figure present, each configuration labelled, the runs kept apart
        "decoder_comparison": ["beam + tiny (α 0.5, β 1.5), width 4, hard lexicon",
                               "2 tuning runs: ", "tuned (dev-a", "tuned-b (dev-b"],
        "emission_statistics": ["using tiny-ctc / dev-a: split dev-a (as asked)",
                                "corr(confidence, WER)", "groups of identical utterance errors"],
        "error_analysis": ["run confidence", "beam + tiny (α 0.5, β 1.5), width 100, soft "
                           "lexicon, 4-best"],
        "word_confidence": ["run confidence", "left out (calibrated on): dev-a"],
    }[notebook.stem]
    for line in expected:
        assert line in text
    if notebook.stem == "decoder_comparison":
        assert len(images) == 1 + 1 + 2   # comparison, sweep, one heatmap per tuning run


@pytest.mark.slow
def test_notebooks_after_command_1_say_what_to_run(analysis_results, monkeypatch):
    """Only a decoder comparison (what README command 1 makes): the sections without data
    print the command that makes it instead of drawing empty axes."""
    env = {"CTCLAB_RESULTS": str(analysis_results["results"] / "beam4")}
    text, images = execute(REPO / "notebooks" / "decoder_comparison.ipynb", monkeypatch, env)
    assert MAKE_SWEEP in text and MAKE_TUNING in text
    assert len(images) == 1          # the comparison only: no empty Pareto or heatmap axes
    text, images = execute(REPO / "notebooks" / "word_confidence.ipynb", monkeypatch, env)
    assert MAKE_CONFIDENCE in text and not images
