"""A private uid per running cell, as systemd's DynamicUser gives one per service: a root harness claims a free
uid of FIRST_UID..LAST_UID for each cell it starts and gives it back when the cell ends, so that two cells at once
cannot read each other's home, signal each other's processes or touch the files of a daemon that runs as nobody.

The range lies between nobody (65534) and where subordinate ids start by default (100000, login.defs SUB_UID_MIN),
a range systemd leaves unused; a uid there that the host names (passwd) or subordinates (/etc/subuid) is skipped.
All cell uids share one group, CELL_GID, with no other member: the harness opens the installation to that group
alone (harness.run.reach, `g:CELL_GID:--x`), and every private file a cell makes sits in its 0700 home or its private
/tmp, which the group cannot enter.

A claim is a file named by the uid in CLAIMS_DIR, created with O_EXCL and holding the harness's pid: harnesses at
once never share a uid, and a claim whose harness died (SIGKILL) is taken over once that uid has no process left.
CLAIMS_DIR is under /run, which a reboot empties as it ends every process.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from devices.caps.base import pid_alive
from harness.record.errors import UserError
from harness.run.reach import locked

CELL_GID = 90000
FIRST_UID, LAST_UID = 90001, 99999
CLAIMS_DIR = Path("/run/edgebench/cell-uids")
SUBORDINATE_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
KILL_WAIT_S = 5.0


def check_group() -> None:
    """Refuse a host whose group database names CELL_GID: its members would share what cells share."""
    with contextlib.suppress(KeyError):
        name = grp.getgrgid(CELL_GID).gr_name
        raise UserError(
            f"gid {CELL_GID} is the group {name} here, which edgebench gives every cell uid; remove that group, "
            "or name a user for all cells with --cell-user"
        )


def subordinate_ranges() -> list[range]:
    """The uid and gid ranges /etc/subuid and /etc/subgid give to users' containers."""
    ranges = []
    for path in SUBORDINATE_FILES:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    ranges.append(range(int(parts[1]), int(parts[1]) + int(parts[2])))
    return ranges


def usable(uid: int, taken: set[int], subordinate: list[range]) -> bool:
    """Whether uid is no account and its number no group here (a cell's group is its uid's number), nobody's
    subordinate id, and runs no process now."""
    if uid in taken or any(uid in r for r in subordinate):
        return False
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
        except KeyError:
            continue
        return False
    return True


def process_uids() -> set[int]:
    uids = set()
    for proc in psutil.process_iter(["uids"]):
        with contextlib.suppress(TypeError):
            uids.add(proc.info["uids"].real)
    return uids


def _claim_owner(uid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((CLAIMS_DIR / str(uid)).read_text())
    return None


def claim() -> int:
    """A uid no other cell, harness or account uses, recorded as this harness's before it is returned."""
    with locked(CLAIMS_DIR):
        running = process_uids()
        subordinate = subordinate_ranges()
        for uid in range(FIRST_UID, LAST_UID + 1):
            owner = _claim_owner(uid)
            if owner is not None and pid_alive(owner):
                continue
            if not usable(uid, running, subordinate):
                continue
            path = CLAIMS_DIR / str(uid)
            path.unlink(missing_ok=True)  # a dead harness's claim, its uid idle
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            return uid
    raise UserError(
        f"no free cell uid in {FIRST_UID}-{LAST_UID} (all taken by running cells, accounts or subordinate ids); "
        "wait for other runs to end, or name a user for all cells with --cell-user"
    )


def release(uid: int) -> None:
    """Kill whatever still runs as uid (a child that left the cell's process group and cgroup), then free it."""
    kill_processes_of(uid)
    with locked(CLAIMS_DIR):
        if _claim_owner(uid) == os.getpid():
            (CLAIMS_DIR / str(uid)).unlink(missing_ok=True)


def kill_processes_of(uid: int) -> None:
    """SIGKILL every process whose real or effective uid is uid, and wait (briefly) until they are gone."""
    procs = []
    for proc in psutil.process_iter(["uids"]):
        with contextlib.suppress(TypeError, psutil.Error):
            if uid in (proc.info["uids"].real, proc.info["uids"].effective):
                proc.send_signal(signal.SIGKILL)
                procs.append(proc)
    deadline = time.monotonic() + KILL_WAIT_S
    while procs and time.monotonic() < deadline:
        procs = [p for p in procs if _alive(p)]
        time.sleep(0.02)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@contextlib.contextmanager
def claimed() -> Iterator[int]:
    """A private uid for the duration of the block."""
    uid = claim()
    try:
        yield uid
    finally:
        release(uid)
