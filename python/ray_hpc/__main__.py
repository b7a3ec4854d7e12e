"""``python -m ray_hpc ARGS`` runs the ``ray-hpc`` binary with ARGS."""

import os
import sys

from ._binary import binary, child_env


def main() -> None:
    exe = binary()
    os.execve(exe, [exe, *sys.argv[1:]], child_env())


if __name__ == "__main__":
    main()
