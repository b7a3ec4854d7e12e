"""Shared helpers of the benchmarks in bench/: statistics, Markdown tables, the Slurm test bed.

Every benchmark is a script `bench/<name>` run by `bench/run` as
    bench/<name> --out DIR [--runs N] [--quick]
with RAY_HPC_BIN set to the ray-hpc binary under test. It writes DIR/<name>.md (one Markdown
section, starting with a `## ` heading, with the exact commands it ran), DIR/<name>.json (the raw
figures) and any PNG it refers to by file name, and exits non-zero if a measurement failed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
# Benchmarks that use the Slurm test bed hold this lock, so two of them never share its nodes.
TESTBED_LOCK = Path("/tmp/rh-bench-testbed.lock")


def parse_args(description: str, default_runs: int = 5) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, required=True, help="folder for <name>.md, .json, .png")
    p.add_argument("--runs", type=int, default=default_runs, help="repetitions per measurement")
    p.add_argument("--quick", action="store_true", help="one run, smallest sizes (CI smoke)")
    a = p.parse_args()
    if a.quick:
        a.runs = 1
    a.out.mkdir(parents=True, exist_ok=True)
    return a


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ray_hpc_bin() -> str:
    b = os.environ.get("RAY_HPC_BIN") or str(ROOT / "target" / "release" / "ray-hpc")
    if not os.access(b, os.X_OK):
        sys.exit(f"bench: no ray-hpc binary at {b}: build it (cargo build --release) or set RAY_HPC_BIN")
    return b


def stats(xs: list[float]) -> dict:
    """Median, min, max and mean of a non-empty list."""
    if not xs:
        raise ValueError("no measurements")
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "mean": statistics.fmean(xs), "n": len(xs)}


def fmt(x: float, unit: str = "s", digits: int = 2) -> str:
    return f"{x:.{digits}f} {unit}".rstrip()


def fmt_stats(s: dict, unit: str = "s", digits: int = 2) -> str:
    """`median (min–max)`."""
    return f"{s['median']:.{digits}f} {unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def md_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def write_results(out: Path, name: str, markdown: str, data) -> None:
    (out / f"{name}.md").write_text(markdown)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    log(f"wrote {out / (name + '.md')}")


@contextlib.contextmanager
def testbed_lock():
    """Holds the test bed for one measurement; waits for any other benchmark to let go."""
    with open(TESTBED_LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sh(cmd: list[str], **kw) -> str:
    """Runs a command and returns its stdout; raises with its stderr when it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def job_state(job_id: str) -> str:
    """Slurm's state of a job (COMPLETED, RUNNING, ...), or "" when Slurm no longer knows it."""
    r = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def job_processes(job_id: str) -> list[int]:
    """Processes on this machine that belong to a Slurm job: every process its steps start
    inherits SLURM_JOB_ID, Ray's daemons and workers included."""
    marker = f"SLURM_JOB_ID={job_id}".encode() + b"\0"
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if b"\0" + marker in b"\0" + env:
            pids.append(int(d))
    return pids


def wait_until(cond, timeout: float, what: str, interval: float = 0.05):
    """Polls `cond` until it returns something truthy; raises after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
