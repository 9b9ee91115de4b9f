"""PLACEHOLDER for `edgebench report`: built by its own issue."""

from __future__ import annotations

import argparse

from harness.errors import UserError

HELP = "report (not built yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def handle(args: argparse.Namespace) -> int:
    raise UserError("`edgebench report` is not built yet")
