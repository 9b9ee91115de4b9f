"""The docker tests' engine and image: harness.docker_engine's, the same that `make docker-up` uses.

An engine that answers is used; otherwise one is started (Debian's dockerd, from `make test-deps`; a skip
naming it when the tools are absent or this is not root) and stopped by its own pid at the end. The
project image is built offline when Docker Hub is out of reach, and cached under EDGEBENCH_CACHE.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from harness import docker_engine
from harness.docker_engine import Engine, mounts_under
from harness.executors.docker import LABEL
from tests.system_tools import missing, skip_without

__all__ = ["engine_with_image", "mounts_under", "require_tools", "skip_unless_engine", "stop_engine"]

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


@contextlib.contextmanager
def engine_with_image() -> Iterator[tuple[Engine, str]]:
    """A running engine with the project image built."""
    skip_unless_engine()
    with docker_engine.running_engine() as engine:
        try:
            yield engine, docker_engine.project_image(engine)
        finally:
            stop_engine(engine)
