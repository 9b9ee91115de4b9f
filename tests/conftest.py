"""Shared fixtures. In CI (CI=true) a skipped test is a failure: CI machines must have every capability."""

from __future__ import annotations

import os

import pytest

from tests.helpers import no_leftover_cgroups, scripted  # noqa: F401 - fixtures for the integration tests

IN_CI = os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every capability must be present: {reason}"
