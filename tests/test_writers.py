"""Several device slices writing one run directory at once (compose: one `edgebench run --device` per container,
each with pid 1), SIGKILLed at random moments and resumed: no line is cut, lost or written twice, and the merged
run info has every slice's own facts."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.record.records import CellRecord
from harness.record.store import RESULTS, read_run_slices

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[1]
WRITERS = 6
RECORDS = 500
KILLS = 16
TORN = 2  # writers that die halfway through writing a line


class Writer:
    """One writer process of a slice, restarted (resumed) after each death; collects the ids it acknowledged."""

    def __init__(self, run_dir: Path, name: str, tear: bool) -> None:
        self.run_dir, self.name = run_dir, name
        self.acknowledged: set[str] = set()
        self.deaths = 0
        self._start(tear)

    def _start(self, tear: bool) -> None:
        argv = [sys.executable, "-m", "tests.concurrent_writer", str(self.run_dir), self.name, str(RECORDS)]
        self.proc = subprocess.Popen(
            argv + (["--tear"] if tear else []), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._buffer = b""

    def read(self, timeout: float = 0.0) -> bool:
        """Take in what the writer printed so far; True when it printed something."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        self.acknowledged |= {line.decode() for line in lines}
        return bool(chunk)

    def reap(self) -> bool:
        """True once the writer has finished its slice; a killed writer is restarted."""
        if self.proc.poll() is None:
            return False
        while self.read():
            pass
        stderr = self.proc.stderr.read().decode()
        self.proc.stdout.close()
        self.proc.stderr.close()
        if self.proc.returncode == 0:
            return True
        assert self.proc.returncode == -signal.SIGKILL, f"{self.name} failed:\n{stderr[-3000:]}"
        self.deaths += 1
        self._start(tear=False)
        return False


def test_concurrent_slices_killed_at_random_lose_cut_and_duplicate_nothing(tmp_path):
    rng = random.Random(15)
    run_dir = tmp_path / "run"
    writers = [Writer(run_dir, f"slice{i}", tear=i < TORN) for i in range(WRITERS)]
    running, kills = list(writers), 0
    deadline = time.monotonic() + 300
    while running:
        assert time.monotonic() < deadline, "the writers did not finish"
        appending = [w for w in running if w.read(timeout=0.02)]
        if kills < KILLS and appending:  # kill one that is appending now, at a random moment of that
            victim = rng.choice(appending)
            time.sleep(rng.uniform(0, 0.02))
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            kills += 1
        running = [w for w in running if not w.reap()]

    data = (run_dir / RESULTS).read_bytes()
    assert data.endswith(b"\n")
    ids = [CellRecord.model_validate_json(line).cell_id for line in data.splitlines()]  # every line parses
    assert len(ids) == len(set(ids)) == WRITERS * RECORDS  # none twice, none missing
    acknowledged = set().union(*(w.acknowledged for w in writers))
    assert acknowledged <= set(ids)
    assert kills == KILLS and sum(w.deaths for w in writers) == KILLS + TORN
    print(f"{kills} SIGKILLs + {TORN} torn writes, {len(ids)} records, 0 lost, 0 duplicated, 0 torn lines")
    slices = read_run_slices(run_dir)
    assert {name: info.host.hostname for name, info in slices.items()} == {
        f"run.{w.name}.json": w.name for w in writers
    }
