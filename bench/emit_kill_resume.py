"""Fault injection for the emission cache: SIGKILL eval/emit.py at random moments, resume, and
check that the finished cache equals a clean run's.

    python bench/emit_kill_resume.py --utterances 150 --kills 30

Builds a tiny random wav2vec2 and a generated FLAC corpus (tests/fixtures_audio.py) in a temp
folder; float32 storage so that values compare within BATCH_TOLERANCE. Prints per kill what was
stored, then the final check: ids, values, no temp files left, every manifest line once.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ctclab.emission.cache import BATCH_TOLERANCE, EmissionCache

REPO = Path(__file__).resolve().parent.parent
# The tests' builders of a tiny random wav2vec2 and a FLAC corpus, loaded from their file.
_spec = importlib.util.spec_from_file_location("fixtures_audio", REPO / "tests" / "fixtures_audio.py")
assert _spec is not None and _spec.loader is not None
fixtures = sys.modules["fixtures_audio"] = importlib.util.module_from_spec(_spec)  # dataclasses
_spec.loader.exec_module(fixtures)
make_openslr_corpus, make_tiny_model = fixtures.make_openslr_corpus, fixtures.make_tiny_model


def emit_command(model: Path, data: Path, cache: Path) -> list[str]:
    return [sys.executable, str(REPO / "eval" / "emit.py"), "--model", str(model), "--split",
            "test-clean", "--data-dir", str(data), "--cache-dir", str(cache), "--device", "cpu",
            "--store-dtype", "float32", "--batch-seconds", "2", "--no-progress"]


def stored(cache_root: Path) -> int:
    metas = list(cache_root.rglob("meta.json"))
    if not metas:
        return 0
    return len(EmissionCache.open(metas[0].parent, allow_incomplete=True))


def manifest_lines(cache_root: Path) -> int:
    """Utterance lines in the manifest (cheap enough to poll)."""
    files = list(cache_root.rglob("manifest.tsv"))
    return files[0].read_text().count("\n") - 1 if files else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utterances", type=int, default=150)
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = make_tiny_model(tmp / "model")
        corpus = make_openslr_corpus(tmp / "data", num_utterances=args.utterances,
                                     seconds=(0.3, 1.2), stereo_8k=False, bad_files=False)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        subprocess.run(emit_command(model, corpus.root, tmp / "clean"), check=True, env=env,
                       capture_output=True)
        clean_s = time.perf_counter() - start
        print(f"clean run: {clean_s:.1f} s for {args.utterances} utterances")
        one = make_openslr_corpus(tmp / "one", num_utterances=1, stereo_8k=False,
                                  bad_files=False)
        start = time.perf_counter()
        subprocess.run(emit_command(model, one.root, tmp / "one-cache"), check=True, env=env,
                       capture_output=True)
        startup_s = time.perf_counter() - start  # imports and model load, nearly no work
        print(f"startup (1-utterance run): {startup_s:.1f} s")
        command = emit_command(model, corpus.root, tmp / "killed")
        kills = 0
        while kills < args.kills and stored(tmp / "killed") < args.utterances:
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            if rng.random() < 0.2:  # one kill in five lands in the imports or the model load
                time.sleep(rng.uniform(0.2, 0.9 * startup_s))
            else:  # the others once a few more utterances are stored, plus a bit (mid-batch)
                target = stored(tmp / "killed") + rng.randint(1, max(1, args.utterances // 20))
                while proc.poll() is None and manifest_lines(tmp / "killed") < target:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.5))
            if proc.poll() is not None:
                print("run finished before its kill")
                continue
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            print(f"kill {kills}: {stored(tmp / 'killed')} stored")
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        print(done.stdout.splitlines()[2] if done.returncode == 0 else done.stderr)
        clean = EmissionCache.open(next((tmp / "clean").rglob("meta.json")).parent)
        final = EmissionCache.open(next((tmp / "killed").rglob("meta.json")).parent)
        correct = sum(1 for utt in clean.ids if utt in final and np.abs(
            final.log_probs(utt) - clean.log_probs(utt)).max() <= BATCH_TOLERANCE)
        lines = (final.path / "manifest.tsv").read_text().splitlines()[1:]
        temps = [str(p) for p in final.path.rglob(".*.tmp")]
        print(f"result: {correct}/{len(clean)} utterances equal to the clean run "
              f"(within {BATCH_TOLERANCE}); manifest lines {len(lines)}, distinct ids "
              f"{len({ln.split(chr(9))[0] for ln in lines})}; temp files left: {len(temps)}")
        return 0 if correct == len(clean) == len(lines) and not temps else 1


if __name__ == "__main__":
    sys.exit(main())
