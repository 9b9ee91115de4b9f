"""Cell identity: only what changes a measurement enters a cell's id (and the spec's hash), so describing a
device better or adding a workload field with a default never orphans a resume or a baseline."""

from __future__ import annotations

from devices.profile import DeviceProfile
from harness.plan.spec import load_spec
from harness.record.cells import DEVICE_IDENTITY, Cell
from workloads.params import WorkloadParams

#: The profile fields that only describe a device; every other field must be in DEVICE_IDENTITY.
# Fields that only describe or place a device (Ray custom resources pick a node, they do not change the cell).
# The power figures only give joules (derived from device seconds, never measured); the bandwidth is the roofline
# clock's figure, kept out like the host's calibration so that committed ids hold.
DESCRIPTIVE = {"gflops_source", "bandwidth_gbs", "bandwidth_source", "description", "source", "resources", "power"}
#: Enters the id through the cooling: the thermal curve of a cooling that throttles.
THROUGH_COOLING = {"thermal"}
THERMAL = {"sustained": {"none": 0.5, "fan": 1.0}, "time_constant_s": 300, "source": "a measurement"}

CATALOGUE = """
devices:
  - name: lab-board
    memory: 700MB
    cpus: 2
    gflops: 6
    gflops_source: "{source}"
    description: "{description}"
    source: "https://example.org/{source}"
"""
SPEC = """
name: t
clock: host
device_files: [devices.yaml]
devices: [lab-board]
matrix:
  model: opt-1m
  method: [mezo, bp-checkpointed]
  max_steps: 2
"""


def pi(**extra) -> DeviceProfile:
    return DeviceProfile(
        name="pi", memory="1GiB", cpus=4, gflops=8, description="a board", source="https://x", **extra
    )


def load(directory, source="datasheet", description="a lab board", memory="700MB"):
    directory.mkdir(exist_ok=True)
    catalogue = CATALOGUE.replace("700MB", memory).format(source=source, description=description)
    (directory / "devices.yaml").write_text(catalogue)
    (directory / "spec.yaml").write_text(SPEC)
    return load_spec(directory / "spec.yaml")


def test_one_id_is_pinned():
    """A change of this literal orphans every stored run and baseline: make it only on purpose."""
    assert Cell(pi(), WorkloadParams(model="opt-1m", method="bp-checkpointed", batch=4)).id == "18d410571ae9"


def test_editing_a_catalogue_description_or_source_keeps_ids_and_the_spec_hash(tmp_path):
    before = load(tmp_path / "a")
    after = load(tmp_path / "b", "blog post", "renamed text")
    assert [c.id for c in after.cells] == [c.id for c in before.cells]
    assert after.hash == before.hash  # a resume into the same --out is not refused as "a different spec"


def test_changing_the_memory_cap_changes_ids(tmp_path):
    before, after = load(tmp_path / "a"), load(tmp_path / "b", memory="800MB")
    assert not {c.id for c in after.cells} & {c.id for c in before.cells}
    assert after.hash != before.hash


def test_each_measured_device_field_changes_the_id():
    base = pi()
    changed = {
        "name": "pi2", "memory_bytes": 2 << 30, "cpus": 2.0, "gpu_memory_bytes": 4 << 30, "unified_memory": True,
        "gflops": 9.0, "cooling": "none", "pids": 64,
    }  # fmt: skip
    assert set(changed) == set(DEVICE_IDENTITY)
    params = WorkloadParams(model="opt-1m")
    base = pi(thermal=THERMAL)
    for field, value in changed.items():
        assert Cell(base.model_copy(update={field: value}), params).id != Cell(base, params).id, field


def test_thermal_and_power_figures_enter_ids_only_when_the_cooling_throttles():
    params = WorkloadParams(model="opt-1m")
    plain = Cell(pi(), params).id
    assert Cell(pi(thermal=THERMAL), params).id == plain  # fan: no throttling, the committed ids hold
    assert Cell(pi(power={"idle_watts": 1, "load_watts": 5, "source": "s"}), params).id == plain
    bare = Cell(pi(thermal=THERMAL, cooling="none"), params).id
    hotter = {**THERMAL, "sustained": {"none": 0.6, "fan": 1.0}}
    assert bare != plain and Cell(pi(thermal=hotter, cooling="none"), params).id != bare


def test_every_device_field_is_either_identity_or_descriptive():
    """A new profile field must be classified here: a cap that stays out of the id would merge two devices."""
    assert set(DEVICE_IDENTITY) | DESCRIPTIVE | THROUGH_COOLING == set(DeviceProfile.model_fields)
    assert not set(DEVICE_IDENTITY) & DESCRIPTIVE


def test_a_new_workload_field_at_its_default_keeps_ids():
    class Later(WorkloadParams):
        new_axis: int = 0

    device = pi()
    assert Cell(device, Later(model="opt-1m")).id == Cell(device, WorkloadParams(model="opt-1m")).id
    assert (
        Cell(device, Later(model="opt-1m", new_axis=1)).id != Cell(device, WorkloadParams(model="opt-1m")).id
    )


#: Workload defaults as ids were first computed without them. A cell that leaves a field out measures its
#: default, yet its id does not say which: changing one of these values must come with new ids (a new field
#: with a default is fine and needs no entry here).
DEFAULTS = {
    "task": "synthetic", "text_column": None, "label_column": None, "method": "mezo", "optimizer": "adamw",
    "lr": None, "lr_schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0, "eps": 0.001, "n_queries": 1,
    "zo_variant": "spsa", "zo_noise": "table", "tuning": "full", "dtype": "fp32", "batch": 8, "seq_len": 64,
    "max_steps": 10, "max_seconds": None, "eval_every": None, "eval_seconds": None, "eval_examples": 512, "seed": 0,
}  # fmt: skip


def test_workload_defaults_have_not_changed_under_the_ids():
    assert {name: WorkloadParams.model_fields[name].default for name in DEFAULTS} == DEFAULTS


def test_a_default_given_explicitly_is_the_same_cell():
    device = pi()
    assert (
        Cell(device, WorkloadParams(model="opt-1m", batch=8)).id
        == Cell(device, WorkloadParams(model="opt-1m")).id
    )


def test_the_clock_kind_changes_the_id():
    device, params = pi(), WorkloadParams(model="opt-1m")
    host = Cell(device, params)
    scaled = host.clock.model_copy(
        update={"kind": "device-scaled", "requested": "device-scaled", "ratio": 20.0}
    )
    assert Cell(device, params, scaled).id != host.id
    assert (
        Cell(device, params, scaled.model_copy(update={"ratio": 21.0})).id == Cell(device, params, scaled).id
    )
