"""The batch side of an LSF job of the LSF STAND-IN (not IBM LSF).

Slurm runs this as the job's batch script on the allocation's first node. It gives the LSF
job script what LSF gives it (F1-F5 of lsf/fixtures/README.md): LSB_JOBID (the Slurm job id),
LSB_JOBNAME, LSB_QUEUE, LSB_HOSTS (one name per slot), LSB_MCPU_HOSTS (`hostA 4 hostB 4`),
LSB_DJOB_HOSTFILE (LSF 10.1 flavour: one line per slot), LSB_JOBFILENAME, LSB_JOBINDEX,
LSB_SUB_HOST, LS_SUBCWD; no SLURM_* variable. The script runs with /bin/sh in a UTS
namespace whose hostname is the first host's name (all test-bed nodes are one machine, and
LSF names no host in the environment: a task knows its host by its hostname).

Signals, as LSF's sbatchd sends them: the -wa warning (Slurm's `--signal=B:SIG@secs` reaches
this process only) goes to every process of the job. Slurm itself sends INT/TERM to every
process at bkill and at the run limit; JOB_TERMINATE_INTERVAL (10 s) later this wrapper
sends SIGKILL, as LSF does, cleans up and ends."""

import base64
import ctypes
import json
import os
import re
import signal
import socket
import sys
import time

from base import (LSF10, SPOOL, expand_hostlist, make_comment, signal_job, slurm)

CLONE_NEWUTS = 0x04000000
TERMINATE_INTERVAL_S = 10

# Variables LSF sets for a job: never inherited from the submitter (bsub run inside a job).
JOB_VARS = {"LSB_JOBID", "LSB_JOBNAME", "LSB_QUEUE", "LSB_JOBINDEX", "LSB_HOSTS",
            "LSB_MCPU_HOSTS", "LSB_JOBFILENAME", "LS_SUBCWD", "LS_JOBPID", "LSB_BATCH_JID",
            "LSB_JOBRES_PID", "LSB_EXIT_PRE_ABORT", "LSB_TRAPSIGS"}


def new_uts_namespace(hostname):
    """This process (and what it starts) gets a hostname of its own: the node's name."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUTS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWUTS): {os.strerror(err)} (run as root)")
    socket.sethostname(hostname)


def lsf_environment(env, extra):
    """The submitter's environment (as LSF passes it on) without Slurm's variables and
    without LSF job variables inherited from an enclosing job, plus `extra`."""
    out = {}
    for k, v in env.items():
        if k.startswith(("SLURM", "SBATCH_", "SRUN_")) or k in JOB_VARS:
            continue
        if k.startswith(("LSB_DJOB_", "LSB_SUB_")):
            continue
        if k == "ENVIRONMENT" and v == "BATCH":  # Slurm's marker of a batch job
            continue
        out[k] = v
    out.update(extra)
    return out


def cpus_per_node(text):
    """SLURM_JOB_CPUS_PER_NODE (`2(x3),1`) as one count per node."""
    counts = []
    for part in (text or "").split(","):
        m = re.match(r"^(\d+)(?:\(x(\d+)\))?$", part.strip())
        if m:
            counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def slot_hosts(cfg, env):
    """One host name per slot, this (the first) host first: span[ptile=K] puts K slots on
    each host, the last one taking the rest; otherwise the CPUs Slurm granted per node."""
    nodes = expand_hostlist(env["SLURM_JOB_NODELIST"])
    me = env.get("SLURMD_NODENAME") or nodes[0]
    if cfg["ptile"]:
        counts, left = [], cfg["slots"]
        for _ in nodes:
            counts.append(min(cfg["ptile"], left))
            left -= counts[-1]
        order = [me] + [n for n in nodes if n != me]
        per_node = dict(zip(order, counts))
    elif cfg["one_host"]:
        per_node = {me: cfg["slots"]}
    else:
        per_node = dict(zip(nodes, cpus_per_node(env.get("SLURM_JOB_CPUS_PER_NODE"))))
    order = [me] + [n for n in nodes if n != me and per_node.get(n)]
    return [h for h in order for _ in range(per_node.get(h, 0))]


def write_file(path, text, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", errors="surrogateescape") as f:
        f.write(text)


def start_script(jobfile, env, hostname):
    """Forks the job script: its own session, a UTS namespace named after this host,
    stdin from /dev/null, /bin/sh as LSF runs job files."""
    ctypes.CDLL(None, use_errno=True)  # loaded before fork
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        new_uts_namespace(hostname)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.execve("/bin/sh", ["/bin/sh", jobfile], env)
    except BaseException as e:  # noqa: BLE001 - the child must never return
        sys.stderr.write(f"LSF stand-in: cannot start the job script: {e}\n")
        sys.stderr.flush()
    os._exit(127)


class Supervisor:
    """Waits for the job script, passing on the warning signal and ending the job
    TERMINATE_INTERVAL_S after Slurm's SIGTERM, as LSF's bkill and run limit do."""

    def __init__(self, warning_signal):
        self.child = None
        self.kill_at = None
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGALRM, signal.SIGPIPE, signal.SIGTERM):
            # Slurm signals every process of the batch step itself: nothing to pass on.
            signal.signal(sig, lambda *_: None)
        if warning_signal:
            signal.signal(warning_signal, self.warn)
        if warning_signal != signal.SIGTERM:
            signal.signal(signal.SIGTERM, self.terminate)

    def warn(self, sig, _frame):
        if self.child:
            signal_job(self.child, sig)

    def terminate(self, _sig, _frame):
        if self.kill_at is None:
            self.kill_at = time.monotonic() + TERMINATE_INTERVAL_S

    def wait(self):
        while True:
            pid, status = os.waitpid(self.child, os.WNOHANG)
            if pid:
                return status
            if self.kill_at is not None and time.monotonic() >= self.kill_at:
                signal_job(self.child, signal.SIGKILL, skip_srun=False)
                self.kill_at = float("inf")
            time.sleep(0.1)


def main(flavour, _args):
    cfg = json.loads(base64.b64decode(sys.stdin.read()))
    env = dict(os.environ)
    job_id = env["SLURM_JOB_ID"]
    hosts = slot_hosts(cfg, env)
    me = hosts[0]
    mcpu = []
    for h in dict.fromkeys(hosts):
        mcpu += [h, str(hosts.count(h))]
    # LSF's job file is ~/.lsbatch/<submit time>.<job id>; the stand-in keeps its own.
    os.makedirs(SPOOL, exist_ok=True)
    jobfile = os.path.join(SPOOL, f"{cfg['submitted']}.{job_id}")
    hostfile = jobfile + ".hostfile"
    extra = {
        "LSB_JOBID": job_id,
        "LSB_JOBNAME": cfg["name"],
        "LSB_QUEUE": cfg["queue"],
        "LSB_HOSTS": " ".join(hosts),
        "LSB_MCPU_HOSTS": " ".join(mcpu),
        "LSB_JOBFILENAME": jobfile,
        "LSB_SUB_HOST": cfg["sub_host"],
        "LS_SUBCWD": cfg["sub_cwd"],
    }
    made = [jobfile]
    write_file(jobfile, cfg["script"], 0o700)
    if flavour == LSF10:  # OpenLava writes no host file
        extra["LSB_JOBINDEX"] = "0"
        extra["LSB_DJOB_HOSTFILE"] = hostfile
        write_file(hostfile, "".join(h + "\n" for h in hosts), 0o644)
        made.append(hostfile)
    # bjobs shows every slot's host (EXEC_HOST), as sbatchd reports them to mbatchd.
    comment = make_comment({"from": cfg["sub_host"], "hosts": ",".join(hosts)})
    slurm(["scontrol", "update", f"JobId={job_id}", f"Comment={comment}"])
    supervisor = Supervisor(cfg["warning_signal"])  # before the fork: no signal is lost
    try:
        supervisor.child = start_script(jobfile, lsf_environment(env, extra), me)
        status = supervisor.wait()
    finally:
        for path in made:
            try:
                os.unlink(path)
            except OSError:
                pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.WEXITSTATUS(status)
