"""Entry point of the ray-hpc LSF STAND-IN (not IBM LSF): `main.py <flavour> <command> ...`.

The commands `up` installs (bsub, bjobs, bkill, blaunch, lsrun) are two-line sh scripts that
call this with their flavour: `lsf10` (IBM LSF 10.1-like: blaunch, bjobs -o/-json, a host
file) or `openlava` (no blaunch, bjobs without -o/-json, no host file). `job` and `task`
are the stand-in's own: the batch side of a job and the remote side of blaunch/lsrun."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import base  # noqa: E402


def run(flavour, command, args):
    if flavour not in base.FLAVOURS:
        base.say(f"LSF stand-in: unknown flavour {flavour!r} (one of {', '.join(base.FLAVOURS)})")
        return 2
    if command == "bsub":
        import bsub
        return bsub.main(flavour, args)
    if command == "bjobs":
        import bjobs
        return bjobs.main(flavour, args)
    if command == "bkill":
        import bkill
        return bkill.main(flavour, args)
    if command == "job":
        import job
        return job.main(flavour, args)
    import launch
    if command == "blaunch" and flavour == base.LSF10:
        return launch.blaunch(flavour, args)
    if command == "lsrun":
        return launch.lsrun(flavour, args)
    if command == "task":
        return launch.task(flavour, args)
    base.say(f"{command}: not a command of the LSF stand-in's {flavour} flavour")
    return 127


def main():
    if len(sys.argv) < 3:
        base.say("usage: main.py <flavour> <command> [argument ...]")
        return 2
    try:
        return run(sys.argv[1], sys.argv[2], sys.argv[3:])
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
