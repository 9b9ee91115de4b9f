"""Library versions, read from package metadata (torch-free), recorded with every result and keying caches."""

from __future__ import annotations

import platform
from importlib import metadata

LIBRARIES = ("torch", "transformers", "datasets", "peft")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions
