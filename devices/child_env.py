"""What the harness tells a capped child through its environment, and joining the cell's cgroups: shared by the
launcher (devices.launch), the cap backends that fill it (devices.caps) and the throttle proof's child
(devices.speed). Imports nothing of devices, so each of them sits above it."""

from __future__ import annotations

import os

# Environment variables the launcher reads in the child (see devices/launch.py).
ENV_JOIN = "EDGEBENCH_CGROUP_PROCS"
ENV_RLIMIT_AS = "EDGEBENCH_RLIMIT_AS"
ENV_THREADS = "EDGEBENCH_THREADS"


def join_cgroups() -> None:
    """Move this process into the cell's cgroups (the backend lists their procs files)."""
    for procs in filter(None, os.environ.get(ENV_JOIN, "").split(":")):
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))
