"""The status model as Python objects: what ``ray-hpc status NAME --json`` prints (schema
``ray-hpc.status/v1``, documented in the repository's docs/status-json.md), one frozen dataclass
per JSON object, with the same field names and meanings. Keys a later v1 adds are kept in
``raw``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

SCHEMA = "ray-hpc.status/v1"


@dataclass(frozen=True)
class Totals:
    """Sums over the nodes that are not ``DEAD``."""

    cpus_total: float
    cpus_used: Optional[float]
    gpus_total: float
    gpus_used: Optional[float]
    memory_total_bytes: int
    memory_used_bytes: Optional[int]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Totals":
        return cls(
            cpus_total=d["cpus_total"],
            cpus_used=d.get("cpus_used"),
            gpus_total=d["gpus_total"],
            gpus_used=d.get("gpus_used"),
            memory_total_bytes=d["memory_total_bytes"],
            memory_used_bytes=d.get("memory_used_bytes"),
        )


@dataclass(frozen=True)
class Node:
    """One Ray node. ``status`` is ``RUNNING``, ``IDLE``, ``DRAINING``, ``DEAD`` or ``UNKNOWN``."""

    name: Optional[str]
    address: str
    instance_id: str
    node_id: Optional[str]
    node_type: Optional[str]
    is_head: bool
    status: str
    idle_s: Optional[int]
    cpus_total: float
    cpus_available: Optional[float]
    gpus_total: float
    gpus_available: Optional[float]
    memory_total_bytes: int
    memory_available_bytes: Optional[int]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Node":
        return cls(
            name=d.get("name"),
            address=d["address"],
            instance_id=d["instance_id"],
            node_id=d.get("node_id"),
            node_type=d.get("node_type"),
            is_head=d["is_head"],
            status=d["status"],
            idle_s=d.get("idle_s"),
            cpus_total=d["cpus_total"],
            cpus_available=d.get("cpus_available"),
            gpus_total=d["gpus_total"],
            gpus_available=d.get("gpus_available"),
            memory_total_bytes=d["memory_total_bytes"],
            memory_available_bytes=d.get("memory_available_bytes"),
        )


@dataclass(frozen=True)
class Demand:
    """One shape of demand Ray cannot place yet. ``kind`` is ``tasks``, ``placement_group`` or
    ``constraint`` (a floor set with :meth:`ray_hpc.Cluster.request_resources`)."""

    kind: str
    bundles: List[Dict[str, float]]
    count: int
    details: Optional[str]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Demand":
        return cls(kind=d["kind"], bundles=d["bundles"], count=d["count"], details=d.get("details"))


@dataclass(frozen=True)
class Job:
    """One of the cluster's scheduler jobs. ``role`` is ``head`` or ``worker``; ``state`` is
    ``PENDING``, ``RUNNING``, ``SUSPENDED``, ``COMPLETING``, ``ENDED``, ``GONE`` or ``UNKNOWN``."""

    id: str
    role: str
    name: Optional[str]
    state: str
    end_reason: Optional[str]
    reason: Optional[str]
    start_time: Optional[str]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Job":
        return cls(
            id=d["id"],
            role=d["role"],
            name=d.get("name"),
            state=d["state"],
            end_reason=d.get("end_reason"),
            reason=d.get("reason"),
            start_time=d.get("start_time"),
        )


@dataclass(frozen=True)
class Gcs:
    """The cluster's GCS. ``status`` is ``live``, ``unreachable`` or ``not_asked``."""

    address: Optional[str]
    status: str
    error: Optional[str]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Gcs":
        return cls(address=d.get("address"), status=d["status"], error=d.get("error"))


@dataclass(frozen=True)
class ClusterStatus:
    """One cluster as ``ray-hpc status NAME`` sees it now. ``state`` is ``QUEUED``,
    ``STARTING``, ``READY``, ``ENDED`` or ``FAILED``; ``last_known`` says it was not confirmed
    now by the scheduler or the GCS."""

    name: str
    scheduler: str
    job_id: str
    state: str
    last_known: bool
    record_state: str
    state_reason: Optional[str]
    message: Optional[str]
    created_unix: int
    updated_unix: int
    age_s: int
    walltime_left_s: Optional[int]
    expected_start: Optional[str]
    nodes_expected: int
    nodes_joined: int
    nodes_source: str
    totals: Totals
    nodes: List[Node]
    pending_demand: Optional[List[Demand]]
    jobs: List[Job]
    gcs: Gcs
    #: ``ray://host:port`` of the head's Ray Client server, for ``ray.init()`` from another host.
    ray_client_address: Optional[str]
    dashboard_url: Optional[str]
    #: The token file a Ray client needs (``RAY_AUTH_TOKEN_PATH``) when auth is on.
    token_path: Optional[str]
    metrics_address: Optional[str]
    job_output: Optional[str]
    notes: List[str]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ClusterStatus":
        demand = d.get("pending_demand")
        return cls(
            name=d["name"],
            scheduler=d["scheduler"],
            job_id=d["job_id"],
            state=d["state"],
            last_known=d["last_known"],
            record_state=d["record_state"],
            state_reason=d.get("state_reason"),
            message=d.get("message"),
            created_unix=d["created_unix"],
            updated_unix=d["updated_unix"],
            age_s=d["age_s"],
            walltime_left_s=d.get("walltime_left_s"),
            expected_start=d.get("expected_start"),
            nodes_expected=d["nodes_expected"],
            nodes_joined=d["nodes_joined"],
            nodes_source=d["nodes_source"],
            totals=Totals.from_json(d["totals"]),
            nodes=[Node.from_json(n) for n in d["nodes"]],
            pending_demand=None if demand is None else [Demand.from_json(x) for x in demand],
            jobs=[Job.from_json(j) for j in d["jobs"]],
            gcs=Gcs.from_json(d["gcs"]),
            ray_client_address=d.get("ray_client_address"),
            dashboard_url=d.get("dashboard_url"),
            token_path=d.get("token_path"),
            metrics_address=d.get("metrics_address"),
            job_output=d.get("job_output"),
            notes=list(d["notes"]),
            raw=d,
        )

    @property
    def is_ready(self) -> bool:
        """True when the cluster is ``READY``."""
        return self.state == "READY"

    @property
    def is_over(self) -> bool:
        """True when the cluster is ``ENDED`` or ``FAILED``."""
        return self.state in ("ENDED", "FAILED")


@dataclass(frozen=True)
class Connection:
    """How to use a READY cluster: what ``ray-hpc env NAME --json`` prints (docs/cli-json.md)."""

    name: str
    state: str
    scheduler: str
    job_id: str
    gcs_address: Optional[str]
    #: ``ray://host:port`` of the Ray Client server, for ``ray.init()`` from another host.
    ray_client_address: Optional[str]
    dashboard_url: Optional[str]
    auth: str
    token_path: Optional[str]
    nodes_joined: int
    nodes_expected: int
    cpus: int
    gpus: int
    #: What to set so that ``ray``, ``ray.init()`` and ``ray job submit`` use the cluster.
    env: Dict[str, str]
    #: What to remove from the environment along with it.
    unset: List[str]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Connection":
        return cls(
            name=d["name"],
            state=d["state"],
            scheduler=d["scheduler"],
            job_id=d["job_id"],
            gcs_address=d.get("gcs_address"),
            ray_client_address=d.get("ray_client_address"),
            dashboard_url=d.get("dashboard_url"),
            auth=d["auth"],
            token_path=d.get("token_path"),
            nodes_joined=d["nodes_joined"],
            nodes_expected=d["nodes_expected"],
            cpus=d["cpus"],
            gpus=d["gpus"],
            env=dict(d["env"]),
            unset=list(d.get("unset", [])),
        )


@dataclass(frozen=True)
class Stage:
    """Where a starting cluster is (an ``up --json`` ``stage`` event): ``stage`` is ``queued``,
    ``starting``, ``ready``, ``ended`` or ``failed``; ``text`` says it in one line."""

    stage: str
    text: str
    reason: Optional[str]
    expected_start: Optional[str]
    nodes_joined: int
    nodes_expected: int
    elapsed_s: float

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Stage":
        return cls(
            stage=d["stage"],
            text=d["text"],
            reason=d.get("reason"),
            expected_start=d.get("expected_start"),
            nodes_joined=d["nodes_joined"],
            nodes_expected=d["nodes_expected"],
            elapsed_s=d.get("elapsed_s", 0.0),
        )
