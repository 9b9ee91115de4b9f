"""The durable results store of one run directory, shared by every writer of the run (compose runs one
`edgebench run --device` per container into it, at once, each possibly with the same pid).

results.jsonl gets one line per finished cell, written with a single O_APPEND write and fsync under an
exclusive flock of the file. A writer SIGKILLed mid-write can leave a partial last line; the next writer
cuts it (under the lock, so it is never another writer's line in flight) before its own append, so a
partial line is never glued to a complete one, and readers ignore a partial last line.
run.json (run.DEVICE.json for a `--device` slice; each written atomically through a uniquely named temp
file) holds a RunInfo (harness.record.runinfo); read_run_info merges them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from harness.record.errors import UserError
from harness.record.records import CellRecord
from harness.record.runinfo import RunInfo
from workloads.predictions import PREDICTIONS_DIR
from workloads.resumable import CHECKPOINTS_DIR

RESULTS = "results.jsonl"
LOGS_DIR = "logs"
RUN_INFO = "run.json"
#: Statuses that are no measurement (an oom is one): `--retry-errors` redoes them, `edgebench run` exits 3.
UNMEASURED = ("error", "timeout")


def run_info_name(devices: list[str] | None) -> str:
    """run.json for a whole run, run.DEVICE[+DEVICE].json for a slice: concurrent slices never overwrite
    each other's description (device names are safe file names)."""
    return f"run.{'+'.join(sorted(set(devices)))}.json" if devices else RUN_INFO


def run_info_paths(run_dir: Path) -> list[Path]:
    """Every writer's run info in a run directory (temp files are hidden, backups end in .bak)."""
    run_dir = Path(run_dir)
    return sorted(p for p in [run_dir / RUN_INFO, *run_dir.glob("run.*.json")] if p.is_file())


def check_writable(run_dir: Path) -> None:
    """Fail early, before anything is written, when the output directory cannot be used: not a directory, not
    writable (checked by its mode and owner: `os.access` passes everything for root), or holding a file another
    user owns (a link planted there to make a root harness truncate /etc/shadow, say)."""
    run_dir = Path(run_dir)
    probe = run_dir
    while not os.path.lexists(probe):
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"output path {probe} is not a directory; pass --out with a directory")
    if not writable_by_me(probe):
        raise UserError(f"output directory {probe} is not writable; pass --out with a writable directory")
    if probe == run_dir:
        check_owned(run_dir)


def writable_by_me(directory: Path) -> bool:
    """Whether this process may create files in `directory` by its mode bits, for root too."""
    if os.geteuid() != 0:
        return os.access(directory, os.W_OK | os.X_OK)
    return os.access(directory, os.W_OK | os.X_OK) and not _read_only_mount(directory)


def _read_only_mount(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


#: Owners a run directory's files may have: this process's user, or root (who could write anything anyway).
def trusted_owner(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def check_owned(run_dir: Path) -> None:
    """Refuse a run directory, or a file or folder in it, that another user owns: it may be a link to a file of
    ours, or a folder that user can swap for one. The cells' own state directories (checkpoints/<cell id>) are
    the cell user's by design and are not looked into."""
    run_dir = Path(run_dir)
    paths = [run_dir]
    with contextlib.suppress(OSError):
        for entry in os.scandir(run_dir):
            paths.append(Path(entry.path))
            if entry.name != CHECKPOINTS_DIR and entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    paths.extend(Path(e.path) for e in os.scandir(entry.path))
    for path in paths:
        try:
            owner = os.lstat(path).st_uid
        except FileNotFoundError:
            continue
        if not trusted_owner(owner):
            raise UserError(
                f"{path} belongs to another user (uid {owner}); edgebench does not write into a run directory "
                "others own: remove it or pass another --out"
            )


def no_space(path: Path, exc: OSError) -> UserError | None:
    """A full disk (or quota) while writing `path` as the one line a user sees; None for any other error."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return UserError(f"{path}: {os.strerror(exc.errno)} while writing it; free some space (or pass another --out) and re-run to resume")


@contextlib.contextmanager
def open_dir(directory: Path) -> Iterator[int]:
    """A file descriptor of `directory` (created if missing), refused if it is a symbolic link: files of a run
    directory are created relative to it, so that no link planted below the run directory is followed."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
            raise UserError(f"{directory} is a link or not a folder; remove it or pass another --out") from None
        raise no_space(directory, exc) or exc from None
    try:
        yield fd
    finally:
        os.close(fd)


def open_file(directory_fd: int, name: str, flags: int, where: Path) -> int:
    """`name` in the folder `directory_fd`, opened with `flags` and without following a symbolic link."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=directory_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{where / name} is a symbolic link; remove it or pass another --out") from None
        raise


def open_log(run_dir: Path, name: str, truncate: bool = True) -> BinaryIO:
    """RUN_DIR/logs/NAME, emptied unless `truncate` is False, for reading and writing (a cell's stderr), never
    through a link."""
    logs = Path(run_dir) / LOGS_DIR
    with open_dir(logs) as folder:
        fd = open_file(folder, name, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0), logs)
    return os.fdopen(fd, "w+b")


def write_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write through a temp file named by a uuid (containers under `init: true` share one pid), creating the
    folder, never through a link (the folder and the file are opened with O_NOFOLLOW); the temp file is removed
    if the write fails, and a full disk is one line naming the file (UserError)."""
    path = Path(path)
    tmp = f".{path.name}.{uuid.uuid4().hex}.tmp"
    with open_dir(path.parent) as folder:
        try:
            fd = open_file(folder, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=folder)
            if isinstance(exc, OSError) and (error := no_space(path, exc)):
                raise error from None
            raise


def read_info_file(path: Path) -> RunInfo:
    """One writer's run info, or one line saying what in the file is not as `edgebench run` writes it."""
    try:
        return RunInfo.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path} not found; pass a run directory written by `edgebench run`") from None
    except ValidationError as exc:
        raise UserError(f"{path}{_info_problem(exc)}; re-run `edgebench run` into a new --out") from None


def _info_problem(exc: ValidationError) -> str:
    """What a ValidationError of run info says, never quoting the file's own text."""
    error = exc.errors()[0]
    if error["type"] == "json_invalid":
        return " is corrupted (not JSON)"
    if not error["loc"]:
        return " is not a JSON object"
    return f": {error['loc'][0]} is not as `edgebench run` writes it"  # one of the model's names


def read_run_slices(run_dir: Path) -> dict[str, RunInfo]:
    """Every writer's own run info, keyed by file name."""
    paths = run_info_paths(run_dir)
    if not paths:
        raise UserError(
            f"{Path(run_dir) / RUN_INFO} not found; pass a run directory written by `edgebench run`"
        )
    return {p.name: read_info_file(p) for p in paths}


def read_run_info(run_dir: Path) -> RunInfo:
    """The run's description over all its writers (see merge_run_info); every reader of run info uses this."""
    return merge_run_info(read_run_slices(run_dir))


def merge_run_info(infos: dict[str, RunInfo]) -> RunInfo:
    """The earliest-started writer's description, listing the cells, labels and resolutions of every writer."""
    ordered = [info for _, info in sorted(infos.items(), key=lambda item: (item[1].started_at, item[0]))]
    return ordered[0].model_copy(
        update={
            "cells": list(dict.fromkeys(cell for info in ordered for cell in info.cells)),
            "cell_labels": {k: v for info in ordered for k, v in info.cell_labels.items()},
            "resolutions": [entry for info in ordered for entry in info.resolutions],
        }
    )


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


def done_cells(run_dir: Path, retry_errors: bool = False) -> set[str]:
    """Ids of the cells a resume skips: every recorded one, or with retry_errors those whose latest record
    is a measurement."""
    return {r.cell_id for r in load_records(run_dir) if not (retry_errors and r.status in UNMEASURED)}


def grown(before: RunInfo, after: RunInfo) -> bool:
    """Whether `after` is `before`'s grid with cells added: the cells `before` planned are all still planned, more
    are, and neither resolves models at run time (a largest-fitting search's cells are known only once probed)."""
    fixed = not before.largest_fitting_arms and not after.largest_fitting_arms
    return fixed and set(before.cells) < set(after.cells)


class RunStore:
    """Appends records durably and knows which cells are already finished; `devices` names a writer's slice."""

    def __init__(self, run_dir: Path, devices: list[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.results = self.run_dir / RESULTS
        self.info_path = self.run_dir / run_info_name(devices)

    def prepare(self, run_info: RunInfo, fresh: bool, retry_errors: bool = False) -> set[str]:
        """Create the directory, set a previous run aside when fresh, write this writer's run info, and return
        the ids of the cells already done (see done_cells)."""
        check_writable(self.run_dir)
        if not fresh:
            self._refuse_other_spec(run_info)
        done = set() if fresh else done_cells(self.run_dir, retry_errors)  # a corrupted file stops us here
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            self._set_aside()
        if self.results.exists():
            with self._locked() as fd:
                _cut_partial_tail(fd)
        self.describe(run_info)
        return done

    def describe(self, run_info: RunInfo) -> None:
        """(Re)write this writer's run info, e.g. once probing has decided a largest-fitting run's cells."""
        write_atomic(self.info_path, run_info.model_dump_json(indent=2) + "\n")

    def _refuse_other_spec(self, run_info: RunInfo) -> None:
        """A run directory holds one spec's run; a spec whose grid grew (every cell it held still in it, and more,
        as when a sweep's choice at the edge of its grid extends the grid) resumes into it."""
        others = [read_info_file(p) for p in run_info_paths(self.run_dir)]
        if not all(info.spec_hash == run_info.spec_hash or grown(info, run_info) for info in others):
            raise UserError(
                f"{self.run_dir} holds a run of a different spec; pass --fresh to redo it "
                "(old results are kept as a .bak file) or choose another --out"
            )

    def _set_aside(self) -> None:
        """--fresh (one writer only): the results, every writer's run info and the predictions they reference
        become .bak files; the cells' checkpoints are dropped (a fresh run starts every cell at step 0)."""
        # The second and a random part: two --fresh runs in the same second must not overwrite each other's.
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        for path in [self.results, *run_info_paths(self.run_dir), self.run_dir / PREDICTIONS_DIR]:
            if os.path.lexists(path):
                path.rename(path.with_name(f"{path.name}.{stamp}.bak"))
        shutil.rmtree(self.run_dir / CHECKPOINTS_DIR, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """results.jsonl opened for appending under an exclusive flock, which the kernel drops if we die."""
        with open_dir(self.run_dir) as folder:
            fd = open_file(folder, RESULTS, os.O_RDWR | os.O_APPEND | os.O_CREAT, self.run_dir)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def append(self, record: CellRecord) -> None:
        """One write() of one whole line, after cutting what a writer killed mid-line left."""
        line = (record.model_dump_json() + "\n").encode()
        with self._locked() as fd:
            _cut_partial_tail(fd)
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, f"short write to {self.results} ({written} of {len(line)} bytes)")
                os.fsync(fd)
            except OSError as exc:  # a full disk: what is recorded stays whole, and the run stops in one line
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise no_space(self.results, exc) or exc from None
        if record.status not in UNMEASURED:  # a measurement is final: its checkpoint has served
            shutil.rmtree(self.run_dir / CHECKPOINTS_DIR / record.cell_id, ignore_errors=True)


def _cut_partial_tail(fd: int) -> None:
    """Under the lock, a last line without its newline is a dead writer's: cut it."""
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return
    os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
    os.fsync(fd)
