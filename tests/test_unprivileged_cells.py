"""Cells cannot lift their own caps: a harness running as root starts each cell as an unprivileged user (a private
uid of its own unless --cell-user names a user) who cannot write its cgroup's files, through the real launcher, kernel caps and
executor. A stand-in cell reports what it is and what became of its attempts to escape; a real one still runs."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.record.store import load_records
from harness.run import cell_uids
from harness.run.executors import cell_dirs, cell_user, local
from tests.helpers import edgebench, observed, one_cell_spec, require_kernel_caps, write_rows, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_cgroups")]

#: The stand-in cell observes who it runs as, and its attempts to raise its own memory cap to 1 TiB (on v1 the memory+swap
#: limit first, which the memory limit may not exceed) and to leave its cgroup.
ESCAPE = """
import ctypes, json, os, sys
cgroup = os.path.dirname(os.environ["EDGEBENCH_CGROUP_PROCS"].split(":")[0])  # v1: the memory controller's
v2 = os.path.exists(os.path.join(cgroup, "memory.max"))
limit = os.path.join(cgroup, "memory.max" if v2 else "memory.limit_in_bytes")
memsw = os.path.join(cgroup, "memory.memsw.limit_in_bytes")


def attempt(paths, text):
    try:
        for path in paths:
            with open(path, "w") as handle:
                handle.write(text)
    except OSError as exc:
        return type(exc).__name__
    return "written"


pdeathsig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(pdeathsig), 0, 0, 0)  # PR_GET_PDEATHSIG
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
seen = {
    "uids": os.getresuid(),
    "gids": os.getresgid(),
    "groups": os.getgroups(),
    "raise_cap": attempt([p for p in (memsw, limit) if os.path.exists(p)], str(1 << 40)),
    "leave_cgroup": attempt([os.path.join(os.path.dirname(cgroup), "cgroup.procs")], str(os.getpid())),
    "cap_after": int(open(limit).read()),
    "no_new_privs": int(status["NoNewPrivs"]),
    "pdeathsig": pdeathsig.value,
    "home": os.environ["HOME"],
    "home_writable": os.access(os.environ["HOME"], os.W_OK),
}
print("observed: " + json.dumps(seen), file=sys.stderr, flush=True)
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}))
"""
ONE_CELL = one_cell_spec("unprivileged")


@pytest.fixture
def as_root(monkeypatch):
    """Root and kernel caps (in CI, where skips fail, both hold). The installation need not be reachable by the
    cell user beforehand: the harness opens what it must to that user alone for the run (tests/test_cell_reach.py)."""
    if os.geteuid() != 0:
        pytest.skip("cells change user only when the harness runs as root")
    require_kernel_caps()
    monkeypatch.setenv(cell_user.ENV_CELL_USER, "")  # recorded, so that teardown removes what --cell-user sets here
    monkeypatch.delenv(cell_user.ENV_CELL_USER)


def run_stand_in(tmp_path: Path, monkeypatch, *options: str):
    """`edgebench run` in this process over one cell running ESCAPE; its record and what it observed."""
    monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", ESCAPE])
    out = tmp_path / "run"
    assert edgebench("run", str(write_spec(tmp_path, ONE_CELL)), "--out", str(out), "--no-report", *options).returncode == 0
    (record,) = load_records(out)
    assert record.status == "ok", record.error
    return record, observed(out, record)


def homes_of_this_harness() -> list[Path]:
    return list(cell_dirs.CELLS_ROOT.glob(f"{cell_dirs.HOME_PREFIX}{os.getpid()}-*"))


def dead_pid() -> int:
    """A pid no process has now: a reaped child's."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_cell_runs_as_a_private_uid_and_cannot_lift_its_cap_or_leave_its_cgroup(tmp_path, monkeypatch, as_root):
    record, m = run_stand_in(tmp_path, monkeypatch)
    uid = m["uids"][0]
    assert cell_uids.FIRST_UID <= uid <= cell_uids.LAST_UID and m["uids"] == [uid] * 3
    assert m["gids"] == [uid] * 3 and m["groups"] == [cell_uids.CELL_GID]
    assert m["raise_cap"] == "PermissionError" and m["leave_cgroup"] == "PermissionError"
    assert m["cap_after"] == record.device.memory_bytes == 512 * 1024**2
    assert m["no_new_privs"] == 1, "a set-user-ID program could make the cell root again"
    assert m["pdeathsig"] == signal.SIGKILL, "the change of user cleared the death signal: set it after"
    assert m["home_writable"] and Path(m["home"]).parent.name.startswith(f"{cell_dirs.HOME_PREFIX}{os.getpid()}-")
    assert homes_of_this_harness() == [], "the cell's private home outlived it"
    assert not (cell_uids.CLAIMS_DIR / str(uid)).exists(), "the cell's uid is still claimed"


@pytest.mark.parametrize("user", ["daemon", "root"])
def test_cell_user_names_the_account_and_root_keeps_cells_root(tmp_path, monkeypatch, as_root, user):
    record, m = run_stand_in(tmp_path, monkeypatch, "--cell-user", user)
    assert m["uids"] == [pwd.getpwnam(user).pw_uid] * 3
    if user == "root":  # the stand-in's attempts are real escapes, which only root's cells make
        assert (m["raise_cap"], m["leave_cgroup"], m["cap_after"]) == ("written", "written", 1 << 40)
    else:
        assert (m["raise_cap"], m["cap_after"]) == ("PermissionError", record.device.memory_bytes)


def test_a_real_cell_completes_as_nobody_and_the_run_directory_stays_the_harnesss(tmp_path, as_root):
    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, ONE_CELL)), "--out", str(out), "--no-report", "--cell-user", "nobody", process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = load_records(out)
    assert record.status == "ok" and record.steps == 2, record.error
    assert record.peak_memory_bytes and record.memory.cgroup_peak_bytes
    assert {p.stat().st_uid for p in [out, *out.rglob("*")]} == {0}


def test_an_unknown_cell_user_is_one_line_exit_2_and_writes_nothing(tmp_path, as_root):
    out = tmp_path / "run"
    spec = write_spec(tmp_path, ONE_CELL)
    proc = edgebench("run", str(spec), "--out", str(out), "--cell-user", "no-such-user-here", process=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "edgebench: error: --cell-user no-such-user-here: no such user here; create it or name an unprivileged user "
        "with --cell-user (root: cells run as root, able to lift their own caps)"
    ]
    assert not out.exists()


def test_an_input_the_cell_user_cannot_read_is_refused_before_anything_runs(tmp_path, as_root):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    rows = [{"text": f"a {'fine' if i % 2 else 'dull'} film {i}", "label": i % 2} for i in range(80)]
    task = write_rows(private / "reviews.csv", rows)
    spec = ONE_CELL.replace("model: opt-1m,", f"model: minilm-l1, task: {task},")
    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, spec)), "--out", str(out), "--cell-user", "nobody", process=True)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"edgebench: error: cells run as nobody when edgebench runs as root, and nobody cannot read {task};")
    assert not out.exists()


def test_the_default_cell_user_who_cannot_read_an_input_is_refused_never_replaced_by_root(tmp_path, as_root):
    """Finding 1: the default user used to give way to root with a warning (exit 0, cells as root); now the run is
    refused in one line naming the path and the fix, as for a named user, and nothing is written."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    task = write_rows(private / "reviews.csv", [{"text": f"film {i}", "label": i % 2} for i in range(80)])
    spec = ONE_CELL.replace("model: opt-1m,", f"model: minilm-l1, task: {task},")
    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, spec)), "--out", str(out), "--no-report", process=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        f"edgebench: error: cells run as {cell_user.DEFAULT_CELL_USER} when edgebench runs as root, and others cannot "
        f"read {task};"
    )
    assert line.endswith("or name another user with --cell-user (root: cells run as root, able to lift their own caps)")
    assert not out.exists()


def test_a_host_whose_groups_name_the_cells_gid_refuses_rather_than_sharing_it(tmp_path, monkeypatch, as_root):
    monkeypatch.setattr(cell_uids, "CELL_GID", 0)
    out = tmp_path / "run"
    result = edgebench("run", str(write_spec(tmp_path, ONE_CELL)), "--out", str(out), "--no-report")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("edgebench: error: gid 0 is the group root here, which edgebench gives every cell uid;")
    assert not out.exists()


def test_the_homes_of_dead_harnesses_are_swept_and_no_others(as_root):
    cell_dirs.CELLS_ROOT.mkdir(parents=True, exist_ok=True)
    dead = Path(tempfile.mkdtemp(prefix=f"{cell_dirs.HOME_PREFIX}{dead_pid()}-", dir=cell_dirs.CELLS_ROOT))
    alive = Path(tempfile.mkdtemp(prefix=f"{cell_dirs.HOME_PREFIX}{os.getppid()}-", dir=cell_dirs.CELLS_ROOT))
    (dead / "left-behind").write_text(json.dumps({"by": "a SIGKILLed harness"}))
    try:
        local.LocalExecutor(Path(tempfile.gettempdir()), 60).close()
        assert not dead.exists() and alive.exists()
    finally:
        alive.rmdir()


def test_a_host_that_cannot_make_namespaces_refuses_unless_network_is_allowed(tmp_path, monkeypatch, as_root):
    monkeypatch.setattr(local, "sandbox_unavailable", lambda: "unshare: Operation not permitted")
    monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", ESCAPE])
    out = tmp_path / "run"
    result = edgebench("run", str(write_spec(tmp_path, ONE_CELL)), "--out", str(out), "--no-report")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "edgebench: error: cells run without network here, in a namespace this host refuses (unshare: Operation not "
        "permitted); run where root may create namespaces, or allow network with `network: true`"
    )
    assert not out.exists()
    spec = write_spec(tmp_path, ONE_CELL + "network: true\n")
    result = edgebench("run", str(spec), "--out", str(out), "--no-report", "--allow-network")
    assert result.returncode == 0
    assert "edgebench: warning: cells share the host's /tmp, /var/tmp and /dev/shm" in result.stderr
    (record,) = load_records(out)
    assert record.status == "ok", record.error


def test_a_uid_the_host_uses_is_never_a_cell_uid():
    assert not cell_uids.usable(0, set(), []) and not cell_uids.usable(65534, set(), [])  # accounts
    free = next(uid for uid in range(cell_uids.FIRST_UID, cell_uids.LAST_UID) if cell_uids.usable(uid, set(), []))
    assert not cell_uids.usable(free, {free}, []), "a uid that runs a process"
    assert not cell_uids.usable(free, set(), [range(free, free + 1)]), "a subordinate uid"


def test_cell_uid_claims_are_exclusive_and_a_dead_harnesss_is_taken_over(tmp_path, monkeypatch, as_root):
    monkeypatch.setattr(cell_uids, "CLAIMS_DIR", tmp_path / "claims")
    first, second = cell_uids.claim(), cell_uids.claim()
    assert first != second
    (cell_uids.CLAIMS_DIR / str(second)).write_text(str(dead_pid()))  # as a SIGKILLed harness leaves it
    assert cell_uids.claim() == second
    cell_uids.release(first)
    cell_uids.release(second)
    assert sorted(p.name for p in cell_uids.CLAIMS_DIR.iterdir()) == [".lock"]
