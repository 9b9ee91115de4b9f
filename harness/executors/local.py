"""Each cell in its own Python subprocess, inside a per-cell cap from devices.caps."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from devices.caps.base import CapUnavailable
from devices.caps.select import choose_backend
from harness.cells import Cell
from harness.errors import UserError
from harness.executors.base import OFFLINE_ENV, ChildOutcome, Executor, ProgressFn, collect_events
from harness.records import MemoryFigures, now_iso

POLL_S = 0.05


def runner_argv(cell: Cell) -> list[str]:
    return [sys.executable, "-m", "workloads.runner", cell.params.model_dump_json()]


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, run_dir: Path, timeout_s: float, enforcement: str = "auto") -> None:
        super().__init__(run_dir, timeout_s, enforcement)
        try:
            self.backend = choose_backend(enforcement)
            self._restore_host = self.backend.prepare_host()
        except CapUnavailable as exc:
            raise UserError(str(exc)) from None

    @property
    def enforcement(self) -> str:
        return self.backend.name

    @property
    def throttles(self) -> bool:
        return self.backend.can_throttle()

    def close(self) -> None:
        self._restore_host()

    def execute(self, cell: Cell, progress: ProgressFn) -> ChildOutcome:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with self.backend(cell.device, cell.id, cell.clock) as cap, open(logs / f"{cell.id}.log", "w+b") as log:
            started_at, t0 = now_iso(), time.perf_counter()
            proc = subprocess.Popen(
                cap.command(runner_argv(cell)),
                env={**OFFLINE_ENV, **os.environ, **cap.child_env()},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches the harness only; it kills cells itself
            )
            events: list[dict] = []
            reader = threading.Thread(
                target=collect_events, args=(proc.stdout, cell, progress, events), daemon=True
            )
            reader.start()
            returncode = rusage = None
            try:
                returncode, rusage = _wait(proc.pid, t0, self._past_timeout(cell), self.stop)
            finally:
                timed_out = returncode is None and not self.stop.is_set()
                if returncode is None:  # timeout, Ctrl-C or an error in the harness: kill, then reap
                    returncode, rusage = _kill(proc.pid)
                proc.returncode = returncode
            if self.stop.is_set():
                raise KeyboardInterrupt  # an interrupted cell is not a result; resume redoes it
            wall = time.perf_counter() - t0
            reader.join(timeout=5)
            reading = cap.reading()
            results = [e for e in events if e.get("event") == "result"]
            log.seek(0)
            tail = _last_line(log.read())
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
            stderr_tail=death_note(returncode, tail),
        )

    def _past_timeout(self, cell: Cell) -> Callable[[int, float], bool]:
        """Whether a running cell has used up its timeout, in its clock's seconds (see CellClock.elapsed)."""

        def past(pid: int, wall: float) -> bool:
            cpu = _cpu_seconds(pid) if cell.clock.scaled else None
            return cell.clock.elapsed(wall, cpu) > self.timeout_s

        return past


def _cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def _wait(pid: int, t0: float, past_timeout: Callable[[int, float], bool], stop: threading.Event):
    """wait4 so that we get the child's own rusage (its peak RSS and CPU time), polling for timeout and stop."""
    while True:
        done, status, rusage = os.wait4(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), rusage
        if past_timeout(pid, time.perf_counter() - t0) or stop.is_set():
            return None, None
        time.sleep(POLL_S)


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
