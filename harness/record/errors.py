"""Errors the user can fix: the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input. The message names the problem and the fix, in one line."""

    exit_code = 2
