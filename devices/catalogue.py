"""The built-in catalogue of real edge devices, plus the user's own profiles."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from devices.profile import DeviceProfile
from devices.validation import validation_message

#: The usual name of a user's device file; read only when a spec names it (`device_files: [devices.yaml]`).
USER_FILE = "devices.yaml"


class CatalogueError(ValueError):
    """A device file that cannot be read, or a device name that is not known."""


def _profiles(data: Any, origin: str, known: dict[str, DeviceProfile] | None = None) -> dict[str, DeviceProfile]:
    """The profiles of one parsed device file; an entry's `like:` may name one of `known` or one defined earlier
    in the file."""
    entries = (data or {}).get("devices") if isinstance(data, dict) or data is None else None
    if not isinstance(entries, list):
        raise CatalogueError(f"{origin}: expected a top-level `devices:` list of profiles")
    profiles: dict[str, DeviceProfile] = {}
    for i, entry in enumerate(entries):
        profile = parse_profile(entry, f"{origin}: devices[{i}]", {**(known or {}), **profiles})
        profiles[profile.name] = profile
    return profiles


def parse_profile(entry: object, where: str, catalogue: dict[str, DeviceProfile] | None = None) -> DeviceProfile:
    """Validate one profile mapping, turning pydantic's report into one line that names the field (a rule across
    fields names the profile). `like: <device>` starts from that device of `catalogue` (e.g. to choose its cooling)."""
    if isinstance(entry, dict) and "like" in entry:
        entry = _like(entry, where, catalogue or {})
    try:
        return DeviceProfile.model_validate(entry)
    except ValidationError as exc:
        raise CatalogueError(validation_message(exc, under=where)) from None


def _like(entry: dict, where: str, catalogue: dict[str, DeviceProfile]) -> dict:
    """The named device's fields under the entry's own (a size given as `memory` replaces the base's bytes)."""
    try:
        base = resolve_device(str(entry["like"]), catalogue).model_dump(exclude_none=True)
    except CatalogueError as exc:
        raise CatalogueError(f"{where}.like: {exc}") from None
    for short, full in (("memory", "memory_bytes"), ("gpu_memory", "gpu_memory_bytes")):
        if short in entry:
            base.pop(full, None)
    return {**base, **{k: v for k, v in entry.items() if k != "like"}}


def load_catalogue(documents: list[tuple[str, Any]] | None = None) -> dict[str, DeviceProfile]:
    """Built-in devices, overridden or extended by the given device files, each as (its name, its parsed YAML),
    in order. The caller reads them (harness.plan.input_guards.read_yaml: bounded in size, aliases and depth)."""
    text = resources.files("devices").joinpath("catalogue.yaml").read_text()
    profiles = _profiles(yaml.safe_load(text), "devices/catalogue.yaml")
    for origin, data in documents or []:
        profiles.update(_profiles(data, origin, profiles))
    return profiles


def resolve_device(name: str, catalogue: dict[str, DeviceProfile]) -> DeviceProfile:
    if name in catalogue:
        return catalogue[name]
    known = ", ".join(sorted(catalogue))
    raise CatalogueError(
        f"unknown device {name!r}; use one of: {known} "
        f"(or define it in {USER_FILE} and add `device_files: [{USER_FILE}]` to the spec)"
    )
