"""Whom a cell runs as, and the check that this user can run the cells before any starts.

A harness that runs as root starts each cell as a private uid of its own (harness.run.cell_uids), or as the one user
`--cell-user` names, so that the workload cannot write its cgroup's files to lift its own cap. A harness that is
not root but holds harness_user.CELL_CAPS (compose's device containers) runs its cells as one second uid
(SecondUid), started under it directly. Either way the cell reads the installation, its inputs and the caches,
and the results the harness writes stay out of its reach.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devices.cache import cache_dir
from devices.launch import ENV_RUN_AS
from devices.pyexec import code_argv
from harness.record.errors import UserError
from harness.run import cell_uids, harness_user
from harness.run.executors.base import cell_env
from harness.run.executors.cell_dirs import private_home
from harness.run.executors.process import last_line
from workloads.checks import hub_cache
from workloads.params import WorkloadParams
from workloads.registry import resolve

#: Whom cells run as when the harness is root (`edgebench run --cell-user` sets it); naming root keeps them root.
ENV_CELL_USER = "EDGEBENCH_CELL_USER"
#: What cells run as by default: a private uid each (harness.run.cell_uids).
DEFAULT_CELL_USER = f"a private uid each ({cell_uids.FIRST_UID}-{cell_uids.LAST_UID})"
#: Run as the cell user before the first cell: the interpreter, the packages and the code must import, its home
#: must be writable, and it writes out, NUL-separated, those of the paths given (what cells read) it cannot read.
PROBE = """
import os, sys
import workloads.runner
open(os.path.join(os.environ["HOME"], ".probe"), "w").close()
sys.stdout.write("\\0".join(path for path in sys.argv[1:] if not os.access(path, os.R_OK)))
"""
PROBE_TIMEOUT_S = 120


@dataclass(frozen=True)
class CellUser:
    """The unprivileged account a root harness runs a cell as: its uid, its primary group and its supplementary
    groups (a private uid's is the group cells reach the installation through)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    #: The group whose ACL entry opens the installation to these cells; None: the user's own entry.
    reach_group = None

    @contextlib.contextmanager
    def claim(self) -> Iterator[CellUser]:
        """A named user is every cell's."""
        yield self

    def popen_user(self) -> dict[str, object]:
        """What subprocess must switch to start the cell as this user: nothing, the launcher does it as root."""
        return {}

    def env(self, home: Path) -> dict[str, str]:
        """Whom the launcher becomes, and a home the cell may write for its libraries' caches (datasets' Arrow
        files, transformers' modules, torch's kernels). The caches it reads stay the harness's: the hub cache the
        spec checks looked in, and the edgebench cache with the checkpoints the harness readied (ready_inputs)."""
        cache = home / ".cache"
        return {
            ENV_RUN_AS: ":".join([str(self.uid), str(self.gid), ",".join(map(str, self.groups))]),
            "HOME": str(home),
            "USER": self.name,
            "LOGNAME": self.name,
            "XDG_CACHE_HOME": str(cache),
            "HF_HOME": str(cache / "huggingface"),
            "HF_HUB_CACHE": str(hub_cache()),
            "EDGEBENCH_CACHE": str(cache_dir()),
        }


#: A SecondUid's number: no account's, below the private uids (harness.run.cell_uids) and their group.
SECOND_UID = 89999


@dataclass(frozen=True)
class SecondUid(CellUser):
    """Whom a harness that is not root but holds harness_user.CELL_CAPS (a compose device container) runs every
    cell as: started under it by subprocess with the harness's capabilities (the launcher, a new program, has
    none), so that the harness's files, the results, are not the cell's to write."""

    name: str = "edgebench-cell"
    uid: int = SECOND_UID
    gid: int = SECOND_UID

    @contextlib.contextmanager
    def claim(self) -> Iterator[CellUser]:
        """Every cell's, one after another: what one left running (a child that left its process group) is killed
        before the next starts."""
        try:
            yield self
        finally:
            cell_uids.kill_processes_of(self.uid)

    def env(self, home: Path) -> dict[str, str]:
        return {k: v for k, v in super().env(home).items() if k != ENV_RUN_AS}

    def popen_user(self) -> dict[str, object]:
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


@dataclass(frozen=True)
class PrivateUids:
    """The default for a root harness: each cell a uid of its own, claimed while it runs (harness.run.cell_uids), in a
    private group of the same number and in the cells' group, through which it reaches the installation."""

    name: str = DEFAULT_CELL_USER
    reach_group: int = cell_uids.CELL_GID

    @contextlib.contextmanager
    def claim(self) -> Iterator[CellUser]:
        with cell_uids.claimed() as uid:
            yield CellUser(f"edgebench-{uid}", uid, uid, (self.reach_group,))



def cell_user() -> CellUser | PrivateUids | None:
    """Whom cells run as: None (the harness's own user) unless the harness is root or holds CELL_CAPS (then the
    SecondUid); a private uid each unless --cell-user names a user; root only when named."""
    if os.geteuid() != 0:
        if not harness_user.holds_cell_caps():
            return None
        if os.geteuid() == SECOND_UID:
            raise UserError(f"the harness runs as uid {SECOND_UID}, its cells' uid; run it as another user")
        return SecondUid()
    name = os.environ.get(ENV_CELL_USER)
    if not name:
        cell_uids.check_group()
        return PrivateUids()
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UserError(
            f"--cell-user {name}: no such user here; create it or name an unprivileged user with --cell-user "
            "(root: cells run as root, able to lift their own caps)"
        ) from None
    return None if entry.pw_uid == 0 else CellUser(name, entry.pw_uid, entry.pw_gid)


def cache_paths() -> list[Path]:
    """The caches cells load from that exist: the edgebench cache (checkpoints the harness readied) and the hub's."""
    return [path for path in (cache_dir(), hub_cache()) if path.is_dir()]



def ready_inputs(params: WorkloadParams) -> set[str]:
    """The paths a cell reads besides the installation (its task file, its model's checkpoint and tokenizer, the
    hub cache for a hub model), readying a bundled checkpoint first: assembling it into the edgebench cache is
    the harness's job, as a cell running as another user may read the cache but not write it. A checkpoint
    that cannot be had is left for the cell to report, as any other failure of its workload."""
    paths = {params.task} if Path(params.task).is_file() else set()
    with contextlib.suppress(ValueError, OSError):
        entry = resolve(params.model)
        for location in filter(None, (entry.weights, entry.tokenizer)):
            paths.add(str(hub_cache()) if location.kind == "hub" else location.path())
    return {path for path in paths if os.path.exists(path)}


def check_cell_user(user: CellUser, paths: list[str], named: str) -> None:
    """Run PROBE as the cell user: a UserError naming what it (`named` in the message) cannot use, so that a run
    refuses at once rather than recording every cell as an error."""
    with private_home(user) as home:
        try:
            probe = subprocess.run(
                code_argv(PROBE, *paths),
                env=cell_env(user.env(home)),
                user=user.uid,
                group=user.gid,
                extra_groups=list(user.groups),
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise UserError(refusal(named, f"run {sys.executable} ({exc})")) from None
    if probe.returncode != 0:
        raise UserError(refusal(named, f"run this installation ({last_line(probe.stderr)})"))
    unreadable = [path for path in probe.stdout.decode().split("\0") if path]
    if unreadable:
        raise UserError(refusal(named, f"read {unreadable[0]}"))


def refusal(named: str, what: str) -> str:
    """`named`: the user cells run as, or the default (a private uid each), which anyone may read as."""
    who = "others" if named == DEFAULT_CELL_USER else named
    return (
        f"cells run as {named} when edgebench runs as root, and {who} cannot {what}; make it readable "
        f"by {who} (and every directory above it searchable by {who}), or name another user "
        "with --cell-user (root: cells run as root, able to lift their own caps)"
    )

