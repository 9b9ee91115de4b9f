"""What the Ray executor decides without a cluster: each cell's resources, refusals, retries' bookkeeping."""

from __future__ import annotations

import pytest

from devices.profile import DeviceProfile
from devices.speed import CellClock, host_clock
from harness.record.cells import Cell
from harness.run.executors.base import outcome_status
from harness.run.executors.ray import ATTEMPTS, log_header, lost_outcome
from harness.run.executors.ray_placement import placement, placement_problem, task_options
from workloads.params import WorkloadParams

GIB = 1 << 30
PARAMS = WorkloadParams(model="opt-1m", method="mezo", task="synthetic")


def cell(
    memory: str = "1GiB", cpus: float = 1, gpu: str | None = None, clock: CellClock | None = None
) -> Cell:
    device = DeviceProfile(name="dev", memory=memory, cpus=cpus, gpu_memory=gpu)
    return Cell(device, PARAMS, clock or host_clock(device, 2, "host", "test"))


def throttled(quota: float) -> CellClock:
    return CellClock(
        kind="device-throttled", requested="device-throttled", cpu_quota_cores=quota, threads=1, source="test"
    )


def test_a_cell_asks_for_its_threads_and_its_memory_cap():
    # A host clock's threads: the device's cores, at most the host's 2.
    assert placement(cell(cpus=4)) == {"CPU": 2, "memory": GIB}
    assert placement(cell(cpus=1)) == {"CPU": 1, "memory": GIB}


def test_a_throttled_cell_asks_for_its_quota_rounded_up_to_rays_step():
    assert placement(cell(clock=throttled(0.123456)))["CPU"] == 0.1235
    assert placement(cell(clock=throttled(0.1234)))["CPU"] == 0.1234


def test_gpu_memory_asks_for_a_whole_gpu_and_no_gpu_memory_for_none():
    assert placement(cell(gpu="4GB"))["GPU"] == 1  # Ray counts GPUs, not bytes: the cell caps its share itself
    unified = DeviceProfile(name="jetson", memory="4GB", cpus=4, unified_memory=True)
    assert placement(Cell(unified, PARAMS, host_clock(unified, 2, "host", "test")))["GPU"] == 1
    assert "GPU" not in placement(cell())


def test_task_options_use_rays_names_and_leave_retries_to_the_driver():
    assert task_options({"CPU": 0.5, "memory": GIB, "GPU": 0.25}) == {
        "num_cpus": 0.5,
        "memory": GIB,
        "num_gpus": 0.25,
        "max_retries": 0,
    }
    assert "num_gpus" not in task_options({"CPU": 1, "memory": GIB})


def test_a_devices_custom_resources_pin_its_cells_to_the_nodes_that_offer_them():
    device = DeviceProfile(name="arm-board", memory="1GiB", cpus=1, resources={"arm64": 1})
    request = placement(Cell(device, PARAMS, host_clock(device, 2, "host", "test")))
    assert request["arm64"] == 1 and task_options(request)["resources"] == {"arm64": 1}
    x86 = {"CPU": 8, "memory": 16 * GIB}
    assert placement_problem(Cell(device, PARAMS, host_clock(device, 2, "host", "test")), [x86]) is not None
    assert placement_problem(Cell(device, PARAMS, host_clock(device, 2, "host", "test")), [{**x86, "arm64": 2}]) is None
    assert Cell(device, PARAMS).id == Cell(device.model_copy(update={"resources": {}}), PARAMS).id  # placement only


def test_a_cell_that_fits_one_node_is_admitted():
    nodes = [{"CPU": 1, "memory": 0.5 * GIB}, {"CPU": 2, "memory": 3 * GIB}]
    assert placement_problem(cell(), nodes) is None


@pytest.mark.parametrize(
    "nodes",
    [
        [{"CPU": 2, "memory": 0.5 * GIB}],
        [{"CPU": 2, "memory": 0.5 * GIB}, {"CPU": 0.5, "memory": 3 * GIB}],
        [],
    ],
    ids=["too-little-memory-everywhere", "enough-of-each-never-on-one-node", "no-live-node"],
)
def test_a_cell_no_node_can_hold_is_refused_with_what_the_cluster_offers(nodes):
    problem = placement_problem(cell(), nodes)
    assert problem is not None and "\n" not in problem
    assert problem.startswith("device dev needs 1 CPU, 1.0 GiB memory on one Ray node")


def test_a_gpu_cell_is_refused_by_a_cluster_without_gpus():
    problem = placement_problem(cell(gpu="2GB"), [{"CPU": 2, "memory": 3 * GIB}])
    assert problem is not None and "largest offer 2 CPU, 3.0 GiB memory, 0 GPU" in problem


def test_the_log_names_each_lost_attempt_and_where_the_last_one_ran():
    assert log_header([], "node A") == "edgebench: attempt 1 ran on node A\n"
    assert log_header(["WorkerCrashedError: died"], "node B") == (
        "edgebench: attempt 1 lost: WorkerCrashedError: died\nedgebench: attempt 2 ran on node B\n"
    )
    assert log_header(["a", "b"], None) == "edgebench: attempt 1 lost: a\nedgebench: attempt 2 lost: b\n"


def test_a_cell_lost_on_every_attempt_is_an_error_that_says_why():
    losses = ["WorkerCrashedError: first", "NodeDiedError: second"]
    assert len(losses) == ATTEMPTS
    status, error = outcome_status(cell(), lost_outcome("now", 1.0, losses), timeout_s=60)
    assert status == "error"
    assert error == (
        "its Ray task was lost on all 2 attempts (worker or node died); last: NodeDiedError: second"
    )
