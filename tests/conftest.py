"""Shared fixtures. In CI (CI=true) a skipped test is a failure: CI machines must have every capability."""

from __future__ import annotations

import os

import pytest

from devices.host_speed import host_speed
from tests.docker_engine import engine  # noqa: F401 - the docker tests' engine, one per module
from tests.helpers import no_leftover_cgroups, scripted  # noqa: F401 - fixtures for the integration tests

IN_CI = os.environ.get("CI") == "true"


def pytest_configure(config):
    """Under xdist, calibrate the host's matmul throughput once, alone, before the workers load its cores: every
    device clock of the run is planned from that cached figure."""
    if getattr(config.option, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        host_speed()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """The docker tests share one engine and one image build: keep them on one xdist worker. First, so that the
    group is set before xdist's worker reads it to name the test's group."""
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.xdist_group("docker"))


def pytest_runtest_setup(item):
    """Under --dist loadgroup, fail a docker test whose group did not take effect (xdist suffixes a grouped test's
    node id with "@group"; a pytest/xdist mismatch once dropped it silently, doubling the docker setup)."""
    grouping = item.config.getoption("loadgroup", default=False)  # set on xdist workers only
    if grouping and item.get_closest_marker("docker") and "@docker" not in item.nodeid:
        pytest.fail("xdist_group('docker') was not applied: check the pytest and pytest-xdist pins in pyproject.toml")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every capability must be present: {reason}"
