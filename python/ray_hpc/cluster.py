"""``Cluster``: a Ray cluster on the batch scheduler, started and ended from Python.

Everything goes through the ``ray-hpc`` binary (``up --json``, ``env --json``,
``status --json``, ``request-resources``, ``down``), so a cluster started here is the same as
one started with ``ray-hpc up``: ``ray-hpc status`` lists it, ``ray-hpc down`` ends it.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import _binary, _progress
from .errors import (
    ClusterNotReadyError,
    ClusterStartError,
    ClusterTimeoutError,
    RayHpcError,
)
from .status import ClusterStatus, Connection, Stage

#: A walltime: ``"2:00:00"``, ``"90m"``, ``"1d 12h"``, minutes as an int, or a timedelta.
Walltime = Union[str, int, datetime.timedelta]
#: Memory per node: ``"4G"`` (K, M, G or T), or bytes as an int.
Memory = Union[str, int]
PathArg = Union[str, "os.PathLike[str]"]

#: Seconds between two looks at a cluster that ``attach`` waits for (each asks the scheduler).
_ATTACH_POLL_S = 3.0


class Cluster:
    """A Ray cluster running as a batch job.

    ``Cluster(...)`` submits the cluster's job and returns once every node has joined,
    showing the progress (a widget or text in a notebook, a bar on a terminal, log lines
    otherwise). When it returns, this process's environment points Ray at the cluster
    (``RAY_ADDRESS``, ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN_PATH``: see :attr:`env`), so
    ``ray.init()`` or ``ray.init(address=cluster.address)`` connects with the cluster's auth
    token::

        import ray, ray_hpc
        with ray_hpc.Cluster(nodes=4, cpus_per_node=8, time="2:00:00") as cluster:
            ray.init(address=cluster.address)
            ...

    Leaving the ``with`` block (or :meth:`down`) disconnects this process from Ray and ends the
    cluster. Without either, the cluster stays up after this process exits, until its walltime
    or ``ray-hpc down NAME``, like one started with ``ray-hpc up``.

    Args:
        nodes: nodes in the cluster's job.
        name: the cluster's name in the registry (default: ``ray-`` and 4 hex digits).
        cpus_per_node: CPUs per node (default: the scheduler's).
        gpus_per_node: GPUs per node.
        memory: memory per node, ``"4G"`` or bytes.
        time: walltime: ``"2:00:00"``, ``"90m"``, ``"1d 12h"``, minutes, or a timedelta.
        partition: the partition (queue) to submit to.
        account: the account (project) to charge.
        rm: the YARN ResourceManager's web address (``"http://rm:8088"``), for
            ``scheduler="yarn"`` when the config does not name it.
        scheduler: ``"auto"`` (the scheduler whose tools are installed here, else this machine
            alone) or any name ``ray-hpc --scheduler`` accepts (``ray-hpc --help`` lists them).
        config: a ray-hpc config file (default: ``$RAY_HPC_CONFIG``, else
            ``~/.ray-hpc/config.toml``).
        timeout: seconds to wait for the cluster to be ready.
        cancel_on_timeout: cancel the job when it is not ready in time (default); with False
            it stays queued and :meth:`attach` can wait for it later.
        progress: ``None`` chooses a display, ``False`` shows nothing, ``"widget"``,
            ``"notebook"``, ``"terminal"`` or ``"log"`` picks one, and a function is called with
            every :class:`~ray_hpc.Stage`.
        set_env: point this process's environment at the cluster once it is ready.

    Raises:
        InvalidArgumentError: an argument the binary refused (its message says which and why).
        ClusterStartError: the scheduler refused the job, or the cluster failed or ended first.
        ClusterTimeoutError: not ready within ``timeout``.
        RayHpcError: anything else the binary reported.
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        name: Optional[str] = None,
        cpus_per_node: Optional[int] = None,
        gpus_per_node: Optional[int] = None,
        memory: Optional[Memory] = None,
        time: Optional[Walltime] = None,
        partition: Optional[str] = None,
        account: Optional[str] = None,
        rm: Optional[str] = None,
        scheduler: str = "auto",
        config: Optional[PathArg] = None,
        timeout: float = 900,
        cancel_on_timeout: bool = True,
        progress: _progress.ProgressArg = None,
        set_env: bool = True,
    ) -> None:
        self._config = config
        self._owned = True
        self._down = False
        self._saved_env: Optional[Dict[str, Optional[str]]] = None
        args = _up_args(
            nodes=nodes,
            name=name,
            cpus_per_node=cpus_per_node,
            gpus_per_node=gpus_per_node,
            memory=memory,
            time=time,
            partition=partition,
            account=account,
            rm=rm,
            timeout=timeout,
            cancel_on_timeout=cancel_on_timeout,
        )
        self.connection: Connection = _Up(args, scheduler, config, progress, name).wait()
        if set_env:
            self._set_env()

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        wait: bool = True,
        timeout: float = 900,
        config: Optional[PathArg] = None,
        progress: _progress.ProgressArg = None,
        set_env: bool = True,
        down_on_exit: bool = False,
    ) -> "Cluster":
        """A cluster that already exists in the registry (``ray-hpc status`` lists them),
        started by ``ray-hpc up``, a job script, or another process.

        Waits up to ``timeout`` seconds for a queued or starting cluster to be ready (unless
        ``wait`` is False). Leaving a ``with`` block does not end an attached cluster unless
        ``down_on_exit`` is True; :meth:`down` always does.

        Raises:
            ClusterNotFoundError: no cluster of that name.
            ClusterNotReadyError: it is over, or not ready and ``wait`` is False.
            ClusterTimeoutError: not ready within ``timeout``.
        """
        self = cls.__new__(cls)
        self._config = config
        self._owned = down_on_exit
        self._down = False
        self._saved_env = None
        if wait:
            _wait_ready(name, timeout, config, progress)
        doc = _env_json(name, config)
        self.connection = Connection.from_json(doc)
        if set_env:
            self._set_env()
        return self

    # What the cluster is.

    @property
    def name(self) -> str:
        """The cluster's name in the registry."""
        return self.connection.name

    @property
    def address(self) -> str:
        """The GCS address (``host:port``) for ``ray.init(address=...)``."""
        if not self.connection.gcs_address:
            raise ClusterNotReadyError(f"cluster {self.name} has no GCS address")
        return self.connection.gcs_address

    @property
    def dashboard_url(self) -> Optional[str]:
        """Ray's dashboard (and Jobs API) of the cluster."""
        return self.connection.dashboard_url

    @property
    def job_id(self) -> str:
        """The scheduler's id of the job that runs the head."""
        return self.connection.job_id

    @property
    def env(self) -> Dict[str, str]:
        """The environment that points ``ray``, ``ray.init()`` and ``ray job submit`` at this
        cluster (and remove ``RAY_AUTH_TOKEN``, which Ray would read first). Pass it to
        subprocesses: ``subprocess.run([...], env={**os.environ, **cluster.env})``."""
        return dict(self.connection.env)

    # Using it.

    def status(self) -> ClusterStatus:
        """The cluster now, as ``ray-hpc status NAME`` sees it (nodes, resources in use,
        pending demand, scheduler jobs)."""
        doc = _binary.run_json(["status", self.name, "--json"], config=self._config)
        return ClusterStatus.from_json(doc["cluster"])

    def request_resources(
        self,
        num_cpus: Optional[int] = None,
        num_gpus: Optional[int] = None,
        bundles: Optional[Sequence[Mapping[str, float]]] = None,
    ) -> None:
        """Asks Ray to keep room for these resources, as ``ray.autoscaler.sdk.request_resources``
        does: the autoscaler scales up until ``num_cpus`` one-CPU tasks, ``num_gpus`` one-GPU
        tasks and every bundle (``[{"CPU": 4, "GPU": 1}]``) fit, and keeps that floor until the
        next call replaces it. A call with nothing clears it. Needs no ``ray.init()``."""
        args = ["request-resources", self.name]
        if num_cpus is not None:
            args += ["--cpus", str(_count("num_cpus", num_cpus))]
        if num_gpus is not None:
            args += ["--gpus", str(_count("num_gpus", num_gpus))]
        if bundles is not None:
            if isinstance(bundles, Mapping) or not all(isinstance(b, Mapping) for b in bundles):
                raise TypeError("bundles must be a list of dicts, e.g. [{'CPU': 4, 'GPU': 1}]")
            args += ["--bundles", json.dumps([dict(b) for b in bundles])]
        _binary.run(args, config=self._config)

    def down(self, timeout: float = 120) -> None:
        """Ends the cluster: disconnects this process from it if ``ray.init()`` connected to
        it, cancels its jobs, waits until the scheduler let them go, and restores the
        environment variables it set. Ending a cluster that already ended is not an error."""
        _disconnect_ray(self.connection.gcs_address)
        _binary.run(["down", self.name, "--timeout", str(int(timeout))], config=self._config)
        self._down = True
        self._restore_env()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned and not self._down:
            self.down()
        else:
            self._restore_env()

    def __repr__(self) -> str:
        return f"Cluster(name={self.name!r}, address={self.connection.gcs_address!r}, dashboard_url={self.dashboard_url!r})"

    # The environment of this process.

    def _set_env(self) -> None:
        self._saved_env = {k: os.environ.get(k) for k in [*self.connection.env, *self.connection.unset]}
        for k in self.connection.unset:
            os.environ.pop(k, None)
        os.environ.update(self.connection.env)
        _refresh_ray_auth()

    def _restore_env(self) -> None:
        if self._saved_env is None:
            return
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = None
        _refresh_ray_auth()


def list_clusters(config: Optional[PathArg] = None) -> List[ClusterStatus]:
    """Every cluster in the registry, as ``ray-hpc status`` lists them."""
    doc = _binary.run_json(["status", "--json"], config=config)
    return [ClusterStatus.from_json(c) for c in doc["clusters"]]


# Arguments.


def _count(what: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be a whole number >= 0, not {n!r}")
    if n < 0:
        raise ValueError(f"{what} must be a whole number >= 0, not {n!r}")
    return n


def _walltime(t: Walltime) -> str:
    if isinstance(t, datetime.timedelta):
        return f"{int(t.total_seconds())}s"
    return str(t)


def _memory(m: Memory) -> str:
    if isinstance(m, int) and not isinstance(m, bool):
        for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20)):
            if m >= size and m % size == 0:
                return f"{m // size}{unit}"
        return f"{-(-m // 1024)}K"
    return str(m)


def _up_args(
    *,
    nodes: int,
    name: Optional[str],
    cpus_per_node: Optional[int],
    gpus_per_node: Optional[int],
    memory: Optional[Memory],
    time: Optional[Walltime],
    partition: Optional[str],
    account: Optional[str],
    rm: Optional[str],
    timeout: float,
    cancel_on_timeout: bool,
) -> List[str]:
    args = ["up", "--json", "--nodes", str(nodes), "--timeout", str(max(1, int(timeout)))]
    optional = {
        "--name": name,
        "--cpus-per-node": cpus_per_node,
        "--gpus-per-node": gpus_per_node,
        "--memory": None if memory is None else _memory(memory),
        "--time": None if time is None else _walltime(time),
        "--partition": partition,
        "--account": account,
        "--rm": rm,
    }
    for flag, value in optional.items():
        if value is not None:
            args += [flag, str(value)]
    if cancel_on_timeout:
        args.append("--cancel-on-timeout")
    return args


# Starting: `ray-hpc up --json`.


class _Up:
    """One run of ``ray-hpc up --json``: reads its events, shows them, and returns the
    cluster's connection or raises what went wrong."""

    def __init__(
        self,
        args: List[str],
        scheduler: str,
        config: Optional[PathArg],
        progress: _progress.ProgressArg,
        name: Optional[str],
    ) -> None:
        self.command = [_binary.binary(), *_binary.global_args(scheduler, config), *args]
        self.config = config
        self.display = _progress.make(progress, name or "ray-hpc")
        self.name = name
        self.stderr: List[str] = []

    def wait(self) -> Connection:
        proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_binary.child_env(),
        )
        # Read stderr meanwhile, so a chatty binary never blocks on a full pipe.
        reader = threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True)
        reader.start()
        outcome: Optional[Dict[str, Any]] = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = _parse(line)
                if event is not None:
                    outcome = self._on(event) or outcome
            code = proc.wait()
        except BaseException:
            # Ctrl-C (a notebook's interrupt) or anything else: stop waiting, and end what was
            # submitted, since no Cluster object will be there to end it.
            _stop(proc)
            self._cancel()
            raise
        finally:
            reader.join(timeout=5)
        return self._result(code, outcome)

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.stderr.append(line)

    def _on(self, event: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        kind = event.get("event")
        if kind == "submitted":
            self.name = event["name"]
            self.display.rename(event["name"])
            self.display.note(f"job {event['job_id']} submitted ({event['nodes']} node(s))")
        elif kind == "stage":
            self.display.stage(Stage.from_json(event))
        elif kind == "note":
            self.display.note(event["message"])
        elif kind in ("ready", "error"):
            return event
        return None

    def _result(self, code: int, outcome: Optional[Dict[str, Any]]) -> Connection:
        stderr = "".join(self.stderr)
        if outcome is not None and outcome["event"] == "ready":
            connection = Connection.from_json(outcome["cluster"])
            self.display.close(True, f"ready after {outcome['took_s']:.0f}s: {connection.nodes_joined} node(s), {connection.cpus} CPU(s), {connection.gpus} GPU(s); dashboard {connection.dashboard_url}")
            return connection
        if outcome is not None:
            self.display.close(False, outcome["message"])
            error_type = ClusterTimeoutError if outcome["kind"].startswith("timeout") else ClusterStartError
            raise error_type(
                outcome["message"],
                kind=outcome["kind"],
                cluster=outcome["name"],
                stage=outcome.get("stage"),
                job_output=outcome.get("job_output"),
                job_output_tail=outcome.get("job_output_tail"),
                exit_code=code,
                stderr=stderr,
                command=self.command,
            )
        error = _binary.error_from(self.command, code, stderr)
        self.display.close(False, error.message)
        raise error

    def _cancel(self) -> None:
        if self.name is None:
            return
        try:
            _binary.run(["down", self.name], config=self.config, timeout=150)
        except RayHpcError as e:
            print(f"ray-hpc: could not end cluster {self.name}: {e}", file=sys.stderr)


def _parse(line: str) -> Optional[Dict[str, Any]]:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _stop(proc: "subprocess.Popen[str]") -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Attaching: `ray-hpc status --json`, `ray-hpc env --json`.


def _env_json(name: str, config: Optional[PathArg]) -> Dict[str, Any]:
    try:
        return dict(_binary.run_json(["env", name, "--json"], config=config))
    except RayHpcError as e:
        if type(e) is RayHpcError and e.exit_code == 1:
            raise ClusterNotReadyError(e.message, exit_code=e.exit_code, stderr=e.stderr, command=e.command) from None
        raise


def _stage_of(status: ClusterStatus, started: float) -> Stage:
    text = status.state.lower()
    if status.state_reason:
        text += f": {status.state_reason}"
    elif status.state in ("STARTING", "READY"):
        text += f": {status.nodes_joined}/{status.nodes_expected} node(s) joined"
    return Stage(
        stage=status.state.lower(),
        text=text,
        reason=status.jobs[0].reason if status.jobs else None,
        expected_start=status.expected_start,
        nodes_joined=status.nodes_joined,
        nodes_expected=status.nodes_expected,
        elapsed_s=time.monotonic() - started,
    )


def _wait_ready(name: str, timeout: float, config: Optional[PathArg], progress: _progress.ProgressArg) -> None:
    """Waits until the cluster ``status`` shows is READY; raises when it is over or too late."""
    started = time.monotonic()
    display: Optional[_progress.Display] = None
    last: Optional[str] = None
    while True:
        doc = _binary.run_json(["status", name, "--json"], config=config)
        status = ClusterStatus.from_json(doc["cluster"])
        if status.is_ready and display is None:
            return
        if display is None:
            display = _progress.make(progress, name)
        stage = _stage_of(status, started)
        if stage.text != last:
            display.stage(stage)
            last = stage.text
        if status.is_ready:
            display.close(True, "ready")
            return
        if status.is_over:
            why = status.message or status.state_reason or "no reason recorded"
            display.close(False, f"{status.state}: {why}")
            raise ClusterNotReadyError(f"cluster {name} is {status.state} ({why})")
        if time.monotonic() - started > timeout:
            display.close(False, f"not ready after {timeout:.0f} s")
            raise ClusterTimeoutError(
                f"cluster {name} not ready after {timeout:.0f} s; it is at: {stage.text}",
                kind="timeout",
                cluster=name,
                stage=stage.text,
            )
        time.sleep(_ATTACH_POLL_S)


# Ray in this process.


def _refresh_ray_auth() -> None:
    """Makes an already imported Ray see the auth variables just set. Ray caches its config
    (the auth mode) and the token when it is imported; Ray refreshes them the same way when
    it turns token auth on itself. Without Ray imported there is nothing to refresh."""
    raylet = sys.modules.get("ray._raylet")
    if raylet is None:
        return
    try:
        raylet.Config.initialize("")
        raylet.AuthenticationTokenLoader.instance().reset_cache()
    except Exception as e:  # A Ray without these: say so rather than fail later, obscurely.
        print(
            f"ray-hpc: warning: could not refresh the auth settings of the imported Ray ({e}); "
            "import ray after creating the Cluster, or set the variables of Cluster.env before starting Python",
            file=sys.stderr,
        )


def _disconnect_ray(gcs_address: Optional[str]) -> None:
    """``ray.shutdown()`` when this process is connected to the cluster being ended: a driver
    whose GCS goes away exits after a minute, which would kill a notebook's kernel."""
    ray = sys.modules.get("ray")
    if ray is None or gcs_address is None:
        return
    try:
        if not ray.is_initialized():
            return
        connected = ray.get_runtime_context().gcs_address
    except Exception:
        return
    if connected == gcs_address:
        ray.shutdown()
