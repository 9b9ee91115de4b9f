"""Runs in the cell's child process before the workload: joins the cap, then execs the command.

Thread-safe replacement for `preexec_fn`: the harness starts `python -m devices.launch -- CMD`
with the cap described in environment variables set by the backend.
"""

from __future__ import annotations

import os
import resource
import signal
import sys

from devices.child_env import ENV_RLIMIT_AS, ENV_THREADS, join_cgroups
from devices.sandbox import enter_from_env, libc_call

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: "UID:GID:GROUPS" (GROUPS comma-separated supplementary gids, maybe none) the launcher becomes once the cell is
#: in its cgroups and its sandbox (set by a harness that runs as root).
ENV_RUN_AS = "EDGEBENCH_RUN_AS"


def drop_privileges() -> None:
    """Become the cell's unprivileged user, after joining the cgroups (which takes root) and before the workload
    runs: the cgroup's files are root's, so the workload can neither raise its own cap nor leave its cgroup, and
    no set-user-ID program can make it root again (no_new_privs). Groups first: only root may change them."""
    run_as = os.environ.pop(ENV_RUN_AS, None)
    if not run_as:
        return
    uid, gid, groups = run_as.split(":")
    uid, gid = int(uid), int(gid)
    os.setgroups([int(g) for g in groups.split(",") if g])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def prctl(option: int, value: int) -> None:
    libc_call("prctl", option, value, 0, 0, 0)


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "--" or len(argv) < 2:
        sys.exit("usage: python -m devices.launch -- COMMAND [ARGS...]")
    join_cgroups()
    if limit := os.environ.get(ENV_RLIMIT_AS):
        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    if threads := os.environ.get(ENV_THREADS):
        for var in THREAD_VARS:
            os.environ[var] = threads
    enter_from_env()  # as root: namespaces and mounts need it
    drop_privileges()
    # Die with the harness: a SIGKILLed harness must not leave cells running. Set after the drop, which clears it.
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        sys.exit("the harness exited before the cell started")
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
