"""What the cluster tests check on a running cluster, the same for every scheduler."""

from __future__ import annotations

import os
from typing import Dict

import ray_hpc


def task_on_every_node(cluster: ray_hpc.Cluster) -> Dict[str, str]:
    """Connects this process to the cluster, runs one task pinned to each alive node, and
    returns node id -> the address the task saw. Disconnects again."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:

        @ray.remote(num_cpus=1)
        def where() -> str:
            return str(ray.util.get_node_ip_address())

        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        refs = {
            node: where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
            for node in nodes
        }
        return {node: ray.get(ref, timeout=120) for node, ref in refs.items()}
    finally:
        ray.shutdown()


def assert_env_points_at(cluster: ray_hpc.Cluster) -> None:
    assert os.environ["RAY_ADDRESS"] == cluster.address
    assert os.environ["RAY_AUTH_MODE"] == "token"
    token = os.environ["RAY_AUTH_TOKEN_PATH"]
    assert os.stat(token).st_mode & 0o077 == 0, f"{token} is readable by others"
    assert cluster.env["RAY_ADDRESS"] == cluster.address
    assert cluster.env["RAY_API_SERVER_ADDRESS"] == cluster.dashboard_url
