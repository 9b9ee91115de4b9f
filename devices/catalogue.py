"""The built-in catalogue of real edge devices, plus the user's own profiles."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from devices.profile import DeviceProfile

USER_FILE = "devices.yaml"


class CatalogueError(ValueError):
    """A device file that cannot be read, or a device name that is not known."""


def _load_file(text: str, origin: str, known: dict[str, DeviceProfile] | None = None) -> dict[str, DeviceProfile]:
    """The profiles of one file; an entry's `like:` may name one of `known` or one defined earlier in the file."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CatalogueError(f"{origin}{where}: not valid YAML; fix the syntax there") from None
    entries = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise CatalogueError(f"{origin}: expected a top-level `devices:` list of profiles")
    profiles: dict[str, DeviceProfile] = {}
    for i, entry in enumerate(entries):
        profiles_entry = parse_profile(entry, f"{origin}: devices[{i}]", {**(known or {}), **profiles})
        profiles[profiles_entry.name] = profiles_entry
    return profiles


def parse_profile(entry: object, where: str, catalogue: dict[str, DeviceProfile] | None = None) -> DeviceProfile:
    """Validate one profile mapping, turning pydantic's report into one line that names the field (a rule across
    fields names the profile). `like: <device>` starts from that device of `catalogue` (e.g. to choose its cooling)."""
    if isinstance(entry, dict) and "like" in entry:
        entry = _like(entry, where, catalogue or {})
    try:
        return DeviceProfile.model_validate(entry)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "".join(f".{p}" for p in err["loc"])
        raise CatalogueError(f"{where}{field}: {err['msg'].removeprefix('Value error, ')}") from None


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


def load_catalogue(extra_files: list[Path] | None = None) -> dict[str, DeviceProfile]:
    """Built-in devices, overridden or extended by the given user files (in order)."""
    text = resources.files("devices").joinpath("catalogue.yaml").read_text()
    profiles = _load_file(text, "devices/catalogue.yaml")
    for path in extra_files or []:
        try:
            user_text = Path(path).read_text()
        except OSError as exc:
            raise CatalogueError(f"{path}: cannot read device file ({exc.strerror})") from None
        profiles.update(_load_file(user_text, str(path), profiles))
    return profiles


def resolve_device(name: str, catalogue: dict[str, DeviceProfile]) -> DeviceProfile:
    if name in catalogue:
        return catalogue[name]
    known = ", ".join(sorted(catalogue))
    raise CatalogueError(
        f"unknown device {name!r}; use one of: {known} (or define it in {USER_FILE} next to the spec)"
    )
