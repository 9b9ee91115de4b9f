"""Where a run stands while it is under way: its records by role and status, and for each cell a checkpoint holds
mid-way (an interrupted or running cell), the step, training seconds and validation accuracy it reached, and its
checkpoint's form and size. Reads RUN_DIR alone; a run in progress is not disturbed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "show where a run stands: records, and the cells under way with their last checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a directory written by `edgebench run`")


def handle(args: argparse.Namespace) -> int:
    from harness.record.progress import status_lines  # reads checkpoints: torch, only for this command

    print("\n".join(status_lines(args.run_dir)))
    return 0
