"""List the device catalogue: the built-in devices plus the device files given with --file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from devices.catalogue import USER_FILE
from devices.profile import DeviceProfile, format_bytes
from harness.plan.spec_devices import device_catalogue

HELP = "list the device catalogue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_file_argument(parser)


def add_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file", action="append", type=Path, default=[], help=f"a device YAML file to read (e.g. {USER_FILE})"
    )


def user_catalogue(files: list[Path] | None = None) -> dict[str, DeviceProfile]:
    """The built-in devices, then `files` (read as `run` reads a spec's device_files)."""
    return device_catalogue(files or [], "fix the --file path")


def note_unread(files: list[Path]) -> None:
    """A devices.yaml in the current directory is read only when given, as a spec reads one only when it names
    it: say so (stderr), with the flag that reads it."""
    if Path(USER_FILE).is_file() and Path(USER_FILE).resolve() not in {f.resolve() for f in files}:
        print(f"edgebench: note: ./{USER_FILE} is not read; pass --file {USER_FILE} to use its devices", file=sys.stderr)


def handle(args: argparse.Namespace) -> int:
    note_unread(args.file)
    catalogue = user_catalogue(args.file)
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
