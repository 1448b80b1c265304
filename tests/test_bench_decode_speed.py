"""bench/decode_speed.py runs end to end as a script (tiny synthetic sets) with sane figures."""
from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import REPO_ROOT


def test_decode_speed_script_on_tiny_synthetic_sets(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [sys.executable, "bench/decode_speed.py", "--inputs", "peaky", "random", "--lm", "none",
           "--peaky-utterances", "4", "--random-utterances", "1", "--repeat", "1",
           "--beam-width", "8", "--decoder", "beam", "pyctcdecode", "ctc-beam-decoder", "greedy",
           "--out", str(out), "--quiet"]
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "x pyctc" in run.stdout and "ctc-beam-decoder" in run.stdout
    results = {(r["inputs"], r["decoder"]): r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {(i, d) for i in ("peaky", "random")
                            for d in ("beam", "pyctcdecode", "ctc-beam-decoder", "greedy")}
    for r in results.values():
        assert not r["error"] and r["ms_per_audio_s"] > 0 and r["utterances"] >= 1
    ref = results[("peaky", "pyctcdecode")]
    assert ref["speed_vs_pyctcdecode"] == 1.0 and ref["agreement"] == 1.0
    assert ref["delta_ln_p"] == 0.0
    # synthetic peaky words are spelled clearly: the beam searches get them all right
    assert ref["wer"] == 0.0 and results[("peaky", "beam")]["wer"] == 0.0
    assert results[("peaky", "beam")]["agreement"] == 1.0
    assert all(math.isfinite(r["delta_ln_p"]) for r in results.values())
    assert math.isnan(results[("random", "greedy")]["wer"])   # no references for random logits
