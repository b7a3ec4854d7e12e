"""bjobs of the LSF STAND-IN (not IBM LSF): ONE squeue call, shown as LSF shows jobs.

LSF 10.1 flavour: -o "<fields>" [-json] [-noheader] [-hms], -w, -a, -p, -r, -d, -s, -J, -u, -q.
OpenLava flavour: OpenLava's getopt string `VladpsrwWgRAhJ:q:u:m:N:P:S` (lsbatch/cmd/bjobs.c);
`-o`/`-json` are invalid options there, answered as getopt answers them."""

import json

from base import FAIL, LSF10, say
from jobs import SlurmFailed, snapshot

OPENLAVA_OPTS = "VladpsrwWgRAhJ:q:u:m:N:P:S"
OPENLAVA_USAGE = [
    "Usage: bjobs [-h] [-V] [-w |-l] [-a] [-d] [-p] [-s] [-r] [-A]",
    "             [-m host_name] [-q queue_name] [-u user_name | -u all]",
    "             [-P project_name] [-N host_spec]",
    "             [-J name_spec] [jobId | \"jobId[idxList]\" ...]",
]
LSF10_FLAGS = {"-a", "-w", "-W", "-p", "-r", "-d", "-s", "-json", "-noheader", "-hms", "-A"}
LSF10_WITH_ARG = {"-o", "-J", "-u", "-q", "-m", "-P"}

TABLE_HEADER = "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME"
PEND_HEADER = "JOBID   USER    STAT  QUEUE       FROM_HOST      JOB_NAME           SUBMIT_TIME"


class Usage(Exception):
    """A command line bjobs refuses; the lines it prints."""


class Opts:
    def __init__(self):
        self.flags = set()
        self.fields = None
        self.name = self.user = self.queue = None
        self.ids = []


def parse_lsf10(args):
    o = Opts()
    it = iter(args)
    for a in it:
        if a in LSF10_FLAGS:
            o.flags.add(a[1:])
        elif a in LSF10_WITH_ARG:
            value = next(it, None)
            if value is None:
                raise Usage([f"bjobs: option requires an argument -- {a[1:]}"])
            if a == "-o":
                o.fields = value
            elif a == "-J":
                o.name = value
            elif a == "-u":
                o.user = value
            elif a == "-q":
                o.queue = value
        elif a.startswith("-") and a != "-":
            raise Usage([f"bjobs: illegal option -- {a[1:]}"])
        else:
            o.ids.append(a)
    if "json" in o.flags and o.fields is None:
        raise Usage(["bjobs: -json must be used with -o"])
    return o


def parse_openlava(args):
    """GNU getopt over OpenLava's option string: options and job ids in any order."""
    o = Opts()
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            o.ids.extend(args[i:])
            break
        if not a.startswith("-") or a == "-":
            o.ids.append(a)
            continue
        k = 1
        while k < len(a):
            c = a[k]
            k += 1
            pos = OPENLAVA_OPTS.find(c)
            if c == ":" or pos < 0:
                raise Usage([f"bjobs: invalid option -- '{c}'"] + OPENLAVA_USAGE)
            if OPENLAVA_OPTS[pos + 1:pos + 2] == ":":
                value = a[k:] or (args[i] if i < len(args) else None)
                if not a[k:]:
                    i += 1
                if value is None:
                    raise Usage([f"bjobs: option requires an argument -- '{c}'"]
                                + OPENLAVA_USAGE)
                if c == "J":
                    o.name = value
                elif c == "u":
                    o.user = value
                elif c == "q":
                    o.queue = value
                break
            if c == "l":
                raise Usage(["bjobs: -l (long format) is not provided by the LSF stand-in"])
            o.flags.add(c)
    return o


def select(o):
    """(jobs to show, ids nobody knows) from one squeue call."""
    if o.ids:
        bad = [i for i in o.ids if not i.isdigit()]
        if bad:
            raise Usage([f"{bad[0]}: Illegal job ID."])
        found = snapshot(ids=o.ids)
        known = {j.id for j in found}
        missing = [i for i in dict.fromkeys(o.ids) if i not in known]
        return sorted(found, key=lambda j: int(j.id)), missing
    jobs = snapshot(name=o.name, user=o.user or "me", all_states="a" in o.flags or
                    "d" in o.flags)
    if o.queue:
        jobs = [j for j in jobs if j.queue == o.queue]
    wanted = {"p": ("PEND", "PSUSP"), "r": ("RUN",), "s": ("USUSP", "SSUSP", "PSUSP"),
              "d": ("DONE", "EXIT")}
    states = set()
    for flag, stats in wanted.items():
        if flag in o.flags:
            states.update(stats)
    if states:
        jobs = [j for j in jobs if j.stat in states]
    elif "a" not in o.flags:
        jobs = [j for j in jobs if not j.finished]
    return sorted(jobs, key=lambda j: int(j.id)), []


def none_found(o):
    if o.name:
        return f"Job <{o.name}> is not found"
    for flag, what in (("p", "pending"), ("r", "running"), ("s", "suspended"), ("d", "done")):
        if flag in o.flags:
            return f"No {what} job found"
    return "No job found" if "a" in o.flags else "No unfinished job found"


def field_value(job, field, hms):
    if field == "time_left" and hms and job.time_left:
        h, m = job.time_left.split()[0].split(":")
        return f"{int(h):02d}:{m}:00"
    values = {
        "jobid": job.id,
        "stat": job.stat,
        "user": job.user,
        "queue": job.queue,
        "job_name": job.name,
        "from_host": job.from_host,
        "exec_host": ":".join(job.slot_hosts),
        "nexec_host": str(len(set(job.slot_hosts))) if job.started else "",
        "slots": str(len(job.slot_hosts)) if job.started else "",
        "submit_time": job.submit_time,
        "start_time": job.start_time,
        "time_left": job.time_left,
        "pend_reason": job.pend_reason,
        "exit_reason": job.exit_reason,
        "exit_code": job.exit_code,
    }
    return values[field]


def parse_fields(text):
    """`-o "jobid stat:5 delimiter=','"`: the field names (widths dropped) and delimiter."""
    fields, delimiter = [], " "
    for word in text.split():
        if word.startswith("delimiter="):
            delimiter = word.split("=", 1)[1].strip("'\"") or " "
            continue
        name = word.split(":")[0].lower()
        if name not in FIELD_NAMES:
            raise Usage([f"bjobs: {name}: Illegal field name"])
        fields.append(name)
    return fields, delimiter


FIELD_NAMES = ("jobid", "stat", "user", "queue", "job_name", "from_host", "exec_host",
               "nexec_host", "slots", "submit_time", "start_time", "time_left",
               "pend_reason", "exit_reason", "exit_code")


def print_json(jobs, missing, fields, hms):
    records = [json.dumps({f.upper(): field_value(j, f, hms) for f in fields},
                          separators=(",", ":")) for j in jobs]
    records += [json.dumps({"ERROR": f"Job <{i}> is not found"}, separators=(",", ":"))
                for i in missing]
    say("{", '  "COMMAND":"bjobs",', f'  "JOBS":{len(records)},', '  "RECORDS":[', err=False)
    if records:
        say(",\n".join("    " + r for r in records), err=False)
    say("  ]", "}", err=False)


def print_fields(jobs, fields, delimiter, o):
    if "noheader" not in o.flags:
        say(delimiter.join(f.upper() for f in fields), err=False)
    for j in jobs:
        say(delimiter.join(field_value(j, f, "hms" in o.flags) or "-" for f in fields),
            err=False)


def trunc(text, width):
    """LSF's TRUNC_STR: a long name as `*` and its last width-1 characters."""
    return text if len(text) <= width else "*" + text[-(width - 1):]


def print_table(jobs, o):
    pend_only = "p" in o.flags and not o.ids and not o.flags & {"a", "r", "d", "s"}
    wide = bool(o.flags & {"w", "W"})
    say(PEND_HEADER if pend_only else TABLE_HEADER, err=False)
    for j in jobs:
        pending = j.stat in ("PEND", "PSUSP")
        hosts = j.slot_hosts
        if pend_only:
            say("%-7s %-7.7s %-5.5s %-11.11s %-14.14s %-18.18s %s" % (
                j.id, j.user, j.stat, j.queue, j.from_host, trunc(j.name, 20),
                j.submit_time), err=False)
        elif wide:
            exec_host = "   -    " if pending else (":".join(hosts) or "   -   ")
            say("%-7s %-7s %-5.5s %-10s %-11s %-11s %-10s %s" % (
                j.id, j.user, j.stat, j.queue, j.from_host, exec_host, j.name,
                j.submit_time), err=False)
        else:
            exec_host = "" if pending else (hosts[0] if hosts else "   -   ")
            say("%-7s %-7.7s %-5.5s %-10.10s %-11.11s %-11.11s %-10.10s %s" % (
                j.id, j.user, j.stat, j.queue, j.from_host, exec_host, trunc(j.name, 10),
                j.submit_time), err=False)
            for host in hosts[1:]:
                say("%45s%-s" % ("", host), err=False)
        if "p" in o.flags and pending:
            say(" " + j.pend_reason, err=False)


def main(flavour, args):
    try:
        o = parse_lsf10(args) if flavour == LSF10 else parse_openlava(args)
        fields, delimiter = parse_fields(o.fields) if o.fields is not None else (None, " ")
        jobs, missing = select(o)
    except Usage as e:
        say(*e.args[0])
        return FAIL
    except SlurmFailed as e:
        say(f"lsb_openjobinfo: Failed in an LSF library call: {e}")
        return FAIL
    if fields is not None and "json" in o.flags:
        if jobs or missing:
            print_json(jobs, missing, fields, "hms" in o.flags)
    elif jobs and fields is not None:
        print_fields(jobs, fields, delimiter, o)
    elif jobs:
        print_table(jobs, o)
    for i in missing:
        say(f"Job <{i}> is not found")
    if not jobs and not missing:
        say(none_found(o))
    return FAIL if missing or not jobs else 0
