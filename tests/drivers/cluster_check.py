"""Test driver: reports the cluster it sees as one JSON line, after running a task on every node.

Optional: --hold FILE  print "READY" and wait until FILE exists (the test releases it) or forever.
          --exit N     exit with N at the end.
"""

import argparse
import json
import os
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hold")
    p.add_argument("--exit", type=int, default=0)
    args = p.parse_args()
    ray.init(address="auto")
    nodes = [n for n in ray.nodes() if n["Alive"]]
    ran_on = ray.get(
        [
            where.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote()
            for n in nodes
        ],
        timeout=120,
    )
    report = {
        "nodes": [
            {
                "id": n["NodeID"],
                "ip": n["NodeManagerAddress"],
                "cpus": n["Resources"].get("CPU", 0),
                "gpus": n["Resources"].get("GPU", 0),
            }
            for n in nodes
        ],
        "task_nodes": sorted(ran_on),
        "ray_address": os.environ.get("RAY_ADDRESS"),
        "auth_mode": os.environ.get("RAY_AUTH_MODE"),
    }
    print("REPORT " + json.dumps(report), flush=True)
    if args.hold:
        print("READY", flush=True)
        while not os.path.exists(args.hold):
            time.sleep(0.2)
        # Prove the cluster still works when released.
        print("STILL " + json.dumps(sorted(ray.get([where.remote() for _ in range(4)]))), flush=True)
    raise SystemExit(args.exit)


if __name__ == "__main__":
    main()
