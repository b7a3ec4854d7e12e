"""blaunch and lsrun of the LSF STAND-IN (not IBM LSF), and the task side of both.

Each becomes one `srun` step inside the job's Slurm allocation (LSB_JOBID is the Slurm job
id), on exactly the hosts asked for, overlapping the batch script's CPUs (`--overlap`), one
task per host (per slot for a bare `blaunch command`). Every task runs `main.py <flavour>
task`, which takes a UTS namespace whose hostname is its node's name, drops the SLURM_*
variables srun adds, and execs the command with the caller's environment.

Signals: LSF's utilities pass the signals they get on to their remote tasks (F9). srun itself
answers SIGTERM by killing its tasks outright, so srun runs in a process group of its own,
and blaunch/lsrun pass each signal they get to the step with `scancel --signal`."""

import os
import signal
import socket
import subprocess
import sys

from base import FAIL, LIB, say, signal_name, slurm
from job import new_uts_namespace

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


class Usage(Exception):
    pass


def job_hosts(env):
    """The job's hosts, one entry per slot: the host file, else LSB_MCPU_HOSTS, else
    LSB_HOSTS (the order the adapter trusts them in)."""
    path = env.get("LSB_DJOB_HOSTFILE")
    if path and os.path.isfile(path):
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    words = env.get("LSB_MCPU_HOSTS", "").split()
    if words:
        return [h for h, n in zip(words[::2], words[1::2]) for _ in range(int(n))]
    return env.get("LSB_HOSTS", "").split()


def task_command(flavour, argv):
    return [sys.executable, "-EsS", os.path.join(LIB, "main.py"), flavour, "task", "--", *argv]


def srun_step(job_id, hosts, step_name, no_stdin):
    """srun options for one task on each of `hosts` (repeats: several on that host)."""
    args = ["srun", "-Q", "--overlap", "-J", step_name, "-n", str(len(hosts))]
    if job_id:
        args.insert(1, f"--jobid={job_id}")
    if len(set(hosts)) == len(hosts):
        args += ["-N", str(len(hosts)), "--ntasks-per-node=1", "-w", ",".join(hosts)]
    else:
        args += ["-m", "arbitrary", "-w", ",".join(hosts)]
    if no_stdin:
        args.append("--input=none")
    return args


class Step:
    """One srun step whose signals are passed on as LSF's utilities pass them on."""

    def __init__(self, job_id, step_name, argv):
        self.job_id = job_id
        self.step_name = step_name
        self.proc = None
        self.early = []  # signals that came before srun started
        for sig in FORWARDED:
            signal.signal(sig, self.forward)
        # A process group of its own: srun must not see the signals sent to us.
        self.proc = subprocess.Popen(argv, preexec_fn=os.setpgrp)
        for sig in self.early:
            self.proc.send_signal(sig)

    def forward(self, sig, _frame):
        if self.proc is None:
            self.early.append(sig)
            return
        steps = []
        if self.job_id:
            res = slurm(["squeue", "-h", "-s", "-j", self.job_id, "-o", "%i %j"])
            steps = [line.split()[0] for line in res.stdout.splitlines()
                     if line.split()[1:] == [self.step_name]]
        if steps:
            slurm(["scancel", f"--signal={signal_name(sig)}", *steps])
        else:  # no step (yet): end srun, which ends what it started
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self):
        rc = self.proc.wait()
        return 128 - rc if rc < 0 else rc


def step_name(command):
    return f"{command}.{socket.gethostname()}.{os.getpid()}"


def blaunch(flavour, args):
    """blaunch [-n] [-u host_file | -z "host ..." | host] [-use-login-shell | -no-shell]
    command [argument ...] (F6, F7)."""
    env = os.environ
    job_id = env.get("LSB_JOBID", "")
    if not job_id:
        say("blaunch: LSB_JOBID is not set: blaunch works only inside an LSF job")
        return FAIL
    allocated = job_hosts(env)
    hosts, no_stdin, i = None, False, 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a == "-n":
            no_stdin = True
        elif a in ("-z", "-u") and i + 1 < len(args):
            if a == "-z":
                hosts = args[i + 1].split()
            else:
                with open(args[i + 1]) as f:
                    hosts = [line.strip() for line in f if line.strip()]
            i += 1
        elif a not in ("-use-login-shell", "-no-shell"):
            say(f"blaunch: illegal option -- {a[1:]}")
            return FAIL
        i += 1
    command = args[i:]
    if hosts is None and len(command) > 1 and command[0] in allocated:
        hosts, command = [command[0]], command[1:]
    if hosts is None:  # every slot of every host
        hosts = allocated
    if not command or not hosts:
        say("Usage: blaunch [-n] [-u host_file | -z host_name ... | host_name] "
            "[-use-login-shell | -no-shell] command [argument ...]")
        return FAIL
    strangers = [h for h in hosts if h not in allocated]
    if strangers:
        say(f"blaunch: {strangers[0]}: host is not allocated to job <{job_id}>")
        return FAIL
    name = step_name("blaunch")
    step = Step(job_id, name, srun_step(job_id, hosts, name, no_stdin)
                + task_command(flavour, command))
    return step.wait()


def lsrun(flavour, args):
    """lsrun [-l] [-L] [-P] [-S] [-v] [-m "host_name ..."] [-R "res_req"] command [arg ...]
    (F9): one task on the (first) host named by -m."""
    host, i = None, 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a in ("-m", "-R") and i + 1 < len(args):
            if a == "-m":
                host = (args[i + 1].split() or [None])[0]
            i += 1
        elif a not in ("-l", "-L", "-P", "-S", "-v"):
            say(f"lsrun: illegal option -- {a[1:]}")
            return FAIL
        i += 1
    command = args[i:]
    if not command or not host:
        say("lsrun: the LSF stand-in runs a task only on a host named with -m")
        return FAIL
    job_id = os.environ.get("LSB_JOBID", "")
    name = step_name("lsrun")
    step = Step(job_id, name, srun_step(job_id, [host], name, False)
                + task_command(flavour, command))
    return step.wait()


def task(_flavour, args):
    """The remote side: this node's hostname, no SLURM_* variables, then the command."""
    command = args[1:] if args[:1] == ["--"] else args
    node = os.environ.get("SLURMD_NODENAME", "")
    try:
        new_uts_namespace(node)
    except OSError as e:
        say(f"LSF stand-in task on {node}: {e}")
        return FAIL
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SRUN_"))}
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:
        say(f"{command[0]}: {e.strerror}")
        return 127 if isinstance(e, FileNotFoundError) else 126
