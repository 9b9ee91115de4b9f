"""Run a spec's matrix: every cell in isolation under its device's caps, results to RUN_DIR/results.jsonl.

Re-running into the same directory resumes: finished cells are skipped (with --retry-errors, cells that
ended error or timeout are redone). Exit codes: 0 every cell gave a measurement (ok or oom), 2 bad input,
3 some cell ended error or timeout (it is named), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console

from harness.cells import Cell
from harness.errors import UserError
from harness.executors import EXECUTORS, executor_class
from harness.executors.base import Executor
from harness.executors.cell_user import DEFAULT_CELL_USER, ENV_CELL_USER
from harness.limits import MAX_CELLS
from harness.records import CellRecord, ModelResolution
from harness.resolve import Arm, killed_cells, resolve_arms
from harness.runinfo import describe_run
from harness.scheduler import Scheduler
from harness.spec import check_host_capacity, load_spec, some_of
from harness.store import UNMEASURED, RunStore, check_writable, load_records

HELP = "run a spec's matrix of cells"
#: Some cell gave no measurement (error or timeout); 1 is Python's own failure, 2 is bad input.
EXIT_CELLS_FAILED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="spec YAML (default: the built-in default matrix)")
    parser.add_argument("--out", type=Path, help="run directory (default: results/<the spec's name>)")
    parser.add_argument("--executor", choices=list(EXECUTORS), default="local")
    parser.add_argument(
        "--jobs", type=int, default=1, help="cells at once, while their caps fit in free memory and their cores"
    )
    parser.add_argument("--enforcement", default="auto", help="auto, cgroup-v2, cgroup-v1 or rlimit")
    parser.add_argument(
        "--address", metavar="HOST:PORT", help="the Ray cluster for --executor ray (default: $RAY_ADDRESS, else a local one)"
    )
    parser.add_argument("--device", action="append", help="run only this device of the spec (repeatable)")
    parser.add_argument(
        "--cell-user",
        metavar="NAME",
        help=f"as root, run cells as this user, so that they cannot lift their own caps (default ${ENV_CELL_USER}, "
        f"else {DEFAULT_CELL_USER}; root runs them as root)",
    )
    parser.add_argument(
        "--allow-network",
        action="store_true",
        help="let local cells use the host's network when the spec also sets network: true (else they have none)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow cells whose spec sets trust_remote_code: true to run their model repository's own Python code",
    )
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="fresh", action="store_false", help="skip finished cells (default)")
    resume.add_argument("--fresh", dest="fresh", action="store_true", help="redo every cell")
    parser.set_defaults(fresh=False)
    parser.add_argument(
        "--retry-errors", action="store_true", help="on resume, also redo cells that ended error or timeout"
    )
    parser.add_argument(
        "--max-cells", type=int, default=MAX_CELLS, metavar="N", help=f"refuse a spec of over N cells (default {MAX_CELLS:,})"
    )
    parser.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


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


def handle(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give at least 1")
    loaded = load_spec(args.spec, args.max_cells)
    args.out = args.out or Path("results") / loaded.spec.name
    cells = loaded.cells_for(args.device)
    check_remote_code(loaded.path, [*cells, *loaded.arms_for(args.device)], args.trust_remote_code)
    check_network(loaded.path, loaded.spec.network, args.allow_network, args.executor)
    if args.executor != "ray":  # a Ray cell runs on a node of the cluster: the executor's admission checks that
        check_host_capacity(loaded.devices_for(args.device))
    check_writable(args.out)
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address  # read by the Ray executor, as Ray's own tools read it
    if args.cell_user:
        os.environ[ENV_CELL_USER] = args.cell_user  # read by the local executor, here and inside executors that use it
    spec = loaded.spec
    executor = executor_class(args.executor)(args.out, spec.timeout_s, args.enforcement, spec.checkpoint_seconds)
    executor.allow_network = spec.network and args.allow_network
    arms = loaded.arms_for(args.device)
    try:
        executor.admit([*cells, *(probe for arm in arms for probe in arm.probes.values())])
        check_clocks(executor, cells, loaded.path)
    except UserError:
        executor.close()
        raise
    console = Console(stderr=True, soft_wrap=True)
    try:
        store = RunStore(args.out, args.device)
        run_info = describe_run(loaded, executor, args.jobs, args.device, loaded.cells)
        done = store.prepare(run_info, fresh=args.fresh, retry_errors=args.retry_errors)
        for note in loaded.notes():
            console.print(f"edgebench: note: {note}", markup=False, highlight=False)
        scheduler = Scheduler(executor, store, args.jobs, console)
        records: list[CellRecord] = []
        failed_probes: list[Cell] = []
        resolved: list[Cell] = []
        finished = set(done)
        while True:  # one pass, unless resolved cells were killed at the cap: then their arms resolve again
            if arms:
                resolutions, probes, failed_probes = resolve_models(arms, finished, args.out, scheduler, console)
                records += probes
                finished |= {r.cell_id for r in probes}
                resolved = [arm.cell(r) for arm, r in resolutions if not arm.probe_only]
                info = describe_run(loaded, executor, args.jobs, args.device, [*loaded.cells, *resolved])
                store.describe({**info, "resolutions": [resolution_entry(arm, r) for arm, r in resolutions]})
            todo = [*cells, *resolved]
            pending = [c for c in todo if c.id not in finished]
            console.print(
                f"edgebench: {len(todo)} cells ({len(todo) - len(pending)} already done), "
                f"enforcement {executor.enforcement}, executor {executor.name}, out {args.out}"
            )
            ran = scheduler.run(pending)
            records += ran
            finished |= {c.id for c in pending}
            if not any(r.status == "oom" and r.resolution is not None for r in ran):
                break
        cells = todo
    finally:
        executor.close()
    report = None
    if not args.no_report:
        from reports.html import write_report

        report = write_report(args.out)
        console.print(f"edgebench: report written to {report}")
    if args.json:
        counts: dict[str, int] = {}
        for record in records:
            counts[record.status] = counts.get(record.status, 0) + 1
        print(
            json.dumps({"run_dir": str(args.out), "report": str(report) if report else None, "ran": counts})
        )
    failed = unmeasured([*cells, *failed_probes], load_records(args.out))
    if failed:
        console.print(f"edgebench: {failure_line(failed, len(cells))}", markup=False, highlight=False)
        return EXIT_CELLS_FAILED
    return 0


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
    arms: list[Arm], finished: set[str], out: Path, scheduler: Scheduler, console: Console
) -> tuple[list[tuple[Arm, ModelResolution]], list[CellRecord], list[Cell]]:
    """Probe each arm's candidates, reusing the probes already recorded and counting a resolved cell the kernel
    killed as its model's verdict (harness.resolve.killed_cells): the arms' resolutions, the records of the
    probes run now and the probes that failed (their arms have no cell; the run exits as for any unmeasured cell)."""
    latest = {r.cell_id: r for r in load_records(out) if r.cell_id in finished}
    known = {**latest, **killed_cells(latest.values())}
    ran: list[CellRecord] = []

    def run_probes(probes: list[Cell]) -> list[CellRecord]:
        console.print(f"edgebench: probing {len(probes)} largest-fitting candidates: {some_of([p.label for p in probes])}")
        new = scheduler.run(probes)
        ran.extend(new)
        return new

    resolutions, failed = resolve_arms(arms, known, run_probes)
    for arm, resolution in resolutions:
        line = f"edgebench: {arm.label} -> {resolution.model}: {resolution.reason}"
        console.print(line, markup=False, highlight=False)
    return resolutions, ran, failed


def resolution_entry(arm: Arm, resolution: ModelResolution) -> dict[str, object]:
    """run.json's account of one arm: which device and workload, and which model it resolved to and why."""
    return {
        "arm": arm.label,
        "device": arm.device.name,
        "params": arm.params.model_dump(exclude={"model"}),
        **resolution.model_dump(),
    }


def unmeasured(cells: list[Cell], records: list[CellRecord]) -> list[tuple[Cell, str]]:
    """This run's cells whose latest record is no measurement, resumed ones included: a resume that skips a
    failed cell must not pass CI as if it had been measured."""
    latest = {r.cell_id: r.status for r in records}
    return [(c, latest[c.id]) for c in cells if latest.get(c.id) in UNMEASURED]


def failure_line(failed: list[tuple[Cell, str]], total: int) -> str:
    by_status = {s: [c.label for c, status in failed if status == s] for s in UNMEASURED}
    named = "; ".join(f"{s}: {some_of(labels)}" for s, labels in by_status.items() if labels)
    return f"{len(failed)} of {total} cells gave no measurement ({named}); re-run with --retry-errors to redo them"
