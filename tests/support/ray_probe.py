"""Driver for tests/gcs_live.rs: connects to the test cluster and reports where Ray's worker
processes live (pid, process group, session), for a task and for a detached actor that stays
alive after this driver exits.

usage: ray_probe.py <gcs host:port>   (RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH from the environment)
Prints one JSON line: {"task": [pid, pgid, sid], "actor": [pid, pgid, sid]}.
"""

import json
import os
import sys

import ray


def ids():
    return [os.getpid(), os.getpgid(0), os.getsid(0)]


@ray.remote(num_cpus=1)
def task_ids():
    return ids()


@ray.remote(num_cpus=0)
class Probe:
    def ids(self):
        return ids()


def main():
    ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False)
    actor = Probe.options(name="rh-probe", lifetime="detached").remote()
    out = {"task": ray.get(task_ids.remote()), "actor": ray.get(actor.ids.remote())}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
