"""Runs in the cell's child process before the workload: joins the cap, then execs the command.

Thread-safe replacement for `preexec_fn`: the harness starts `python -m devices.launch -- CMD`
with the cap described in environment variables set by the backend.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

from devices.caps.base import ENV_JOIN, ENV_RLIMIT_AS, ENV_THREADS

PR_SET_PDEATHSIG = 1
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def join_cgroups() -> None:
    """Move this process into the cell's cgroups (the backend lists their procs files)."""
    for procs in filter(None, os.environ.get(ENV_JOIN, "").split(":")):
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "--" or len(argv) < 2:
        sys.exit("usage: python -m devices.launch -- COMMAND [ARGS...]")
    # Die with the harness: a SIGKILLed harness must not leave cells running.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        sys.exit("the harness exited before the cell started")
    join_cgroups()
    if limit := os.environ.get(ENV_RLIMIT_AS):
        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    if threads := os.environ.get(ENV_THREADS):
        for var in THREAD_VARS:
            os.environ[var] = threads
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
