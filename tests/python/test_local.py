"""The Python API against real clusters of the local scheduler (this machine as one node)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ray_hpc
from clusters import assert_env_points_at, task_on_every_node
from conftest import Home


def test_a_cluster_runs_tasks_reports_status_takes_requests_and_leaves_nothing(home: Home) -> None:
    stages = []
    with ray_hpc.Cluster(nodes=1, scheduler="local", time="10", name="py1", progress=stages.append) as cluster:
        assert cluster.name == "py1"
        assert cluster.job_id.startswith("local-")
        assert [s.stage for s in stages][-1] == "ready", stages
        assert stages[-1].nodes_joined == stages[-1].nodes_expected == 1
        assert_env_points_at(cluster)

        seen = task_on_every_node(cluster)
        assert list(seen.values()) == ["127.0.0.2"], seen

        status = cluster.status()
        assert isinstance(status, ray_hpc.ClusterStatus)
        assert (status.name, status.state, status.nodes_joined, status.nodes_expected) == ("py1", "READY", 1, 1)
        assert status.gcs.status == "live" and status.gcs.address == cluster.address
        assert status.nodes[0].is_head and status.nodes[0].status in ("IDLE", "RUNNING")
        assert status.totals.cpus_total >= 1
        assert status.jobs[0].role == "head"
        assert status.pending_demand == []

        cluster.request_resources(num_cpus=3, bundles=[{"CPU": 1, "GPU": 1}])
        demand = {(tuple(sorted(d.bundles[0].items())), d.count) for d in cluster.status().pending_demand or []}
        assert demand == {((("CPU", 1.0),), 3), ((("CPU", 1.0), ("GPU", 1.0)), 1)}, demand
        cluster.request_resources()
        assert cluster.status().pending_demand == []

        with pytest.raises(ray_hpc.RayHpcError) as bad:
            cluster.request_resources(bundles=[{"CPU": -1}])
        assert "bundle 1" in str(bad.value) and "CPU must be a number" in str(bad.value), bad.value
        with pytest.raises(TypeError):
            cluster.request_resources(bundles={"CPU": 1})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="num_cpus must be a whole number >= 0, not -1"):
            cluster.request_resources(num_cpus=-1)

        # Another process, such as `ray job submit` or a script, gets the cluster through env.
        child = subprocess.run(
            [sys.executable, "-c", "import ray; ray.init(logging_level='ERROR'); print(len(ray.nodes()))"],
            env={**os.environ, **cluster.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0 and child.stdout.strip() == "1", child.stderr

    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        assert var not in os.environ, f"{var} still set after the cluster ended"
    [ended] = ray_hpc.list_clusters()
    assert (ended.name, ended.state) == ("py1", "ENDED")
    home.assert_no_leftovers()


def test_attach_uses_an_existing_cluster_and_ends_it_only_when_asked(home: Home) -> None:
    # `ray-hpc up` in a shell where the venv is active, as the README shows.
    activated = {**os.environ, "VIRTUAL_ENV": sys.prefix, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    up = subprocess.run(
        ["ray-hpc", "--scheduler", "local", "up", "--name", "shell1", "--time", "10"],
        env=activated,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stderr + home.job_output("shell1")

    with ray_hpc.Cluster.attach("shell1", progress=False) as cluster:
        exports = dict(
            line[len("export ") :].split("=", 1) for line in up.stdout.splitlines() if line.startswith("export ")
        )
        assert cluster.address == exports["RAY_ADDRESS"]
        assert_env_points_at(cluster)
        assert len(task_on_every_node(cluster)) == 1
    assert "RAY_ADDRESS" not in os.environ
    assert ray_hpc.Cluster.attach("shell1", set_env=False).status().state == "READY", "attach must not end it"

    cluster = ray_hpc.Cluster.attach("shell1", set_env=False)
    cluster.down()
    cluster.down()  # ending it again is not an error
    assert cluster.status().state == "ENDED"
    with pytest.raises(ray_hpc.ClusterNotReadyError, match="ENDED"):
        ray_hpc.Cluster.attach("shell1")
    home.assert_no_leftovers()


def test_bad_arguments_and_unknown_clusters_raise_the_binarys_message(home: Home) -> None:
    with pytest.raises(ray_hpc.InvalidArgumentError) as bad:
        ray_hpc.Cluster(scheduler="local", time="forever", progress=False)
    assert bad.value.exit_code == 2
    assert "'forever'" in str(bad.value) and "is not a walltime" in str(bad.value), bad.value
    assert isinstance(bad.value, ValueError)

    with pytest.raises(ray_hpc.InvalidArgumentError, match="nosuch"):
        ray_hpc.Cluster(scheduler="nosuch", progress=False)

    with pytest.raises(ray_hpc.RayHpcError, match="not a valid cluster name"):
        ray_hpc.Cluster(scheduler="local", name="no/slashes", progress=False)

    assert ray_hpc.list_clusters() == [], "nothing was submitted"

    with pytest.raises(ray_hpc.ClusterNotFoundError, match="no cluster named `nope`"):
        ray_hpc.Cluster.attach("nope")


def test_a_cluster_that_fails_to_start_raises_with_the_jobs_output(home: Home) -> None:
    config = home.path / "broken.toml"
    config.write_text('[ray]\nbin = "/nonexistent/bin/ray"\n')
    with pytest.raises(ray_hpc.ClusterStartError) as failed:
        ray_hpc.Cluster(scheduler="local", name="broken", config=config, timeout=120, progress=False)
    e = failed.value
    # Its job ended at once, before its head could say why: the job's output says it.
    assert (e.kind, e.cluster, e.exit_code) == ("job_ended", "broken", 1), e
    assert e.job_output_tail and "/nonexistent/bin/ray" in e.job_output_tail, str(e)
    assert "/nonexistent/bin/ray" in str(e), str(e)
    [rec] = ray_hpc.list_clusters()
    assert rec.state == "FAILED"
    home.assert_no_leftovers()
