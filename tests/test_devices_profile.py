"""Device profiles: sizes, validation and the catalogue."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from devices.catalogue import CatalogueError, load_catalogue, resolve_device
from devices.profile import DeviceProfile, format_bytes, parse_bytes
from harness.cli.commands.devices import user_catalogue
from harness.record.errors import UserError
from tests.helpers import edgebench


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * 1024**2),
        ("4GB", 4 * 1000**3),
        ("1.5g", 1_500_000_000),
        ("2 GiB", 2 * 1024**3),
        (1024, 1024),
        ("100", 100),
    ],
)
def test_parse_bytes_accepts_human_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "", True])
def test_parse_bytes_rejects_nonsense(text):
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_format_bytes_is_binary():
    assert format_bytes(512 * 1024**2) == "512.0 MiB"
    assert format_bytes(None) == "-"


@pytest.mark.parametrize("memory", ["-512MiB", 0, "0GB"])
def test_profile_rejects_non_positive_memory(memory):
    with pytest.raises(ValidationError, match="positive|greater than 0"):
        DeviceProfile(name="bad", memory=memory, cpus=1)


def test_profile_threads_round_up_fractional_cores():
    assert DeviceProfile(name="d", memory="1GB", cpus=0.5).threads == 1
    assert DeviceProfile(name="d", memory="1GB", cpus=2.5).threads == 3


def test_catalogue_has_real_devices_with_sources():
    catalogue = load_catalogue()
    assert len(catalogue) >= 8
    assert catalogue["rpi-zero-2w"].memory_bytes == 512 * 1000**2
    assert catalogue["jetson-nano"].unified_memory and catalogue["jetson-nano"].gpu_cap_bytes == 4 * 1000**3
    assert all(p.source.startswith("https://") for p in catalogue.values())


def test_user_file_extends_and_overrides(tmp_path):
    user = tmp_path / "devices.yaml"
    user.write_text("devices:\n  - {name: my-board, memory: 3GiB, cpus: 2}\n  - {name: rpi-zero-2w, memory: 256MiB}\n")
    catalogue = user_catalogue([user])
    assert catalogue["my-board"].memory_bytes == 3 * 1024**3
    assert catalogue["rpi-zero-2w"].memory_bytes == 256 * 1024**2


def test_unknown_device_names_the_known_ones():
    with pytest.raises(CatalogueError, match="unknown device 'rpi-9'.*rpi-zero-2w"):
        resolve_device("rpi-9", load_catalogue())


def test_bad_user_file_names_the_field(tmp_path):
    user = tmp_path / "devices.yaml"
    user.write_text("devices:\n  - {name: x, memory: -1GB}\n")
    with pytest.raises(UserError, match=r"devices\.yaml: devices\[0\]\.memory"):
        user_catalogue([user])


def test_gpu_memory_is_given_in_bytes_with_units():
    device = DeviceProfile(name="card", memory="8GB", gpu_memory="4GiB")
    assert device.gpu_memory_bytes == device.gpu_cap_bytes == 4 * 1024**3
    assert not device.unified_memory
    assert DeviceProfile(name="cpu", memory="1GB").gpu_cap_bytes is None


def test_a_unified_memory_device_caps_its_gpu_at_its_one_memory():
    jetson = DeviceProfile(name="jetson", memory="4GB", unified_memory=True)
    assert jetson.gpu_cap_bytes == jetson.memory_bytes == 4 * 1000**3


def test_a_unified_memory_device_refuses_a_second_gpu_figure():
    with pytest.raises(ValidationError, match="shares its `memory`; remove gpu_memory"):
        DeviceProfile(name="jetson", memory="4GB", unified_memory=True, gpu_memory="2GB")


@pytest.mark.parametrize("size", ["0GB", "-1GB", "lots"])
def test_gpu_memory_rejects_nonsense(size):
    with pytest.raises(ValidationError, match="gpu_memory"):
        DeviceProfile(name="card", memory="1GB", gpu_memory=size)


def test_a_gpu_memory_fraction_is_refused_in_one_line_that_names_the_replacement(tmp_path):
    """Half of the host's card is no device: the field that meant that is refused, never guessed into bytes."""
    user = tmp_path / "devices.yaml"
    user.write_text("devices:\n  - {name: old-jetson, memory: 4GB, gpu_memory_fraction: 0.5}\n")
    with pytest.raises(UserError) as caught:
        user_catalogue([user])
    message = str(caught.value)
    assert message.startswith(f"{user}: devices[0]: gpu_memory_fraction is no longer read")
    assert "gpu_memory: 4GB" in message and "\n" not in message and "Value error" not in message


def test_an_empty_gpu_memory_fraction_in_a_stored_record_still_loads():
    stored = {"name": "pi", "memory_bytes": 1 << 30, "cpus": 4, "gpu_memory_fraction": None}
    assert DeviceProfile.model_validate(stored) == DeviceProfile(name="pi", memory=1 << 30, cpus=4)


def test_devices_lists_a_devices_yaml_of_the_current_directory_only_when_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "devices.yaml").write_text("devices:\n  - {name: my-board, memory: 3GiB, cpus: 2}\n")
    result = edgebench("devices", "--json")
    assert result.returncode == 0
    assert "my-board" not in result.stdout
    assert result.stderr == "edgebench: note: ./devices.yaml is not read; pass --file devices.yaml to use its devices\n"
    result = edgebench("devices", "--json", "--file", "devices.yaml")
    assert result.returncode == 0
    assert "my-board" in result.stdout and result.stderr == ""
