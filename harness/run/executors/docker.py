"""Each cell in its own container, capped by the container engine (`edgebench run --executor docker`).

The container gets the device's memory limit with no swap, its CPU quota and the hardening every
edgebench container gets (devices.caps.container.container_settings: an unprivileged user, no
capabilities, no-new-privileges, a read-only root, no network; caches on a named volume). Inside it,
`harness.run.executors.in_container` runs the cell as a child process and reads the container cgroup's
peak before the container ends (the cgroup is removed at exit). An OOM is seen three ways, any of
which counts: the container cgroup's oom_kill counter (inside), State.OOMKilled, or exit 137 of the
container itself. Containers are always removed, also on Ctrl-C; those of a harness that died
(SIGKILL) are removed by the next run, which finds them by their owner label. The image is
EDGEBENCH_IMAGE (default `edgebench`, built from the Dockerfile).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import psutil

from devices.caps.container import CONTAINER_USER, container_settings, engine_limits
from devices.environment import OFFLINE_ENV
from devices.speed import CellClock
from harness.record.cells import Cell
from harness.record.errors import UserError
from harness.record.records import now_iso
from harness.record.store import open_log
from harness.run.executors.base import CellOutput, ChildOutcome, Executor, ProgressFn, tail_of
from harness.run.executors.cell_dirs import own_state_dir
from harness.run.executors.cell_user import CellUser
from harness.run.executors.in_container import STATE_MOUNT, job_json, outcome_from_event
from harness.run.executors.process import last_line, start_readers
from workloads.resumable import CHECKPOINTS_DIR, Checkpointing

IMAGE_ENV = "EDGEBENCH_IMAGE"
DEFAULT_IMAGE = "edgebench"
LABEL = "edgebench.cell"  # on every cell container, so that leftovers can be found
OWNER_LABEL = "edgebench.harness"  # the harness that started it (see harness_owner)
POLL_S = 0.2
# The cell's own timeout is enforced inside the container; the engine gets this much longer.
GRACE_S = 30.0
OOM_EXIT = 137
#: What a cell's container runs: the supervisor, given the job as its one argument.
SUPERVISOR = ["python", "-m", "harness.run.executors.in_container"]


def connect():
    """A client of a reachable engine, or a UserError that says what to install or start."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(
            f"no Docker engine answers at {where} ({reason}); install Docker (Debian: `apt-get install docker.io`) "
            "and start it (`systemctl start docker` or `dockerd &`), or point DOCKER_HOST at a running engine"
        ) from None
    return client


def harness_owner(pid: int | None = None) -> str:
    """A harness process as a label: host, pid and the pid's start time (a later process may reuse the pid)."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{psutil.Process(pid).create_time():.2f}"


def owner_alive(owner: str) -> bool:
    """Whether the harness a label names still runs; one of another host (a shared engine) is taken as alive."""
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname():
        return True
    try:
        return harness_owner(int(pid)) == owner
    except (psutil.NoSuchProcess, ValueError):
        return False


def sweep_stale_containers(client) -> list[str]:
    """Remove the cell containers of harnesses that died (a SIGKILL skips their cleanup); returns their names."""
    stale = [
        c
        for c in client.containers.list(all=True, filters={"label": OWNER_LABEL})
        if not owner_alive(c.labels[OWNER_LABEL])
    ]
    for container in stale:
        with contextlib.suppress(docker.errors.NotFound):  # another run swept it first
            container.remove(force=True)
    return [c.name for c in stale]


class DockerExecutor(Executor):
    name = "docker"
    cells_run_as = CONTAINER_USER

    def __init__(
        self,
        run_dir: Path,
        timeout_s: float,
        enforcement: str = "auto",
        checkpointing: Checkpointing | None = None,
    ) -> None:
        super().__init__(run_dir, timeout_s, enforcement, checkpointing)
        if enforcement not in ("auto", "container"):
            raise UserError(
                f"--enforcement {enforcement} does not apply to --executor docker: the container engine "
                "enforces the caps; drop --enforcement"
            )
        self.client = connect()
        self.image = os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise UserError(
                f"Docker image {self.image!r} not found; build it in the edgebench checkout with "
                f"`docker build -t {self.image} .` (or set {IMAGE_ENV} to an edgebench image)"
            ) from None
        self.owner = harness_owner()
        sweep_stale_containers(self.client)

    @property
    def enforcement(self) -> str:
        return "container"

    @property
    def throttles(self) -> bool:
        return True  # the engine's cpu_quota, from the cell's clock

    def close(self) -> None:
        self.client.close()

    def _create_container(self, cell: Cell):
        """The cell's container, created and not yet started: the supervisor with the cell's job, the engine's caps
        and hardening, and the cell's own state directory mounted writable for a resumable cell."""
        settings = container_settings()
        state = self.run_dir.resolve() / CHECKPOINTS_DIR / cell.id
        plan = self.state_plan(cell, state)
        if plan is not None:  # the cell's own state directory, and no other, is mounted for it to write
            uid, gid = (int(n) for n in CONTAINER_USER.split(":"))
            own_state_dir(state, CellUser(CONTAINER_USER, uid, gid))
            settings["volumes"] = [*settings["volumes"], f"{state}:{STATE_MOUNT}/{cell.id}:rw"]
        container = self.client.containers.create(
            self.image,
            entrypoint=SUPERVISOR,
            command=[job_json(cell, self.timeout_s, self.checkpointing if plan else None)],
            environment=OFFLINE_ENV,
            labels={LABEL: cell.id, OWNER_LABEL: self.owner},
            **settings,
            **engine_limits(cell.device, cell.clock),
        )
        return container

    def execute(self, cell: Cell, progress: ProgressFn) -> ChildOutcome:
        container = self._create_container(cell)
        try:
            started_at, t0 = now_iso(), time.perf_counter()
            container.start()
            # Both streams within the bounds of CellOutput: the supervisor inside bounds its cell's output, and this
            # bounds the container's (the cell runs as the supervisor's user and can write its stdout too).
            output = CellOutput(cell, progress)
            with open_log(self.run_dir, f"{cell.id}.log") as log:
                readers = start_readers(
                    output,
                    container.logs(stream=True, follow=True, stdout=True, stderr=False),
                    container.logs(stream=True, follow=True, stdout=False, stderr=True),
                    log,
                )
                timed_out = self._wait(container, t0 + self.timeout_s + engine_grace_s(cell.clock), output)
                wall = time.perf_counter() - t0
                for reader in readers:
                    reader.join(timeout=10)
                container.reload()
                state, host = container.attrs["State"], container.attrs["HostConfig"]
                stderr_tail = last_line(tail_of(log))
        finally:
            container.remove(force=True)
        ended = ContainerExit(started_at, wall, timed_out, state, host, stderr_tail)
        return container_outcome(output, ended)

    def _wait(self, container, deadline: float, output: CellOutput) -> bool:
        """Wait for the container to exit; kill it on Ctrl-C (then raise), past the deadline (True) or once its
        output crossed a bound (False: the violation is its outcome)."""
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                return False
            if output.violation is not None:
                with contextlib.suppress(docker.errors.APIError):  # it may have ended meanwhile
                    container.kill()
                container.wait()
                return False
            if self.stop.is_set():
                container.kill()
                raise KeyboardInterrupt  # an interrupted cell is not a result; resume redoes it
            if time.perf_counter() > deadline:
                container.kill()
                container.wait()
                return True
            time.sleep(POLL_S)


def engine_grace_s(clock: CellClock) -> float:
    """How much longer than the cell's timeout the engine waits for its container: the supervisor's own start and
    report run under the throttle too, so a slow device needs more grace."""
    return GRACE_S / min(1.0, clock.cpu_quota_cores) if clock.throttled else GRACE_S


@dataclass(frozen=True)
class ContainerExit:
    """What the harness saw of a cell's container: when it started, how long it ran, whether the harness killed it
    at its deadline, the engine's State and HostConfig after it ended, and its last stderr line."""

    started_at: str
    wall_seconds: float
    timed_out: bool
    state: dict[str, Any]
    host_config: dict[str, Any]
    stderr_tail: str


def container_outcome(output: CellOutput, ended: ContainerExit) -> ChildOutcome:
    """A cell's outcome: a bound its output crossed, else its supervisor's last report (an OOM the engine saw
    counts too), else the container's death before its supervisor could report (killed for memory, or by the
    harness on timeout)."""
    state, host = ended.state, ended.host_config
    if output.violation:
        return ChildOutcome(
            started_at=ended.started_at,
            wall_seconds=ended.wall_seconds,
            returncode=state["ExitCode"],
            timed_out=False,
            oom_killed=False,
            result=None,
            stderr_tail=ended.stderr_tail,
            violation=output.violation,
        )
    outcomes = [e for e in output.events if e.get("event") == "outcome"]
    if outcomes:
        outcome = outcome_from_event(outcomes[-1])
        outcome.oom_killed = outcome.oom_killed or (state["OOMKilled"] and not outcome.result)
        return outcome
    return ChildOutcome(
        started_at=ended.started_at,
        wall_seconds=ended.wall_seconds,
        returncode=state["ExitCode"],
        timed_out=ended.timed_out,
        oom_killed=not ended.timed_out and (state["OOMKilled"] or state["ExitCode"] == OOM_EXIT),
        result=None,
        # the engine's own settings, as its supervisor would have read them inside: memory + swap = memory
        swap_excluded=bool(host.get("Memory")) and host.get("MemorySwap") == host.get("Memory"),
        stderr_tail=ended.stderr_tail,
    )
