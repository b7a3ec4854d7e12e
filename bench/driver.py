"""The driver every bring-up variant runs (bench/bringup): the same program for `ray-hpc run`,
Ray's Slurm template and the floor, so the variants differ only in how the cluster comes up.

    python bench/driver.py NODES

Its first line of output means "the cluster is usable with all its nodes": it connects
(`ray.init()`, RAY_ADDRESS says where), waits until NODES nodes are alive in `ray.nodes()`,
printing nothing before, then prints `FIRST <epoch>`. It then does a little work on every node
and prints `EXIT <epoch>` as its very last action, after disconnecting, so the time from EXIT
to the job's end is the launcher's teardown alone.
"""

import sys
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def main() -> None:
    nodes = int(sys.argv[1])
    ray.init(logging_level="ERROR", log_to_driver=False)
    # A node counts once the GCS lists it alive; poll quickly (a GCS call is ~1 ms).
    while sum(1 for n in ray.nodes() if n["Alive"]) < nodes:
        time.sleep(0.02)
    print(f"FIRST {time.time():.6f}", flush=True)

    # A tiny task on each node, so the cluster is shown to work, not only to be listed.
    @ray.remote(num_cpus=0)
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    pinned = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
              for node in alive]
    seen = set(ray.get([task.remote() for task in pinned]))
    if len(seen) < nodes:
        sys.exit(f"driver: tasks ran on {len(seen)} node(s), expected {nodes}")
    ray.shutdown()
    print(f"EXIT {time.time():.6f}", flush=True)


main()
