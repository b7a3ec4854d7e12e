"""bsub of the LSF STAND-IN (not IBM LSF): an LSF job becomes one sbatch.

The job script comes on stdin (or as the command on bsub's command line); its `#BSUB` lines
before the first command are read as options, and command-line options override them. The
Slurm job runs job.py, which gives the script LSF's job environment and runs it with /bin/sh.
lsf/testbed/README.md has the whole mapping."""

import base64
import json
import math
import os
import re
import shlex
import subprocess
import sys
import threading
import time

from base import (FAIL, LIB, LSF10, make_comment, say, short_hostname, signal_number, slurm,
                  slurm_words)
from jobs import SlurmFailed, snapshot

# Options the stand-in carries out, and those it accepts and ignores (mail, user groups,
# application profiles and limits have no meaning on the test bed).
LSF10_WITH_ARG = {"-J", "-n", "-R", "-q", "-P", "-W", "-o", "-e", "-oo", "-eo", "-wa", "-wt",
                  "-gpu", "-cwd", "-u", "-G", "-app", "-M"}
LSF10_FLAGS = {"-K", "-x", "-N", "-B"}
# OpenLava's bsub option template (lsbatch/lib/lsb.sub.c): `name:` takes an argument,
# `name|` does not. Nothing else is an option there: no -wa, -wt, -gpu, -oo, -eo, -cwd.
OPENLAVA_TEMPLATE = ("E:T:w:f:k:R:m:J:L:u:i:o:e:n:q:b:t:s:c:v:p:W:F:D:S:C:M:O:P:"
                     "Ip|Is|I|r|H|x|N|B|h|V|G:X:K|")
OPENLAVA_SUPPORTED = {"-J", "-n", "-R", "-q", "-P", "-W", "-o", "-e", "-K", "-x", "-N", "-B",
                      "-u", "-G", "-M"}
NOT_SUBMITTED = "Job not submitted."


class Refused(Exception):
    """bsub's refusal, in LSF's words."""


def openlava_options():
    with_arg, flags = set(), set()
    for m in re.finditer(r"([A-Za-z]+)([:|])", OPENLAVA_TEMPLATE):
        (with_arg if m.group(2) == ":" else flags).add("-" + m.group(1))
    return with_arg, flags


def parse_options(words, flavour, where):
    """Options from `words` until the first word that is not one: ({option: value}, rest).
    -R may be given several times; its values are kept in a list."""
    if flavour == LSF10:
        with_arg, flags, supported = LSF10_WITH_ARG, LSF10_FLAGS, LSF10_WITH_ARG | LSF10_FLAGS
    else:
        with_arg, flags = openlava_options()
        supported = OPENLAVA_SUPPORTED
    opts = {"-R": []}
    i = 0
    while i < len(words) and words[i].startswith("-") and words[i] != "-":
        w = words[i]
        if w not in with_arg and w not in flags:
            raise Refused(f"bsub: illegal option -- {w[1:]} ({where}). {NOT_SUBMITTED}")
        if w not in supported:
            raise Refused(f"bsub: {w} is not provided by the LSF stand-in ({where}). "
                          f"{NOT_SUBMITTED}")
        if w in flags:
            opts[w] = True
            i += 1
            continue
        if i + 1 >= len(words):
            raise Refused(f"bsub: option requires an argument -- {w[1:]} ({where}). "
                          f"{NOT_SUBMITTED}")
        if w == "-R":
            opts["-R"].append(words[i + 1])
        else:
            opts[w] = words[i + 1]
        i += 2
    return opts, words[i:]


def script_options(script, flavour):
    """The `#BSUB` lines before the script's first command, as options; and that command."""
    opts = {"-R": []}
    first_command = ""
    for n, line in enumerate(script.splitlines(), 1):
        text = line.strip()
        if text.startswith("#BSUB"):
            try:
                words = shlex.split(text[5:])
            except ValueError as e:
                raise Refused(f"bsub: #BSUB line {n}: {e}. {NOT_SUBMITTED}")
            line_opts, rest = parse_options(words, flavour, f"#BSUB line {n}")
            if rest:
                raise Refused(f"bsub: #BSUB line {n}: {rest[0]} is not an option. "
                              f"{NOT_SUBMITTED}")
            opts["-R"] += line_opts.pop("-R")
            opts.update(line_opts)
        elif text and not text.startswith("#"):
            first_command = text
            break
    return opts, first_command


def minutes(text, what):
    """LSF's `[hour:]minute` as minutes."""
    m = re.match(r"^(?:(\d+):)?(\d+)$", text.split("/")[0].strip())
    if not m:
        raise Refused(f"{text}: Bad {what} specification. {NOT_SUBMITTED}")
    return int(m.group(1) or 0) * 60 + int(m.group(2))


class Resources:
    """What one or more -R strings ask for: span[ptile=K] or span[hosts=1],
    rusage[mem=MB], select[...]."""

    def __init__(self, strings):
        self.ptile = None
        self.one_host = False
        self.mem_mb = None
        self.select = []
        for s in strings:
            self._read(s)

    def _read(self, text):
        rest = text
        for section, body in re.findall(r"(\w+)\[([^\]]*)\]", text):
            rest = rest.replace(f"{section}[{body}]", " ", 1)
            if section == "span":
                self._span(body, text)
            elif section == "rusage":
                self._rusage(body, text)
            elif section == "select":
                self.select.append(body)
            elif section not in ("order", "same", "affinity", "cu"):
                raise Refused(f"{text}: Bad resource requirement syntax. {NOT_SUBMITTED}")
        if rest.strip():
            self.select.append(rest.strip())  # a bare expression is a select section

    def _span(self, body, text):
        for key, value in re.findall(r"(\w+)\s*=\s*(\w+)", body):
            if key == "ptile" and value.isdigit() and int(value) > 0:
                self.ptile = int(value)
            elif key == "hosts" and value == "1":
                self.one_host = True
            else:
                raise Refused(f"{text}: Bad resource requirement syntax. {NOT_SUBMITTED}")

    def _rusage(self, body, text):
        m = re.search(r"\bmem\s*=\s*([\d.]+)\s*([KMGT]?B?)\b", body, re.I)
        if m:
            scale = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
            self.mem_mb = max(1, math.ceil(float(m.group(1)) * scale[m.group(2)[:1].upper()]))
        elif "mem" in body:
            raise Refused(f"{text}: Bad resource requirement syntax. {NOT_SUBMITTED}")

    def constraint(self):
        """select[a && b] as Slurm's node features `a&b`; anything richer is refused."""
        words = []
        for expr in self.select:
            for word in re.split(r"\s*&&\s*", expr.strip()):
                if not re.fullmatch(r"[A-Za-z0-9_.-]+", word):
                    raise Refused(f"select[{expr}]: the LSF stand-in maps only `name && "
                                  f"name` onto Slurm node features. {NOT_SUBMITTED}")
                words.append(word)
        return "&".join(words)


def queues():
    """{partition: {node: cpus}} and the default partition, from one sinfo."""
    res = slurm(["sinfo", "-h", "-N", "-o", "%P %N %c"])
    if res.returncode != 0:
        raise Refused(f"Failed in an LSF library call: {slurm_words(res)}. {NOT_SUBMITTED}")
    parts, default = {}, None
    for line in res.stdout.splitlines():
        words = line.split()
        if len(words) != 3:
            continue
        name, node, cpus = words
        if name.endswith("*"):
            name = name[:-1]
            default = name
        parts.setdefault(name, {})[node] = int(re.sub(r"\D", "", cpus) or 0)
    return parts, default


def output_path(path):
    """LSF's -o/-e file: %J is the job id, %I the array index (0 outside arrays); a
    directory gets `<jobid>.out`."""
    if path.endswith("/") or os.path.isdir(path):
        path = os.path.join(path, "%J.out")
    return path.replace("%J", "%j").replace("%I", "0")


class Request:
    def __init__(self, opts, flavour, first_command):
        self.opts = opts
        self.flavour = flavour
        self.name = opts.get("-J") or first_command[:4094] or "STDIN"
        if "[" in opts.get("-J", ""):
            raise Refused(f"{self.name}: job arrays are not provided by the LSF stand-in. "
                          f"{NOT_SUBMITTED}")
        slots = opts.get("-n", "1").split(",")[0]
        if not slots.isdigit() or int(slots) < 1:
            raise Refused(f"{opts.get('-n')}: Bad argument for option -n. {NOT_SUBMITTED}")
        self.slots = int(slots)
        self.res = Resources(opts["-R"])
        self.queue_given = opts.get("-q") or os.environ.get("LSB_DEFAULTQUEUE") or None

    def check_fits(self, nodes):
        """LSF refuses a job its queue can never run; Slurm would queue it for ever."""
        biggest = max(nodes.values(), default=0)
        if self.res.ptile:
            hosts = math.ceil(self.slots / self.res.ptile)
            fits = self.res.ptile <= biggest and hosts <= len(nodes)
        elif self.res.one_host:
            fits = self.slots <= biggest
        else:
            fits = self.slots <= sum(nodes.values())
        if not fits:
            raise Refused(f"Too many processors requested. {NOT_SUBMITTED}")

    def sbatch_args(self, queue):
        o = self.opts
        args = ["-J", self.name, "-p", queue]
        if self.res.ptile:
            per_host = min(self.res.ptile, self.slots)
            args += ["-N", str(math.ceil(self.slots / self.res.ptile)),
                     "--ntasks-per-node=1", f"--cpus-per-task={per_host}"]
        elif self.res.one_host:
            args += ["-N", "1", "--ntasks-per-node=1", f"--cpus-per-task={self.slots}"]
        else:
            args += ["-n", str(self.slots)]
        if self.res.mem_mb:
            args.append(f"--mem={self.res.mem_mb}")  # per host, as rusage[mem] is (F16b)
        constraint = self.res.constraint()
        if constraint:
            args.append(f"--constraint={constraint}")
        if "-W" in o:
            args.append(f"--time={minutes(o['-W'], 'RUNLIMIT')}")
        out = o.get("-oo") or o.get("-o")
        err = o.get("-eo") or o.get("-e")
        # Without -o, LSF mails the output; the test bed drops it.
        args += ["-o", output_path(out) if out else "/dev/null"]
        if err:
            args += ["-e", output_path(err)]
        overwrite = "-oo" in o or "-eo" in o
        args.append(f"--open-mode={'truncate' if overwrite else 'append'}")
        if "-P" in o:
            args.append(f"--account={o['-P']}")
        if "-x" in o:
            args.append("--exclusive")
        if "-cwd" in o:
            args.append(f"--chdir={o['-cwd']}")
        if "-gpu" in o:
            m = re.search(r"num=(\d+)", o["-gpu"])
            args.append(f"--gpus-per-node={m.group(1) if m else 1}")
        warning = self.warning()
        if warning:
            sig, secs = warning
            args.append(f"--signal=B:{sig}@{secs}")
        return args

    def warning(self):
        """(signal, seconds before the run limit) of -wa/-wt; None when not both given."""
        if "-wa" not in self.opts or "-wt" not in self.opts:
            return None
        sig = signal_number(self.opts["-wa"])
        if sig is None:
            raise Refused(f"{self.opts['-wa']}: Bad signal for -wa. {NOT_SUBMITTED}")
        return sig, minutes(self.opts["-wt"], "warning time") * 60


def batch_script(flavour, cfg):
    """The Slurm batch script: job.py, reading the LSF job's description from a here-doc."""
    payload = base64.b64encode(json.dumps(cfg).encode()).decode()
    lines = [payload[i:i + 76] for i in range(0, len(payload), 76)]
    main = os.path.join(LIB, "main.py")
    return "\n".join([
        "#!/bin/sh",
        "# An LSF job of the ray-hpc LSF STAND-IN (not IBM LSF): job.py builds LSF's job",
        "# environment from this Slurm allocation, then runs the LSF job script with /bin/sh.",
        f"exec {shlex.quote(sys.executable)} -EsS {shlex.quote(main)} {flavour} job"
        " <<'LSF_STANDIN_JOB'",
        *lines,
        "LSF_STANDIN_JOB",
        "",
    ])


def read_request(flavour, args):
    opts, command = parse_options(args, flavour, "command line")
    if command:
        script, first = " ".join(command) + "\n", " ".join(command)
        script_opts = {"-R": []}
    else:
        script = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
        script_opts, first = script_options(script, flavour)
        if not first:
            raise Refused("No command is specified in the script file. " + NOT_SUBMITTED)
    merged = dict(script_opts)
    merged.update({k: v for k, v in opts.items() if k != "-R"})
    merged["-R"] = script_opts["-R"] + opts["-R"]
    return Request(merged, flavour, first), script


def copy_stream(src, dst):
    for line in src:
        dst.write(line)
        dst.flush()


def wait_for_end(proc, job_id):
    """bsub -K: waits (sbatch --wait) and returns the job's exit code as LSF's bsub -K does
    (126 for a job killed before it started)."""
    say("<<Waiting for dispatch ...>>")
    sbatch_rc = proc.wait()
    say("<<Job is finished>>")
    try:
        found = snapshot(ids=[job_id])
    except SlurmFailed:
        return sbatch_rc
    if not found:
        return sbatch_rc
    job = found[0]
    if job.stat == "DONE":
        return 0
    if not job.started:
        return 126
    return int(job.exit_code or 1)


def main(flavour, args):
    try:
        req, script = read_request(flavour, args)
        parts, default = queues()
        queue = req.queue_given or default
        if queue not in parts:
            raise Refused(f"{queue}: No such queue. {NOT_SUBMITTED}")
        req.check_fits(parts[queue])
        sbatch = ["sbatch", "--parsable", *req.sbatch_args(queue),
                  f"--comment={make_comment({'from': short_hostname()})}"]
        warning = req.warning()
    except Refused as e:
        say(str(e))
        return FAIL
    cfg = {
        "name": req.name,
        "queue": queue,
        "slots": req.slots,
        "ptile": req.res.ptile,
        "one_host": req.res.one_host,
        "script": script,
        "sub_host": short_hostname(),
        "sub_cwd": os.getcwd(),
        "submitted": int(time.time()),
        "warning_signal": warning[0] if warning else None,
    }
    if "-K" in req.opts:
        sbatch.append("--wait")
    proc = subprocess.Popen(sbatch, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(batch_script(flavour, cfg))
    proc.stdin.close()
    first = proc.stdout.readline().strip()
    job_id = first.split(";")[0]
    if not job_id.isdigit():
        proc.wait()
        words = slurm_words(subprocess.CompletedProcess(sbatch, proc.returncode, first,
                                                        proc.stderr.read()))
        if "Invalid partition" in words:
            words = f"{queue}: No such queue"
        say(f"{words}. {NOT_SUBMITTED}")
        return FAIL
    where = f"queue <{queue}>" if req.queue_given else f"default queue <{queue}>"
    say(f"Job <{job_id}> is submitted to {where}.", err=False)
    if "-K" in req.opts:
        threading.Thread(target=copy_stream, args=(proc.stderr, sys.stderr), daemon=True).start()
        return wait_for_end(proc, job_id)
    proc.wait()
    return 0
