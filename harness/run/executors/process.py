"""A cell's child process: reading its output while it runs, waiting for it within its timeout, killing what
it leaves, and saying why it died."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO

import psutil

from harness.run.executors.base import CellOutput

POLL_S = 0.05


def start_readers(
    output: CellOutput, events: Iterable[bytes], stderr: Iterable[bytes], log: BinaryIO
) -> list[threading.Thread]:
    """Threads that read a running cell's events into `output` and copy its stderr to its log, so that neither
    stream fills and blocks the cell while the harness waits for it."""
    readers = [
        threading.Thread(target=output.read_events, args=(events,), daemon=True),
        threading.Thread(target=output.copy_log, args=(stderr, log), daemon=True),
    ]
    for reader in readers:
        reader.start()
    return readers


def cpu_seconds(pid: int) -> float | None:
    """A running process's CPU seconds so far (user and system); None once it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def wait_for_exit(
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


def kill_group(pgid: int) -> None:
    """Kill whatever is left in a finished cell's process group: under a cgroup its destruction does that too, under
    the rlimit fallback nothing else would (a child that left the group escapes even this: SOFT_CAP says so)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_and_reap(pid: int):
    """Kill a cell's process group and reap the cell: its exit code and rusage (-9 and None if already reaped)."""
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


def last_line(data: bytes) -> str:
    """The last non-blank line of a process's output, cut to 500 characters, for one-line messages."""
    lines = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""
