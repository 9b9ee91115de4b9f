"""A harness started as uid 0 only so that its cells can run as another user: it becomes its own user at once and
keeps exactly the capabilities that running cells as a second uid takes (CELL_CAPS), so that a cell can write
nothing the harness writes (the run's results) and the harness keeps no other power of root.

Compose's device containers start this way (harness.cli.commands.compose): the engine gives capabilities to uid 0
alone, so the container starts as uid 0 with cap_add CELL_CAPS and ENV_HARNESS_USER set to the services' user, and
the CLI calls become_from_env first, before any thread. The capabilities stay in this process: a cell, started
under its own uid (harness.run.executors.cell_user.SecondUid), loses them all at exec (no ambient set, no file
capabilities, no-new-privileges).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from devices.sandbox import libc_call
from harness.record.errors import UserError
from harness.run.prepare_results import PrepareError, parse_owner

#: "uid:gid" the harness becomes, keeping CELL_CAPS (set only where it starts as uid 0 for that purpose).
ENV_HARNESS_USER = "EDGEBENCH_HARNESS_USER"
CAP_CHOWN, CAP_KILL, CAP_SETGID, CAP_SETUID = 0, 5, 6, 7
#: Start a cell as another uid (SETUID, SETGID), give it its home and state directory and take them back
#: (CHOWN), and stop it (KILL: signals to another uid).
CELL_CAPS = {"CHOWN": CAP_CHOWN, "KILL": CAP_KILL, "SETGID": CAP_SETGID, "SETUID": CAP_SETUID}
PR_SET_KEEPCAPS = 8
_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def effective_caps(status: Path = Path("/proc/self/status")) -> int:
    """This process's effective capability set, as a bit mask."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def holds_cell_caps() -> bool:
    """Whether this process may run cells as another uid without being root (it holds every one of CELL_CAPS)."""
    mask = effective_caps()
    return all(mask >> bit & 1 for bit in CELL_CAPS.values())


def become_from_env() -> None:
    """Become ENV_HARNESS_USER, keeping CELL_CAPS effective; nothing when it is unset."""
    value = os.environ.pop(ENV_HARNESS_USER, None)
    if not value:
        return
    try:
        uid, gid = parse_owner(value)
    except PrepareError as exc:
        raise UserError(str(exc)) from None
    if os.geteuid() != 0:
        raise UserError(f"{ENV_HARNESS_USER} is set, which only a harness started as uid 0 can follow; unset it")
    become(uid, gid)


def become(uid: int, gid: int) -> None:
    """setresuid/setresgid to uid:gid with no supplementary groups, then raise the permitted set (what the bounding
    set let uid 0 have: the container's cap_add) back to effective, which the change of uid cleared."""
    libc_call("prctl", PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    libc_call("prctl", PR_SET_KEEPCAPS, 0, 0, 0, 0)
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    libc_call("capget", ctypes.byref(header), data)
    for part in data:
        part.effective = part.permitted
    libc_call("capset", ctypes.byref(header), data)
