"""The durable results store of one run directory.

results.jsonl gets one line per finished cell, written with a single O_APPEND write and fsync,
so a SIGKILL can at worst leave one partial last line, which the next open cuts away.
run.json (written atomically) describes the host, versions, enforcement and the spec.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.errors import UserError
from harness.records import CellRecord

RESULTS = "results.jsonl"
RUN_INFO = "run.json"


def check_writable(run_dir: Path) -> None:
    """Fail early, before anything is written, when the output directory cannot be used."""
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"output path {probe} is not a directory; pass --out with a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output directory {probe} is not writable; pass --out with a writable directory")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_INFO
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found; pass a run directory written by `edgebench run`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is corrupted (not JSON); re-run `edgebench run` into a new --out") from None


def iter_records(run_dir: Path) -> Iterator[CellRecord]:
    """Every complete record; a partial last line (a writer killed mid-line) is ignored."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines if data.endswith(b"\n") else lines[:-1]
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            yield CellRecord.model_validate_json(line)
        except ValidationError:
            raise UserError(
                f"{path} line {number} is not a valid result record; delete that line "
                "(the cell will be re-run) or re-run with --fresh"
            ) from None


def load_records(run_dir: Path) -> list[CellRecord]:
    """The latest record per cell id, in file order."""
    latest: dict[str, CellRecord] = {}
    for record in iter_records(run_dir):
        latest.pop(record.cell_id, None)
        latest[record.cell_id] = record
    return list(latest.values())


class RunStore:
    """Appends records durably and knows which cells are already finished."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.results = self.run_dir / RESULTS

    def prepare(self, run_info: dict[str, Any], fresh: bool) -> set[str]:
        """Create the directory, set results aside when fresh, and return finished cell ids."""
        check_writable(self.run_dir)
        info_path = self.run_dir / RUN_INFO
        if info_path.exists() and not fresh:
            previous = read_run_info(self.run_dir)
            if previous.get("spec_hash") != run_info.get("spec_hash"):
                raise UserError(
                    f"{self.run_dir} holds a run of a different spec; pass --fresh to redo it "
                    "(old results are kept as a .bak file) or choose another --out"
                )
        done = set() if fresh else {r.cell_id for r in iter_records(self.run_dir)}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if fresh and self.results.exists():
            self.results.rename(self.results.with_name(f"{RESULTS}.{time.strftime('%Y%m%d-%H%M%S')}.bak"))
        self._cut_partial_tail()
        write_atomic(info_path, json.dumps(run_info, indent=2, default=str) + "\n")
        return done

    def _cut_partial_tail(self) -> None:
        if not self.results.exists():
            return
        data = self.results.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.results, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, record: CellRecord) -> None:
        line = (record.model_dump_json() + "\n").encode()
        fd = os.open(self.results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.results} ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
