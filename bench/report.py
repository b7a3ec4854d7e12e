"""Writes BENCHMARKS.md (to stdout) from the sections the benchmarks wrote into --out: a header
with the machine, the versions, the date and the command, a summary of the targets, then each
benchmark's own section, with its plots' paths made relative to where BENCHMARKS.md lives."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, md_table  # noqa: E402


def cmd_out(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 else "?"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def machine() -> list[list[str]]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    os_name = "?"
    if Path("/etc/os-release").exists():
        m = re.search(r'PRETTY_NAME="([^"]*)"', Path("/etc/os-release").read_text())
        os_name = m.group(1) if m else "?"
    ray = cmd_out([str(ROOT / ".venv/bin/python"), "-c", "import ray; print(ray.__version__)"])
    return [
        ["Date", time.strftime("%Y-%m-%d %H:%M %Z")],
        ["CPU", f"{os.cpu_count()} cores, {cpu}"],
        ["Memory", f"{mem_kb / 1024 / 1024:.1f} GiB"],
        ["OS", f"{os_name}, Linux {platform.release()}"],
        ["Ray", ray],
        ["Slurm", cmd_out(["sinfo", "-V"])],
        ["Python", platform.python_version()],
        ["Rust", cmd_out(["rustc", "-V"])],
        ["ray-hpc", code_version()
         + f", `{os.environ.get('RAY_HPC_BENCH_PROFILE', 'release')}` build"],
    ]


def code_version() -> str:
    """The commit, `-dirty` if the code differs from it. The results themselves do not count:
    a full run deletes bench/results/ first, which `git describe --dirty` would flag."""
    commit = cmd_out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    r = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", ".",
                        ":!bench/results", ":!BENCHMARKS.md"], capture_output=True, text=True)
    return commit + ("-dirty" if r.returncode != 0 or r.stdout.strip() else "")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--names", required=True)
    p.add_argument("--report-dir", type=Path, default=None,
                   help="where BENCHMARKS.md will be (plots are linked relative to it)")
    a = p.parse_args()
    report_dir = a.report_dir or a.out
    rel = os.path.relpath(a.out, report_dir)

    # `bench/run --only X` reruns some benchmarks and keeps the others' earlier results.
    scope = ("the benchmarks named there in this run, the others' results kept from an "
             "earlier run" if "--only" in a.command else "all benchmarks in one run")
    parts = ["# Benchmarks\n",
             f"Written by `{a.command}` ({scope}, on the Slurm test bed of one "
             "machine: 4 slurmd nodes sharing it). Each figure is the median over the runs, "
             "with min–max in brackets. Sections below say what is measured, how, and the "
             "exact commands.\n",
             md_table(["Machine", ""], machine())]

    targets, sections, missing = [], [], []
    for name in a.names.split(","):
        md, js = a.out / f"{name}.md", a.out / f"{name}.json"
        if not md.exists():
            missing.append(name)
            continue
        text = md.read_text()
        if rel != ".":
            text = re.sub(r"\]\(([^)/]+\.png)\)", lambda m: f"]({rel}/{m.group(1)})", text)
        sections.append(text.rstrip() + "\n")
        if js.exists():
            for t in json.loads(js.read_text()).get("targets", []):
                targets.append([t["what"], t["target"], t["measured"], "yes" if t["met"] else "**no**"])
    if targets:
        parts.append("## Targets\n")
        parts.append(md_table(["What", "Target", "Measured", "Met"], targets))
    if missing:
        parts.append(f"**No results (not run, or failed):** {', '.join(missing)} (see bench/run's output).\n")
    print("\n".join(parts + sections))


main()
