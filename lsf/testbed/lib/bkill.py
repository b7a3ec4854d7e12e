"""bkill of the LSF STAND-IN (not IBM LSF): one squeue for the jobs' states, then scancel.

LSF sends SIGINT and SIGTERM, then SIGKILL JOB_TERMINATE_INTERVAL (10 s) later (bkill's
page, F24). Here: `scancel --signal=INT --full` (every process of the running jobs), then
`scancel` (SIGTERM to every process, SIGKILL after Slurm's KillWait); the job's wrapper
(job.py) sends SIGKILL 10 s after the SIGTERM, as LSF would. A pending job is just removed.

bkill [-J name] [-u user | -u all] [-q queue] [0] [job_id ...]; `0` means all the user's
unfinished jobs (with -J, -u, -q: all that match); -J, -u or -q without `0` the most recent
one that matches, as LSF does."""

from base import FAIL, say, slurm, slurm_words
from jobs import SlurmFailed, snapshot


def parse(args):
    opts, ids, it = {}, [], iter(args)
    for a in it:
        if a in ("-J", "-u", "-q"):
            opts[a] = next(it, None)
            if opts[a] is None:
                raise ValueError(f"bkill: option requires an argument -- {a[1:]}")
        elif a.startswith("-"):
            raise ValueError(f"bkill: -{a[1:]} is not provided by the LSF stand-in")
        elif not a.isdigit():
            raise ValueError(f"{a}: Illegal job ID.")
        else:
            ids.append(a)
    return opts, ids


def main(_flavour, args):
    try:
        opts, ids = parse(args)
    except ValueError as e:
        say(str(e))
        return FAIL
    every = "0" in ids or (not ids and opts)
    only_last = every and "0" not in ids
    ids = [i for i in ids if i != "0"]
    if not ids and not every:
        say("bkill: Job ID or one of '-J', '-u' and '-q' together with '0' must be specified")
        return FAIL
    try:
        if every:
            jobs = [j for j in snapshot(name=opts.get("-J"), user=opts.get("-u") or "me",
                                        all_states=False)
                    if not j.finished and opts.get("-q") in (None, j.queue)]
            if only_last and jobs:
                jobs = [max(jobs, key=lambda j: int(j.id))]
            known = {}
        else:
            jobs = snapshot(ids=ids)
            known = {j.id: j for j in jobs}
    except SlurmFailed as e:
        say(f"Failed in an LSF library call: {e}")
        return FAIL
    failed = False
    to_kill = []
    if every:
        to_kill = jobs
        if not jobs:
            say("No unfinished job found")
            failed = True
    for i in dict.fromkeys(ids):
        job = known.get(i)
        if job is None:
            say(f"Job <{i}>: No matching job found")
            failed = True
        elif job.finished:
            say(f"Job <{i}>: Job has already finished")
            failed = True
        else:
            to_kill.append(job)
    if to_kill:
        running = [j.id for j in to_kill if j.started]
        if running:
            slurm(["scancel", "--signal=INT", "--full", *running])
        res = slurm(["scancel", *[j.id for j in to_kill]])
        if res.returncode != 0:
            for j in to_kill:
                say(f"Job <{j.id}>: {slurm_words(res)}")
            return FAIL
        for j in to_kill:
            say(f"Job <{j.id}> is being terminated", err=False)
    return FAIL if failed else 0
