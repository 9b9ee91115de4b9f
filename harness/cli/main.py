"""The `edgebench` console script: one subcommand per module in harness.cli.commands."""

from __future__ import annotations

import argparse
import signal
import sys
from importlib import import_module

from harness.record.errors import UserError
from harness.run import harness_user
from harness.run.interrupts import Interrupted, exit_code

COMMANDS = ("run", "status", "doctor", "devices", "estimate", "report", "compare", "compose", "docker-up")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or only `command`'s fully (the others bare): a run then does not import what
    other commands need (compare's scipy alone takes a second), which a resumed or restarted run pays each time."""
    parser = argparse.ArgumentParser(
        prog="edgebench",
        description="Can this device fine-tune this model, with which method, how fast and how well?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if command in COMMANDS and name != command:
            sub.add_parser(name)
            continue
        module = import_module(f"harness.cli.commands.{name.replace('-', '_')}")
        parsed = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(parsed)
        parsed.set_defaults(handler=module.handle)
    return parser


def _interrupt(signum, frame) -> None:
    raise Interrupted(signum)  # `docker stop` sends SIGTERM: clean up cells exactly as on Ctrl-C


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    # A shell that starts us in the background hands SIGINT over ignored; Ctrl-C must still clean up.
    signal.signal(signal.SIGINT, _interrupt)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        harness_user.become_from_env()  # before any thread: the change of uid must reach the whole process
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"edgebench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("edgebench: interrupted; re-run the same command to resume", file=sys.stderr)
        return exit_code(exc)

