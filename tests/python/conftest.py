"""Shared pieces of the Python package's tests (run by tests/python/run in a fresh venv with the
wheel installed): a registry home per test, the check that a test left no process behind (as
tests/common does for the Rust tests), and the Slurm test bed's availability."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(what: str, timeout: float, check: Callable[[], Optional[T]], explain: Callable[[], str] = lambda: "") -> T:
    """Polls ``check`` until it returns something other than None; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{explain()}")
        time.sleep(0.2)


def processes_with_env(marker: str, prefix: bool = False) -> List[Tuple[int, str]]:
    """(pid, command line) of the processes whose environment holds ``marker`` (KEY=VALUE), or
    with ``prefix`` a variable that starts with it."""
    found = []
    want = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[-1].split()[0]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        held = any(kv.startswith(want) for kv in env) if prefix else want in env
        if held and state != "Z":
            found.append((int(entry), cmdline))
    return found


#: Every test's registry home starts with this, so the session's leftovers can be found too.
HOME_PREFIX = "/tmp/rh-py-"


class Home:
    """A registry home (RAY_HPC_HOME) of one test, under /tmp so the test bed's nodes reach it.
    Every process the test's clusters start inherits it, which is how leftovers are found."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=Path(HOME_PREFIX).name, dir=Path(HOME_PREFIX).parent))

    @property
    def marker(self) -> str:
        return f"RAY_HPC_HOME={self.path}"

    def leftovers(self) -> List[Tuple[int, str]]:
        return processes_with_env(self.marker)

    def assert_no_leftovers(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while self.leftovers():
            if time.monotonic() > deadline:
                left = self.leftovers()
                self.kill_leftovers()
                pytest.fail(f"processes left behind after {within} s: {left}")
            time.sleep(0.2)

    def kill_leftovers(self) -> None:
        for pid, _ in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def job_output(self, name: str) -> str:
        out = self.path / "clusters" / name / "job.out"
        return out.read_text(errors="replace") if out.exists() else ""


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    h = Home()
    monkeypatch.setenv("RAY_HPC_HOME", str(h.path))
    # Another cluster's settings must not leak in; the package sets these itself.
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    yield h
    _disconnect_ray()
    # A failed test must not leave its processes to the next one.
    h.kill_leftovers()
    shutil.rmtree(h.path, ignore_errors=True)


def _disconnect_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def slurm_testbed() -> bool:
    """Whether the Slurm test bed answers; with RAY_HPC_E2E=1 (tests/run) a missing one fails."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
        up = out.returncode == 0 and bool(out.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        up = False
    if not up and os.environ.get("RAY_HPC_E2E") == "1":
        pytest.fail("RAY_HPC_E2E=1 but no Slurm controller answers: run slurm/testbed/up")
    return up


@pytest.fixture
def slurm() -> None:
    if not slurm_testbed():
        pytest.skip("no Slurm test bed (run tests/run, or slurm/testbed/up first)")


@pytest.fixture(scope="session", autouse=True)
def the_wheels_binary() -> None:
    """The tests are about the installed wheel: its binary, not one of the checkout's."""
    import ray_hpc

    binary = Path(ray_hpc.binary()).resolve()
    assert Path(sys.prefix).resolve() in binary.parents, f"{binary} is not the venv's ({sys.prefix})"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_after_the_session() -> Iterator[None]:
    """After every test, including those that do not check it themselves: no process of any
    test's clusters (Ray, ray-hpc agents, jobs) is still running."""
    yield
    marker = f"RAY_HPC_HOME={HOME_PREFIX}"
    deadline = time.monotonic() + 30
    while processes_with_env(marker, prefix=True):
        if time.monotonic() > deadline:
            left = processes_with_env(marker, prefix=True)
            for pid, _ in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            pytest.fail(f"processes of the tests' clusters left after the session: {left}")
        time.sleep(0.2)
