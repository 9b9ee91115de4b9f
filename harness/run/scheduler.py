"""Runs the pending cells of a matrix, up to N at once while their memory caps and CPU needs fit in the host."""

from __future__ import annotations

import os
import signal
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import psutil
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from devices.profile import format_bytes
from harness.record.cells import Cell
from harness.record.records import CellRecord, CpuSharing, judged
from harness.record.store import RunStore
from harness.run.executors.base import Executor, cpu_need
from harness.run.interrupts import Interrupted

POLL_S = 0.2
STATUS_STYLE = {"ok": "green", "oom": "magenta", "timeout": "yellow", "error": "red"}


def host_budget_bytes() -> int:
    """What parallel cells may claim together: the host's available memory, less a margin for the harness."""
    return int(psutil.virtual_memory().available * 0.9)


def host_cores() -> int:
    """The cores parallel cells may share: those this process may run on (a container's cpuset, taskset)."""
    return len(os.sched_getaffinity(0))


def describe(record: CellRecord) -> str:
    peak, predicted = record.peak_memory_bytes, record.predicted_peak_bytes
    versus = f" predicted {format_bytes(predicted)}" if predicted else ""
    if peak and predicted and record.status == "ok":  # a killed cell's peak is where it died, not its need
        versus += f" ({predicted / peak:.2f}x measured)"
    style = STATUS_STYLE[record.status]
    text = (
        f"{record.cell_id} {record.device.name} {record.params.model} "
        f"{record.params.method} b{record.params.batch}: peak {format_bytes(peak)} ({record.peak_memory_source})"
        f"{versus}, {record.steps} steps, {_seconds(record)}"
    )
    if record.error and record.status != "ok":
        text += f" - {record.error}"
    # The cell's own words (its error, a model name from the spec) are text, never Rich markup: `[/x]` in them
    # would raise inside the progress display and abort the run.
    return f"[{style}]{record.status:<7}[/] {escape(text)}"


def _seconds(record: CellRecord) -> str:
    """The cell's time in its clock's seconds, with the host's beside it when they differ."""
    if record.clock.kind == "host" or record.device_seconds is None:
        return f"{record.host_seconds:.1f} host s"
    return f"{record.device_seconds:.1f} device s ({record.host_seconds:.1f} host s)"


class Scheduler:
    def __init__(self, executor: Executor, store: RunStore, jobs: int = 1, console: Console | None = None) -> None:
        self.executor = executor
        self.store = store
        self.jobs = max(1, jobs)
        self.console = console or Console(stderr=True)
        self.stop_signal: int | None = None  # the signal that asked running cells to stop

    def run(self, cells: list[Cell]) -> list[CellRecord]:
        """Ctrl-C and SIGTERM only ask running cells to stop; the loop raises KeyboardInterrupt at a safe
        point, so an interrupt never lands inside the thread pool's own locking, and it leaves as Interrupted
        naming the signal (the CLI's exit code)."""
        if threading.current_thread() is not threading.main_thread():
            return self._run(cells)
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run(cells)
        except KeyboardInterrupt as exc:
            raise Interrupted(self.stop_signal or signal.SIGINT) from exc
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _request_stop(self, signum, frame) -> None:
        self.stop_signal = signum
        self.executor.stop.set()

    def _run(self, cells: list[Cell]) -> list[CellRecord]:
        records: list[CellRecord] = []
        pending = deque(cells)
        running: dict[Future, Cell] = {}
        overlapped: set[Future] = set()  # cells that ran beside another; final once a cell finishes
        demand: dict[Future, float] = {}  # the most cores the cells running beside each needed, its own included
        budget, cores = host_budget_bytes(), host_cores()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress, ThreadPoolExecutor(
            self.jobs
        ) as pool:
            overall = progress.add_task("cells", total=len(cells))
            lines: dict[str, TaskID] = {}

            def on_progress(cell: Cell, event: dict) -> None:
                task = lines.get(cell.id)
                if task is not None:
                    progress.update(task, description=_live_line(cell, event))

            try:
                while pending or running:
                    if self.executor.stop.is_set():
                        raise KeyboardInterrupt
                    while pending and len(running) < self.jobs and _fits(pending[0], [*running.values()], budget, cores):
                        cell = pending.popleft()
                        lines[cell.id] = progress.add_task(_live_line(cell, {}), total=None)
                        future = pool.submit(self.executor.run, cell, on_progress)
                        if running:
                            overlapped.update(running, [future])
                        running[future] = cell
                        total = sum(cpu_need(c) for c in running.values())
                        demand.update({f: max(demand.get(f, 0.0), total) for f in running})
                    finished, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                    for future in finished:
                        cell = running.pop(future)
                        progress.remove_task(lines.pop(cell.id))
                        sharing = CpuSharing(demand_cores=demand.pop(future), host_cores=cores)
                        # The one place a new record is judged: how it shared the host is final only now.
                        record = judged(future.result(), overlapped=future in overlapped, cpu_sharing=sharing)
                        overlapped.discard(future)
                        self.store.append(record)
                        records.append(record)
                        progress.console.print(describe(record))
                        progress.advance(overall)
            except BaseException:
                self.executor.stop.set()
                wait(running)
                raise
        return records


def _fits(cell: Cell, running: list[Cell], budget: int, cores: int) -> bool:
    """Beside running cells, a cell starts only while memory caps and CPU needs both fit; alone it always
    starts (a cell bigger than the host still runs, by itself)."""
    if not running:
        return True
    memory = sum(c.device.memory_bytes for c in running) + cell.device.memory_bytes
    cpus = sum(cpu_need(c) for c in running) + cpu_need(cell)
    return memory <= budget and cpus <= cores


def _live_line(cell: Cell, event: dict) -> str:
    step = event.get("step", 0)
    rss = event.get("rss_bytes")
    rss = format_bytes(rss) if isinstance(rss, int) and rss > 0 else "-"  # a cell's event is not trusted
    return escape(f"  {cell.device.name} {cell.params.model} {cell.params.method} step {step} mem {rss}")
