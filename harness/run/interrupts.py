"""Stopping a run by a signal: the cells in flight are killed and cleaned up first, then the CLI exits 128 + the
signal's number, as a shell reports a process killed by it (130 for Ctrl-C, 143 for `kill` or `docker stop`)."""

from __future__ import annotations

import signal


class Interrupted(KeyboardInterrupt):
    """Raised at a safe point once a signal asked the run to stop; says which signal it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the stopping signal's number; a bare KeyboardInterrupt is Ctrl-C's."""
    return 128 + getattr(exc, "signum", signal.SIGINT)
