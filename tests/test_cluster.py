"""The Ray glue that needs no cluster: which workers the emission stage asks for (GPU selection),
where the address comes from, clear errors for an unreachable cluster, and no Ray without --ray.
The runs on a cluster are tests/test_ray.py."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from argparse import ArgumentParser

import pytest
from conftest import REPO_ROOT
from eval_fixtures import write_tiny_emissions

from ctclab.cluster.connection import RayOptions, check_reachable, forwarded_env, ray_options
from ctclab.core.options import add_option_flags
from ctclab.emission.distributed import MAX_CPUS_PER_GPU_WORKER, WorkerPlan, plan_workers


def test_one_emission_worker_per_gpu_and_cpu_workers_without_gpus():
    eight = {"CPU": 64.0, "GPU": 8.0}
    assert plan_workers(eight, "auto") == WorkerPlan(8, 8.0, 1.0, "cuda", 8)
    assert plan_workers(eight, "cuda", workers=3) == WorkerPlan(3, 8.0, 1.0, "cuda", 8)
    # CPUs per GPU worker: the node's share, at most MAX_CPUS_PER_GPU_WORKER, or as asked.
    assert plan_workers({"CPU": 16.0, "GPU": 8.0}, "auto").num_cpus == 2.0
    assert plan_workers({"CPU": 256.0, "GPU": 2.0}, "auto").num_cpus == MAX_CPUS_PER_GPU_WORKER
    assert plan_workers(eight, "auto", cpus=3).threads == 3
    # --device cpu on a GPU cluster, or no GPU at all: CPU workers, one per CPU by default.
    assert plan_workers(eight, "cpu") == WorkerPlan(64, 1.0, 0.0, "cpu", 1)
    assert plan_workers({"CPU": 2.0}, "auto") == WorkerPlan(2, 1.0, 0.0, "cpu", 1)
    assert plan_workers({"CPU": 8.0}, "auto", cpus=4) == WorkerPlan(2, 4.0, 0.0, "cpu", 4)
    assert plan_workers({"CPU": 8.0}, "cpu", workers=5).count == 5


@pytest.mark.parametrize(("resources", "device", "workers", "message"), [
    ({"CPU": 8.0}, "cuda", None, "has no GPU"),
    ({"CPU": 8.0, "GPU": 2.0}, "cuda:1", None, "each worker gets its own GPU"),
    ({"CPU": 8.0, "GPU": 2.0}, "mps", None, "each worker gets its own GPU"),
    ({"CPU": 8.0, "GPU": 2.0}, "auto", 3, "the cluster has 2 GPUs"),
])
def test_gpu_requests_a_cluster_cannot_meet_are_errors(resources, device, workers, message):
    with pytest.raises(ValueError, match=message):
        plan_workers(resources, device, workers)


def test_the_address_comes_from_the_flag_then_ray_address():
    parser = ArgumentParser()
    add_option_flags(parser, {"ray": RayOptions})
    env = {"RAY_ADDRESS": "head:6379"}
    assert ray_options(parser.parse_args([]), env={}).enabled is False
    assert ray_options(parser.parse_args([]), env=env).ray == "head:6379"
    assert ray_options(parser.parse_args(["--ray", "local"]), env=env).ray == "local"
    assert ray_options(parser.parse_args(["--ray", "none"]), env=env).enabled is False
    with pytest.raises(ValueError, match="--ray-workers"):
        ray_options(parser.parse_args(["--ray", "local", "--ray-workers", "0"]), env={})
    assert forwarded_env({"CTCLAB_CACHE_DIR": "/c", "HF_HOME": "/h", "PATH": "/bin"}) == {
        "CTCLAB_CACHE_DIR": "/c", "HF_HOME": "/h"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_is_a_clear_error_within_seconds(tmp_path, capsys):
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(RuntimeError, match=f"cannot reach the Ray cluster at {address}.*ray start"):
        check_reachable(address, timeout=2)
    check_reachable("auto")  # not a HOST:PORT: left to Ray
    from ctclab.eval.run import main

    code = main(["--import-emissions", str(write_tiny_emissions(tmp_path)), "--split", "dev-a",
                 "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "--quiet",
                 "--ray", address])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    try:
        import ray  # noqa: F401
    except ImportError:
        assert "pip install -e '.[ray]'" in err
    else:
        assert f"cannot reach the Ray cluster at {address}" in err


def test_without_ray_flag_ray_is_never_imported(tmp_path):
    emissions = write_tiny_emissions(tmp_path)
    common = ["--import-emissions", str(emissions), "--cache-dir", str(tmp_path / "c")]
    evaluate = [*common, "--split", "dev-a", "--quiet", "--out", str(tmp_path / "r")]
    script = (
        "import sys\n"
        "from ctclab.eval import emit, run\n"
        f"assert emit.main({[*common, '--split', 'dev-a', '--no-progress']!r}) == 0\n"
        f"assert run.main({evaluate!r}) == 0\n"
        "print('ray loaded:', 'ray' in sys.modules)\n"
        # With --ray but nothing left to do (the results are there): no connection, no Ray.
        f"assert run.main({[*evaluate, '--ray', '127.0.0.1:9']!r}) == 0\n"
        "print('ray loaded for a finished run:', 'ray' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray loaded: False" in done.stdout
    assert "ray loaded for a finished run: False" in done.stdout


def test_ray_missing_is_an_error_with_the_install_command(tmp_path, capsys, monkeypatch):
    """--ray where Ray is not installed (as in .venv-np2): an error line, not a traceback, once
    there is work for the cluster."""
    from ctclab.eval import run

    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` fails, as if missing
    emissions = write_tiny_emissions(tmp_path)
    code = run.main(["--import-emissions", str(emissions), "--cache-dir", str(tmp_path / "c"),
                     "--split", "dev-a", "--decoder", "greedy", "--quiet", "--out",
                     str(tmp_path / "r"), "--ray", "local"])
    err = capsys.readouterr().err
    assert code == 2 and "--ray needs Ray: pip install -e '.[ray]'" in err
    assert "Traceback" not in err
