"""The `edgebench` console script: one subcommand per module in harness.commands."""

from __future__ import annotations

import argparse
import signal
import sys
from importlib import import_module

from harness.errors import UserError

COMMANDS = ("run", "doctor", "devices", "estimate", "report", "compare", "compose")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgebench",
        description="Can this device fine-tune this model, with which method, how fast and how well?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = import_module(f"harness.commands.{name}")
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(command)
        command.set_defaults(handler=module.handle)
    return parser


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # `docker stop` sends SIGTERM: clean up cells exactly as on Ctrl-C


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    # A shell that starts us in the background hands SIGINT over ignored; Ctrl-C must still clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"edgebench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgebench: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
