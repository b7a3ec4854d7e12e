"""The Python API and the wheel's binary on the Slurm test bed (4 nodes n1..n4 of 2 CPUs, each
with its own 127.0.0.1X address). tests/run brings it up and sets RAY_HPC_E2E=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ray_hpc
from clusters import assert_env_points_at, task_on_every_node
from conftest import REPO, Home, wait_for


def squeue(name_tag: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-n", name_tag], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_a_two_node_cluster_runs_a_task_on_every_node_and_down_leaves_nothing(home: Home, slurm: None) -> None:
    cluster = ray_hpc.Cluster(nodes=2, scheduler="slurm", cpus_per_node=2, time="10", name="pys1", progress="log")
    try:
        assert squeue("rh-pys1") == [cluster.job_id]
        assert_env_points_at(cluster)
        seen = task_on_every_node(cluster)
        assert len(seen) == 2 and all(ip.startswith("127.0.0.1") for ip in seen.values()), seen
        assert len(set(seen.values())) == 2, f"both tasks ran on one node: {seen}"

        status = cluster.status()
        assert (status.state, status.nodes_joined, status.totals.cpus_total) == ("READY", 2, 4.0), status
        assert status.jobs[0].state == "RUNNING" and status.jobs[0].id == cluster.job_id
        assert status.walltime_left_s is not None and 0 < status.walltime_left_s <= 600
    finally:
        cluster.down()
    assert squeue("rh-pys1") == [], "the job is gone"
    assert cluster.status().state == "ENDED"
    home.assert_no_leftovers()


def test_the_job_script_finds_the_wheels_binary_on_the_venvs_path(home: Home, slurm: None) -> None:
    """`sbatch job-scripts/ray-cluster.sbatch` with only the venv's bin on PATH (as after
    `source venv/bin/activate`): the script runs the wheel's ray-hpc, which runs the venv's ray."""
    bindir = Path(sys.executable).parent
    driver = "import ray; ray.init(); print('alive', sum(n['Alive'] for n in ray.nodes()))"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_HPC_BIN", "VIRTUAL_ENV")}
    env["PATH"] = f"{bindir}:/usr/local/bin:/usr/bin:/bin"
    out = home.path / "job-%j.out"
    job = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-N", "2", "-c", "1", "--time=10", "-o", str(out),
         str(REPO / "job-scripts/ray-cluster.sbatch"), "python", "-c", driver],
        env=env, cwd=home.path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    job_id = job.stdout.strip().split(";")[0]
    output = (home.path / f"job-{job_id}.out").read_text(errors="replace") if job_id else ""
    assert job.returncode == 0, f"sbatch: {job.stderr}\n--- job output ---\n{output}"
    assert "alive 2" in output, output
    wait_for("the job to leave the queue", 60, lambda: True if not squeue("ray-cluster") else None)
    home.assert_no_leftovers()


def test_a_refused_job_raises_with_the_schedulers_message(home: Home, slurm: None) -> None:
    with pytest.raises(ray_hpc.ClusterStartError) as refused:
        ray_hpc.Cluster(scheduler="slurm", partition="nosuchpartition", name="pybad", progress=False)
    assert refused.value.kind == "refused"
    assert "Invalid partition name specified" in str(refused.value), refused.value
    assert [c.state for c in ray_hpc.list_clusters()] == ["FAILED"]
