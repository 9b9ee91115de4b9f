"""A cell's event channel back to the harness: one JSON object per line on the runner's original stdout (the
format is in workloads.runner). Below both the runner and the cell it runs (workloads.cell), which report through it."""

from __future__ import annotations

import json
import os
import time
from typing import Any


class Reporter:
    """The event channel back to the harness; progress is throttled so the pipe stays quiet."""

    def __init__(self, stream, min_interval_s: float = 0.5) -> None:
        self.stream = stream
        self.min_interval_s = min_interval_s
        self.started = time.perf_counter()
        self._last = 0.0
        self.step = 0

    def send(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        self.stream.flush()

    def progress(self, step: int, force: bool = False, **fields: Any) -> None:
        self.step = step
        now = time.perf_counter()
        if force or now - self._last >= self.min_interval_s:
            self._last = now
            self.send("progress", step=step, rss_bytes=rss_bytes(), elapsed_s=round(now - self.started, 3), **fields)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
