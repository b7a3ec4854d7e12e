"""Jobs as LSF shows them, read from ONE squeue call (LSF stand-in, not IBM LSF).

The test bed keeps no accounting (no sacct), so a job is known for as long as squeue shows
it: MinJobAge (300 s) after it ends. LSF keeps finished jobs for CLEAN_PERIOD (an hour by
default); after that both answer `Job <N> is not found`."""

from base import (expand_hostlist, lsf_time, parse_comment, slurm, slurm_seconds,
                  slurm_words)

# squeue -O fields; Name last, as the only free text a job's owner sets.
FIELDS = ["JobID", "State", "Reason", "exit_code", "SubmitTime", "StartTime", "TimeLeft",
          "Partition", "UserName", "NodeList", "BatchHost", "Comment", "Name"]
SEP = "\x1f"

# LSF's termination reasons (bjobs -o exit_reason), for the Slurm end states that have one.
EXIT_REASONS = {
    "CANCELLED": "TERM_OWNER: job killed by owner",
    "TIMEOUT": "TERM_RUNLIMIT: job killed after reaching LSF run time limit",
    "DEADLINE": "TERM_DEADLINE: job killed after deadline",
    "OUT_OF_MEMORY": "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit",
    "PREEMPTED": "TERM_PREEMPT: job killed after preemption",
    "NODE_FAIL": "TERM_ZOMBIE: job exited while LSF is not available",
}
RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}

# Slurm's pending reasons in LSF's words (OpenLava's lsb.h pending-reason texts).
PEND_REASONS = {
    "None": "New job is waiting for scheduling",
    "Priority": "Not enough job slot(s)",
    "Resources": "Not enough job slot(s)",
    "BeginTime": "The job has a specified start time",
    "Dependency": "Job dependency condition not satisfied",
    "DependencyNeverSatisfied": "Dependency condition invalid or never satisfied",
    "JobHeldUser": "The job was suspended by the user while pending",
    "JobHeldAdmin": "The job was suspended by LSF admin or root while pending",
    "PartitionDown": "The queue is inactivated by the administrator",
    "PartitionInactive": "The queue is inactivated by the administrator",
}
OTHER_PEND_REASON = "Job's resource requirements not satisfied"


class SlurmFailed(Exception):
    pass


class Job:
    def __init__(self, row):
        f = dict(zip(FIELDS, row))
        self.f = f
        self.id = f["JobID"]
        self.name = f["Name"]
        self.queue = f["Partition"]
        self.user = f["UserName"]
        self.info = parse_comment(f["Comment"])
        self.from_host = self.info.get("from", "-")
        self.started = bool(f["NodeList"].strip()) and f["State"] not in PENDING
        self.stat, self.exit_reason = self._stat()

    def _stat(self):
        s = self.f["State"]
        if s in PENDING:
            held = self.f["Reason"] in ("JobHeldUser", "JobHeldAdmin")
            return ("PSUSP" if held else "PEND"), ""
        if s in RUNNING:
            # F24: bjobs may show a killed job running for a short while.
            return "RUN", ""
        if s == "SUSPENDED":
            return "USUSP", ""
        if s == "COMPLETED":
            return "DONE", ""
        return "EXIT", EXIT_REASONS.get(s, "")

    @property
    def finished(self):
        return self.stat in ("DONE", "EXIT")

    @property
    def exit_code(self):
        """The job's exit code as LSF gives it: 128+N for a job killed by signal N."""
        raw = self.f["exit_code"].strip()
        if self.stat != "EXIT" or not raw.isdigit():
            return ""
        raw = int(raw)
        code = 128 + (raw & 0x7F) if raw & 0x7F else (raw >> 8) & 0xFF
        return str(code) if code or self.started else ""

    @property
    def pend_reason(self):
        if self.stat not in ("PEND", "PSUSP"):
            return ""
        return PEND_REASONS.get(self.f["Reason"], OTHER_PEND_REASON) + ";"

    @property
    def start_time(self):
        return lsf_time(self.f["StartTime"]) if self.started else ""

    @property
    def submit_time(self):
        return lsf_time(self.f["SubmitTime"])

    @property
    def time_left(self):
        """`H:MM L` (a run limit, no estimate), as bjobs -WL; empty without a limit."""
        if self.stat not in ("RUN", "USUSP", "SSUSP"):
            return ""
        secs = slurm_seconds(self.f["TimeLeft"])
        if secs is None:
            return ""
        return f"{secs // 3600}:{secs % 3600 // 60:02d} L"

    @property
    def slot_hosts(self):
        """One host name per slot, the first execution host first."""
        if not self.started:
            return []
        if self.info.get("hosts"):
            return self.info["hosts"].split(",")
        names = expand_hostlist(self.f["NodeList"])
        batch = self.f["BatchHost"]
        if batch in names:
            names.remove(batch)
            names.insert(0, batch)
        return names


def snapshot(ids=None, name=None, user=None, all_states=True):
    """The jobs squeue knows, from one call: by ids, else by name and user ("me", a user
    name, or "all"); `all_states` includes jobs that ended (for MinJobAge)."""
    argv = ["squeue", "-h", "-O", ",".join(f"{f}:{SEP}" for f in FIELDS)]
    if all_states:
        argv += ["-t", "all"]
    if ids:
        argv += ["-j", ",".join(ids)]
    if name:
        argv += ["--name", name]
    if user == "me":
        argv.append("--me")
    elif user and user != "all":
        argv += ["-u", user]
    res = slurm(argv)
    if res.returncode != 0:
        # squeue refuses a list whose ids it knows none of; LSF: none of them is found.
        if ids and "Invalid job id" in res.stderr:
            return []
        raise SlurmFailed(slurm_words(res))
    jobs = []
    for line in res.stdout.splitlines():
        row = line.split(SEP, len(FIELDS) - 1)
        if len(row) != len(FIELDS) or not row[0].isdigit():
            continue  # an array or heterogeneous job: not the stand-in's
        row[-1] = row[-1][:-1] if row[-1].endswith(SEP) else row[-1]
        jobs.append(Job(row))
    return jobs
