"""List the device catalogue (built-in devices plus a devices.yaml in the current directory)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from devices.catalogue import USER_FILE, CatalogueError, load_catalogue
from devices.profile import format_bytes
from harness.errors import UserError

HELP = "list the device catalogue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--file", action="append", type=Path, default=[], help="extra device YAML file(s)")


def handle(args: argparse.Namespace) -> int:
    extra = list(args.file)
    if Path(USER_FILE).exists():
        extra.insert(0, Path(USER_FILE))
    try:
        catalogue = load_catalogue(extra)
    except CatalogueError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps([p.model_dump() for p in catalogue.values()], indent=2))
        return 0
    table = Table(title="edgebench devices")
    for column in ("name", "memory", "bytes", "cpus", "gpu frac", "description", "source"):
        table.add_column(column, overflow="fold")
    for p in catalogue.values():
        table.add_row(
            p.name,
            format_bytes(p.memory_bytes),
            str(p.memory_bytes),
            f"{p.cpus:g}",
            "-" if p.gpu_memory_fraction is None else f"{p.gpu_memory_fraction:g}",
            p.description,
            p.source,
        )
    Console().print(table)
    return 0
