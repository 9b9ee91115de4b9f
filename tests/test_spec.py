"""Spec loading: expansion into cells with stable ids, and one-line errors for bad input."""

from __future__ import annotations

import pytest

from devices.profile import DeviceProfile
from harness.plan.spec import default_spec_path, load_spec
from harness.record.cells import Cell
from harness.record.errors import UserError
from workloads.params import WorkloadParams

GOOD = """
name: t
devices: [rpi-zero-2w, {name: my-board, memory: 3GiB, cpus: 2}]
matrix:
  model: [opt-1m, opt-8m]
  method: [mezo, bp-checkpointed]
  batch: 4
  max_steps: 2
"""


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_expands_the_cartesian_product(tmp_path):
    loaded = load_spec(write(tmp_path, GOOD))
    assert len(loaded.cells) == 2 * 2 * 2
    assert {c.params.batch for c in loaded.cells} == {4}
    assert len({c.id for c in loaded.cells}) == 8


def test_cell_ids_are_stable_and_content_addressed(tmp_path):
    first = [c.id for c in load_spec(write(tmp_path, GOOD)).cells]
    second = [c.id for c in load_spec(write(tmp_path, GOOD, "again.yaml")).cells]
    assert first == second
    changed = [c.id for c in load_spec(write(tmp_path, GOOD.replace("batch: 4", "batch: 8"), "b.yaml")).cells]
    assert not set(first) & set(changed)


def test_device_slices_select_cells_of_the_whole_spec(tmp_path):
    path = write(tmp_path, GOOD)
    loaded = load_spec(path)
    assert {c.device.name for c in loaded.cells_for(["my-board"])} == {"my-board"}
    assert loaded.cells_for(None) == loaded.cells
    with pytest.raises(UserError, match="--device 'nope' is not in"):
        loaded.cells_for(["nope"])


def test_a_device_file_the_spec_names_is_read(tmp_path):
    write(tmp_path, "devices:\n  - {name: lab-board, memory: 700MB, cpus: 1}\n", "devices.yaml")
    text = GOOD.replace("rpi-zero-2w", "lab-board") + "device_files: [devices.yaml]\n"
    loaded = load_spec(write(tmp_path, text))
    assert loaded.devices[0].memory_bytes == 700_000_000 and loaded.notes() == []


def test_a_devices_yaml_beside_a_spec_that_does_not_name_it_is_not_read_and_a_note_says_so(tmp_path):
    """Whoever can write beside a spec must not redefine its devices: a catalogue device keeps its caps."""
    write(tmp_path, "devices:\n  - {name: rpi-zero-2w, memory: 64GB, cpus: 64}\n", "devices.yaml")
    loaded = load_spec(write(tmp_path, GOOD))
    assert loaded.devices[0].memory_bytes == 512 * 1000**2
    (note,) = loaded.notes()
    assert note == (
        f"{tmp_path / 'devices.yaml'} is not read: the spec does not name it; "
        "to use its devices, add `device_files: [devices.yaml]`"
    )
    with pytest.raises(UserError, match="unknown device 'lab-board'.*device_files"):
        load_spec(write(tmp_path, GOOD.replace("rpi-zero-2w", "lab-board"), "lab.yaml"))


def _bomb() -> str:
    """Nine levels of nine aliases each: 9**9 values from a few lines."""
    anchors = ["&a0 [0, 0, 0, 0, 0, 0, 0, 0, 0]"] + [f"&a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 8)]
    return f"devices:\n  - {{name: b, memory: 1GB, x: [{', '.join(anchors)}], y: [{', '.join(['*a7'] * 9)}]}}\n"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (_bomb(), "over 100,000 values"),
        ("devices: " + "[" * 60 + "]" * 60 + "\n", "nested over 50 levels deep"),
        ("devices: []\n#" + "x" * (1 << 20) + "\n", "over 1 MiB, too big for a device file"),
        (None, "device file .* not found; fix device_files in the spec"),
    ],
    ids=["alias-bomb", "deep", "huge", "missing"],
)
def test_a_named_device_file_has_the_limits_of_a_spec(tmp_path, content, problem):
    if content is not None:
        write(tmp_path, content, "devices.yaml")
    with pytest.raises(UserError, match=problem) as caught:
        load_spec(write(tmp_path, GOOD + "device_files: [devices.yaml]\n"))
    assert "\n" not in str(caught.value)


def test_default_spec_loads():
    assert load_spec(default_spec_path()).spec.name == "quick"


@pytest.mark.parametrize("name", ["quick", "paper-fit", "paper-accuracy", "recipes", "ranking-check"])
def test_every_shipped_spec_loads_by_name_with_work_to_do(name):
    loaded = load_spec(name)
    assert loaded.spec.name == name and (loaded.cells or loaded.fit_searches)


@pytest.mark.parametrize("name", ["paper-accuracy", "recipes", "ranking-check"])
def test_specs_that_make_accuracy_claims_score_whole_splits_at_log_spaced_times(name):
    """Rotten Tomatoes' held-out splits are 1,275 reviews each: every point of these specs scores at least 1,000
    of validation and of test (a standard error under 1.1 points at 87%), at log-spaced shares of the budget."""
    loaded = load_spec(name)
    workloads = [c.params for c in loaded.cells] + [search.params for search in loaded.fit_searches]
    assert workloads
    for params in workloads:
        assert params.evaluated(1275) >= 1000 and params.evaluate
        assert params.eval_fractions()[0] <= 1 / 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("devices: [rpi-zero-2w\nmatrix: {model: [opt-1m]}\n", r"spec\.yaml line \d+.*invalid YAML"),
        (GOOD.replace("rpi-zero-2w,", "rpi-99,"), r"unknown device 'rpi-99'.*`device_files: \[devices\.yaml\]`"),
        (GOOD.replace("memory: 3GiB", "memory: -3GiB"), r"devices\[1\]\.memory.*positive"),
        (GOOD.replace("memory: 3GiB", "memory: 0"), r"devices\[1\]\.memory.*positive"),
        (GOOD.replace("batch: 4", "batchsize: 4"), r"matrix: unknown axis 'batchsize'; axes are: model"),
        (GOOD.replace("bp-checkpointed", "backprop"), r"matrix\.method \(value 'backprop'\): Input should be"),
        (GOOD.replace("batch: 4", "batch: 0"), r"matrix\.batch \(value 0\): Input should be greater than or equal"),
        (GOOD.replace("max_steps: 2", "lr: -0.1"), r"matrix\.lr \(value -0\.1\): Input should be greater than 0"),
        ("devices: []\nmatrix: {model: [opt-1m]}\n", r"devices: List should have at least 1 item"),
        ("- just\n- a list\n", r"expected a mapping"),
        (GOOD + "colour: blue\n", r"colour: Extra inputs are not permitted"),
        (GOOD + "  devices: [[rpi-zero-2w]]\n", r"matrix: `devices` takes a device name or a list of names"),
        (GOOD + "timeout_s: .inf\n", r"timeout_s: Input should be a finite number"),
        (GOOD + "checkpoint_seconds: 0\n", r"checkpoint_seconds: Input should be greater than 0"),
        (GOOD.replace("batch: 4", "eval_at: every-hour"), r"matrix\.eval_at .*use log"),
        (GOOD.replace("batch: 4", "eval_examples: most"), r"matrix\.eval_examples"),
        (GOOD.replace("batch: 4", "max_seconds: .inf"), r"matrix\.max_seconds \(value inf\): Input should be a finite"),
        (GOOD.replace("cpus: 2", "cpus: .nan"), r"devices\[1\]\.cpus: Input should be a finite number"),
    ],
)
def test_bad_specs_give_one_line_naming_the_field(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as info:
        load_spec(write(tmp_path, text))
    assert "spec.yaml" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_cell_labels_name_the_tuning_only_when_it_is_not_full():
    device = DeviceProfile(name="rpi-4-2gb", memory="2GB")
    full, head = (Cell(device, WorkloadParams(model="opt-8m", tuning=t)) for t in ("full", "head"))
    assert full.label == "rpi-4-2gb/opt-8m/mezo/b8/s0"
    assert head.label == "rpi-4-2gb/opt-8m/mezo+head/b8/s0"


def test_the_default_matrix_says_it_is_a_demonstration_and_names_the_reference_that_makes_the_claim():
    """`make run`'s report shows the spec's description as its lede: it must not read as the finding."""
    import re
    from pathlib import Path

    description = load_spec(default_spec_path(), 10_000).spec.description or ""
    assert "A demonstration, not a finding" in description
    (reference,) = re.findall(r"results/reference/[\w-]+/report\.html", description)
    assert (Path(__file__).resolve().parents[1] / reference).is_file()
