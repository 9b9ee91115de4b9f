"""Executors run one cell in isolation under its device's caps and return its record."""

from __future__ import annotations

from importlib import import_module

from harness.record.errors import UserError
from harness.run.executors.base import Executor

# name -> "module:class"; imported on demand so the lean parent loads only what it uses.
EXECUTORS = {
    "local": "harness.run.executors.local:LocalExecutor",
    "docker": "harness.run.executors.docker:DockerExecutor",
    "ray": "harness.run.executors.ray:RayExecutor",
}


def executor_class(name: str) -> type[Executor]:
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; use one of: {', '.join(EXECUTORS)}")
    module, _, cls = EXECUTORS[name].partition(":")
    return getattr(import_module(module), cls)
