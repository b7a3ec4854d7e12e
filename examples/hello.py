"""A small Ray driver: runs a task on every CPU of the cluster and says where each ran.

Run it with `ray-hpc run -- python examples/hello.py` (inside a batch job, or locally).
"""

import collections
import socket
import time

import ray


@ray.remote(num_cpus=1)
def where_am_i(i):
    time.sleep(0.2)
    return ray.get_runtime_context().get_node_id(), socket.gethostname(), i * i


def main():
    ray.init()  # RAY_ADDRESS and the auth token come from ray-hpc
    nodes = [n for n in ray.nodes() if n["Alive"]]
    cpus = int(ray.cluster_resources().get("CPU", 0))
    print(f"connected: {len(nodes)} node(s), {cpus} CPU(s)", flush=True)
    results = ray.get([where_am_i.remote(i) for i in range(max(cpus, 1) * 4)])
    per_node = collections.Counter(node_id for node_id, _, _ in results)
    for node_id, count in sorted(per_node.items()):
        print(f"  node {node_id[:12]}: {count} task(s)")
    print(f"sum of squares: {sum(r[2] for r in results)}")


if __name__ == "__main__":
    main()
