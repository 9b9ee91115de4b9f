"""Tests never install system packages: `make test-deps` does, on purpose (as root or through passwordless sudo),
and a test that lacks a tool skips naming it. Checked with stub commands on PATH, so nothing is installed here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import docker_engine
from tests.test_browser_report import ensure_chromium

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="needs make on PATH (Debian: apt-get install make)")
TOOLS = ("chromium", "chromedriver", "dockerd", "docker", "docker-compose", "debootstrap")


def stub(directory: Path, name: str, body: str = "exit 0") -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path) -> Path:
    """A PATH of stubs only: `apt-get` and `sudo` log their arguments to apt.log instead of doing anything."""
    directory = tmp_path / "bin"
    directory.mkdir()
    stub(directory, "apt-get", f'echo "apt-get $*" >> {tmp_path}/apt.log')
    os.symlink(shutil.which("env"), directory / "env")
    return directory


def apt_log(bin_dir: Path) -> list[str]:
    log = bin_dir.parent / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


def make_test_deps(bin_dir: Path, uid: int) -> subprocess.CompletedProcess:
    """`make test-deps` as user `uid` (a stub `id`), with only the stubs on PATH."""
    stub(bin_dir, "id", f"echo {uid}")
    return subprocess.run(
        [MAKE, "-s", "-C", str(ROOT), "test-deps"],
        env={"PATH": str(bin_dir), "HOME": str(bin_dir.parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_test_deps_as_root_installs_every_tool_with_apt_get_itself(bin_dir):
    proc = make_test_deps(bin_dir, uid=0)
    assert proc.returncode == 0, proc.stderr
    assert apt_log(bin_dir) == [
        "apt-get update -q",
        "apt-get install -y -q chromium chromium-driver",
        "apt-get install -y -q --no-install-recommends docker.io docker-compose debootstrap",
    ]


def test_test_deps_as_a_user_goes_through_passwordless_sudo(bin_dir):
    stub(bin_dir, "sudo", f'echo "sudo $1" >> {bin_dir.parent}/apt.log; shift; exec "$@"')
    proc = make_test_deps(bin_dir, uid=1000)
    assert proc.returncode == 0, proc.stderr
    assert apt_log(bin_dir)[:2] == ["sudo -n", "apt-get update -q"]
    assert apt_log(bin_dir).count("sudo -n") == 3


def test_test_deps_as_a_user_without_sudo_fails_and_installs_nothing(bin_dir):
    assert make_test_deps(bin_dir, uid=1000).returncode != 0
    assert apt_log(bin_dir) == []


def test_test_deps_installs_nothing_when_every_tool_is_there(bin_dir):
    for tool in TOOLS:
        stub(bin_dir, tool)
    proc = make_test_deps(bin_dir, uid=0)
    assert proc.returncode == 0 and "every tool is on PATH" in proc.stdout
    assert apt_log(bin_dir) == []


def test_ci_installs_the_tools_before_the_suite_then_runs_the_regression_gate():
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert commands == ["make test-deps", "make test", "make regression"]


def test_the_browser_test_skips_naming_test_deps_and_installs_nothing(bin_dir, monkeypatch):
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(pytest.skip.Exception, match=r"chromium, chromedriver on PATH; install them with `make test-deps`"):
        ensure_chromium()
    assert apt_log(bin_dir) == []


def test_the_docker_tests_skip_naming_test_deps_and_install_nothing(bin_dir, monkeypatch):
    stub(bin_dir, "docker")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(pytest.skip.Exception, match=r"needs dockerd, docker-compose, debootstrap on PATH; .*`make test-deps`"):
        docker_engine.require_tools()
    assert apt_log(bin_dir) == []
