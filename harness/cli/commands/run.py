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

from harness.plan.input_guards import MAX_CELLS
from harness.plan.spec import load_spec
from harness.record.errors import UserError
from harness.record.store import RunStore
from harness.run.executors import EXECUTORS
from harness.run.executors.cell_user import DEFAULT_CELL_USER, ENV_CELL_USER
from harness.run.matrix import RunRequest, check_request, failure_line, run_matrix, start_executor

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


def handle(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give at least 1")
    loaded = load_spec(args.spec, args.max_cells)
    request = RunRequest(
        out=args.out or Path("results") / loaded.spec.name,
        executor=args.executor,
        jobs=args.jobs,
        enforcement=args.enforcement,
        devices=args.device,
        allow_network=args.allow_network,
        trust_remote_code=args.trust_remote_code,
        fresh=args.fresh,
        retry_errors=args.retry_errors,
    )
    check_request(loaded, request)
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address  # read by the Ray executor, as Ray's own tools read it
    if args.cell_user:
        os.environ[ENV_CELL_USER] = args.cell_user  # read by the local executor, here and inside executors that use it
    executor = start_executor(loaded, request)
    console = Console(stderr=True, soft_wrap=True)
    try:
        outcome = run_matrix(loaded, executor, RunStore(request.out, request.devices), request, console)
    finally:
        executor.close()
    report = None
    if not args.no_report:
        from reports.html import write_report

        report = write_report(request.out)
        console.print(f"edgebench: report written to {report}")
    if args.json:
        counts: dict[str, int] = {}
        for record in outcome.ran:
            counts[record.status] = counts.get(record.status, 0) + 1
        print(
            json.dumps({"run_dir": str(request.out), "report": str(report) if report else None, "ran": counts})
        )
    if outcome.unmeasured:
        line = failure_line(outcome.unmeasured, len(outcome.cells))
        console.print(f"edgebench: {line}", markup=False, highlight=False)
        return EXIT_CELLS_FAILED
    return 0
