"""List the device catalogue (built-in devices plus a devices.yaml in the current directory)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from devices.catalogue import USER_FILE, CatalogueError, load_catalogue
from devices.profile import DeviceProfile, format_bytes
from harness.errors import UserError

HELP = "list the device catalogue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--file", action="append", type=Path, default=[], help="extra device YAML file(s)")


def user_catalogue(files: list[Path] | None = None) -> dict[str, DeviceProfile]:
    """The built-in devices, then a devices.yaml in the current directory, then `files`: as `run` reads them;
    a bad device file is bad input."""
    extra = [*([Path(USER_FILE)] if Path(USER_FILE).exists() else []), *(files or [])]
    try:
        return load_catalogue(extra)
    except CatalogueError as exc:
        raise UserError(str(exc)) from None


def handle(args: argparse.Namespace) -> int:
    catalogue = user_catalogue(list(args.file))
    if args.json:
        print(json.dumps([p.model_dump() for p in catalogue.values()], indent=2))
        return 0
    table = Table(title="edgebench devices")
    columns = ("name", "memory", "bytes", "cpus", "GPU memory", "GFLOPS", "GB/s", "speed source", "description")
    for column in (*columns, "source"):
        table.add_column(column, overflow="fold")
    for p in catalogue.values():
        table.add_row(
            p.name,
            format_bytes(p.memory_bytes),
            str(p.memory_bytes),
            f"{p.cpus:g}",
            f"{format_bytes(p.gpu_cap_bytes)}{' (unified)' if p.unified_memory else ''}",
            _figure(p.gflops),
            _figure(p.bandwidth_gbs),
            p.gflops_source or ("no throughput: cells run at host speed" if p.gflops is None else "-"),
            p.description,
            p.source,
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped: wide enough for the figures
    return 0


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
