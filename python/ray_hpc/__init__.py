"""Run the real Ray on HPC batch schedulers, from Python.

A thin layer over the ``ray-hpc`` binary that comes with this package (it runs the
binary's ``--json`` commands and implements nothing twice)::

    import ray, ray_hpc

    with ray_hpc.Cluster(nodes=4, cpus_per_node=8, time="2:00:00") as cluster:
        ray.init(address=cluster.address)   # auth is set up for this process
        ...

:class:`Cluster` starts a cluster (or :meth:`Cluster.attach` finds one that exists),
:meth:`Cluster.status` shows it, :meth:`Cluster.request_resources` asks its autoscaler for room,
:meth:`Cluster.down` ends it. Failures raise :class:`RayHpcError` (or a subclass) carrying the
binary's message and exit code.
"""

from __future__ import annotations

from ._binary import binary
from .cluster import Cluster, list_clusters
from .errors import (
    BinaryNotFoundError,
    ClusterNotFoundError,
    ClusterNotReadyError,
    ClusterStartError,
    ClusterTimeoutError,
    InvalidArgumentError,
    RayHpcError,
)
from .status import ClusterStatus, Connection, Demand, Gcs, Job, Node, Stage, Totals

try:
    from importlib.metadata import version as _version

    __version__ = _version("ray-hpc")
except Exception:  # not installed as a distribution (a source checkout on sys.path)
    __version__ = "unknown"

__all__ = [
    "BinaryNotFoundError",
    "Cluster",
    "ClusterNotFoundError",
    "ClusterNotReadyError",
    "ClusterStartError",
    "ClusterStatus",
    "ClusterTimeoutError",
    "Connection",
    "Demand",
    "Gcs",
    "InvalidArgumentError",
    "Job",
    "Node",
    "RayHpcError",
    "Stage",
    "Totals",
    "binary",
    "binary_version",
    "list_clusters",
]


def binary_version() -> str:
    """What ``ray-hpc --version`` says: the version and the git commit it was built from."""
    from . import _binary

    return _binary.run(["--version"]).stdout.strip()
