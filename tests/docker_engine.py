"""The docker tests' engine and image: harness.run.docker_engine's, the same that `make docker-up` uses.

An engine that answers is used; otherwise one is started (Debian's dockerd, from `make test-deps`; a skip
naming it when the tools are absent or this is not root) and stopped by its own pid at the end. The
project image is built offline when Docker Hub is out of reach, and cached under EDGEBENCH_CACHE.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.run import docker_engine
from harness.run.docker_engine import Engine, mounts_under
from harness.run.executors.docker import LABEL
from tests.helpers import edgebench, write_spec
from tests.system_tools import missing, skip_without

__all__ = ["Compose", "engine", "engine_with_image", "mounts_under", "require_tools", "skip_unless_engine", "stop_engine"]

TOOLS = ("dockerd", "docker", "docker-compose", "debootstrap")


def require_tools() -> None:
    """The engine, compose v1 and debootstrap come from `make test-deps`, never from a test: skip without them."""
    absent = missing(TOOLS)
    if absent:
        skip_without(absent)


def stop_engine(engine: Engine) -> None:
    """Remove the cell containers the tests made, then stop the engine if it was started for them."""
    if docker_engine.answers(engine.host):
        client = engine.client()
        for container in client.containers.list(all=True, filters={"label": LABEL}):
            container.remove(force=True)
        client.close()
    docker_engine.stop_engine(engine)


def skip_unless_engine() -> None:
    """Skip when no engine answers and none can be started here (the tools or root are missing)."""
    if docker_engine.find_engine() is None:
        require_tools()
        if os.geteuid() != 0:
            pytest.skip("starting dockerd needs root; start a Docker engine or set DOCKER_HOST")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """A running engine with the project image, named to the module's harnesses by DOCKER_HOST and EDGEBENCH_IMAGE."""
    with engine_with_image() as (running, image):
        saved = {k: os.environ.get(k) for k in ("DOCKER_HOST", "EDGEBENCH_IMAGE")}
        os.environ.update(DOCKER_HOST=running.host, EDGEBENCH_IMAGE=image)
        try:
            yield running
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.update({key: value})


@contextlib.contextmanager
def engine_with_image() -> Iterator[tuple[Engine, str]]:
    """A running engine with the project image built."""
    skip_unless_engine()
    with docker_engine.running_engine() as engine:
        try:
            yield engine, docker_engine.project_image(engine)
        finally:
            stop_engine(engine)


class Compose:
    """`docker-compose` (v1, as Debian ships it) on a spec's generated compose file in a checkout-like folder."""

    def __init__(self, engine, folder: Path, spec: str, project: str) -> None:
        folder.chmod(0o755)  # as a checkout is: the services' non-root user reads the spec through /project
        write_spec(folder, spec)
        # The services run as the image's user (1000): `prepare` hands it the results folder.
        self.env = engine.env
        generated = edgebench("compose", "spec.yaml", cwd=folder, env=self.env, process=True)
        assert generated.returncode == 0, generated.stderr
        (folder / "docker-compose.yml").write_text(generated.stdout)
        self.services = yaml.safe_load(generated.stdout)["services"]
        self.folder, self.project = folder, project
        self.argv = ["docker-compose", "--project-name", project, "--project-directory", str(folder)]
        self.client = engine.client()

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*self.argv, *args, "--no-color"],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # As from a terminal: under a background shell SIGINT arrives ignored, and Python then keeps ignoring it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def up(self) -> None:
        up = self.popen("up")
        output, _ = up.communicate(timeout=900)
        if up.returncode != 0:
            logs = subprocess.run([*self.argv, "logs", "--no-color"], **self._quiet(self.folder))
            pytest.fail(f"docker-compose up exited {up.returncode}:\n{output[-2000:]}\n{logs.stdout[-4000:]}")

    def containers(self, running_only: bool = False) -> dict:
        listed = self.client.containers.list(
            all=not running_only, filters={"label": f"com.docker.compose.project={self.project}"}
        )
        return {c.labels["com.docker.compose.service"]: c for c in listed}

    def start_times(self) -> dict[str, str]:
        """Each existing service container's last start, as the engine records it (a service without one is absent)."""
        times = {}
        for name, container in self.containers().items():
            container.reload()  # a listing's attrs lack the state
            times[name] = container.attrs["State"]["StartedAt"]
        return times

    def started_since(self, before: dict[str, str]) -> bool:
        """Whether every service's container has started since `before` (start_times) was read."""
        now = self.start_times()
        return all(name in now and now[name] != before.get(name) for name in self.services)

    def down(self) -> None:
        down = subprocess.run([*self.argv, "down", "--volumes"], **self._quiet(self.folder))
        assert down.returncode == 0, down.stderr

    def _quiet(self, folder: Path) -> dict:
        return {"cwd": folder, "env": self.env, "capture_output": True, "text": True}
