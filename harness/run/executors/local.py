"""Each cell in its own Python subprocess, inside a per-cell cap from devices.caps.

A harness that runs as root starts each cell as a private uid of its own (harness.run.cell_uids), or as the one user
`--cell-user` names: the launcher joins the cell's cgroups as root, enters the cell's sandbox (devices.sandbox:
private /tmp, /var/tmp and /dev/shm, no network unless allowed), then becomes that user before the workload
starts, so that the workload cannot write its cgroup's files to lift its own cap. Such a cell reads the
installation, its inputs and the caches (the harness readies the checkpoints in the edgebench cache first) and
writes only its private home, its private temporary directories and the pipe and log the harness opened for it:
the run directory stays the harness's.

A harness that is not root but holds harness_user.CELL_CAPS (compose's device containers) runs its cells as one
second uid (SecondUid), started under it directly, with private homes on the edgebench cache: the results it
writes stay out of its cells' reach there too.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from devices.cache import cache_dir
from devices.caps.base import CapUnavailable, pid_alive
from devices.caps.rlimit import RlimitAS
from devices.caps.select import choose_backend
from devices.launch import ENV_RUN_AS
from devices.pyexec import SAFE_CWD, code_argv, module_argv
from devices.sandbox import ENV_HOST_NETWORK, ENV_SANDBOX
from harness.record.cells import Cell
from harness.record.errors import UserError
from harness.record.records import MemoryFigures, now_iso
from harness.record.store import open_log
from harness.run import cell_uids, harness_user, reach
from harness.run.executors.base import (
    CellOutput,
    ChildOutcome,
    Executor,
    ProgressFn,
    cell_env,
    chunks_of,
    tail_of,
)
from workloads.checks import hub_cache
from workloads.params import WorkloadParams
from workloads.registry import resolve
from workloads.resumable import CHECKPOINTS_DIR, StatePlan

POLL_S = 0.05
#: Whom cells run as when the harness is root (`edgebench run --cell-user` sets it); naming root keeps them root.
ENV_CELL_USER = "EDGEBENCH_CELL_USER"
#: What cells run as by default: a private uid each (harness.run.cell_uids).
DEFAULT_CELL_USER = f"a private uid each ({cell_uids.FIRST_UID}-{cell_uids.LAST_UID})"
#: Each cell's private directory (its home, and its sandbox's layers) is CELLS_ROOT/edgebench-home-HARNESSPID-*:
#: root's, outside /tmp and /var/tmp (which the sandbox overlays), named so that a later run removes those of a
#: SIGKILLed harness.
CELLS_ROOT = Path("/var/lib/edgebench/cells")
HOME_PREFIX = "edgebench-home-"
#: Run as the cell user before the first cell: the interpreter, the packages and the code must import, its home
#: must be writable, and it writes out, NUL-separated, those of the paths given (what cells read) it cannot read.
PROBE = """
import os, sys
import workloads.runner
open(os.path.join(os.environ["HOME"], ".probe"), "w").close()
sys.stdout.write("\\0".join(path for path in sys.argv[1:] if not os.access(path, os.R_OK)))
"""
PROBE_TIMEOUT_S = 120
#: Said whenever the rlimit fallback caps cells (the record's enforcement says rlimit, and its validity fails).
SOFT_CAP = (
    "cells are capped by the rlimit fallback (no usable cgroup here): RLIMIT_AS caps each process's address "
    "space, not the cell's memory (N children get N caps), and a child that leaves the cell's process group "
    "outlives it; the records are marked not capped by the kernel"
)


def runner_argv(cell: Cell) -> list[str]:
    return module_argv("workloads.runner", cell.params.model_dump_json())


class LocalExecutor(Executor):
    name = "local"

    def __init__(
        self,
        run_dir: Path,
        timeout_s: float,
        enforcement: str = "auto",
        checkpoint_s: float | None = None,
        state_root: Path | None = None,
    ) -> None:
        super().__init__(run_dir, timeout_s, enforcement, checkpoint_s)
        #: Where cells' state directories are: the run directory's, or where a container or Ray node keeps them.
        self.state_root = state_root or self.run_dir / CHECKPOINTS_DIR
        self.cell_user = cell_user()
        self._grant = reach.Grant(os.getpid())
        self.cells_run_as = self.cell_user.name if self.cell_user else ("root" if os.geteuid() == 0 else None)
        try:
            self.backend = choose_backend(enforcement)
            self._restore_host = self.backend.prepare_host()
        except CapUnavailable as exc:
            raise UserError(str(exc)) from None
        if self.backend is RlimitAS:
            print(f"edgebench: warning: {SOFT_CAP}", file=sys.stderr)
        #: Why cells run without their sandbox (devices.sandbox) here; None: they run in it.
        self.no_sandbox = sandbox_unavailable() if os.geteuid() == 0 else "the harness is not root"
        if self.cell_user is not None:
            sweep_homes()
            reach.sweep()

    @property
    def enforcement(self) -> str:
        return self.backend.name

    @property
    def throttles(self) -> bool:
        return self.backend.can_throttle()

    @property
    def governs(self) -> bool:
        return self.backend.can_govern()

    def close(self) -> None:
        self._grant.revert()
        self._restore_host()

    def admit(self, cells: list[Cell]) -> None:
        """Refuse up front, before anything is written, a cell user who could not run these cells: cells never
        fall back to root (only `--cell-user root` makes them root). The directories above the installation and
        the caches that deny the cell user are opened to it alone for the run (harness.run.reach, put back by close).
        A root harness that cannot give cells their sandbox refuses, unless the run allows network (then it says
        what the cells share)."""
        if os.geteuid() == 0 and self.no_sandbox:
            if not self.allow_network:
                raise UserError(
                    f"cells run without network here, in a namespace this host refuses ({self.no_sandbox}); run "
                    "where root may create namespaces, or allow network with `network: true` in the spec and "
                    "--allow-network"
                )
            print(
                f"edgebench: warning: cells share the host's /tmp, /var/tmp and /dev/shm, as no namespace can be "
                f"made here ({self.no_sandbox})",
                file=sys.stderr,
            )
        if self.cell_user is None:
            return
        paths = set().union(*(ready_inputs(cell.params) for cell in cells))
        with self.cell_user.claim() as user:
            if os.geteuid() == 0:  # only root may open directories to cells; a SecondUid's probe says what it lacks
                self._open_installation(user)
            try:
                check_cell_user(user, sorted(paths), self.cell_user.name)
            except UserError:
                self._grant.revert()
                raise

    def _open_installation(self, user: CellUser) -> None:
        try:
            self._grant = reach.grant(
                user.uid, user.gid, [*reach.installation_paths(), *cache_paths()], self.cell_user.reach_group
            )
        except reach.ReachError as exc:
            raise UserError(_refusal(self.cell_user.name, f"search {exc.filename} ({exc.strerror})")) from None

    def execute(self, cell: Cell, progress: ProgressFn) -> ChildOutcome:
        ready_inputs(cell.params)
        with open_log(self.run_dir, f"{cell.id}.log") as log:  # outlives the cap: its reader ends after the cell
            with (
                self._as_cell_user() as (user, user_env),  # left last: once the cgroup's processes are dead
                self._state(cell, user) as plan,
                self.backend(cell.device, cell.id, cell.clock) as cap,
            ):
                started_at, t0 = now_iso(), time.perf_counter()
                proc = subprocess.Popen(
                    cap.command(runner_argv(cell)),
                    env=cell_env(cap.child_env(), user_env, plan.to_env() if plan else {}),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,  # copied to the log within MAX_LOG_BYTES (CellOutput)
                    start_new_session=True,  # Ctrl-C reaches the harness only; it kills cells itself
                    pass_fds=(plan.fd,) if plan else (),
                    **(user.popen_user() if user else {}),
                )
                overrun = threading.Event()
                output = CellOutput(cell, progress, lambda why: overrun.set(), cap.heat)
                readers = [
                    threading.Thread(target=output.read_events, args=(chunks_of(proc.stdout),), daemon=True),
                    threading.Thread(target=output.copy_log, args=(chunks_of(proc.stderr), log), daemon=True),
                ]
                for reader in readers:
                    reader.start()
                returncode = rusage = None
                try:
                    returncode, rusage = _wait(proc.pid, t0, self._past_timeout(cell), self.stop, overrun)
                finally:
                    timed_out = returncode is None and not self.stop.is_set() and not overrun.is_set()
                    if returncode is None:  # timeout, overrun, Ctrl-C or an error in the harness: kill, then reap
                        returncode, rusage = _kill(proc.pid)
                    proc.returncode = returncode
                    _kill_group(proc.pid)  # what the cell left in its process group (the rlimit fallback's only sweep)
                if self.stop.is_set():
                    raise KeyboardInterrupt  # an interrupted cell is not a result; resume redoes it
                wall = time.perf_counter() - t0
                reading = cap.reading()
            # The cap is gone with every process of the cell (a child that left its session too): the pipes are closed.
            for reader in readers:
                reader.join(timeout=5)
            proc.stdout.close()
            proc.stderr.close()
            results = output.results()
            tail = _last_line(tail_of(log))
        return ChildOutcome(
            started_at=started_at,
            wall_seconds=wall,
            returncode=returncode,
            timed_out=timed_out,
            oom_killed=reading.oom_killed and not results,
            result=results[-1] if results else None,
            memory=MemoryFigures(
                rss_peak_bytes=rusage.ru_maxrss * 1024 if rusage else None,
                cgroup_peak_bytes=reading.peak_bytes,
            ),
            cpu_seconds=rusage.ru_utime + rusage.ru_stime if rusage else None,
            swap_excluded=reading.swap_excluded,
            stderr_tail=death_note(returncode, tail),
            violation=output.violation,
        )

    @contextlib.contextmanager
    def _as_cell_user(self) -> Iterator[tuple[CellUser | None, dict[str, str]]]:
        """The user a cell runs as (None: the harness's own), claimed for it alone where users are private, and what
        its environment needs: whom the launcher becomes, a private home, and the sandbox to enter."""
        if self.cell_user is None:
            yield None, self._sandbox_env(None)
            return
        with self.cell_user.claim() as user, private_home(user) as home:
            yield user, user.env(home) | self._sandbox_env(home.parent)

    def _sandbox_env(self, private: Path | None) -> dict[str, str]:
        """What tells the launcher to enter the cell's sandbox (devices.sandbox), its layers in `private`."""
        if self.no_sandbox or private is None:
            return {}
        return {ENV_SANDBOX: str(private), **({ENV_HOST_NETWORK: "1"} if self.allow_network else {})}

    @contextlib.contextmanager
    def _state(self, cell: Cell, user: CellUser | None) -> Iterator[StatePlan | None]:
        """A resumable cell's state plan with its state directory open (the cell needs no path through the run
        directory), the directory the cell user's while it runs and the harness's again after: a later cell given
        the same uid must not find it writable."""
        plan = self.state_plan(cell, self.state_root / cell.id)
        if plan is None:
            yield None
            return
        directory = Path(plan.directory)
        own_state_dir(directory, None)
        # Opened while the harness's: a harness that is not root may not open the cell user's 0700 directory.
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            if user is not None:
                own_tree(directory, user.uid, user.gid)
            yield plan.model_copy(update={"fd": fd})
        finally:
            os.close(fd)
            if user is not None:
                own_tree(directory, os.geteuid(), os.getegid())

    def _past_timeout(self, cell: Cell) -> Callable[[int, float], bool]:
        """Whether a running cell has used up its timeout, in its clock's seconds (see CellClock.elapsed)."""

        def past(pid: int, wall: float) -> bool:
            cpu = _cpu_seconds(pid) if cell.clock.scaled else None
            return cell.clock.elapsed(wall, cpu) > self.timeout_s

        return past


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


def own_state_dir(directory: Path, user: CellUser | None) -> None:
    """A cell's state directory, writable by the cell alone: created if new, and with what an earlier segment
    left in it, given to the cell user (the harness keeps the run directory itself)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    if user is not None:
        own_tree(directory, user.uid, user.gid)


def own_tree(directory: Path, uid: int, gid: int) -> None:
    """Give a directory and everything in it (links themselves, never followed) to uid:gid."""
    os.lchown(directory, uid, gid)
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, gid)


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


def cells_root() -> Path:
    """Where cells' private directories are: CELLS_ROOT for a root harness; for one with CELL_CAPS (its root file
    system read-only, its /tmp memory charged to the cap), the edgebench cache, which is the harness's."""
    return CELLS_ROOT if os.geteuid() == 0 else cache_dir() / "cells"


@contextlib.contextmanager
def private_home(user: CellUser) -> Iterator[Path]:
    """A fresh home that only the cell's user may enter, in a private directory of the harness's that also holds its
    sandbox's layers; removed, with whatever the cell left in either, after it."""
    root = cells_root()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)  # cells pass through to their own home, and list nothing
    private = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-", dir=root))
    try:
        os.chmod(private, 0o711)
        home = private / "home"
        home.mkdir(mode=0o700)
        os.chown(home, user.uid, user.gid)
        yield home
    finally:
        remove_private(private)


def remove_private(private: Path) -> None:
    """Remove a cell's private directory, first taking back what the cell made there (a harness that is not root may
    not enter the cell's directories to remove their files)."""
    with contextlib.suppress(OSError):
        own_tree(private, os.geteuid(), os.getegid())
    shutil.rmtree(private, ignore_errors=True)


def sweep_homes() -> None:
    """Remove the private directories of harnesses that died (SIGKILLed) before they could."""
    for private in cells_root().glob(f"{HOME_PREFIX}*"):
        pid = private.name.removeprefix(HOME_PREFIX).partition("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            remove_private(private)


def sandbox_unavailable() -> str | None:
    """Why this host cannot give cells their sandbox (devices.sandbox), asked of the real launcher once; None
    when it can."""
    CELLS_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sandbox-check-", dir=CELLS_ROOT) as layers:
        try:
            check = subprocess.run(
                module_argv("devices.launch", "--", "true"),
                env=cell_env({ENV_SANDBOX: layers}),
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
                cwd=SAFE_CWD,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)
    return None if check.returncode == 0 else _last_line(check.stderr) or f"exit {check.returncode}"


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
            raise UserError(_refusal(named, f"run {sys.executable} ({exc})")) from None
    if probe.returncode != 0:
        raise UserError(_refusal(named, f"run this installation ({_last_line(probe.stderr)})"))
    unreadable = [path for path in probe.stdout.decode().split("\0") if path]
    if unreadable:
        raise UserError(_refusal(named, f"read {unreadable[0]}"))


def _refusal(named: str, what: str) -> str:
    """`named`: the user cells run as, or the default (a private uid each), which anyone may read as."""
    who = "others" if named == DEFAULT_CELL_USER else named
    return (
        f"cells run as {named} when edgebench runs as root, and {who} cannot {what}; make it readable "
        f"by {who} (and every directory above it searchable by {who}), or name another user "
        "with --cell-user (root: cells run as root, able to lift their own caps)"
    )


def _cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def _wait(
    pid: int,
    t0: float,
    past_timeout: Callable[[int, float], bool],
    stop: threading.Event,
    overrun: threading.Event | None = None,
):
    """wait4 so that we get the child's own rusage (its peak RSS and CPU time), polling for timeout, stop and an
    output overrun."""
    while True:
        done, status, rusage = os.wait4(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), rusage
        if past_timeout(pid, time.perf_counter() - t0) or stop.is_set() or (overrun and overrun.is_set()):
            return None, None
        time.sleep(POLL_S)


def _kill_group(pgid: int) -> None:
    """Kill whatever is left in a finished cell's process group: under a cgroup its destruction does that too, under
    the rlimit fallback nothing else would (a child that left the group escapes even this: SOFT_CAP says so)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill(pid: int):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    try:
        _, status, rusage = os.wait4(pid, 0)
    except ChildProcessError:
        return -9, None
    return os.waitstatus_to_exitcode(status), rusage


def death_note(returncode: int | None, stderr_tail: str) -> str:
    """What a cell without a result left to say: one killed by a signal is named by it first (a crash in native
    code, SIGSEGV, often leaves no stderr, or a library's unrelated warning as its last line)."""
    if returncode is None or returncode >= 0:
        return stderr_tail
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    note = f"killed by {name} ({signal.strsignal(-returncode)})"
    return f"{note}; last stderr line: {stderr_tail}" if stderr_tail else note


def _last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""
