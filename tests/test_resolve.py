"""Largest-fitting resolution (harness.plan.resolve): the probing walk on recorded outcomes, the spec syntax, and
one real run under kernel caps."""

from __future__ import annotations

import json

import pytest

from devices.profile import DeviceProfile
from devices.speed import unplanned_clock
from harness.plan.resolve import (
    PROBE_HEADROOM,
    FitSearch,
    advance,
    killed_cells,
    probe_params,
    resolve_searches,
)
from harness.plan.spec import load_spec
from harness.record.cells import Cell
from harness.record.errors import UserError
from harness.record.records import CellRecord, ModelResolution
from harness.record.store import load_records
from tests.helpers import edgebench, write_spec
from tests.records_factory import make_record
from workloads.params import WorkloadParams
from workloads.registry import ladder_names

CANDIDATES = ("opt-1m", "opt-8m", "opt-30m", "opt-60m", "opt-125m")


def search(memory: str = "2GB", **params: object) -> FitSearch:
    device = DeviceProfile(name="board", memory=memory, cpus=4)
    workload = WorkloadParams(**{"model": CANDIDATES[-1], "max_seconds": 60, "max_steps": None, **params})
    return FitSearch(device, unplanned_clock(device), workload, CANDIDATES, probe_steps=2)


def probe_record(probe: Cell, status: str) -> CellRecord:
    return make_record(status, model=probe.params.model).model_copy(update={"cell_id": probe.id, "role": "probe"})


def outcome(the_search: FitSearch, model: str, status: str) -> tuple[str, CellRecord]:
    probe = the_search.probes[model]
    return probe.id, probe_record(probe, status)


def walk(the_search: FitSearch, fits: set[str]) -> tuple[list[str], str]:
    """Run the walk against a fake device on which exactly `fits` train: the probes in order, the model."""
    outcomes: dict[str, CellRecord] = {}
    order = []
    while (state := advance(the_search, outcomes)).next_probe is not None:
        model = state.next_probe.params.model
        order.append(model)
        outcomes.update([outcome(the_search, model, "ok" if model in fits else "oom")])
    assert state.resolution is not None
    return order, state.resolution.model


@pytest.mark.parametrize("largest", range(len(CANDIDATES)))
def test_the_walk_finds_the_largest_model_that_trains_wherever_the_prediction_starts_it(largest):
    the_search = search()
    order, model = walk(the_search, set(CANDIDATES[: largest + 1]))
    assert model == CANDIDATES[largest]
    assert order[0] == CANDIDATES[the_search.first]  # guided by the memory model
    # bracketed by measurement: the resolved model trained, and the next larger (if any) was killed
    if largest + 1 < len(CANDIDATES):
        assert CANDIDATES[largest + 1] in order
    assert len(order) == len(set(order))


def test_probing_starts_at_the_largest_candidate_predicted_within_the_headroom_over_the_cap():
    small, large = search("600MB"), search("8GB")
    assert small.first < large.first
    cap = small.device.memory_bytes + PROBE_HEADROOM
    assert (small.probes[CANDIDATES[small.first]].predicted_peak_bytes or 0) <= cap
    assert small.probes[CANDIDATES[small.first + 1]].predicted_peak_bytes > cap


def test_when_nothing_trains_the_cell_runs_the_smallest_and_says_so():
    order, model = walk(search(), set())
    assert model == CANDIDATES[0] and order[-1] == CANDIDATES[0]
    state = advance(search(), dict(outcome(search(), m, "oom") for m in CANDIDATES))
    assert "no candidate trained" in state.resolution.reason


def test_a_probe_that_errors_stops_its_arm_instead_of_counting_as_too_large():
    the_search = search()
    first = CANDIDATES[the_search.first]
    state = advance(the_search, dict([outcome(the_search, first, "error")]))
    assert state.failed is not None and state.failed.params.model == first and state.resolution is None


def test_probes_ignore_what_does_not_change_memory_so_seeds_and_rates_share_them():
    base = search()
    twins = [search(seed=1), search(lr=1e-3, lr_schedule="cosine", n_queries=8), search(max_seconds=900)]
    for twin in twins:
        assert [c.id for c in twin.probes.values()] == [c.id for c in base.probes.values()]
    assert search(batch=32).probes["opt-8m"].id != base.probes["opt-8m"].id
    probe = base.probes["opt-8m"]
    assert probe.role == "probe" and probe.params.max_steps == 2 and probe.params.max_seconds is None
    resolution = ModelResolution(candidates=list(CANDIDATES), model="opt-8m", reason="test")
    cell = base.cell(resolution)
    assert cell.params.model == "opt-8m" and cell.params.max_seconds == 60 and cell.resolution == resolution
    same_shape = cell.params.model_copy(update=probe.params.model_dump())
    assert Cell(cell.device, same_shape, cell.clock).id != probe.id  # a probe never stands in for a cell


def test_rounds_run_each_shared_probe_once_and_resolve_every_arm():
    searches = [search(), search(seed=1), search(batch=4)]
    runs: list[list[str]] = []

    def run_probes(probes):
        runs.append([p.id for p in probes])
        return [probe_record(p, "ok" if p.params.model in CANDIDATES[:3] else "oom") for p in probes]

    resolved, failed = resolve_searches(searches, {}, run_probes)
    assert not failed and [r.model for _, r in resolved] == ["opt-30m"] * 3
    assert all(len(ids) == len(set(ids)) for ids in runs)
    assert all(len(ids) <= 2 for ids in runs)  # two distinct probe shapes per round: batch 8 and batch 4


def test_a_spec_names_a_ladder_or_lists_candidates(tmp_path):
    spec = write_spec(
        tmp_path,
        """
name: lf
devices: [rpi-4-2gb]
matrix:
  model: {largest_fitting: pretrained}
  task: rotten_tomatoes
  method: [mezo, bp-checkpointed]
  max_steps: 2
""",
    )
    loaded = load_spec(spec)
    assert loaded.cells == [] and len(loaded.fit_searches) == 2
    assert list(loaded.fit_searches[0].candidates) == ladder_names("pretrained")
    assert all(c.predicted_peak_bytes for a in loaded.fit_searches for c in a.probes.values())  # planned, not run


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{largest_fitting: decoders}", "'decoders' is not a ladder"),
        ("{largest_fitting: []}", "matrix.model.largest_fitting"),
        ("{largest_fitting: [opt-1m, opt-1m]}", "listed twice"),
        ("{largest_fitting: [opt-1m], probe_steps: 0}", "matrix.model.probe_steps"),
        ("{largest_fitting: [opt-1m], size: 3}", "size"),
        ("{largest_fitting: [opt-1m, no-such-model]}", "no-such-model"),
    ],
)
def test_bad_largest_fitting_is_one_line_naming_the_field(tmp_path, model, message):
    spec = write_spec(tmp_path, f"devices: [rpi-4-2gb]\nmatrix:\n  model: {model}\n  max_steps: 2\n")
    with pytest.raises(UserError, match=message) as caught:
        load_spec(spec)
    assert "\n" not in str(caught.value)


@pytest.mark.integration
def test_a_real_run_probes_under_kernel_caps_and_records_the_resolution(tmp_path, no_leftover_cgroups):
    spec = write_spec(
        tmp_path,
        """
name: lf-real
devices: [{name: small-540mib, memory: 540MiB, cpus: 1, gflops: 20}]
clock: host
matrix:
  model: {largest_fitting: [opt-1m, opt-8m, opt-30m, opt-60m], probe_steps: 1}
  method: mezo
  batch: 4
  seq_len: 32
  max_steps: 2
""",
    )
    out = tmp_path / "run"
    proc = edgebench("run", str(spec), "--out", str(out), "--no-report", process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = load_records(out)
    probes = [r for r in records if r.role == "probe"]
    (cell,) = [r for r in records if r.role == "cell"]
    assert cell.status == "ok" and cell.steps == 2 and cell.resolution is not None
    assert cell.params.model == cell.resolution.model
    by_model = {p.params.model: p.status for p in probes}
    assert by_model[cell.params.model] == "ok"
    ladder = ["opt-1m", "opt-8m", "opt-30m", "opt-60m"]
    larger = ladder[ladder.index(cell.params.model) + 1]  # 540 MiB holds the runtime and opt-8m, not opt-60m
    assert by_model.get(larger) == "oom"  # the bracket above was measured, not assumed
    info = json.loads((out / "run.json").read_text())
    assert cell.cell_id in info["cells"] and info["resolutions"]
    again = edgebench("run", str(spec), "--out", str(out), "--no-report", process=True)  # a resume probes nothing again
    assert again.returncode == 0 and "probing" not in again.stderr and len(load_records(out)) == len(records)


def test_a_resolved_cell_killed_at_the_cap_sends_its_arm_one_model_down_for_every_seed():
    seeds = [search(seed=s) for s in (0, 1)]
    fits = set(CANDIDATES[:3])
    outcomes = {}
    for model in CANDIDATES:
        outcomes.update([outcome(seeds[0], model, "ok" if model in fits else "oom")])
    first = advance(seeds[0], outcomes).resolution
    assert first.model == CANDIDATES[2]
    cell = seeds[0].cell(first)
    killed = make_record("oom", model=cell.params.model).model_copy(
        update={"cell_id": cell.id, "params": cell.params, "device": cell.device, "resolution": first}
    )
    evidence = {**outcomes, **killed_cells([killed])}
    for twin in seeds:  # the other seed's cell shares the probe, so the verdict
        again = advance(twin, evidence).resolution
        assert again.model == CANDIDATES[1]
        assert any(p.cell_id == cell.id and p.status == "oom" for p in again.probes)


def test_a_probe_runs_its_cells_evaluation_before_the_first_step_but_not_during_training():
    """The step-0 evaluation leaves the heap larger (harness.plan.resolve.probe_params), so a probe keeps it and the
    evaluated examples; evaluations during training and the budget are the cell's own."""
    budget = {"max_steps": None, "max_seconds": 200, "eval_seconds": 100, "eval_examples": 64}
    cell = WorkloadParams(model="minilm-l6", task="rotten_tomatoes", method="bp-checkpointed", **budget)
    probe = probe_params(cell, 2)
    assert probe.evaluate and probe.eval_examples == 64
    assert (probe.max_steps, probe.max_seconds, probe.eval_seconds, probe.eval_every) == (2, None, None, None)
