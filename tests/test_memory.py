"""core.memory: a process that keeps its freed memory does not page-fault the next batch's
arrays in again; a user's own allocator settings win.

Each case runs in a fresh interpreter: the setting is the whole process's."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ctclab.core import memory

# Four 8 MB arrays made and freed together, ten times: the freed 32 MB at the top of the heap is
# over glibc's dynamic trim threshold (twice the largest block freed), so by default it goes back
# to the system and the next round faults it in again.
PROBE = """
import json, resource, sys
import numpy as np
from ctclab.core.memory import keep_freed_memory
made = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(1_000_000) for _ in range(4)]
    del arrays
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"made": made, "faults": faults}))
"""


def probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if not (k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_arrays_are_reused_without_page_faults():
    default = probe("default")
    if sum(default["faults"][2:]) < 1000:
        pytest.skip("this C library keeps freed memory by itself (not glibc's defaults)")
    kept = probe("keep")
    assert kept["made"] is True
    # the first rounds grow the heap; after them nothing is faulted in again
    assert sum(kept["faults"][2:]) < 0.05 * sum(default["faults"][2:])


def test_a_users_own_settings_win(monkeypatch):
    for name, value in (("MALLOC_TRIM_THRESHOLD_", "131072"),
                        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")):
        with monkeypatch.context() as m:
            for k in list(os.environ):
                if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES":
                    m.delenv(k)
            m.setenv(name, value)
            assert memory.user_malloc_settings() == [name]
            assert memory.keep_freed_memory() is False
    if sys.platform.startswith("linux"):
        assert probe("keep", MALLOC_TRIM_THRESHOLD_="131072")["made"] is False


def test_gc_paused_pauses_the_collector_and_restores_it():
    """Inside, no cyclic collection runs however many containers are made; after it (also after
    an error) the collector is as it was: enabled, or still disabled when the caller had
    disabled it."""
    runs: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(count)
    try:
        assert gc.isenabled()
        with memory.gc_paused():
            assert not gc.isenabled()
            made = [[i] for i in range(100_000)]   # ~140 collections' worth of allocations
            assert runs == []
        assert gc.isenabled()
        made.clear()
        with pytest.raises(RuntimeError), memory.gc_paused():
            raise RuntimeError("the block failed")
        assert gc.isenabled()
        gc.disable()
        try:
            with memory.gc_paused():
                pass
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        gc.callbacks.remove(count)


def test_a_beam_batch_runs_without_cyclic_collections(monkeypatch):
    """The beam decoder builds a batch's results with the collector paused (its word objects
    cost ~3% of a test-clean-sized decode in collections), and leaves it enabled."""
    from decoding_fixtures import quartznet_vocab, random_peaky

    from ctclab.decoders import beam, create_decoder

    vocab = quartznet_vocab()
    rng = np.random.default_rng(0)
    emissions = [random_peaky(rng, 200, vocab.size, vocab.blank) for _ in range(40)]
    states: list[bool] = []
    search_run = beam.BatchSearch.run

    def spy(self):
        states.append(gc.isenabled())
        return search_run(self)

    monkeypatch.setattr(beam.BatchSearch, "run", spy)
    decoder = create_decoder("beam", vocab, batch_size=16)
    hyps = decoder.decode_many(emissions)
    assert states == [False, False, False] and gc.isenabled()
    assert len(hyps) == 40 and all(h.words for h in hyps if h.text)
