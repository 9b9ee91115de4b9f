"""Each cell's private directories: its home and its sandbox's layers (made fresh, removed after it, swept
after a harness that died), and its state directory, writable by the cell alone while it runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from devices.cache import cache_dir
from devices.caps.base import pid_alive

if TYPE_CHECKING:
    from harness.run.executors.cell_user import CellUser

#: Each cell's private directory (its home, and its sandbox's layers) is CELLS_ROOT/edgebench-home-HARNESSPID-*:
#: root's, outside /tmp and /var/tmp (which the sandbox overlays), named so that a later run removes those of a
#: SIGKILLed harness.
CELLS_ROOT = Path("/var/lib/edgebench/cells")
HOME_PREFIX = "edgebench-home-"


def own_state_dir(directory: Path, user: CellUser | None) -> None:
    """A cell's state directory, writable by the cell alone: created if new, and with what an earlier segment
    left in it, given to the cell user (the harness keeps the run directory itself)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    if user is not None:
        own_tree(directory, user.uid, user.gid)


def own_tree(directory: Path, uid: int, gid: int) -> None:
    """Give a directory and everything in it (links themselves, never followed) to uid:gid."""
    os.lchown(directory, uid, gid)
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, gid)



def cells_root() -> Path:
    """Where cells' private directories are: CELLS_ROOT for a root harness; for one with CELL_CAPS (its root file
    system read-only, its /tmp memory charged to the cap), the edgebench cache, which is the harness's."""
    return CELLS_ROOT if os.geteuid() == 0 else cache_dir() / "cells"


@contextlib.contextmanager
def private_home(user: CellUser) -> Iterator[Path]:
    """A fresh home that only the cell's user may enter, in a private directory of the harness's that also holds its
    sandbox's layers; removed, with whatever the cell left in either, after it."""
    root = cells_root()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)  # cells pass through to their own home, and list nothing
    private = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-", dir=root))
    try:
        os.chmod(private, 0o711)
        home = private / "home"
        home.mkdir(mode=0o700)
        os.chown(home, user.uid, user.gid)
        yield home
    finally:
        remove_private(private)


def remove_private(private: Path) -> None:
    """Remove a cell's private directory, first taking back what the cell made there (a harness that is not root may
    not enter the cell's directories to remove their files)."""
    with contextlib.suppress(OSError):
        own_tree(private, os.geteuid(), os.getegid())
    shutil.rmtree(private, ignore_errors=True)


def sweep_homes() -> None:
    """Remove the private directories of harnesses that died (SIGKILLed) before they could."""
    for private in cells_root().glob(f"{HOME_PREFIX}*"):
        pid = private.name.removeprefix(HOME_PREFIX).partition("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            remove_private(private)

