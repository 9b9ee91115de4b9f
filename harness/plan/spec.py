"""A spec loaded into a plan: its file found (a path or a shipped spec's name), validated (harness.plan.schema), its
devices resolved, its matrix expanded into cells with their clocks and its largest-fitting model searches, checked
up front."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from devices.host_speed import HostSpeed
from devices.profile import DeviceProfile
from devices.speed import CellClock
from devices.validation import validation_message
from harness.plan.clocks import plan_clocks
from harness.plan.input_guards import MAX_CELLS, check_matrix_size, one_line, read_yaml
from harness.plan.matrix import expand_matrix, largest_fitting, merge_duplicates
from harness.plan.resolve import FitSearch
from harness.plan.schema import Spec
from harness.plan.spec_devices import ignored_device_file, resolve_devices
from harness.plan.warmup import check_warmups
from harness.record.cells import Cell, content_hash, device_identity, planned_cell
from harness.record.errors import UserError

DEFAULT_SPEC = "quick.yaml"
#: Twin cells a run's note names before it says how many more there are.
NOTE_NAMES = 3


class LoadedSpec:
    """A validated spec with its devices resolved and its cells expanded."""

    def __init__(
        self,
        spec: Spec,
        path: str,
        devices: list[DeviceProfile],
        cells: list[Cell],
        hash: str,
        host: HostSpeed | None = None,
        clocks: dict[str, CellClock] | None = None,
        duplicates: dict[str, int] | None = None,
        fit_searches: list[FitSearch] | None = None,
        ignored: str | None = None,
    ) -> None:
        self.spec = spec
        self.path = path
        self.devices = devices
        self.cells = cells
        self.hash = hash  # of the whole spec: device slices (--device) of one spec share a run directory
        self.host = host  # the calibration the device clocks were planned with, if any
        self.clocks = clocks or {}  # device name -> the clock of its cells
        self.duplicates = duplicates or {}  # cell id -> times listed, for cells the matrix lists more than once
        self.fit_searches = fit_searches or []  # the largest-fitting model searches (harness.plan.resolve), per device
        self.ignored = ignored  # the note on a devices.yaml beside the spec that the spec does not name

    def notes(self) -> list[str]:
        """Lines for the user about how the spec was read: a devices.yaml beside it that it does not name (not
        read), and matrix blocks that overlap (their cells are merged, not run twice)."""
        notes = [self.ignored] if self.ignored else []
        if self.duplicates:
            labels = {c.id: c.label for c in self.cells}
            listed = some_of([f"{labels[cell_id]} (x{count})" for cell_id, count in self.duplicates.items()])
            notes.append(f"the matrix lists a cell more than once; each runs once: {listed}")
        return notes

    def cells_for(self, device_names: list[str] | None) -> list[Cell]:
        """The cells of some devices only (a compose service's slice); all cells when none are named."""
        if not device_names:
            return self.cells
        unknown = set(device_names) - {d.name for d in self.devices}
        if unknown:
            raise UserError(f"--device {sorted(unknown)[0]!r} is not in {self.path}'s devices")
        return [c for c in self.cells if c.device.name in device_names]

    def fit_searches_for(self, device_names: list[str] | None) -> list[FitSearch]:
        self.cells_for(device_names)  # the same check of the names
        return [a for a in self.fit_searches if not device_names or a.device.name in device_names]

    def devices_for(self, device_names: list[str] | None) -> list[DeviceProfile]:
        """The devices a run (or a slice) runs cells or probes of: a device no block uses runs nothing."""
        used = {c.device.name for c in self.cells_for(device_names)}
        used |= {a.device.name for a in self.fit_searches_for(device_names)}
        return [d for d in self.devices if d.name in used]


def some_of(labels: list[str]) -> str:
    """The first few labels and how many more, so that a note about cells stays one line."""
    more = len(labels) - NOTE_NAMES
    return ", ".join(labels[:NOTE_NAMES]) + (f" and {more} more" if more > 0 else "")


def default_spec_path() -> Path:
    return Path(str(resources.files("harness").joinpath("specs", DEFAULT_SPEC)))


def shipped_specs() -> dict[str, Path]:
    """The matrices edgebench ships (harness/specs), by name: `edgebench run paper-fit`."""
    folder = Path(str(resources.files("harness").joinpath("specs")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def spec_location(path: str | Path | None) -> Path:
    """A spec file, or the name of a shipped one when no such file exists; the default spec when none given."""
    if not path:
        return default_spec_path()
    given = Path(path)
    return given if given.exists() else shipped_specs().get(str(path), given)


def load_spec(path: str | Path | None, max_cells: int = MAX_CELLS) -> LoadedSpec:
    """The spec at `path` (a file or a shipped spec's name), validated, its devices resolved and its cells
    expanded (at most `max_cells`). Raises UserError, as one line, for anything the user must fix."""
    try:
        return _load_spec(spec_location(path), max_cells)
    except UserError as exc:
        raise UserError(one_line(str(exc))) from None


def read_spec(spec_path: Path) -> Any:
    """The parsed YAML document of a spec file, refused when it cannot be read, parsed or held."""
    shipped = ", ".join(shipped_specs())
    return read_yaml(spec_path, "spec file", f"pass the path of a YAML spec or a shipped one ({shipped})")


def _load_spec(spec_path: Path, max_cells: int) -> LoadedSpec:
    data = read_spec(spec_path)
    if not isinstance(data, dict):
        raise UserError(f"{spec_path}: expected a mapping with `devices:` and `matrix:`")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(exc, str(spec_path))) from None
    devices = resolve_devices(spec, spec_path)
    check_matrix_size(spec.matrix, len(devices), spec_path, max_cells)
    host, clocks = plan_clocks(spec.clock, devices, spec_path)
    cells: list[Cell] = []
    searches: dict[str, FitSearch] = {}
    for block in spec.matrix:
        names = block.get("devices")
        names = names if isinstance(names, list) else [names] if names else [d.name for d in devices]
        unknown = set(names) - {d.name for d in devices}
        if unknown:
            raise UserError(f"{spec_path}: matrix.devices: {sorted(unknown)[0]!r} is not one of the spec's devices")
        chosen = [d for d in devices if d.name in names]
        axes = {k: v for k, v in block.items() if k != "devices"}
        fitting = largest_fitting(axes["model"], spec_path)
        if fitting is None:
            cells += [planned_cell(d, p, clocks[d.name]) for d in chosen for p in expand_matrix(axes, spec_path)]
            continue
        candidates = fitting.largest_fitting
        templates = expand_matrix({**axes, "model": candidates}, spec_path)  # every candidate checked
        for d in chosen:
            for p in templates:
                if p.model == candidates[-1]:
                    search = FitSearch(d, clocks[d.name], p, tuple(candidates), fitting.probe_steps, fitting.probe_only)
                    searches.setdefault(Cell(d, p, search.clock).id, search)
    unique, duplicates = merge_duplicates(cells)
    check_warmups(unique, list(searches.values()), spec_path)
    return LoadedSpec(
        spec,
        str(spec_path),
        devices,
        unique,
        spec_hash(spec, devices),
        host,
        clocks,
        duplicates,
        list(searches.values()),
        ignored_device_file(spec, spec_path),
    )


def spec_hash(spec: Spec, devices: list[DeviceProfile]) -> str:
    """What a run directory holds: the matrix and run settings over the devices' measured fields, so a better
    description (of the spec or a device) does not turn a resume into "a different spec", nor do new checkpoint
    settings (they change when and how a cell saves, not what it measures)."""
    unmeasured = {"description", "devices", "device_files", "checkpoint_seconds", "mezo_checkpoints"}
    settings = spec.model_dump(exclude=unmeasured)
    return content_hash({"spec": settings, "devices": [device_identity(d) for d in devices]}, 16)
