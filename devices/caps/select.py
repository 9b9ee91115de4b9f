"""Which backend to use on this host: the first that works, unless the user names one."""

from __future__ import annotations

from devices.caps.base import CapBackend, CapUnavailable
from devices.caps.cgroup_v1 import CgroupV1
from devices.caps.cgroup_v2 import CgroupV2
from devices.caps.container import ContainerLimit
from devices.caps.rlimit import RlimitAS

BACKENDS: dict[str, type[CapBackend]] = {b.name: b for b in (CgroupV2, CgroupV1, ContainerLimit, RlimitAS)}


def probe_all() -> dict[str, str | None]:
    """Each backend's name with None when usable here, else the reason it is not."""
    return {name: backend.unavailable_reason() for name, backend in BACKENDS.items()}


def choose_backend(requested: str = "auto") -> type[CapBackend]:
    if requested != "auto":
        if requested not in BACKENDS:
            raise CapUnavailable(
                f"unknown enforcement backend {requested!r}; use auto, {', '.join(BACKENDS)}"
            )
        reason = BACKENDS[requested].unavailable_reason()
        if reason:
            raise CapUnavailable(f"{requested} cannot be used here: {reason}; try --enforcement auto")
        return BACKENDS[requested]
    for backend in BACKENDS.values():
        if backend.unavailable_reason() is None:
            return backend
    raise CapUnavailable("no enforcement backend works on this host")  # rlimit practically always does
