"""Small helpers shared by the integration tests."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from devices.caps.base import harness_pid, pid_alive
from devices.caps.cgroup_v1 import controller_dir
from devices.caps.select import probe_all
from harness.record.records import now_iso
from harness.run.executors.base import ChildOutcome, Executor

# A 512 MB device that cannot hold opt-125m beside a 2 GB one that can.
OOM_AND_OK = """
name: oom-and-ok
devices: [rpi-zero-2w, rpi-4-2gb]
timeout_s: 3000  # device seconds: about 3 CPU minutes of a host core on the Pi Zero's scaled clock
matrix:
  model: opt-125m
  method: mezo
  task: synthetic
  batch: 1
  seq_len: 16
  max_steps: 1
"""


def opt_1m_spec(name: str, devices: str, methods: str = "[mezo, bp-checkpointed]") -> str:
    """A spec of opt-1m cells on the synthetic task (seconds each), for tests of what surrounds a workload."""
    return f"""
name: {name}
devices: {devices}
timeout_s: 300
matrix:
  model: opt-1m
  method: {methods}
  task: synthetic
  batch: 2
  seq_len: 16
  max_steps: 2
"""


def one_cell_spec(name: str, steps: int = 2, memory: str = "512MiB", extra: str = "") -> str:
    """One opt-1m MeZO cell on a 1-core small device (a stand-in cell usually replaces its workload)."""
    return f"""
name: {name}
devices: [{{name: small, memory: {memory}, cpus: 1}}]
timeout_s: 120
{extra}matrix: {{model: opt-1m, method: mezo, max_steps: {steps}, batch: 2, seq_len: 16}}
"""


SMALL = opt_1m_spec("small", "[rpi-4-2gb]", "[mezo, bp-checkpointed, bp, inference]")


@dataclass(frozen=True)
class CliResult:
    """What one `edgebench` command did: its exit code and what it wrote (the names subprocess.run gives them)."""

    returncode: int
    stdout: str
    stderr: str
    escaped: str | None = None  # in this process, the exception the CLI let out (a child's is only its traceback)

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def edgebench(
    *args: str,
    process: bool = False,
    python_flags: tuple[str, ...] = (),
    timeout: float = 600,
    check: bool = False,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> CliResult:
    """Run the CLI with `args`, as a user would: in this process by default (fast, and a test's monkeypatches
    reach it), or with `process` in a child Python started with `python_flags` (for what needs a real process:
    signals, a change of user, Ray, Docker, `-I` isolation). `env` is added to this process's environment for
    the command, `cwd` is its working directory; `timeout` bounds a child process only. An exception the CLI
    lets out ends it with code 1 and its traceback on stderr, as it would a child; `check` fails the test on a
    non-zero code."""
    run = _in_child if process else _in_this_process
    result = run(list(args), python_flags, timeout, {**os.environ, **(env or {})}, cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"edgebench {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def start_edgebench(*args: str, python_flags: tuple[str, ...] = (), **popen: object) -> subprocess.Popen:
    """Start the CLI in a child process and return at once, for tests that signal or kill it while it runs
    (`popen` goes to subprocess.Popen: its output, environment, session or process group)."""
    return subprocess.Popen(_command(args, python_flags), **popen)


def _command(args: tuple[str, ...] | list[str], python_flags: tuple[str, ...]) -> list[str]:
    return [sys.executable, *python_flags, "-m", "harness.cli", *args]


def _in_child(
    args: list[str], python_flags: tuple[str, ...], timeout: float, env: dict[str, str], cwd: Path | None
) -> CliResult:
    proc = subprocess.run(_command(args, python_flags), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _in_this_process(
    args: list[str], python_flags: tuple[str, ...], timeout: float, env: dict[str, str], cwd: Path | None
) -> CliResult:
    """main(args) with stdout and stderr captured, and the environment, working directory and the signal handlers
    main installs put back afterwards."""
    from harness.cli.main import main

    assert not python_flags, "interpreter flags need a child process: pass process=True"
    out, err, escaped = io.StringIO(), io.StringIO(), None
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update(env)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            except Exception as exc:  # noqa: BLE001 - a child would die with its traceback on stderr: so do we
                traceback.print_exc()
                code, escaped = 1, f"{type(exc).__name__}: {exc}"[:300]
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return CliResult(code, out.getvalue(), err.getvalue(), escaped)


def edgebench_json(*args: str, process: bool = False, timeout: float = 600) -> dict:
    return json.loads(edgebench(*args, "--json", process=process, timeout=timeout, check=True).stdout)


def require_kernel_caps() -> str:
    """The cgroup backend this host offers; skip (a failure in CI) when there is none."""
    for name, reason in probe_all().items():
        if name.startswith("cgroup") and reason is None:
            return name
    pytest.skip("no usable cgroup memory controller here (needs root and cgroup v1 or v2 with memory)")


def cell_cgroups() -> set[str]:
    """Per-cell cgroups of any edgebench run that exist now (cgroup v1 memory and cpu controllers)."""
    found = set()
    for controller in ("memory", "cpu"):
        base = controller_dir(controller)
        if base is not None:
            found |= {p.name for p in Path(base).iterdir() if harness_pid(p.name) is not None}
    return found


@contextmanager
def own_processes(interval_s: float = 0.02) -> Iterator[set[int]]:
    """The pids of this process and of every descendant it had while the block ran (polled), so that a check can
    tell this test's harnesses from another pytest worker's."""
    import psutil

    seen = {os.getpid()}
    done = threading.Event()

    def poll() -> None:
        me = psutil.Process()
        while not done.wait(interval_s):
            with suppress(psutil.Error):
                seen.update(child.pid for child in me.children(recursive=True))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


@pytest.fixture
def no_leftover_cgroups():
    """Fails the test if a per-cell cgroup outlives its harness (runs alive beside the test keep theirs). Under
    pytest-xdist only this test's own harnesses count: one another worker SIGKILLed on purpose leaves its cgroups
    for the next run to sweep. (Ray's workers are no descendants of the test, so the Ray tests run outside xdist.)"""
    before = cell_cgroups()
    if "PYTEST_XDIST_WORKER" in os.environ:
        with own_processes() as harnesses:
            yield
    else:
        harnesses = None
        yield
    leaked = {
        name
        for name in cell_cgroups() - before
        if not pid_alive(pid := harness_pid(name)) and (harnesses is None or pid in harnesses)
    }
    assert leaked == set()


def run_spec(directory: Path, text: str) -> list:
    """Run a spec afresh through the real CLI (no report) and return its records."""
    from harness.record.store import load_records

    out = directory / "run"
    edgebench(
        "run",
        str(write_spec(directory, text)),
        "--out",
        str(out),
        "--no-report",
        "--fresh",
        process=True,
        timeout=7200,
        check=True,
    )
    return load_records(out)


#: How a stand-in cell tells its test what it saw: one line on its stderr, which the cell's log keeps (its result's
#: metrics are workloads.metrics', which hold no such thing). `observe(x)` is defined for the stand-in's code.
OBSERVE = """
def observe(seen):
    print("observed: " + json.dumps(seen), file=sys.stderr, flush=True)
"""


def observed(run_dir: Path, record) -> object:
    """What a stand-in cell said it saw (`OBSERVE`), from the last such line of its log."""
    log = (run_dir / "logs" / f"{record.cell_id}.log").read_text(errors="replace").splitlines()
    return json.loads(next(line for line in reversed(log) if line.startswith("observed: ")).partition(": ")[2])


def write_spec(directory: Path, text: str) -> Path:
    path = directory / "spec.yaml"
    path.write_text(text)
    return path


def write_rows(path: Path, rows: list[dict], blank_line: bool = False) -> str:
    """A local dataset file of `rows` in the format its suffix names (csv, jsonl, json or parquet); `blank_line`
    puts an empty line after a csv's header (readers must skip it)."""
    fmt = path.suffix.lstrip(".")
    if fmt == "csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            if blank_line:
                handle.write("\n")
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@contextmanager
def readable_directory() -> Iterator[Path]:
    """A temporary folder anyone may read: a root harness runs its cells as nobody, who cannot reach pytest's
    tmp_path (under a private /tmp/pytest-of-root), so what a cell reads (a task file, code on PYTHONPATH)
    goes here."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


class Scripted(Executor):
    """A stand-in executor for tests of the command, not of workloads: each cell ends as OUTCOMES says for its
    method (ok by default), at once; every run is logged in RAN."""

    name = "local"
    enforcement = "cgroup-v1"
    throttles = True
    OUTCOMES: dict[str, str] = {}
    RAN: list[str] = []

    def execute(self, cell, progress):
        Scripted.RAN.append(cell.params.method)
        outcome = Scripted.OUTCOMES.get(cell.params.method, "ok")
        result = {"status": "ok", "steps": 1, "metrics": {"versions": {"torch": "x"}}}
        if outcome == "error":
            return ChildOutcome(now_iso(), 0.1, 1, False, False, None, stderr_tail="boom")
        if outcome == "timeout":
            return ChildOutcome(now_iso(), 0.1, -9, True, False, None)
        if outcome == "oom":
            return ChildOutcome(now_iso(), 0.1, -9, False, True, None)
        return ChildOutcome(now_iso(), 0.1, 0, False, False, result)


@pytest.fixture
def scripted(monkeypatch):
    """`edgebench run` in this process with the Scripted executor, its outcomes and log fresh."""
    from harness.run import matrix

    monkeypatch.setattr(matrix, "executor_class", lambda name: Scripted)
    monkeypatch.setattr(Scripted, "OUTCOMES", {})
    monkeypatch.setattr(Scripted, "RAN", [])
    return Scripted


def fast_board(memory: str) -> str:
    """A spec's device list with one board at 60 % of a host core (this host's calibration, cached as runs use
    it): its throttle quota sits under one core on any host, and the cell stays short."""
    from devices.host_speed import host_speed

    speed = host_speed()
    assert speed is not None, "the host's calibration failed"
    gflops = round(0.6 * speed.gflops_per_core, 1)
    return f"[{{name: fast-board, memory: {memory}, cpus: 4, gflops: {gflops}, gflops_source: test}}]"
