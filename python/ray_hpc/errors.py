"""The exceptions of ``ray_hpc``: each carries what the ``ray-hpc`` binary said and its exit code."""

from __future__ import annotations

from typing import Optional, Sequence


class RayHpcError(Exception):
    """The ``ray-hpc`` binary failed.

    ``str(error)`` is the binary's own message. ``exit_code`` is its exit status (``None`` when
    it did not run at all), ``stderr`` everything it wrote there, and ``command`` the command line.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: Optional[int] = None,
        stderr: str = "",
        command: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.stderr = stderr
        self.command = list(command)


class BinaryNotFoundError(RayHpcError):
    """No ``ray-hpc`` binary was found (``$RAY_HPC_BIN``, the package's own, ``PATH``)."""


class InvalidArgumentError(RayHpcError, ValueError):
    """The binary refused an argument (a bad walltime, memory size, scheduler, bundle...)."""


class ClusterNotFoundError(RayHpcError, LookupError):
    """No cluster of that name in the registry (the message lists the known ones)."""


class ClusterStartError(RayHpcError):
    """A cluster did not come up: the scheduler refused its job, or it failed or ended first.

    ``kind`` says which (``refused``, ``failed``, ``ended``, ``job_ended``, or for
    :class:`ClusterTimeoutError` ``timeout`` and ``timeout_cancelled``), ``cluster`` names it,
    ``stage`` is where it got to, and ``job_output_tail`` holds the end of its batch job's output
    when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        cluster: str,
        stage: Optional[str] = None,
        job_output: Optional[str] = None,
        job_output_tail: Optional[str] = None,
        exit_code: Optional[int] = None,
        stderr: str = "",
        command: Sequence[str] = (),
    ) -> None:
        super().__init__(message, exit_code=exit_code, stderr=stderr, command=command)
        self.kind = kind
        self.cluster = cluster
        self.stage = stage
        self.job_output = job_output
        self.job_output_tail = job_output_tail

    def __str__(self) -> str:
        if self.job_output_tail:
            return f"{self.message}\n--- the job's output ({self.job_output}) ---\n{self.job_output_tail}"
        return self.message


class ClusterTimeoutError(ClusterStartError, TimeoutError):
    """The cluster was not ready in time. With ``kind == "timeout"`` its job is still queued
    (``Cluster.attach(error.cluster)`` waits on); with ``timeout_cancelled`` it was cancelled."""


class ClusterNotReadyError(RayHpcError):
    """The cluster exists but is not READY (over already, or still starting and not waited for)."""
