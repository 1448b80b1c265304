"""bench/ab_trees.py's export: a revision's packages importable under another name beside
ctclab, decoding as ctclab does (what makes its in-process A/B a comparison of code)."""
from __future__ import annotations

import importlib
import sys
import types

import numpy as np
from conftest import REPO_ROOT
from decoding_fixtures import quartznet_vocab, random_peaky

from ctclab.decoders import create_decoder


def test_an_exported_tree_imports_under_its_own_name_and_decodes_alike(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    ab_trees = importlib.import_module("ab_trees")
    ab_trees.export(".", tmp_path, "ctclab_t")
    try:
        beam = importlib.import_module("ctclab_t.decoders.beam")
        # every import inside the copy points at the copy
        assert beam.BatchSearch.__module__ == "ctclab_t.decoders.beam_search"
        modules = [v.__name__ for v in vars(beam).values() if isinstance(v, types.ModuleType)]
        assert "ctclab_t.decoders.constants" in modules
        assert not [m for m in modules if m.startswith("ctclab.")]
        vocab = quartznet_vocab()
        theirs = ab_trees.decoder("ctclab_t", vocab, None)
        assert type(theirs).__module__ == "ctclab_t.decoders.beam"
        rng = np.random.default_rng(0)
        xs = [random_peaky(rng, 50, vocab.size, vocab.blank) for _ in range(6)]
        ours = create_decoder("beam", vocab, unknown_prefix_penalty=-10.0)
        assert [h.text for h in theirs.decode_many(xs)] == [h.text for h in ours.decode_many(xs)]
    finally:
        for name in [m for m in sys.modules if m == "ctclab_t" or m.startswith("ctclab_t.")]:
            del sys.modules[name]
