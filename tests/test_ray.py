"""ctclab on a Ray cluster (issue #14), on a local cluster of 2 CPUs shared by the whole module:
emission by CPU workers (the one-worker-per-GPU path with num_gpus=0), decoding and tuning, each
equal to the single-process result, and workers killed mid-run without loss or duplicates.
Skipped when Ray is not installed (pip install -e .[ray])."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from conftest import torch_on_one_thread
from eval_fixtures import write_tiny_arpa, write_tiny_emissions
from fixtures_audio import make_openslr_corpus, make_tiny_model

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e .[ray])")

from ctclab.cluster.connection import RayOptions, open_cluster  # noqa: E402
from ctclab.cluster.workers import Worker  # noqa: E402
from ctclab.emission import distributed  # noqa: E402
from ctclab.emission.distributed import EmissionWorkers  # noqa: E402
from ctclab.emission.options import EmissionSpec, ExtractOptions, SourceOptions  # noqa: E402
from ctclab.emission.stage import open_emissions  # noqa: E402
from ctclab.eval import distributed_decode  # noqa: E402
from ctclab.eval import run as run_mod  # noqa: E402
from ctclab.eval.results import ResultsFolder  # noqa: E402

LOCAL = RayOptions(ray="local", ray_workers=2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray instance (2 CPUs, no GPU) for the module; the code under test finds it
    (open_cluster keeps a connection the process already has)."""
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
             object_store_memory=80 * 2**20,
             logging_level="warning")
    logs = tmp_path_factory.mktemp("ray-logs")
    with open_cluster(LOCAL, logs) as connected:
        yield connected
    ray.shutdown()


def _our_actors() -> list[str]:
    """Our live actors, every driver's (each has its own namespace)."""
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("ctclab-")]


def _no_actors_left() -> bool:
    deadline = time.monotonic() + 20
    while _our_actors() and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _our_actors()


# ----------------------------------------------------------------------------- emission
@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-emit")
    corpus = make_openslr_corpus(root / "data", "dev-x", num_utterances=14, seconds=(0.4, 1.6))
    return {"model": make_tiny_model(root / "model"), "data": corpus.root, "corpus": corpus}


def _spec(audio, cache: Path) -> EmissionSpec:
    # Short batches: many of them, so work is spread and a kill lands mid-run.
    return EmissionSpec(model=str(audio["model"]), cache_dir=str(cache),
                        audio=SourceOptions(data_dir=str(audio["data"])),
                        extract=ExtractOptions(device="cpu", batch_seconds=1.0, skip_bad=True,
                                               loader_threads=1))


def _files(cache_dir: Path) -> dict[str, bytes]:
    """Every file of a cache (meta.json without its creation time), for an exact comparison."""
    out = {}
    for path in sorted(cache_dir.rglob("*")):
        if path.is_file() and path.name != ".lock":
            data = path.read_bytes()
            if path.name == "meta.json":
                meta = json.loads(data)
                meta.pop("created")
                data = json.dumps(meta, sort_keys=True).encode()
            out[str(path.relative_to(cache_dir))] = data
    return out


@pytest.fixture(scope="module")
def reference(audio, tmp_path_factory):
    """The single-process cache, computed with one torch thread: the workers hold one CPU each,
    and equal bytes need the same kernels."""
    with one_thread():
        result = open_emissions(_spec(audio, tmp_path_factory.mktemp("one")), "dev-x",
                                progress=False)
    assert len(result.cache.skipped) == 2 and len(result.cache) == 15  # the corrupt, empty files
    assert len({r.shard for r in result.cache.records}) > 6          # many batches
    return result.cache.path, _files(result.cache.path)


class TestEmission:
    """Two emission workers shared by these tests (closed after them: the decoding tests need
    the CPUs)."""

    @pytest.fixture(scope="class")
    @classmethod
    def emitters(cls, cluster):
        workers = EmissionWorkers(cluster, LOCAL)
        yield workers
        workers.close()

    def test_on_workers_equals_a_single_process_run(self, cluster, audio, reference, emitters,
                                                    tmp_path):
        check_equal_run(cluster, audio, reference, emitters, tmp_path)

    def test_a_killed_worker_and_an_interrupted_run_lose_nothing(self, audio, reference,
                                                                 emitters, tmp_path, capsys,
                                                                 monkeypatch):
        check_kill_and_resume(audio, reference, emitters, tmp_path, capsys, monkeypatch)


def check_equal_run(cluster, audio, reference, emitters, tmp_path):
    result = open_emissions(_spec(audio, tmp_path), "dev-x", progress=False, workers=emitters)
    assert result.action == "computed" and result.device == "ray 2x cpu"
    assert _files(result.cache.path) == reference[1]       # shards, manifest, source, skipped
    logs = {p.name for p in cluster.logs.glob("emit-*.log")}
    assert {"emit-0.log", "emit-1.log"} <= logs
    assert "dev-x: batches" in (cluster.logs / "emit-0.log").read_text() + \
        (cluster.logs / "emit-1.log").read_text()


def check_kill_and_resume(audio, reference, emitters, tmp_path, capsys, monkeypatch):
    killed = []

    def kill_one(n: int) -> None:   # after the first committed batch: SIGKILL a worker
        if not killed:
            victim = emitters.ready_workers()[-1]
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(victim.pid)

    # One batch per job: at the first commit most jobs still wait, so the victim has work.
    monkeypatch.setattr(distributed, "BATCHES_PER_JOB", 1)
    result = open_emissions(_spec(audio, tmp_path / "k"), "dev-x", progress=False,
                            workers=emitters, on_batch=kill_one)
    monkeypatch.undo()
    assert killed and "died" in capsys.readouterr().err
    assert _files(result.cache.path) == reference[1]       # nothing lost, nothing twice

    # A single-process run killed after 3 batches, resumed by the workers; then a run on the
    # workers interrupted after 2 batches (its workers are stopped, its staged files removed),
    # resumed by a single process. Commits go in plan order, so what is left is the plan's
    # tail: either way the cache is the uninterrupted one.
    for first, then in ((None, emitters), (emitters, None)):
        folder = tmp_path / ("i1" if first is None else "i2")
        with pytest.raises(KeyboardInterrupt), one_thread():
            open_emissions(_spec(audio, folder), "dev-x", progress=False, workers=first,
                           on_batch=interrupt_after(3 if first is None else 2))
        if first is not None:
            assert not list(folder.rglob("*.tmp")) and _no_actors_left()
        with one_thread():
            resumed = open_emissions(_spec(audio, folder), "dev-x", progress=False,
                                     workers=then)
        assert resumed.action == "resumed"
        assert _files(resumed.cache.path) == reference[1]


def interrupt_after(batches: int):
    seen = []

    def interrupt(n: int) -> None:
        seen.append(n)
        if len(seen) == batches:
            raise KeyboardInterrupt

    return interrupt


def one_thread() -> AbstractContextManager[None]:
    """torch on one thread here, like the workers (one CPU each): the same kernels, equal
    bytes."""
    return torch_on_one_thread()


def test_a_worker_that_cannot_load_the_model_is_a_clean_error(audio, cluster, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    spec = EmissionSpec(model=str(broken), cache_dir=str(tmp_path / "c"),
                        audio=SourceOptions(data_dir=str(audio["data"])),
                        extract=ExtractOptions(device="cpu", skip_bad=True))
    workers = EmissionWorkers(cluster, RayOptions(ray="local", ray_workers=1))
    try:
        with pytest.raises((ValueError, OSError)) as caught:
            open_emissions(spec, "dev-x", progress=False, workers=workers)
    finally:
        workers.close()
    assert "emit worker 0 failed to start" in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_a_killed_driver_leaves_no_worker_behind(cluster, tmp_path):
    """The workers are not detached actors: when their driver dies (SIGKILL: no cleanup runs),
    Ray ends them with it, so a lost eval/run.py or eval/emit.py orphans nothing."""
    driver = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from ctclab.cluster.connection import RayOptions, open_cluster
        from ctclab.cluster.workers import Worker

        class Idle(Worker):
            def run(self, x):
                return x

        options = RayOptions(ray={ray.get_runtime_context().gcs_address!r})
        with open_cluster(options, Path({str(tmp_path)!r})) as cluster:
            cluster.workers(Idle, role="orphan", count=2, num_cpus=1).wait_ready()
            print("ready", flush=True)
            time.sleep(300)
    """)
    child = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        logs = sorted(tmp_path.glob("orphan-*.log"))
        pids = {int(m) for log in logs for m in re.findall(r" pid (\d+):", log.read_text())}
        assert logs and len(pids) == len(logs) and len(_our_actors()) == 2   # one may be starting
    finally:
        child.kill()
        child.wait()
    assert _no_actors_left()
    deadline = time.monotonic() + 20
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_running(pid) for pid in pids)


def test_a_closed_pool_has_stopped_writing_when_close_returns(cluster, tmp_path):
    """Ray kills actors asynchronously: a killed worker's process ran on (and wrote files) after
    Ray reported it dead. WorkerPool.close() waits until its workers on this node have exited,
    so a worker that was writing has stopped by the time close() returns."""

    class Scribbler(Worker):
        def start(self, folder: str) -> int:
            def scribble() -> None:
                for k in range(100_000):   # bounded
                    Path(folder, f"{os.getpid()}-{k:06d}").write_bytes(b"x")
                    time.sleep(0.0005)

            threading.Thread(target=scribble, daemon=True).start()
            return os.getpid()

    pool = cluster.workers(Scribbler, role="scribble", count=2, num_cpus=1)
    try:
        pids = pool.broadcast(lambda actor: actor.start.remote(str(tmp_path)))
        assert pids
        deadline = time.monotonic() + 30
        while not all(any(tmp_path.glob(f"{pid}-*")) for pid in pids):
            assert time.monotonic() < deadline, "the workers did not start writing"
            time.sleep(0.05)
    finally:
        pool.close()
    assert not any(_running(pid) for pid in pids)
    written = len(list(tmp_path.iterdir()))
    time.sleep(0.5)
    assert len(list(tmp_path.iterdir())) == written


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed and not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------- decoding, tuning
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-decode")
    return {"emissions": write_tiny_emissions(root), "cache": root / "cache",
            "lm": write_tiny_arpa(root / "tiny.arpa")}


def _run(tiny, out: Path, *extra: str):
    return run_mod.run(["--import-emissions", str(tiny["emissions"]), "--cache-dir",
                        str(tiny["cache"]), "--out", str(out), "--quiet", "--bootstrap", "0",
                        *extra])


def _hyps(out: Path, split: str, system: str) -> list[tuple]:
    return [(r.id, r.hyp, r.score, r.substitutions, r.deletions, r.insertions)
            for r in ResultsFolder(out).read_utterances(split, system)]


def test_decoding_and_tuning_on_workers_equal_a_single_process_run(cluster, tiny, tmp_path,
                                                                   capsys):
    lm = str(tiny["lm"])
    # A grid whose points differ in WER (a word penalty deletes words), with ties between others.
    args = ["--decoder", "greedy", "beam", "--lm", "none", lm, "--beam-width", "8",
            "--split", "dev-a", "test-a", "--tune", "alpha", "beta", "--tune-split", "dev-a",
            "dev-b", "--tune-values", "alpha=0,1,4", "beta=-8,0,2"]
    one = _run(tiny, tmp_path / "one", *args)
    two = _run(tiny, tmp_path / "two", *args, "--ray", "local", "--ray-workers", "2")
    printed = capsys.readouterr()
    p1, p2 = (json.loads((tmp_path / d / "params.json").read_text()) for d in ("one", "two"))
    assert p1["trials"] == p2["trials"] and p1["systems"] == p2["systems"]
    wers = [t["wer"] for t in p1["trials"]["beam+tiny"]]
    assert len(set(wers)) > 1 and wers.count(min(wers)) > 1   # the tie-break is tested too
    assert [(s.split, s.system, s.wer, s.cer) for s in one.systems] == \
        [(s.split, s.system, s.wer, s.cer) for s in two.systems]
    for split in ("dev-a", "test-a"):
        for system in ("greedy", "beam", "beam+tiny"):
            assert _hyps(tmp_path / "one", split, system) == _hyps(tmp_path / "two", split, system)
    assert "[ray] starting 2 decode workers" in printed.err
    # one log per worker that started (on a loaded machine a worker may still be starting when
    # the other has done every chunk, and the pool closes before it writes a line)
    assert sorted((tmp_path / "two" / "ray-logs").glob("decode-*.log"))
    assert _no_actors_left()


def test_a_killed_decoding_worker_loses_no_utterance(cluster, tiny, tmp_path, monkeypatch):
    from ctclab.emission.cache import EmissionCache
    from ctclab.eval.distributed_decode import RayDecoderFactory
    from ctclab.eval.systems import DecoderFactory, build_systems

    _run(tiny, tmp_path / "warm", "--decoder", "greedy", "--split", "dev-a")  # imports the cache
    settings = json.loads((tmp_path / "warm" / "settings.json").read_text())
    cache = EmissionCache.open(settings["splits"]["dev-a"]["cache"])
    records = cache.records * 8                                    # 32 utterances, 8 chunks
    (system,) = build_systems(["beam"], [str(tiny["lm"])], {"beam_width": 8})
    local, _ = DecoderFactory().build(system, cache.meta.vocabulary, cache.frame_shift_s)
    expected = local.decode_many([cache.log_probs(r.id) for r in records])
    factory = RayDecoderFactory(cluster, LOCAL)
    try:
        remote, _ = factory.build(system, cache.meta.vocabulary, cache.frame_shift_s)
        monkeypatch.setattr(distributed_decode, "JOB_AUDIO_SECONDS", 0.0)  # a job per chunk
        got = []
        for number, (part, hyps, _) in enumerate(remote.decode_chunks(cache, records, 4)):
            assert [r.id for r in part] == [r.id for r in records[4 * number:4 * number + 4]]
            got += hyps
            if number == 0:
                os.kill(factory.pool().ready_workers[-1].pid, signal.SIGKILL)
        assert [(h.text, h.score) for h in got] == [(h.text, h.score) for h in expected]
        usage = factory.usage()   # the survivors' share
        assert sum(u["audio_seconds"] for u in usage) > 0 and all(u["peak_rss"] > 0 for u in usage)
    finally:
        factory.pool().close()


def test_optuna_tuning_on_workers_tries_the_points_of_the_local_search(cluster, tiny, tmp_path):
    """--tune-method optuna on Ray Tune (OptunaSearch, seed 0) against the local optuna search:
    TPE's first 10 trials are its seeded random start-up, so both propose the same points
    whichever Ray trial finishes first, and score them alike."""
    pytest.importorskip("optuna", reason="optuna is not installed (pip install -e .[ray])")
    args = ["--decoder", "beam", "--lm", str(tiny["lm"]), "--beam-width", "8", "--split",
            "dev-a", "--tune", "alpha", "beta", "--tune-split", "dev-a", "dev-b",
            "--tune-values", "alpha=0,4", "beta=-12,2", "--tune-method", "optuna",
            "--tune-trials", "4"]
    _run(tiny, tmp_path / "one", *args)
    _run(tiny, tmp_path / "two", *args, "--ray", "local", "--ray-workers", "2")
    p1, p2 = (json.loads((tmp_path / d / "params.json").read_text()) for d in ("one", "two"))
    trials = p2["trials"]["beam+tiny"]
    assert p2["method"] == "optuna" and len(trials) == 4
    assert all(0 <= t["params"]["alpha"] <= 4 and -12 <= t["params"]["beta"] <= 2
               for t in trials)
    assert p1["trials"] == p2["trials"] and p1["systems"] == p2["systems"]
    assert (tmp_path / "two" / "ray-tune").is_dir() and _no_actors_left()


def test_jobs_with_ray_and_optuna_without_it_are_refused(cluster, tiny, tmp_path, capsys,
                                                         monkeypatch):
    common = ["--import-emissions", str(tiny["emissions"]), "--cache-dir", str(tiny["cache"]),
              "--split", "dev-a", "--ray", "local"]
    code = run_mod.main([*common, "--out", str(tmp_path / "x"), "--jobs", "2"])
    assert code == 2 and "--ray-workers" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "optuna", None)   # `import optuna` fails, as if missing
    code = run_mod.main([*common, "--out", str(tmp_path / "y"), "--decoder", "beam", "--lm",
                         str(tiny["lm"]), "--tune", "alpha", "--tune-split", "dev-a",
                         "--tune-method", "optuna"])
    assert code == 2 and "pip install optuna" in capsys.readouterr().err


def test_a_gpu_search_on_cpu_workers_is_refused_before_any_starts(cluster, tiny, tmp_path,
                                                                  capsys):
    from ctclab.eval.distributed_decode import RayDecoderFactory
    from ctclab.eval.systems import build_systems

    (system,) = build_systems(["beam"], [None], {"beam_width": 8, "device": "cuda:1"})
    factory = RayDecoderFactory(cluster, LOCAL)
    with pytest.raises(ValueError, match="--device auto"):
        factory.build(system, {}, 0.02)
    assert factory._pool is None                        # no worker was started for it
    code = run_mod.main(["--import-emissions", str(tiny["emissions"]), "--cache-dir",
                         str(tiny["cache"]), "--out", str(tmp_path / "o"), "--decoder", "beam",
                         "--split", "dev-a", "--device", "cuda", "--ray", "local"])
    err = capsys.readouterr().err
    assert code == 2 and "hold CPUs only" in err and "Traceback" not in err


def test_arrays_sent_to_workers_decode_like_here(cluster, tiny):
    """RemoteDecoder.decode_many (arrays shipped, for callers that hold them) equals a local
    decoder, in order."""
    from ctclab.core.vocabulary import Vocabulary
    from ctclab.eval.distributed_decode import RayDecoderFactory
    from ctclab.eval.systems import DecoderFactory, build_systems

    labels = json.loads((tiny["emissions"] / "labels.json").read_text())
    vocab = Vocabulary.from_labels(labels["labels"], blank=labels["blank_index"],
                                   delimiter=" ").to_dict()
    rng = np.random.default_rng(0)
    arrays = [np.log(rng.dirichlet(np.ones(len(labels["labels"])), size=n)).astype(np.float32)
              for n in (5, 30, 12, 1, 40)]
    (system,) = build_systems(["greedy"], [None], {})
    local, _ = DecoderFactory().build(system, vocab, 0.02)
    factory = RayDecoderFactory(cluster, LOCAL)
    try:
        remote, _ = factory.build(system, vocab, 0.02)
        assert [h.text for h in remote.decode_many(arrays)] == \
            [h.text for h in local.decode_many(arrays)]
        assert remote.decode(arrays[1]).text == local.decode(arrays[1]).text
    finally:
        factory.pool().close()
