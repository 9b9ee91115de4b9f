"""The spec file: which devices, which workload matrix. Validated up front, errors name file and field."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from devices.catalogue import USER_FILE, CatalogueError, load_catalogue, parse_profile, resolve_device
from devices.profile import DeviceProfile, format_bytes
from devices.roofline import host_bandwidth
from devices.speed import DEFAULT_CLOCK, CellClock, Clock, ClockError, HostSpeed, host_speed, plan_clock
from devices.validation import validation_message
from harness.cells import Cell, content_hash, device_identity, planned_cell
from harness.errors import UserError
from harness.limits import MAX_CELLS, check_matrix_size, one_line, read_yaml
from harness.prepare_results import NAME_PATTERN
from harness.resolve import Arm, LargestFitting
from workloads.checks import check_params
from workloads.flops import step_flops, step_seconds
from workloads.params import AXES, WorkloadParams
from workloads.resumable import DEFAULT_CHECKPOINT_SECONDS

DEFAULT_SPEC = "quick.yaml"
#: Twin cells a run's note names before it says how many more there are.
NOTE_NAMES = 3


class Thresholds(BaseModel):
    """Regression limits for `edgebench compare` (fractions; accuracy in points)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_memory_regression: float = Field(0.05, ge=0)
    max_time_regression: float = Field(0.20, ge=0)
    max_accuracy_drop: float = Field(1.0, ge=0)


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(
        "edgebench",
        pattern=NAME_PATTERN,
        description="letters, digits, '.', '_' and '-': it names the default run directory, results/<name>",
    )
    description: str = ""
    devices: list[str | dict[str, Any]] = Field(min_length=1)
    device_files: list[str] = Field(default_factory=list)
    matrix: dict[str, Any] | list[dict[str, Any]] = Field(
        description="axes -> values; a list of such blocks is their union (each may name its own `devices`)"
    )
    clock: Clock = Field(
        DEFAULT_CLOCK,
        description="device-scaled (CPU time converted to device time), device-throttled (the kernel slows "
        "each cell to its device's speed) or host; budgets and timeouts are in this clock's seconds",
    )
    timeout_s: float = Field(1800, gt=0, description="per-cell limit, in the clock's seconds")
    checkpoint_seconds: float = Field(
        DEFAULT_CHECKPOINT_SECONDS,
        gt=0,
        description="a training cell saves its state every this many of its clock's seconds, and a re-run resumes "
        "an interrupted cell from its last save",
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)
    network: bool = Field(
        False,
        description="let local cells use the host's network (they run in a namespace without one otherwise); the "
        "operator must also pass --allow-network",
    )

    @field_validator("matrix")
    @classmethod
    def _known_axes(cls, matrix: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
        blocks = matrix if isinstance(matrix, list) else [matrix]
        if not blocks:
            raise ValueError("give at least one matrix block")
        for block in blocks:
            for axis, values in block.items():
                if axis not in AXES and axis != "devices":
                    raise ValueError(f"unknown axis {axis!r}; axes are: {', '.join(AXES)}")
                if isinstance(values, list) and not values:
                    raise ValueError(f"axis {axis!r} has no values; give at least one")
            if "devices" in block:
                _check_device_names(block["devices"])
            if "model" not in block:
                raise ValueError("every matrix block needs a `model` axis")
        return blocks

    @field_validator("device_files")
    @classmethod
    def _no_nul_in_paths(cls, files: list[str]) -> list[str]:
        if any("\x00" in f for f in files):
            raise ValueError("a path holds a NUL character; remove it")
        return files


def _check_device_names(names: Any) -> None:
    """A block's `devices` narrows it to some of the spec's devices: one name or a list of names."""
    listed = names if isinstance(names, list) else [names]
    if not all(isinstance(name, str) and name for name in listed):
        raise ValueError("`devices` takes a device name or a list of names, e.g. devices: [rpi-4-2gb]")


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
        arms: list[Arm] | None = None,
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
        self.arms = arms or []  # workloads whose model is the largest that fits (harness.resolve), per device
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

    def arms_for(self, device_names: list[str] | None) -> list[Arm]:
        self.cells_for(device_names)  # the same check of the names
        return [a for a in self.arms if not device_names or a.device.name in device_names]

    def devices_for(self, device_names: list[str] | None) -> list[DeviceProfile]:
        """The devices a run (or a slice) runs cells or probes of: a device no block uses runs nothing."""
        used = {c.device.name for c in self.cells_for(device_names)}
        used |= {a.device.name for a in self.arms_for(device_names)}
        return [d for d in self.devices if d.name in used]


def host_capacity_problem(device: DeviceProfile, host_bytes: int) -> str | None:
    """Why a host with `host_bytes` of memory cannot simulate the device (one line), or None when it can: a cap
    above the host's memory never binds, so its cells would measure the host, not the device."""
    if device.memory_bytes <= host_bytes:
        return None
    return (
        f"device {device.name} caps memory at {format_bytes(device.memory_bytes)} but this host has "
        f"{format_bytes(host_bytes)}, so the cap could never bind; pick a smaller device or run on a host "
        "with more memory"
    )


def host_memory_bytes() -> int:
    """The memory of the machine a local or Docker cell runs on (a Ray cell's node is the executor's to check)."""
    return psutil.virtual_memory().total


def check_host_capacity(devices: list[DeviceProfile], host_bytes: int | None = None) -> None:
    """Refuse, before any cell runs, a device this host cannot simulate (UserError: one line, exit 2)."""
    total = host_bytes or host_memory_bytes()
    for device in devices:
        problem = host_capacity_problem(device, total)
        if problem:
            raise UserError(problem)


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
    devices = _resolve_devices(spec, spec_path)
    check_matrix_size(spec.matrix, len(devices), spec_path, max_cells)
    host, clocks = plan_clocks(spec.clock, devices, spec_path)
    cells: list[Cell] = []
    arms: dict[str, Arm] = {}
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
                    arm = Arm(d, clocks[d.name], p, tuple(candidates), fitting.probe_steps, fitting.probe_only)
                    arms.setdefault(Cell(d, p, arm.clock).id, arm)
    unique, duplicates = merge_duplicates(cells)
    check_warmups(unique, list(arms.values()), spec_path)
    return LoadedSpec(
        spec,
        str(spec_path),
        devices,
        unique,
        spec_hash(spec, devices),
        host,
        clocks,
        duplicates,
        list(arms.values()),
        ignored_device_file(spec, spec_path),
    )


def warmup_problem(
    device: DeviceProfile, clock: CellClock, params: WorkloadParams, models: Sequence[str]
) -> str | None:
    """Why the warm-up cannot end within `max_seconds` on the device (one line), or None when it may. A step takes
    at least its FLOPs at the device's throughput (workloads.flops); `models` are those the cell may train (an
    arm's candidates), so only a warm-up too long for the fastest is refused. A host clock's seconds are the
    host's, which a spec on it never calibrates: there only `max_steps` bounds a warm-up (WorkloadParams)."""
    gflops = clock.device_gflops  # None on a host clock
    if params.max_seconds is None or gflops is None:
        return None
    bounds = [step_seconds(step_flops(params.model_copy(update={"model": m})), gflops) for m in models]
    if None in bounds:  # a model of unknown shape may be fast enough
        return None
    step, fastest = min(zip(bounds, models, strict=True))
    needed = params.warmup_steps * step
    if needed <= params.max_seconds:
        return None
    return (
        f"warm-up of {params.warmup_steps} steps needs at least {needed:.3g} device seconds on {device.name} "
        f"(step-time lower bound {step:.3g} s for {fastest}) but max_seconds is {params.max_seconds:g}; "
        "lower warmup_steps or raise max_seconds"
    )


def check_warmups(cells: list[Cell], arms: list[Arm], origin: Path) -> None:
    """Refuse, at plan time (where each cell's device and clock are known), a warm-up its budget cannot hold."""
    planned = [(c.device, c.clock, c.params, [c.params.model]) for c in cells]
    planned += [(a.device, a.clock, a.params, list(a.candidates)) for a in arms]
    for device, clock, params, models in planned:
        problem = warmup_problem(device, clock, params, models)
        if problem:
            raise UserError(f"{origin}: {problem}")


def largest_fitting(model: Any, origin: Path) -> LargestFitting | None:
    """The block's `model: {largest_fitting: [...]}`, validated; None for a plain model axis."""
    if not isinstance(model, dict):
        return None
    try:
        fitting = LargestFitting.model_validate(model)
    except ValidationError as exc:
        raise UserError(validation_message(exc, str(origin), "matrix.model")) from None
    if len(set(fitting.largest_fitting)) != len(fitting.largest_fitting):
        raise UserError(f"{origin}: matrix.model.largest_fitting: a model is listed twice; list each once")
    return fitting


def spec_hash(spec: Spec, devices: list[DeviceProfile]) -> str:
    """What a run directory holds: the matrix and run settings over the devices' measured fields, so a better
    description (of the spec or a device) does not turn a resume into "a different spec", nor does a new
    checkpoint interval (it changes when a cell saves, not what it measures)."""
    settings = spec.model_dump(exclude={"description", "devices", "device_files", "checkpoint_seconds"})
    return content_hash({"spec": settings, "devices": [device_identity(d) for d in devices]}, 16)


def merge_duplicates(cells: list[Cell]) -> tuple[list[Cell], dict[str, int]]:
    """Each cell once, where it first appears, and how often each repeated one was listed: overlapping blocks
    are easy to write, and twins run at once would measure each other and share one cgroup."""
    counts = Counter(c.id for c in cells)
    return list({c.id: c for c in cells}.values()), {cell_id: n for cell_id, n in counts.items() if n > 1}


def plan_clocks(
    clock: Clock, devices: list[DeviceProfile], origin: Path
) -> tuple[HostSpeed | None, dict[str, CellClock]]:
    """Each device's clock, decided once for all its cells; the host is calibrated only when a device clock
    needs it (measured once per environment, then cached)."""
    needs_host = clock != "host" and any(d.gflops is not None for d in devices)
    host = host_speed() if needs_host else None
    bandwidth = host_bandwidth() if needs_host and clock == "device-scaled" else None
    cores = os.cpu_count() or 1
    try:
        return host, {d.name: plan_clock(d, clock, host, cores, bandwidth) for d in devices}
    except ClockError as exc:
        raise UserError(f"{origin}: clock: {exc}") from None


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


def _resolve_devices(spec: Spec, spec_path: Path) -> list[DeviceProfile]:
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


def expand_matrix(matrix: dict[str, Any], origin: Path | str) -> list[WorkloadParams]:
    """Cartesian product of the axes (a scalar is a one-value axis), in spec order."""
    axes = list(matrix)
    values = [v if isinstance(v, list) else [v] for v in matrix.values()]
    combos = []
    for combo in itertools.product(*values):
        data = dict(zip(axes, combo, strict=True))
        try:
            combos.append(WorkloadParams.model_validate(data))
        except ValidationError as exc:
            raise UserError(validation_message(exc, str(origin), "matrix", data)) from None
    for params in {p.model_dump_json(): p for p in combos}.values():
        try:
            check_params(params)
        except ValueError as exc:
            raise UserError(f"{origin}: {exc}") from None
    return combos
