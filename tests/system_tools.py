"""System tools some tests drive (a browser, a Docker engine, debootstrap): tests never install them.

`make test-deps` installs them on purpose (`.ci/run` runs it before `make test`); a test that lacks one skips,
naming the command, and under CI=true that skip is a failure (tests/conftest.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from typing import NoReturn

import pytest

INSTALL = "make test-deps"


def missing(tools: Iterable[str]) -> list[str]:
    """The tools not on PATH, in the order given."""
    return [tool for tool in tools if not shutil.which(tool)]


def skip_without(tools: list[str]) -> NoReturn:
    """Skip the test for these absent tools, saying how to get them."""
    pytest.skip(f"needs {', '.join(tools)} on PATH; install them with `{INSTALL}` (as root or with passwordless sudo)")
