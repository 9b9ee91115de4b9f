"""A spec's devices: the built-in catalogue, then the device files the spec names, each read with a spec's limits;
a devices.yaml beside the spec that it does not name is left unread, with a note."""

from __future__ import annotations

from pathlib import Path

from devices.catalogue import USER_FILE, CatalogueError, load_catalogue, parse_profile, resolve_device
from devices.profile import DeviceProfile
from harness.plan.input_guards import read_yaml
from harness.plan.schema import Spec
from harness.record.errors import UserError


def device_catalogue(files: list[Path], missing: str) -> dict[str, DeviceProfile]:
    """The built-in devices, then each device file in order, each read with a spec's limits (size, aliases,
    depth); `missing` is the fix for a file that does not exist."""
    documents = [(str(f), read_yaml(f, "device file", missing)) for f in files]
    try:
        return load_catalogue(documents)
    except CatalogueError as exc:
        raise UserError(str(exc)) from None


def ignored_device_file(spec: Spec, spec_path: Path) -> str | None:
    """A note when a devices.yaml lies beside the spec but the spec does not name it: it is not read (whoever
    can write beside a spec must not redefine its devices), and the note says how to read it."""
    beside = spec_path.parent / USER_FILE
    if not beside.is_file() or beside.resolve() in {(spec_path.parent / f).resolve() for f in spec.device_files}:
        return None
    return f"{beside} is not read: the spec does not name it; to use its devices, add `device_files: [{USER_FILE}]`"


def resolve_devices(spec: Spec, spec_path: Path) -> list[DeviceProfile]:
    files = [spec_path.parent / f for f in spec.device_files]
    catalogue = device_catalogue(files, "fix device_files in the spec (paths are relative to the spec)")
    try:
        devices = [
            parse_profile(entry, f"{spec_path}: devices[{i}]", catalogue)
            if isinstance(entry, dict)
            else resolve_device(entry, catalogue)
            for i, entry in enumerate(spec.devices)
        ]
    except CatalogueError as exc:
        raise UserError(f"{spec_path}: {exc}" if str(spec_path) not in str(exc) else str(exc)) from None
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise UserError(f"{spec_path}: devices: a device is listed twice; list each once")
    return devices
