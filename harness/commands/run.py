"""Run a spec's matrix: every cell in isolation under its device's caps, results to RUN_DIR/results.jsonl.

Re-running into the same directory resumes: finished cells are skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from harness.errors import UserError
from harness.executors import EXECUTORS, executor_class
from harness.runinfo import describe_run
from harness.scheduler import Scheduler
from harness.spec import load_spec
from harness.store import RunStore, check_writable

HELP = "run a spec's matrix of cells"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="spec YAML (default: the built-in default matrix)")
    parser.add_argument("--out", type=Path, default=Path("results/default"), help="run directory")
    parser.add_argument("--executor", choices=list(EXECUTORS), default="local")
    parser.add_argument(
        "--jobs", type=int, default=1, help="cells at once, while their caps fit in free memory"
    )
    parser.add_argument("--enforcement", default="auto", help="auto, cgroup-v2, cgroup-v1 or rlimit")
    parser.add_argument("--device", action="append", help="run only this device of the spec (repeatable)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="fresh", action="store_false", help="skip finished cells (default)")
    resume.add_argument("--fresh", dest="fresh", action="store_true", help="redo every cell")
    parser.set_defaults(fresh=False)
    parser.add_argument("--no-report", action="store_true", help="do not write the HTML report at the end")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def handle(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give at least 1")
    loaded = load_spec(args.spec)
    cells = loaded.cells_for(args.device)
    check_writable(args.out)
    executor = executor_class(args.executor)(args.out, loaded.spec.timeout_s, args.enforcement)
    if not executor.throttles and any(c.clock.throttled for c in cells):
        executor.close()
        raise UserError(
            f"{loaded.path}: clock: device-throttled needs a CPU quota, which the {executor.enforcement} backend "
            "does not set here; run as root with a cgroup cpu controller, or use clock: device-scaled"
        )
    console = Console(stderr=True, soft_wrap=True)
    try:
        store = RunStore(args.out)
        done = store.prepare(describe_run(loaded, executor), fresh=args.fresh)
        pending = [c for c in cells if c.id not in done]
        console.print(
            f"edgebench: {len(cells)} cells ({len(cells) - len(pending)} already done), "
            f"enforcement {executor.enforcement}, executor {executor.name}, out {args.out}"
        )
        records = Scheduler(executor, store, args.jobs, console).run(pending)
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
    return 0
