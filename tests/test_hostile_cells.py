"""Hostile cells through the real launcher, kernel caps and executor (issue 26): a cell that floods its output,
forks without end, opens a socket to a host service, reads another running cell's home, writes into the run
directory, raises its own cap or leaves files in /tmp and /dev/shm is stopped or fails, and is recorded with the
reason; the harness (which has no cap) stays small, the other cell of the run and the records are untouched, and
nothing is left behind (processes, cgroups, uid claims, private directories, files of the cell uids).

The harness runs as a subprocess (the real CLI, each cell's workload replaced by `python -c CODE`); its own peak
RSS is its VmHWM, read until it exits. Not wait4's ru_maxrss: Linux keeps, across exec, the high-water mark of the
memory a vforked child shared with its parent, so under pytest-xdist a harness read the worker's 212 MiB."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from harness.record.store import load_records
from harness.run import cell_uids
from harness.run.executors import cell_dirs
from harness.run.executors.base import MAX_EVENTS, MAX_LINE_BYTES, MAX_LOG_BYTES
from tests.helpers import OBSERVE, observed, readable_directory, require_kernel_caps, write_spec
from tests.test_signals import fake_cell_harness

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftover_cgroups")]

GIB = 1 << 30
#: Two one-core cells: the hostile one (method mezo) and a well-behaved one (method inference) beside it.
SPEC = """
name: hostile
timeout_s: 300
devices: [{name: one-core, memory: 512MiB, cpus: 1}]
matrix: {model: opt-1m, method: [mezo, inference], max_steps: 1}
"""
#: argv[1] is the cell's method: the inference cell behaves, the mezo cell runs HOSTILE.
CELL = """
import json, os, sys
""" + OBSERVE + """
if sys.argv[1] == "inference":
    print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}), flush=True)
    sys.exit(0)
HOSTILE
"""
ONE_LINE = f"""
chunk = b"x" * (1 << 20)
for _ in range({GIB} // len(chunk)):  # 1 GiB on one line, never held whole by the cell
    os.write(1, chunk)
"""
STDERR = f"""
chunk = b"e" * (1 << 20)
for _ in range({GIB} // len(chunk)):
    os.write(2, chunk)
"""
EVENTS = f"""
line = json.dumps({{"event": "note", "n": 1}}) + "\\n"
sys.stdout.write(line * ({MAX_EVENTS} * 3))
sys.stdout.flush()
"""
HARNESS_RSS_LIMIT = 200 << 20


def run_hostile(
    tmp_path: Path,
    hostile: str,
    jobs: int = 2,
    spec: str = SPEC,
    flags: tuple[str, ...] = (),
    out: Path | None = None,
    launch: Callable[..., subprocess.Popen] = fake_cell_harness,
) -> tuple[int, int, str, Path]:
    """The run's exit code, the harness's peak RSS (bytes), its stderr, and the run directory (`out`, else one in
    tmp_path); `launch` starts the harness (tests.test_signals: fake_cell_harness, or fake_docker_harness)."""
    if launch is fake_cell_harness:
        require_kernel_caps()
    out = out or tmp_path / "run"
    code = CELL.replace("HOSTILE", hostile)
    argv = ["run", str(write_spec(tmp_path, spec)), "--out", str(out), "--no-report", "--jobs", str(jobs), *flags]
    harness = launch(code, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    stderr = b""
    os.set_blocking(harness.stderr.fileno(), False)
    peak = 0
    while True:
        stderr += harness.stderr.read() or b""
        peak = max(peak, high_water_bytes(harness.pid))
        pid, status, _ = os.wait4(harness.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            harness.kill()
            raise AssertionError("the harness did not end within 300 s")
        time.sleep(0.05)
    harness.returncode = os.waitstatus_to_exitcode(status)
    stderr += harness.stderr.read() or b""
    check_nothing_left(harness.pid)
    return harness.returncode, peak, stderr.decode(errors="replace"), out


def check_nothing_left(harness_pid: int) -> None:
    """No live process of a cell uid, no uid the harness claimed, no private directory of its cells, and no file of a
    cell uid in the host's /tmp, /var/tmp or /dev/shm (the no_leftover_cgroups fixture checks the cgroups)."""
    in_range = range(cell_uids.FIRST_UID, cell_uids.LAST_UID + 1)
    running = [  # a killed cell's orphans are zombies until init reaps them: they hold nothing but a pid
        (p.pid, p.info["uids"].real, p.info["cmdline"])
        for p in psutil.process_iter(["uids", "cmdline", "status"])
        if p.info["uids"]
        and p.info["uids"].real in in_range
        and p.info["status"] != psutil.STATUS_ZOMBIE
        and started_by(p, harness_pid)
    ]
    assert running == [], f"processes of cell uids outlived the run: {running[:3]}"
    claims = [p for p in cell_uids.CLAIMS_DIR.glob("9*") if p.read_text() == str(harness_pid)]
    assert claims == [], f"uids still claimed: {claims}"
    assert list(cell_dirs.CELLS_ROOT.glob(f"{cell_dirs.HOME_PREFIX}{harness_pid}-*")) == [], "a private directory outlived it"
    files = [p for d in ("/tmp", "/var/tmp", "/dev/shm") for p in Path(d).iterdir() if owned_by_cell_uid(p)]
    assert files == [], f"files of cell uids left: {files}"


def started_by(process: psutil.Process, harness_pid: int) -> bool:
    """Whether a cell process is this harness's (its HOME is one of the harness's private homes): tests on the other
    worker run cells of their own meanwhile."""
    with contextlib.suppress(psutil.Error):
        return f"{cell_dirs.HOME_PREFIX}{harness_pid}-" in process.environ().get("HOME", "")
    return False


def owned_by_cell_uid(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return cell_uids.FIRST_UID <= path.lstat().st_uid <= cell_uids.LAST_UID
    return False


def high_water_bytes(pid: int) -> int:
    """The process's own peak RSS so far (VmHWM), 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def check_contained(out: Path, rss: int, reason: str) -> None:
    assert rss < HARNESS_RSS_LIMIT, f"the harness peaked at {rss / 2**20:.0f} MiB"
    print(f"harness peak RSS {rss / 2**20:.1f} MiB")
    records = {r.params.method: r for r in load_records(out)}
    assert set(records) == {"mezo", "inference"}
    assert records["inference"].status == "ok", records["inference"].error  # the other cell is untouched
    assert records["mezo"].status == "error" and reason in (records["mezo"].error or ""), records["mezo"].error


def test_a_gigabyte_on_one_line_stops_the_cell_not_the_harness(tmp_path):
    code, rss, stderr, out = run_hostile(tmp_path, ONE_LINE)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, f"a line of over {MAX_LINE_BYTES >> 20} MiB")
    print(f"harness peak RSS {rss / 2**20:.1f} MiB with a 1 GiB line")


def test_a_gigabyte_on_stderr_is_cut_at_the_log_bound(tmp_path):
    code, rss, stderr, out = run_hostile(tmp_path, STDERR)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, f"over {MAX_LOG_BYTES >> 20} MiB to stderr")
    logs = {p.name: p.stat().st_size for p in (out / "logs").iterdir()}
    assert max(logs.values()) <= MAX_LOG_BYTES + 4096, logs
    print(f"harness peak RSS {rss / 2**20:.1f} MiB with 1 GiB on stderr; largest log {max(logs.values())} bytes")


def test_a_flood_of_events_stops_the_cell(tmp_path):
    code, rss, stderr, out = run_hostile(tmp_path, EVENTS)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, f"over {MAX_EVENTS} events")


def test_the_harness_reads_a_legitimate_result_line_of_several_megabytes(tmp_path):
    """The result line carries base64 predictions: a long line under the bound is a result, not a violation."""
    big = """
metrics = {"loss": {"values": [0.5] * (2 << 20)}}  # 10 MB of JSON
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": metrics}), flush=True)
"""
    code, rss, stderr, out = run_hostile(tmp_path, big, jobs=1)
    assert code == 0, stderr[-2000:]
    records = {r.params.method: r for r in load_records(out)}
    assert records["mezo"].status == "ok" and len(records["mezo"].metrics.loss.values) == 2 << 20


if __name__ == "__main__":  # pragma: no cover - for measuring by hand
    sys.exit(pytest.main([__file__, "-q", "-s"]))


#: Forks sleeping children until the kernel refuses, then says how many it got (its cgroup reaps them after).
FORKS = """
import time
count = 0
for _ in range(400):
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    except OSError:
        break
    count += 1
observe({"forks": count})
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}), flush=True)
"""
#: A fork bomb: every process forks for ever; the spec's timeout ends it.
BOMB = """
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
PIDS_SPEC = SPEC.replace("cpus: 1}", "cpus: 1, pids: 48}").replace("timeout_s: 300", "timeout_s: 4")


def test_a_cell_cannot_have_more_processes_than_its_devices_pids_limit(tmp_path):
    if not (os.path.isdir("/sys/fs/cgroup/pids") or os.path.exists("/sys/fs/cgroup/cgroup.controllers")):
        pytest.skip("no pids controller")
    code, rss, stderr, out = run_hostile(tmp_path, FORKS, jobs=1, spec=PIDS_SPEC.replace("timeout_s: 4", "timeout_s: 60"))
    assert code == 0, stderr[-2000:]
    records = {r.params.method: r for r in load_records(out)}
    forks = observed(out, records["mezo"])["forks"]
    assert 0 < forks < 48, f"the cell forked {forks} children under a 48-pid limit"  # run_hostile: none outlived it


def test_a_fork_bomb_is_contained_stopped_and_leaves_nothing(tmp_path):
    require_kernel_caps()
    out = tmp_path / "run"
    spec = tmp_path / "bomb.yaml"
    spec.write_text(PIDS_SPEC)
    code = CELL.replace("HOSTILE", BOMB)
    argv = ["run", str(spec), "--out", str(out), "--no-report", "--jobs", "2"]
    harness = fake_cell_harness(code, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = harness.communicate(timeout=120)
    assert harness.returncode == 3, stderr[-2000:]
    records = {r.params.method: r for r in load_records(out)}
    assert records["inference"].status == "ok"
    assert records["mezo"].status == "timeout", records["mezo"].error
    check_nothing_left(harness.pid)


#: A cell that fails, with the reason, unless its attempt succeeds: then it says so in an ok result (and the test
#: fails). `attempt` returns what it achieved, or raises OSError.
ATTEMPT = """
try:
    achieved = attempt()
except OSError as exc:
    sys.exit(f"contained: {type(exc).__name__}: {exc}")
observe({"escaped": achieved})
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}), flush=True)
"""


@contextlib.contextmanager
def host_listener() -> Iterator[socket.socket]:
    """A service of the host's on 127.0.0.1 (an ephemeral port), not accepting by itself."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield listener


def connected(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def socket_cell(port: int) -> str:
    return f"""
import socket
def attempt():
    socket.create_connection(("127.0.0.1", {port}), timeout=10).close()
    return "connected to the host's 127.0.0.1:{port}"
""" + ATTEMPT


def test_a_cell_cannot_reach_a_service_on_the_hosts_loopback(tmp_path):
    """Finding 7: fails on main, where local cells had the host's network (the cell connects and ends ok)."""
    with host_listener() as listener:
        code, rss, stderr, out = run_hostile(tmp_path, socket_cell(listener.getsockname()[1]))
        assert not connected(listener), "the cell reached the host's service"
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, "contained: ConnectionRefusedError")


NETWORK_SPEC = SPEC.replace("timeout_s: 300", "timeout_s: 300\nnetwork: true")


def test_network_true_and_allow_network_together_give_cells_the_hosts_network(tmp_path):
    """The spec's author and the operator both allowed it: the same cell now connects (the check above can fail)."""
    with host_listener() as listener:
        port = listener.getsockname()[1]
        code, rss, stderr, out = run_hostile(tmp_path, socket_cell(port), spec=NETWORK_SPEC, flags=("--allow-network",))
        assert connected(listener)
    assert code == 0, stderr[-2000:]
    records = {r.params.method: r for r in load_records(out)}
    assert observed(out, records["mezo"])["escaped"].startswith("connected")


@pytest.mark.parametrize(
    ("spec", "flags", "line"),
    [
        (NETWORK_SPEC, [], "network: true would give cells the host's network; pass --allow-network to allow it"),
        (SPEC, ["--allow-network"], "does not set network: true; add it, or drop --allow-network"),
        (NETWORK_SPEC, ["--allow-network", "--executor", "docker"], "docker cells never have network; remove it, or use --executor local"),
    ],
)
def test_network_needs_both_the_spec_and_the_operator(tmp_path, spec, flags, line):
    from tests.helpers import edgebench

    out = tmp_path / "run"
    proc = edgebench("run", str(write_spec(tmp_path, spec)), "--out", str(out), "--no-report", *flags, process=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (said,) = proc.stderr.strip().splitlines()
    assert said.startswith("edgebench: error: ") and said.endswith(line), said
    assert not out.exists()


#: The victim (the inference cell) keeps a secret in its home and stays until the attacker has had its go.
VICTIM = """
import json, os, sys, time
""" + OBSERVE + """
home = os.environ["HOME"]
with open(os.path.join(home, "secret"), "w") as handle:
    handle.write("the victim's secret")
os.chmod(os.path.join(home, "secret"), 0o644)  # as umask 022 leaves a file: only the home's mode protects it
deadline = time.monotonic() + 120
while "victim" not in os.listdir(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(3)
observe({"home": sorted(os.listdir(home)), "secret": open(os.path.join(home, "secret")).read()})
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}), flush=True)
"""
#: Tries each (name, act) of the cell's ACTS: one that gets done ends the cell ok, every outcome observed
#: (and the test fails); otherwise the cell fails with them, "contained: " and each OSError's type by name.
TRIES = """
tries = {}
for name, act in ACTS:
    try:
        act()
        tries[name] = "done"
    except OSError as exc:
        tries[name] = type(exc).__name__
if "done" in tries.values():
    print("observed: " + json.dumps(tries), file=sys.stderr, flush=True)
    print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}), flush=True)
else:
    sys.exit("contained: " + json.dumps(tries, sort_keys=True))
"""
#: The attacker (the mezo cell), told the victim's home and pid: reads, lists and writes the home, signals the pid.
ATTACKER = """
import json, os, sys, time
deadline = time.monotonic() + 120
while "victim" not in os.listdir(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.05)
home, pid = open(os.path.join(sys.argv[2], "victim")).read().split()
ACTS = [
    ("read", lambda: open(os.path.join(home, "secret")).read()),
    ("list", lambda: os.listdir(home)),
    ("write", lambda: open(os.path.join(home, "planted"), "w").close()),
    ("signal", lambda: os.kill(int(pid), 0)),
]
""" + TRIES
def victim_of(harness_pid: int) -> tuple[Path, int] | None:
    """The running victim's home (it holds the secret) and pid, as root sees them; None until both are there."""
    homes = [
        *cell_dirs.CELLS_ROOT.glob(f"{cell_dirs.HOME_PREFIX}{harness_pid}-*/home/secret"),
        *Path("/tmp").glob(f"{cell_dirs.HOME_PREFIX}{harness_pid}-*/secret"),  # where main kept homes
    ]
    pids = [p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[-1] == "inference"]
    for secret in homes:
        with contextlib.suppress(OSError):
            if secret.read_text() == "the victim's secret" and pids:
                return secret.parent, pids[0]
    return None


def test_a_cell_cannot_read_write_or_signal_another_running_cell(tmp_path):
    """Finding 4: fails on main, where both cells ran as nobody (the attacker read the secret, planted a file in
    the victim's home and could signal it)."""
    require_kernel_caps()
    with readable_directory() as board:
        code = (
            f"import sys\nVICTIM = {VICTIM!r}\nATTACKER = {ATTACKER!r}\n"
            "sys.argv[2:2] = [" + repr(str(board)) + "]\n"
            "exec(VICTIM if sys.argv[1] == 'inference' else ATTACKER)\n"
        )
        out = tmp_path / "run"
        argv = ["run", str(write_spec(tmp_path, SPEC)), "--out", str(out), "--no-report", "--jobs", "2"]
        harness = fake_cell_harness(code, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak = [0]

        def tell_the_attacker() -> None:
            """Watch the harness's peak RSS until it ends, and tell the attacker about the victim once it runs."""
            while harness.poll() is None:
                peak[0] = max(peak[0], high_water_bytes(harness.pid))
                found = None if (board / "victim").exists() else victim_of(harness.pid)
                if found:
                    (board / "victim.tmp").write_text(f"{found[0]} {found[1]}")
                    os.chmod(board / "victim.tmp", 0o644)
                    os.replace(board / "victim.tmp", board / "victim")
                time.sleep(0.05)

        teller = threading.Thread(target=tell_the_attacker)
        teller.start()
        _, stderr = harness.communicate(timeout=300)
        teller.join()
        assert (board / "victim").exists(), f"the victim never showed up: {stderr[-2000:]}"
    check_nothing_left(harness.pid)
    assert harness.returncode == 3, stderr[-2000:]
    check_contained(out, peak[0], "contained: ")
    records = {r.params.method: r for r in load_records(out)}
    tries = json.loads(records["mezo"].error.partition("contained: ")[2].splitlines()[0])
    assert tries == {"list": "PermissionError", "read": "PermissionError", "signal": "PermissionError",
                     "write": "PermissionError"}
    assert observed(out, records["inference"]) == {"home": ["secret"], "secret": "the victim's secret"}


def test_a_cell_cannot_write_into_the_run_directory(tmp_path):
    """Passes on main too (nobody could not write a root 0755 directory either); kept as a guard. The run
    directory is one every user may enter, so that only its owner and mode stand in the way."""
    with readable_directory() as parent:
        out = parent / "run"
        out.mkdir(mode=0o755)
        hostile = f"""
def attempt():
    for name in ("results.jsonl", "run.json", "planted"):
        with open(os.path.join({str(out)!r}, name), "a") as handle:
            handle.write("forged")
    with open(os.path.join({str(out)!r}, "logs", "planted"), "w") as handle:
        handle.write("forged")
    return "wrote into the run directory"
""" + ATTEMPT
        code, rss, stderr, _ = run_hostile(tmp_path, hostile, out=out)
        assert code == 3, stderr[-2000:]
        check_contained(out, rss, "contained: PermissionError")
        assert not (out / "planted").exists() and not (out / "logs" / "planted").exists()
        assert "forged" not in (out / "results.jsonl").read_text() + (out / "run.json").read_text()
        assert len(load_records(out)) == 2


def test_a_cell_cannot_raise_its_own_memory_cap(tmp_path):
    """Finding 1: failed on the code before no-silent-root only when cells fell back to root; passes on main."""
    hostile = """
def attempt():
    for line in open("/proc/self/cgroup"):
        _, controllers, path = line.strip().split(":", 2)
        v1 = "memory" in controllers.split(",")
        if v1 or controllers == "" and os.path.exists(f"/sys/fs/cgroup{path}/memory.max"):
            base = f"/sys/fs/cgroup/memory{path}" if v1 else f"/sys/fs/cgroup{path}"
            name = "memory.limit_in_bytes" if v1 else "memory.max"
            with open(os.path.join(base, name), "w") as handle:
                handle.write(str(1 << 40))
            return f"raised {base}/{name}"
    return "found no memory cgroup"
""" + ATTEMPT
    code, rss, stderr, out = run_hostile(tmp_path, hostile)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, "contained: PermissionError")


def test_what_a_cell_leaves_in_tmp_and_dev_shm_is_gone_after_it(tmp_path):
    """Finding 4: fails on main, where the files stayed in the host's /tmp, /var/tmp and /dev/shm."""
    token = f"edgebench-left-{os.getpid()}-{tmp_path.name}"
    places = [Path(d) / token for d in ("/tmp", "/var/tmp", "/dev/shm")]
    hostile = f"""
for place in {[str(p) for p in places]!r}:
    with open(place, "w") as handle:
        handle.write("left behind")
sys.exit("contained: left files behind")
"""
    code, rss, stderr, out = run_hostile(tmp_path, hostile)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, "contained: left files behind")
    left = [p for p in places if p.exists()]
    for path in left:
        path.unlink()
    assert left == [], "the cell's files outlived it"
