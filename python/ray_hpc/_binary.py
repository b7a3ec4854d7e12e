"""Finding and running the ``ray-hpc`` binary. Everything ``ray_hpc`` does goes through here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .errors import BinaryNotFoundError, ClusterNotFoundError, InvalidArgumentError, RayHpcError

#: The binary's name, on PATH and in the wheel.
NAME = "ray-hpc"
#: Overrides where the binary is taken from (the job scripts read it too).
BIN_ENV = "RAY_HPC_BIN"


def binary() -> str:
    """The path of the ``ray-hpc`` binary this package runs.

    In order: ``$RAY_HPC_BIN``; the binary installed with this package (the wheel puts it
    next to the package, or in the environment's ``bin`` next to ``python`` and ``ray``); the
    user's scripts directory; ``ray-hpc`` on ``PATH`` (``cargo install``).
    """
    override = os.environ.get(BIN_ENV)
    if override:
        if not os.access(override, os.X_OK):
            raise BinaryNotFoundError(f"${BIN_ENV} is {override!r}, which is not an executable file")
        return override
    for candidate in _candidates():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(NAME)
    if found:
        return found
    raise BinaryNotFoundError(
        f"cannot find the {NAME} binary: reinstall the package (pip install ray-hpc), "
        f"put {NAME} on PATH, or set ${BIN_ENV}"
    )


def _candidates() -> List[Path]:
    package = Path(__file__).resolve().parent
    out = [
        # maturin's layout when it bundles shared libraries: the real binary beside the package
        # (the one in bin/ is then a small launcher that starts this one).
        package.parent / "ray_hpc.scripts" / NAME,
        Path(sysconfig.get_path("scripts")) / NAME,
    ]
    try:
        out.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")) / NAME)
    except KeyError:
        pass
    return out


def child_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment for the binary: this process's, plus this Python environment's ``bin``
    on ``PATH`` and ``VIRTUAL_ENV`` (when running in a venv that was not activated, as a notebook
    kernel often is), so that the jobs it submits find ``ray`` and ``ray-hpc`` there."""
    env = dict(os.environ)
    scripts = sysconfig.get_path("scripts")
    path = env.get("PATH", "")
    if scripts and scripts not in path.split(os.pathsep):
        env["PATH"] = scripts + (os.pathsep + path if path else "")
    if "VIRTUAL_ENV" not in env and sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        env["VIRTUAL_ENV"] = sys.prefix
    if extra:
        env.update(extra)
    return env


def global_args(scheduler: Optional[str] = None, config: Optional[os.PathLike[str] | str] = None) -> List[str]:
    """The options that go before the command (``--scheduler``, ``--config``)."""
    args: List[str] = []
    if scheduler:
        args += ["--scheduler", scheduler]
    if config is not None:
        args += ["--config", os.fspath(config)]
    return args


def error_from(command: Sequence[str], exit_code: int, stderr: str) -> RayHpcError:
    """The exception for a failed command, carrying the binary's message."""
    message = clean_message(stderr) or f"{NAME} exited with status {exit_code}"
    kwargs: Dict[str, Any] = dict(exit_code=exit_code, stderr=stderr, command=command)
    first = stderr.lstrip()
    if exit_code == 2 and first.startswith("error:"):
        # clap's own usage errors ("error: invalid value ... for '--time <TIME>'").
        return InvalidArgumentError(message, **kwargs)
    if "no cluster named `" in stderr:
        return ClusterNotFoundError(message, **kwargs)
    return RayHpcError(message, **kwargs)


def clean_message(stderr: str) -> str:
    """The binary's message without its ``ray-hpc: error:`` prefix or clap's ``--help`` hint."""
    lines = []
    for line in stderr.strip().splitlines():
        if line.startswith("For more information, try '--help'"):
            continue
        for prefix in ("ray-hpc: error: ", "ray-hpc: ", "error: "):
            if line.startswith(prefix):
                line = line[len(prefix) :]
                break
        lines.append(line)
    return "\n".join(lines).strip()


def run(
    args: Sequence[str],
    *,
    scheduler: Optional[str] = None,
    config: Optional[os.PathLike[str] | str] = None,
    timeout: Optional[float] = None,
) -> subprocess.CompletedProcess[str]:
    """Runs ``ray-hpc [global options] ARGS``; raises :class:`RayHpcError` when it fails."""
    command = [binary(), *global_args(scheduler, config), *args]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise RayHpcError(
            f"{' '.join(command[1:])} did not finish within {timeout} s", command=command
        ) from e
    if done.returncode != 0:
        raise error_from(command, done.returncode, done.stderr)
    return done


def run_json(args: Sequence[str], **kwargs: Any) -> Any:
    """Runs a command that prints one JSON document and returns it parsed."""
    done = run(args, **kwargs)
    try:
        return json.loads(done.stdout)
    except ValueError as e:
        raise RayHpcError(
            f"{NAME} {' '.join(args)} printed no JSON: {done.stdout[:200]!r}",
            exit_code=done.returncode,
            stderr=done.stderr,
        ) from e
