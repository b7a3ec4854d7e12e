"""Shared pieces of the ray-hpc LSF STAND-IN. This is NOT IBM LSF: it speaks LSF's commands
(as lsf/fixtures/README.md documents them) and carries them out on the Slurm test bed
(slurm/testbed). lsf/testbed/README.md says how each LSF behaviour maps onto Slurm."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

LSF10 = "lsf10"
OPENLAVA = "openlava"
FLAVOURS = (LSF10, OPENLAVA)

LIB = os.path.dirname(os.path.abspath(__file__))
# Per-job files (LSB_JOBFILENAME, LSB_DJOB_HOSTFILE) live here; `down` removes it.
SPOOL = os.path.join(os.path.dirname(LIB), "jobs")

# Marks the Slurm jobs this stand-in submitted; the rest of the comment says what LSF knows
# and Slurm does not (the submission host, the hosts of every slot).
COMMENT_TAG = "lsf-standin"

# bjobs and bkill exit with -1 where they fail, as LSF's commands do.
FAIL = 255


def say(*lines, err=True):
    stream = sys.stderr if err else sys.stdout
    for line in lines:
        stream.write(line + "\n")
    stream.flush()


def slurm(argv, stdin=None):
    """Runs one Slurm command; never raises for its exit status."""
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              errors="surrogateescape")
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: command not found\n")


def slurm_words(res):
    """Slurm's own words from a failed command, without its `sbatch: error: ` prefixes."""
    lines = [re.sub(r"^\w+: error: ", "", line).strip()
             for line in (res.stderr or res.stdout).splitlines()]
    return "; ".join(line for line in lines if line) or f"exit status {res.returncode}"


def short_hostname():
    return socket.gethostname().split(".")[0]


def expand_hostlist(text):
    """Slurm's hostlist syntax (`n[1-3,5],gpu07`) as names, zero padding kept."""
    names = []
    for part in re.findall(r"(?:[^,\[]+|\[[^\]]*\])+", text or ""):
        names.extend(_expand_one(part))
    return names


def _expand_one(part):
    m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", part)
    if not m:
        return [part]
    prefix, ranges, rest = m.groups()
    out = []
    for r in ranges.split(","):
        lo, _, hi = r.partition("-")
        hi = hi or lo
        width = len(lo)
        for i in range(int(lo), int(hi) + 1):
            for tail in _expand_one(rest) if rest else [""]:
                out.append(f"{prefix}{i:0{width}d}{tail}")
    return out


def parse_comment(comment):
    """The key=value words this stand-in keeps in a job's Slurm comment; {} for other jobs."""
    words = (comment or "").split()
    if not words or words[0] != COMMENT_TAG:
        return {}
    return dict(w.split("=", 1) for w in words[1:] if "=" in w)


def make_comment(fields):
    return " ".join([COMMENT_TAG] + [f"{k}={v}" for k, v in fields.items() if v])


def lsf_time(slurm_time):
    """Slurm's `2026-12-01T17:20:49` as LSF shows times: `Dec  1 17:20`."""
    try:
        t = time.strptime(slurm_time, "%Y-%m-%dT%H:%M:%S")
    except (TypeError, ValueError):
        return ""
    return time.strftime("%b %e %H:%M", t)


def slurm_seconds(text):
    """Slurm's `[D-][HH:]MM:SS` as seconds; None for UNLIMITED, INVALID and the like."""
    m = re.match(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$", text or "")
    if not m:
        return None
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def signal_number(name):
    """A signal given as LSF takes it (`USR1`, `SIGUSR1` or `10`), or None."""
    name = name.strip().upper()
    if name.isdigit():
        return int(name) if 0 < int(name) < signal.NSIG else None
    try:
        return int(getattr(signal, name if name.startswith("SIG") else "SIG" + name))
    except AttributeError:
        return None


def signal_name(num):
    return signal.Signals(num).name[3:]


def job_tree(root):
    """`root` and every process descended from it, parents first (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    order, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        order.append(pid)
        todo.extend(children.get(pid, []))
    return order


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def signal_job(root, sig, skip_srun=True):
    """Sends `sig` to every process of a job, as LSF's sbatchd does (every process group the
    job's processes are in). srun is left out unless asked: it is how this stand-in reaches
    other hosts, and blaunch/lsrun pass the signal on to their remote tasks themselves."""
    for pid in job_tree(root):
        if skip_srun and comm(pid) == "srun":
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
