"""Device profiles: sizes, validation and the catalogue."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from devices.catalogue import CatalogueError, load_catalogue, resolve_device
from devices.profile import DeviceProfile, format_bytes, parse_bytes


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
    assert catalogue["jetson-nano"].gpu_memory_fraction is not None
    assert all(p.source.startswith("https://") for p in catalogue.values())


def test_user_file_extends_and_overrides(tmp_path):
    user = tmp_path / "devices.yaml"
    user.write_text("devices:\n  - {name: my-board, memory: 3GiB, cpus: 2}\n  - {name: rpi-zero-2w, memory: 256MiB}\n")
    catalogue = load_catalogue([user])
    assert catalogue["my-board"].memory_bytes == 3 * 1024**3
    assert catalogue["rpi-zero-2w"].memory_bytes == 256 * 1024**2


def test_unknown_device_names_the_known_ones():
    with pytest.raises(CatalogueError, match="unknown device 'rpi-9'.*rpi-zero-2w"):
        resolve_device("rpi-9", load_catalogue())


def test_bad_user_file_names_the_field(tmp_path):
    user = tmp_path / "devices.yaml"
    user.write_text("devices:\n  - {name: x, memory: -1GB}\n")
    with pytest.raises(CatalogueError, match=r"devices\.yaml: devices\[0\]\.memory"):
        load_catalogue([user])
