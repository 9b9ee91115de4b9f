"""The environment edgebench's children run in: offline always, and the library versions that identify it."""

from __future__ import annotations

import platform
from importlib import metadata

#: No network at run time: a child (a cell, a measurement) loads models and datasets from local files only,
#: whatever the operator's environment says.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
#: The libraries a cell's figures depend on, recorded with every result.
CELL_LIBRARIES = ("torch", "transformers", "datasets", "peft")


def library_versions(packages: tuple[str, ...] = CELL_LIBRARIES) -> dict[str, str | None]:
    """Python's version and each package's installed one (None when not installed), read from package metadata
    so that the caller never imports torch: what results, run.json and cached measurements are keyed by."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
