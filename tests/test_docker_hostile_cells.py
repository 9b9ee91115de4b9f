"""Hostile cells through the Docker executor (issue 26), for the items of tests/test_hostile_cells.py that apply to a
container: a fork bomb, 1 GiB on one line and 1 GiB on stderr (both through the cell's supervisor in the container
and around it, on the container's own streams, which the harness on the host reads), a socket to a service on the
host's 127.0.0.1, a write into the run directory and a raise of its own memory cap. Each is stopped or fails and
is recorded with the reason, the harness on the host stays under 200 MiB, the well-behaved cell beside it is `ok`,
and nothing is left: no container, no process of one.

The harness runs as a subprocess (the real CLI), each container's supervisor the real one with the cell's workload
replaced by `python -c CODE` (tests.test_signals.fake_docker_harness); the image is the project's, built from this
source (tests/docker_engine.py). Not applicable here: another cell's home and /tmp leftovers (each cell has its own
container, namespaces and /tmp; docs/docker.md, Hardening).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
import yaml

from harness.record.store import load_records
from harness.run.executors.base import MAX_LINE_BYTES, MAX_LOG_BYTES
from harness.run.executors.docker import LABEL
from tests.docker_engine import Compose
from tests.helpers import observed
from tests.test_hostile_cells import (
    ATTEMPT,
    BOMB,
    CELL,
    FORKS,
    ONE_LINE,
    PIDS_SPEC,
    SPEC,
    STDERR,
    TRIES,
    check_contained,
    connected,
    host_listener,
    run_hostile,
    socket_cell,
)
from tests.test_signals import FAKE_CELL_HARNESS, fake_docker_harness

pytestmark = [pytest.mark.docker, pytest.mark.integration]

DOCKER = ("--executor", "docker")
#: Makes the cell's fd 1 and 2 the container's own stdout and stderr (those of its init, pid 1), which the harness on
#: the host reads, bypassing the supervisor that bounds what the cell writes to its pipes.
AROUND_THE_SUPERVISOR = """
for fd in (1, 2):
    os.dup2(os.open(f"/proc/1/fd/{fd}", os.O_WRONLY), fd)
"""
ROUTES = {"through its supervisor": "", "around its supervisor": AROUND_THE_SUPERVISOR}


def run_in_docker(engine, tmp_path: Path, hostile: str, **kwargs) -> tuple[int, int, str, Path]:
    """run_hostile with the Docker executor, then: no cell container is left, and no process of one runs."""
    since = time.time() - 1
    result = run_hostile(tmp_path, hostile, flags=DOCKER, launch=fake_docker_harness, **kwargs)
    client = engine.client()
    try:
        assert client.containers.list(all=True, filters={"label": LABEL}) == [], "a cell container outlived the run"
        created = client.events(
            since=since, until=time.time(), decode=True, filters={"label": LABEL, "type": "container", "event": "create"}
        )
        ids = {event["id"] for event in created}
    finally:
        client.close()
    assert ids, "the run started no container"
    assert processes_of(ids) == [], "processes of the cells' containers outlived them"
    return result


def processes_of(container_ids: set[str]) -> list[int]:
    """The host's processes in the cgroups of these containers."""
    found = []
    for process in psutil.process_iter():
        try:
            cgroups = Path(f"/proc/{process.pid}/cgroup").read_text()
        except OSError:
            continue
        if any(cid in cgroups for cid in container_ids):
            found.append(process.pid)
    return found


@pytest.mark.parametrize("route", ROUTES)
def test_a_gigabyte_on_one_line_stops_the_cell_not_the_harness(engine, tmp_path, route):
    code, rss, stderr, out = run_in_docker(engine, tmp_path, ROUTES[route] + ONE_LINE)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, f"a line of over {MAX_LINE_BYTES >> 20} MiB")


@pytest.mark.parametrize("route", ROUTES)
def test_a_gigabyte_on_stderr_is_cut_at_the_log_bound(engine, tmp_path, route):
    code, rss, stderr, out = run_in_docker(engine, tmp_path, ROUTES[route] + STDERR)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, f"over {MAX_LOG_BYTES >> 20} MiB to stderr")
    logs = {p.name: p.stat().st_size for p in (out / "logs").iterdir()}
    assert max(logs.values()) <= MAX_LOG_BYTES + 4096, logs


def test_a_cell_cannot_have_more_processes_than_its_devices_pids_limit(engine, tmp_path):
    """The container's pids_limit holds the cell's forks (its supervisor and init count too)."""
    spec = PIDS_SPEC.replace("timeout_s: 4", "timeout_s: 60")
    code, rss, stderr, out = run_in_docker(engine, tmp_path, FORKS, jobs=1, spec=spec)
    assert code == 0, stderr[-2000:]
    forks = observed(out, {r.params.method: r for r in load_records(out)}["mezo"])["forks"]
    assert 0 < forks < 48, f"the cell forked {forks} children under a 48-pid limit"


def test_a_fork_bomb_is_contained_stopped_and_leaves_nothing(engine, tmp_path):
    code, rss, stderr, out = run_in_docker(engine, tmp_path, BOMB, jobs=1, spec=PIDS_SPEC)
    assert code == 3, stderr[-2000:]
    records = {r.params.method: r for r in load_records(out)}
    assert records["inference"].status == "ok", records["inference"].error
    assert records["mezo"].status == "timeout", (records["mezo"].status, records["mezo"].error)


def test_a_cell_cannot_reach_a_service_on_the_hosts_loopback(engine, tmp_path):
    with host_listener() as listener:
        code, rss, stderr, out = run_in_docker(engine, tmp_path, socket_cell(listener.getsockname()[1]))
        assert not connected(listener), "the cell reached the host's service"
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, "contained: ConnectionRefusedError")


def test_a_cell_cannot_write_into_the_run_directory(engine, tmp_path):
    """The run directory is the host's; a container mounts only a resumable cell's own state directory of it."""
    out = tmp_path / "run"
    hostile = f"""
def attempt():
    for name in ("results.jsonl", "run.json", "planted"):
        with open(os.path.join({str(out)!r}, name), "a") as handle:
            handle.write("forged")
    return "wrote into the run directory"
""" + ATTEMPT
    code, rss, stderr, _ = run_in_docker(engine, tmp_path, hostile, out=out)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, "contained: ")
    assert not (out / "planted").exists()
    assert "forged" not in (out / "results.jsonl").read_text() + (out / "run.json").read_text()


def test_a_cell_cannot_raise_its_own_memory_cap(engine, tmp_path):
    """The container's cgroup (v1 or v2, as the container backend finds it) is mounted read-only."""
    hostile = """
from devices.caps.container import find_container_cgroup
def attempt():
    limit = find_container_cgroup().limit
    limit.write_text(str(1 << 40))
    return f"raised {limit}"
""" + ATTEMPT
    code, rss, stderr, out = run_in_docker(engine, tmp_path, hostile)
    assert code == 3, stderr[-2000:]
    check_contained(out, rss, "contained: OSError: [Errno 30] Read-only file system")


#: The mezo cell, in a compose device container, tries the results its harness writes there and to become the
#: harness's user; each try's outcome is its error (an `ok` result says one got through).
RESULTS_ATTACKER = """
import json, os, sys
run = "/results/hostile"
ACTS = [
    ("append", lambda: open(os.path.join(run, "run.one-core.json"), "a").write("forged")),
    ("create", lambda: open(os.path.join(run, "planted"), "w").close()),
    ("log", lambda: open(os.path.join(run, "logs", "planted"), "w").close()),
    ("setuid", lambda: os.setresuid(os.stat(run).st_uid, os.stat(run).st_uid, os.stat(run).st_uid)),
]
""" + TRIES


def test_a_compose_cell_cannot_write_the_results_its_harness_writes(engine, tmp_path):
    """Finding 11: on the code before, a device container's cells ran as its harness's user and wrote all four."""
    compose = Compose(engine, tmp_path, SPEC, "edgebench-hostile")
    generated = tmp_path / "docker-compose.yml"
    services = yaml.safe_load(generated.read_text())
    cell = CELL.replace("HOSTILE", RESULTS_ATTACKER)
    services["services"]["one-core"]["entrypoint"] = ["python", "-c", FAKE_CELL_HARNESS, cell]
    generated.write_text(yaml.safe_dump(services))
    try:
        up = compose.popen("up")
        output, _ = up.communicate(timeout=600)
        containers = compose.containers()
        exits = {name: c.attrs["State"]["ExitCode"] for name, c in containers.items()}
        output += containers["one-core"].logs().decode(errors="replace")
    finally:
        compose.down()
    run_dir = tmp_path / "results" / "hostile"
    records = {r.params.method: r for r in load_records(run_dir)}
    got = {m: (r.status, r.error, r.metrics) for m, r in records.items()}
    assert exits["prepare"] == 0 and exits["one-core"] == 3, f"{exits} {got}\n{output[-3000:]}"  # 3: a cell failed
    assert records["inference"].status == "ok", records["inference"].error
    mezo = records["mezo"]
    assert mezo.status == "error" and "contained: " in (mezo.error or ""), (mezo.status, mezo.error, mezo.metrics)
    tries = json.loads(mezo.error.partition("contained: ")[2].splitlines()[0])
    assert tries == {"append": "PermissionError", "create": "PermissionError", "log": "PermissionError",
                     "setuid": "PermissionError"}
    assert not (run_dir / "planted").exists() and not (run_dir / "logs" / "planted").exists()
    assert "forged" not in (run_dir / "run.one-core.json").read_text()
