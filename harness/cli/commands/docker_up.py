"""Run docker-compose.yml's matrix from nothing but the Docker client (`make docker-up`):

1. an engine: the one running, else dockerd started here (as root; no bridge, no iptables rules, its data
   under the edgebench cache), stopped at the end;
2. the image NAME:<hash of the Dockerfile and its context>, built only when that tag is missing (offline,
   from debootstrap and the host pip's wheels, when Docker Hub is out of reach);
3. `compose up` on that engine and image (the compose v2 plugin, else docker-compose v1), then `compose down`,
   also after a failure or Ctrl-C: no container is left.

Each stage is printed with its duration. Exits with compose's status, or the first failed service's.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path

import yaml

from harness.run.docker_engine import (
    ROOT,
    Engine,
    project_image,
    require,
    run,
    running_engine,
    say,
    shielded,
    stage,
)
from harness.run.executors.docker import DEFAULT_IMAGE, IMAGE_ENV

HELP = "run docker-compose.yml's matrix, starting an engine and building the image when needed"

PROJECT = "edgebench"
COMPOSE_FILE = ROOT / "docker-compose.yml"
LOG_LINES = 5  # of a failed service's log, printed before `down` removes it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help=f"image repository, tagged with the source's hash and `latest` (default: {DEFAULT_IMAGE})",
    )
    parser.add_argument("--image-only", action="store_true", help="build (or find) the image and run nothing")


def handle(args: argparse.Namespace) -> int:
    start = time.monotonic()
    require("docker", "docker-up")
    compose = [] if args.image_only else compose_program()
    with running_engine() as engine:
        tag = project_image(engine, args.image)
        status = 0 if args.image_only else up(engine, compose, tag)
    say(f"done in {time.monotonic() - start:.1f} s, exit {status}")
    return status


def compose_program() -> list[str]:
    """The client's compose v2 plugin when it has one, else docker-compose v1 (Debian's)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    require("docker-compose", "docker-up (this docker client has no compose plugin)")
    return ["docker-compose"]


def up(engine: Engine, compose: list[str], tag: str) -> int:
    """`compose up` of the image built for this source, then `compose down` whatever happened."""
    argv = [*compose, "--project-name", PROJECT, "--file", str(COMPOSE_FILE)]
    env = {**engine.env, IMAGE_ENV: tag, "PYTHONUNBUFFERED": "1"}  # docker-compose v1's output, live in a log
    name = " ".join(compose)
    try:
        with stage(f"{name} up ({IMAGE_ENV}={tag})"):
            status = subprocess.run([*argv, "up", "--no-build"], cwd=ROOT, env=env).returncode
        failed = failed_service(engine)  # its log, before `down` removes it
        status = status or failed
    finally:
        with shielded(), stage(f"{name} down"):
            run([*argv, "down"], cwd=ROOT, env=env)
    if status == 0:
        say(f"report: {report_path(env)}")
    return status


def failed_service(engine: Engine) -> int:
    """The exit code of the project's failed service (0 when none failed), with its log's last lines: `down`
    removes the log, compose v1 does not show the log of a service that failed before it attached, and exits 0
    when the last service fails."""
    client = engine.client()
    try:
        containers = client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
        )
        for container in containers:
            code = container.attrs["State"]["ExitCode"]
            if code:
                tail = container.logs(tail=LOG_LINES).decode(errors="replace").rstrip()
                say(f"service {container.labels['com.docker.compose.service']} exited {code}:\n{tail}")
                return code
        return 0
    finally:
        client.close()


def report_path(env: dict[str, str]) -> Path:
    """Where the `report` service writes: its results folder, compose's ${VAR:-default} filled in from env."""
    folder = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["report"]["command"][-1]
    folder = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], folder)
    return ROOT / folder.lstrip("/") / "report.html"
