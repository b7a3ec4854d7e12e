"""The package without clusters: the model against the docs, the displays, argument forms, the
binary's other interfaces, and its types."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import pytest

import ray_hpc
from ray_hpc import _progress, cluster, status
from conftest import REPO


def documented_keys(doc: str) -> Dict[str, Set[str]]:
    """The `| `key` |` rows under each `### `object`` heading, as the Rust tests read them."""
    out: Dict[str, Set[str]] = {}
    current = None
    for line in (REPO / "docs" / doc).read_text().splitlines():
        if line.startswith("### "):
            m = re.search(r"`([^`]+)`", line)
            current = m.group(1) if m else None
        elif current and line.startswith("| `"):
            out.setdefault(current, set()).add(line[3:].split("`", 1)[0])
    return out


def fields(cls: type) -> Set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.name != "raw"}


def test_the_status_model_has_exactly_the_documented_fields() -> None:
    doc = documented_keys("status-json.md")
    for obj, cls in [
        ("cluster", status.ClusterStatus),
        ("totals", status.Totals),
        ("node", status.Node),
        ("demand", status.Demand),
        ("job", status.Job),
        ("gcs", status.Gcs),
    ]:
        assert fields(cls) == doc[obj], f"{cls.__name__} differs from docs/status-json.md `{obj}`"
    cli = documented_keys("cli-json.md")
    assert fields(status.Connection) == cli["connection"]
    assert fields(status.Stage) == cli["stage"] - {"schema", "event"}


def test_the_documented_example_parses() -> None:
    text = (REPO / "docs" / "status-json.md").read_text()
    example = text.split("```json", 1)[1].split("```", 1)[0].replace("3f2a…(56 hex)", "3f2a")
    doc = json.loads(example)
    c = ray_hpc.ClusterStatus.from_json(doc["cluster"])
    assert (c.name, c.state, c.is_ready, c.is_over) == ("st1", "READY", True, False)
    assert c.nodes[0].is_head and c.nodes[0].cpus_total == 8.0
    assert c.totals.memory_total_bytes == 10737418240
    assert c.jobs[0].role == "head" and c.gcs.status == "live"
    assert c.pending_demand == []


def stage(text: str, joined: int = 1, expected: int = 2) -> ray_hpc.Stage:
    return ray_hpc.Stage(
        stage="starting", text=text, reason=None, expected_start=None, nodes_joined=joined, nodes_expected=expected, elapsed_s=3.2
    )


def test_the_terminal_display_redraws_one_line() -> None:
    out = io.StringIO()
    d = _progress._Terminal("c1", out)
    d.stage(stage("starting: 1/2 node(s) joined"))
    d.stage(stage("ready: 2/2 node(s) joined", joined=2))
    d.close(True, "ready")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n"), repr(text)
    assert "\r██████████░░░░░░░░░░ 1/2  c1: starting: 1/2 node(s) joined (3s)" in text
    assert "\r████████████████████ 2/2  c1: ready: 2/2 node(s) joined (3s)" in text


def test_the_log_display_writes_lines_and_choices_are_checked() -> None:
    out = io.StringIO()
    d = _progress._Log("c1", out)
    d.stage(stage("queued: Priority"))
    d.note("job 5 submitted")
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] ray-hpc: c1: queued: Priority \(3s\)", lines[0]), lines
    assert lines[1].endswith("ray-hpc: c1: job 5 submitted")
    seen = []
    _progress.make(seen.append, "c1").stage(stage("x"))
    assert [s.text for s in seen] == ["x"]
    assert type(_progress.make(False, "c1")) is _progress.Display
    # Not in a notebook, and stderr is not a terminal under pytest: plain lines.
    assert isinstance(_progress.make(None, "c1"), _progress._Log)
    with pytest.raises(ValueError, match="expected one of"):
        _progress.make("fancy", "c1")


def test_walltimes_and_memory_take_python_forms() -> None:
    assert cluster._walltime(datetime.timedelta(hours=2)) == "7200s"
    assert cluster._walltime(90) == "90"
    assert cluster._walltime("2:00:00") == "2:00:00"
    assert cluster._memory(4 << 30) == "4G"
    assert cluster._memory(1536 << 20) == "1536M"
    assert cluster._memory(1000) == "1K"
    assert cluster._memory("4G") == "4G"
    args = cluster._up_args(
        nodes=2,
        name="x",
        cpus_per_node=4,
        gpus_per_node=None,
        memory=2 << 30,
        time=datetime.timedelta(minutes=30),
        partition="debug",
        account=None,
        rm="http://rm:8088",
        timeout=60,
        cancel_on_timeout=True,
    )
    assert args == [
        "up", "--json", "--nodes", "2", "--timeout", "60", "--name", "x", "--cpus-per-node", "4",
        "--memory", "2G", "--time", "1800s", "--partition", "debug", "--rm", "http://rm:8088",
        "--cancel-on-timeout",
    ]  # fmt: skip


def test_the_binary_names_its_commit_and_completes_in_three_shells() -> None:
    version = ray_hpc.binary_version()
    assert re.fullmatch(r"ray-hpc \d+\.\d+\.\d+ \(git ([0-9a-f]{12}|unknown)\)", version), version
    for shell, word in [("bash", "complete -F"), ("zsh", "#compdef ray-hpc"), ("fish", "complete -c ray-hpc")]:
        out = subprocess.run([ray_hpc.binary(), "completions", shell], capture_output=True, text=True)
        assert out.returncode == 0 and word in out.stdout, out.stderr
        assert "request-resources" in out.stdout and "watchdog" not in out.stdout
    bash = shutil.which("bash")
    if bash:
        script = subprocess.run([ray_hpc.binary(), "completions", "bash"], capture_output=True, text=True).stdout
        probe = 'COMP_WORDS=(ray-hpc req); COMP_CWORD=1; _ray__hpc ray-hpc req ray-hpc; echo "${COMPREPLY[@]}"'
        done = subprocess.run([bash, "-c", script + "\n" + probe], capture_output=True, text=True)
        assert done.stdout.split() == ["request-resources"], done.stderr


def test_python_m_ray_hpc_runs_the_binary() -> None:
    done = subprocess.run([sys.executable, "-m", "ray_hpc", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("ray-hpc "), done.stderr


def test_the_wheel_installed_the_binary_next_to_ray_and_python() -> None:
    bindir = Path(sys.executable).parent
    for name in ("ray-hpc", "ray", "python"):
        assert (bindir / name).exists(), f"{name} missing from {bindir}"
    done = subprocess.run([str(bindir / "ray-hpc"), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == ray_hpc.binary_version() + "\n", done.stderr


def test_the_package_type_checks_strictly() -> None:
    pytest.importorskip("mypy")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull, "-p", "ray_hpc"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
