"""Benchmark 3, Ray's side: Ray's own autoscaler v2 scheduler
(`ray/autoscaler/v2/scheduler.py`, `ResourceDemandScheduler.schedule`) on a case that
`bench/planner.rs` generated, driven through its Python API with the same input our planner gets.

    .venv/bin/python bench/ray_scheduler.py CASE.json --runs N --out RESULT.json

The case becomes a `SchedulingRequest` the way Ray's autoscaler builds one from the GCS
(`ray/autoscaler/v2/autoscaler.py` and the GCS's `GetClusterResourceState`):
- every existing node is an `AutoscalerInstance` in `RAY_RUNNING` with its Ray `NodeState`
  (total and available resources, status RUNNING);
- tasks and actors are `ResourceRequestByCount`, one per shape;
- a placement group is a `GangResourceRequest` with its bundles in the legacy `requests` list and
  in one bundle selector, as the GCS fills both; STRICT_SPREAD bundles carry an anti-affinity and
  STRICT_PACK bundles an affinity constraint on the label `_PG_<id hex>` (value ""), PACK and
  SPREAD nothing; `details` is `<id>:<STRATEGY>|PENDING`;
- `request_resources` is one `ClusterResourceConstraint`;
- node types are `NodeTypeConfig`s with the case's min/max workers; no max_num_nodes, no idle
  timeout, launch-config check disabled (nothing is outdated), so the reply is only the launches.

Each run builds the request first (not timed), then times `ResourceDemandScheduler().schedule()`
with a fresh scheduler.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict

from ray.autoscaler.v2.instance_manager.config import NodeTypeConfig
from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
from ray.autoscaler.v2.schema import AutoscalerInstance
from ray.core.generated.autoscaler_pb2 import (
    AffinityConstraint,
    AntiAffinityConstraint,
    BundleSelector,
    ClusterResourceConstraint,
    GangResourceRequest,
    NodeState,
    NodeStatus,
    PlacementConstraint,
    ResourceRequest,
    ResourceRequestByCount,
)
from ray.core.generated.instance_manager_pb2 import Instance, NodeKind


def _request(bundle: dict, constraint: PlacementConstraint | None = None) -> ResourceRequest:
    r = ResourceRequest(resources_bundle=bundle)
    if constraint is not None:
        r.placement_constraints.append(constraint)
    return r


def _gang(g: dict) -> GangResourceRequest:
    label = f"_PG_{g['id']}"
    constraint = None
    if g["strategy"] == "STRICT_SPREAD":
        constraint = PlacementConstraint(
            anti_affinity=AntiAffinityConstraint(label_name=label, label_value=""))
    elif g["strategy"] == "STRICT_PACK":
        constraint = PlacementConstraint(
            affinity=AffinityConstraint(label_name=label, label_value=""))
    return GangResourceRequest(
        requests=[_request(b, constraint) for b in g["bundles"]],
        bundle_selectors=[
            BundleSelector(resource_requests=[_request(b, constraint) for b in g["bundles"]])
        ],
        details=f"{g['id']}:{g['strategy']}|PENDING",
    )


def _instance(n: dict) -> AutoscalerInstance:
    return AutoscalerInstance(
        cloud_instance_id=n["instance_id"],
        im_instance=Instance(
            instance_id=n["instance_id"],
            instance_type=n["type"],
            status=Instance.RAY_RUNNING,
            node_kind=NodeKind.WORKER,
            node_id=n["id"],
            cloud_instance_id=n["instance_id"],
        ),
        ray_node=NodeState(
            node_id=bytes.fromhex(n["id"]),
            instance_id=n["instance_id"],
            ray_node_type_name=n["type"],
            total_resources=n["total"],
            available_resources=n["available"],
            status=NodeStatus.RUNNING,
        ),
    )


def build_request(case: dict) -> SchedulingRequest:
    """The case as the SchedulingRequest Ray's autoscaler would hand its scheduler."""
    configs = {
        t["name"]: NodeTypeConfig(
            name=t["name"],
            min_worker_nodes=t["min_workers"],
            max_worker_nodes=t["max_workers"],
            resources=dict(t["resources"]),
        )
        for t in case["types"]
    }
    constraints = []
    if case["constraint"]:
        constraints = [ClusterResourceConstraint(resource_requests=[
            ResourceRequestByCount(request=_request(c["bundle"]), count=c["count"])
            for c in case["constraint"]
        ])]
    return SchedulingRequest(
        disable_launch_config_check=True,
        node_type_configs=configs,
        max_num_nodes=None,
        idle_timeout_s=None,
        resource_requests=[
            ResourceRequestByCount(request=_request(t["bundle"]), count=t["count"])
            for t in case["tasks"]
        ],
        gang_resource_requests=[_gang(g) for g in case["gangs"]],
        cluster_resource_constraints=constraints,
        current_instances=[_instance(n) for n in case["nodes"]],
    )


def summarize(reply) -> dict:
    """What the reply launches and leaves unplaced, in the form bench/planner.rs writes ours."""
    launched: dict[str, int] = defaultdict(int)
    for r in reply.to_launch:
        launched[r.instance_type] += r.count
    amounts: dict[str, float] = defaultdict(float)
    bundles = 0
    for r in reply.infeasible_resource_requests:
        bundles += 1
        for k, v in r.resources_bundle.items():
            amounts[k] += v
    for g in reply.infeasible_gang_resource_requests:
        reqs = g.bundle_selectors[0].resource_requests if g.bundle_selectors else g.requests
        for r in reqs:
            bundles += 1
            for k, v in r.resources_bundle.items():
                amounts[k] += v
    unmet_constraint = sum(
        rr.count
        for c in reply.infeasible_cluster_resource_constraints
        for rr in c.resource_requests
    )
    return {
        "launched": dict(sorted(launched.items())),
        "launched_total": sum(launched.values()),
        "unplaced_bundles": bundles,
        "unplaced_resources": dict(sorted(amounts.items())),
        "unplaced_gangs": len(reply.infeasible_gang_resource_requests),
        "unmet_constraint_bundles": unmet_constraint,
        "terminate": len(reply.to_terminate),
    }


def run(case: dict, runs: int) -> dict:
    times, plans = [], []
    for _ in range(runs):
        request = build_request(case)  # not timed
        t = time.perf_counter()
        reply = ResourceDemandScheduler().schedule(request)
        times.append(time.perf_counter() - t)
        plans.append(summarize(reply))
        print(f"ray scheduler {case['nodes_n']}x{case['requests_n']}: run {len(times)} "
              f"{times[-1]:.3f} s, launches {plans[-1]['launched_total']}",
              file=sys.stderr, flush=True)
    if any(p != plans[0] for p in plans):
        # Ray's scheduler is deterministic for the same input; say so if it ever is not.
        print("ray scheduler: the runs planned differently", file=sys.stderr)
    return {"times_s": times, "plan": plans[0], "plans_agree": all(p == plans[0] for p in plans)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", help="case-<nodes>x<requests>.json from bench/planner.rs")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", required=True, help="where to write the result JSON")
    a = p.parse_args()
    with open(a.case) as f:
        case = json.load(f)
    result = run(case, a.runs)
    result.update(case=f"{case['nodes_n']}x{case['requests_n']}", nodes_n=case["nodes_n"],
                  requests_n=case["requests_n"])
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
