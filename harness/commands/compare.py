"""PLACEHOLDER for `edgebench compare`: built by its own issue."""

from __future__ import annotations

import argparse

from harness.errors import UserError

HELP = "compare (not built yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def handle(args: argparse.Namespace) -> int:
    raise UserError("`edgebench compare` is not built yet")
