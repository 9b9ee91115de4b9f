"""Each cell in its own Python subprocess, inside a per-cell cap from devices.caps.

A root harness's launcher joins the cell's cgroups as root, enters the cell's sandbox (devices.sandbox: private
/tmp, /var/tmp and /dev/shm, no network unless allowed), then becomes the cell's user (harness.run.executors.cell_user)
before the workload starts. Such a cell writes only its private home, its private temporary directories
(harness.run.executors.cell_dirs) and the pipe and log the harness opened for it: the run directory stays the
harness's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from devices.caps.base import CapUnavailable
from devices.caps.rlimit import RlimitAS
from devices.caps.select import choose_backend
from devices.pyexec import SAFE_CWD, module_argv
from devices.sandbox import ENV_HOST_NETWORK, ENV_SANDBOX
from harness.record.cells import Cell
from harness.record.errors import UserError
from harness.record.records import MemoryFigures, now_iso
from harness.record.store import open_log
from harness.run import reach
from harness.run.executors.base import (
    CellOutput,
    ChildOutcome,
    Executor,
    ProgressFn,
    cell_env,
    chunks_of,
    tail_of,
)
from harness.run.executors.cell_dirs import CELLS_ROOT, own_state_dir, own_tree, private_home, sweep_homes
from harness.run.executors.cell_user import (
    PROBE_TIMEOUT_S,
    CellUser,
    cache_paths,
    cell_user,
    check_cell_user,
    ready_inputs,
    refusal,
)
from harness.run.executors.process import (
    cpu_seconds,
    death_note,
    kill_and_reap,
    kill_group,
    last_line,
    start_readers,
    wait_for_exit,
)
from workloads.resumable import CHECKPOINTS_DIR, Checkpointing, StatePlan

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
        checkpointing: Checkpointing | None = None,
        state_root: Path | None = None,
    ) -> None:
        super().__init__(run_dir, timeout_s, enforcement, checkpointing)
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
            raise UserError(refusal(self.cell_user.name, f"search {exc.filename} ({exc.strerror})")) from None

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
                readers = start_readers(output, chunks_of(proc.stdout), chunks_of(proc.stderr), log)
                returncode, rusage, timed_out = self._wait_or_kill(proc, t0, cell, overrun)
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
            tail = last_line(tail_of(log))
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

    def _wait_or_kill(
        self, proc: subprocess.Popen, t0: float, cell: Cell, overrun: threading.Event
    ) -> tuple[int, os.struct_rusage | None, bool]:
        """The cell's exit code, rusage and whether it ran out of time: waited for until it ends, or killed and
        reaped at its timeout, an output overrun, Ctrl-C or an error in the harness; what it left in its process
        group is killed either way (the rlimit fallback's only sweep)."""
        returncode = rusage = None
        try:
            returncode, rusage = wait_for_exit(proc.pid, t0, self._past_timeout(cell), self.stop, overrun)
        finally:
            timed_out = returncode is None and not self.stop.is_set() and not overrun.is_set()
            if returncode is None:
                returncode, rusage = kill_and_reap(proc.pid)
            proc.returncode = returncode
            kill_group(proc.pid)
        return returncode, rusage, timed_out

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
            cpu = cpu_seconds(pid) if cell.clock.scaled else None
            return cell.clock.elapsed(wall, cpu) > self.timeout_s

        return past




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
    return None if check.returncode == 0 else last_line(check.stderr) or f"exit {check.returncode}"

