"""A spec's matrix run as one library call: the checks that refuse a run before anything is written, the executor
started for it, and `run_matrix`, which resolves each largest-fitting search, schedules the cells and resolves a search
again when its resolved cell was killed at the cap; the command line (harness.cli.commands.run) only parses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from harness.plan.host_capacity import check_host_capacity
from harness.plan.resolve import FitSearch, killed_cells, resolve_searches
from harness.plan.spec import LoadedSpec, some_of
from harness.record.cells import Cell
from harness.record.errors import UserError
from harness.record.records import CellRecord, ModelResolution
from harness.record.store import UNMEASURED, RunStore, check_writable, load_records
from harness.run.executors import executor_class
from harness.run.executors.base import Executor
from harness.run.runinfo import describe_run
from harness.run.scheduler import Scheduler
from workloads.resumable import Checkpointing


@dataclass(frozen=True)
class RunRequest:
    """What the operator asked of a run beyond its spec (`edgebench run`'s options)."""

    out: Path
    executor: str = "local"
    jobs: int = 1
    enforcement: str = "auto"
    devices: list[str] | None = None
    allow_network: bool = False
    trust_remote_code: bool = False
    fresh: bool = False
    retry_errors: bool = False


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its cells (resolved largest-fitting ones included), the records this invocation made and
    the cells and failed probes whose latest record is no measurement."""

    cells: list[Cell]
    ran: list[CellRecord]
    unmeasured: list[tuple[Cell, str]]


def check_request(loaded: LoadedSpec, request: RunRequest) -> None:
    """Refuse, before anything is written, a run the operator did not allow or this host cannot hold."""
    cells = [*loaded.cells_for(request.devices), *loaded.fit_searches_for(request.devices)]
    check_remote_code(loaded.path, cells, request.trust_remote_code)
    check_network(loaded.path, loaded.spec.network, request.allow_network, request.executor)
    if request.executor != "ray":  # a Ray cell runs on a node of the cluster: the executor's admission checks that
        check_host_capacity(loaded.devices_for(request.devices))
    check_writable(request.out)


def start_executor(loaded: LoadedSpec, request: RunRequest) -> Executor:
    """The run's executor, once it admitted every cell and probe and can honour their clocks (closed otherwise)."""
    spec = loaded.spec
    checkpointing = Checkpointing(every_seconds=spec.checkpoint_seconds, mezo=spec.mezo_checkpoints)
    executor = executor_class(request.executor)(request.out, spec.timeout_s, request.enforcement, checkpointing)
    executor.allow_network = spec.network and request.allow_network
    searches = loaded.fit_searches_for(request.devices)
    try:
        probes = (probe for search in searches for probe in search.probes.values())
        executor.admit([*loaded.cells_for(request.devices), *probes])
        check_clocks(executor, loaded.cells_for(request.devices), loaded.path)
    except UserError:
        executor.close()
        raise
    return executor


def run_matrix(
    loaded: LoadedSpec, executor: Executor, store: RunStore, request: RunRequest, console: Console
) -> RunOutcome:
    """Run the plan's cells (and its searches' probes, then their resolved cells) into `store`, resuming what it holds;
    one pass, unless resolved cells were killed at the cap: then their searches resolve again."""
    cells = loaded.cells_for(request.devices)
    searches = loaded.fit_searches_for(request.devices)
    run_info = describe_run(loaded, executor, request.jobs, request.devices, loaded.cells)
    done = store.prepare(run_info, fresh=request.fresh, retry_errors=request.retry_errors)
    for note in loaded.notes():
        console.print(f"edgebench: note: {note}", markup=False, highlight=False)
    scheduler = Scheduler(executor, store, request.jobs, console)
    records: list[CellRecord] = []
    failed_probes: list[Cell] = []
    resolved: list[Cell] = []
    finished = set(done)
    while True:
        if searches:
            resolutions, probes, failed_probes = resolve_models(searches, finished, request.out, scheduler, console)
            records += probes
            finished |= {r.cell_id for r in probes}
            resolved = [search.cell(r) for search, r in resolutions if not search.probe_only]
            expected = [*loaded.cells, *resolved]
            store.describe(describe_run(loaded, executor, request.jobs, request.devices, expected, resolutions))
        todo = [*cells, *resolved]
        pending = [c for c in todo if c.id not in finished]
        console.print(
            f"edgebench: {len(todo)} cells ({len(todo) - len(pending)} already done), "
            f"enforcement {executor.enforcement}, executor {executor.name}, out {request.out}"
        )
        ran = scheduler.run(pending)
        records += ran
        finished |= {c.id for c in pending}
        if not any(r.status == "oom" and r.resolution is not None for r in ran):
            break
    return RunOutcome(todo, records, unmeasured([*todo, *failed_probes], load_records(request.out)))


def check_clocks(executor: Executor, cells: list[Cell], path: Path) -> None:
    """Refuse, before anything is written, cells whose clock this executor cannot honour."""
    if not executor.throttles and any(c.clock.throttled for c in cells):
        raise UserError(
            f"{path}: clock: device-throttled needs a CPU quota, which the {executor.enforcement} backend "
            "does not set here; run as root with a cgroup cpu controller, or use clock: device-scaled"
        )
    hot = next((c for c in cells if c.clock.governed), None)
    if hot is not None and not executor.governs:
        raise UserError(
            f"{path}: device {hot.device.name} throttles with cooling {hot.device.cooling}, and the "
            f"{executor.name} executor cannot lower a running cell's quota along its curve ({executor.enforcement}); "
            "use the local or ray executor on cgroups, clock: device-scaled, or cooling: fan"
        )


def check_remote_code(spec: object, cells: list, allowed: bool) -> None:
    """Whoever writes a spec does not decide alone that code from a model repository runs: the operator must say
    so on the command line too (--trust-remote-code)."""
    trusting = [c for c in cells if c.params.trust_remote_code]
    if trusting and not allowed:
        raise UserError(
            f"{spec}: trust_remote_code: true would run the Python code of {trusting[0].params.model}'s repository "
            "in its cells; pass --trust-remote-code to allow it, or remove trust_remote_code from the spec"
        )


def check_network(spec: object, asked: bool, allowed: bool, executor: str) -> None:
    """Local cells get the host's network only when the spec asks for it and the operator allows it: either alone
    is a mistake to name, not a silent no, as is asking where cells never have it (containers, Ray nodes)."""
    if asked and executor != "local":
        raise UserError(f"{spec}: network: true: {executor} cells never have network; remove it, or use --executor local")
    if asked and not allowed:
        raise UserError(f"{spec}: network: true would give cells the host's network; pass --allow-network to allow it")
    if allowed and not asked:
        raise UserError(f"--allow-network: {spec} does not set network: true; add it, or drop --allow-network")


def resolve_models(
    searches: list[FitSearch], finished: set[str], out: Path, scheduler: Scheduler, console: Console
) -> tuple[list[tuple[FitSearch, ModelResolution]], list[CellRecord], list[Cell]]:
    """Probe each search's candidates, reusing the probes already recorded and counting a resolved cell the kernel
    killed as its model's verdict (harness.plan.resolve.killed_cells): the searches' resolutions, the records of the
    probes run now and the probes that failed (their searches have no cell; the run exits as for any unmeasured
    cell)."""
    latest = {r.cell_id: r for r in load_records(out) if r.cell_id in finished}
    known = {**latest, **killed_cells(latest.values())}
    ran: list[CellRecord] = []

    def run_probes(probes: list[Cell]) -> list[CellRecord]:
        console.print(f"edgebench: probing {len(probes)} largest-fitting candidates: {some_of([p.label for p in probes])}")
        new = scheduler.run(probes)
        ran.extend(new)
        return new

    resolutions, failed = resolve_searches(searches, known, run_probes)
    for search, resolution in resolutions:
        line = f"edgebench: {search.label} -> {resolution.model}: {resolution.reason}"
        console.print(line, markup=False, highlight=False)
    return resolutions, ran, failed


def unmeasured(cells: list[Cell], records: list[CellRecord]) -> list[tuple[Cell, str]]:
    """This run's cells whose latest record is no measurement, resumed ones included: a resume that skips a
    failed cell must not pass CI as if it had been measured."""
    latest = {r.cell_id: r.status for r in records}
    return [(c, latest[c.id]) for c in cells if latest.get(c.id) in UNMEASURED]


def failure_line(failed: list[tuple[Cell, str]], total: int) -> str:
    by_status = {s: [c.label for c, status in failed if status == s] for s in UNMEASURED}
    named = "; ".join(f"{s}: {some_of(labels)}" for s, labels in by_status.items() if labels)
    return f"{len(failed)} of {total} cells gave no measurement ({named}); re-run with --retry-errors to redo them"
