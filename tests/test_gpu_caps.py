"""A device's GPU memory in bytes becomes a share of the card the cell finds (no GPU here: the card is faked)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from devices.caps import cuda
from devices.caps.cuda import (
    ENV_GPU_MEMORY,
    ENV_GPU_UNIFIED,
    GpuCapError,
    apply_gpu_fraction,
    gpu_env,
    gpu_fraction,
)
from devices.caps.rlimit import RlimitAS
from devices.profile import DeviceProfile
from harness.record.records import MemoryFigures
from harness.run.executors.base import memory_figures
from workloads.metrics import CellMemory, CellMetrics

GB = 1000**3
CARD = 80 * GB


class FakeCuda:
    """torch.cuda as the cap uses it, on a card of `total` bytes; records the fraction it was given."""

    def __init__(self, total: int, available: bool = True) -> None:
        self.total, self.available, self.fraction = total, available, None

    def is_available(self) -> bool:
        return self.available

    def get_device_properties(self, index: int) -> SimpleNamespace:
        return SimpleNamespace(total_memory=self.total)

    def set_per_process_memory_fraction(self, fraction: float) -> None:
        self.fraction = fraction

    def reset_peak_memory_stats(self) -> None:
        pass


def fake_torch(total: int = CARD, available: bool = True) -> SimpleNamespace:
    return SimpleNamespace(cuda=FakeCuda(total, available))


def test_the_fraction_is_the_devices_bytes_over_the_cards():
    assert gpu_fraction(4 * GB, CARD) == 0.05  # a 4 GB device on an 80 GB card, never half of it
    assert gpu_fraction(4 * GB, 8 * GB) == 0.5
    assert gpu_fraction(CARD, CARD) == 1.0


def test_a_device_with_more_gpu_memory_than_the_card_is_refused():
    with pytest.raises(GpuCapError, match=r"8.0 GiB of GPU memory exceeds this card's 3.7 GiB; pick a device"):
        gpu_fraction(8 * 1024**3, 4 * GB)


def test_a_unified_cap_leaves_the_gpu_what_the_host_does_not_hold():
    assert gpu_fraction(4 * GB, CARD, host_bytes=1 * GB) == 3 * GB / CARD
    with pytest.raises(GpuCapError, match="already holds"):
        gpu_fraction(4 * GB, CARD, host_bytes=4 * GB)


def test_the_cell_applies_the_share_of_the_card_it_finds(monkeypatch):
    monkeypatch.setenv(ENV_GPU_MEMORY, str(4 * GB))
    monkeypatch.delenv(ENV_GPU_UNIFIED, raising=False)
    torch = fake_torch(CARD)
    assert apply_gpu_fraction(torch) == torch.cuda.fraction == 0.05
    small = fake_torch(16 * GB)
    assert apply_gpu_fraction(small) == small.cuda.fraction == 0.25  # the same device, another card


def test_a_unified_cell_takes_its_host_memory_out_of_the_gpus_share(monkeypatch):
    monkeypatch.setenv(ENV_GPU_MEMORY, str(4 * GB))
    monkeypatch.setenv(ENV_GPU_UNIFIED, "1")
    rss = SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=1 * GB))
    monkeypatch.setattr(cuda.psutil, "Process", lambda: rss)
    assert apply_gpu_fraction(fake_torch(CARD)) == 3 * GB / CARD


def test_a_cell_on_a_card_too_small_fails_with_the_reason(monkeypatch):
    monkeypatch.setenv(ENV_GPU_MEMORY, str(8 * GB))
    monkeypatch.delenv(ENV_GPU_UNIFIED, raising=False)
    torch = fake_torch(4 * GB)
    with pytest.raises(GpuCapError, match="exceeds this card's"):
        apply_gpu_fraction(torch)
    assert torch.cuda.fraction is None


def test_no_gpu_memory_or_no_cuda_runs_on_the_cpu(monkeypatch):
    monkeypatch.delenv(ENV_GPU_MEMORY, raising=False)
    assert apply_gpu_fraction(fake_torch()) is None
    monkeypatch.setenv(ENV_GPU_MEMORY, str(4 * GB))
    assert apply_gpu_fraction(fake_torch(available=False)) is None


def test_the_cap_backend_hands_the_cell_the_devices_bytes():
    card = DeviceProfile(name="card", memory="8GB", gpu_memory="4GB")
    jetson = DeviceProfile(name="jetson", memory="4GB", unified_memory=True)
    cpu = DeviceProfile(name="pi", memory="1GB")
    assert gpu_env(card) == {ENV_GPU_MEMORY: str(4 * GB)}
    assert gpu_env(jetson) == {ENV_GPU_MEMORY: str(4 * GB), ENV_GPU_UNIFIED: "1"}
    assert RlimitAS(jetson, "cell").child_env().items() >= gpu_env(jetson).items()
    assert not {ENV_GPU_MEMORY, ENV_GPU_UNIFIED} & set(RlimitAS(cpu, "cell").child_env())


def test_a_gpu_cells_record_keeps_the_cuda_peak_beside_the_host_peak():
    observed = MemoryFigures(rss_peak_bytes=700 << 20, cgroup_peak_bytes=800 << 20)
    figures = memory_figures(observed, CellMetrics(memory=CellMemory(cuda_peak_bytes=3 << 30)))
    assert (figures.rss_peak_bytes, figures.cuda_peak_bytes) == (700 << 20, 3 << 30)
