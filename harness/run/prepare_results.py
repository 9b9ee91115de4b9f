"""Compose's `prepare` step: create the run's folder in the results mount and hand it and the cache volume to the
services' user. It runs as uid 0 with CHOWN and DAC_OVERRIDE, so its values (from the environment, which compose
fills from `.env`) never pass through a shell and are checked first: the run name is one folder name, the owner a
numeric uid:gid. `python -I -m harness.run.prepare_results RESULTS CACHE` (the mounts' paths, fixed by the generated
file); imports nothing heavy (its container has 32 MiB)."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

from harness.record.names import NAME_PATTERN

#: The environment variables compose hands in (exec form: no shell reads them).
ENV_RUN, ENV_OWNER = "EDGEBENCH_RUN", "EDGEBENCH_OWNER"


class PrepareError(ValueError):
    """A value or a path `prepare` refuses; its message is one line with the fix."""


def parse_owner(owner: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,10}):(\d{1,10})", owner)
    if match is None:
        raise PrepareError(f"EDGEBENCH_USER {owner!r} is not uid:gid in numbers; set e.g. EDGEBENCH_USER=$(id -u):$(id -g)")
    return int(match.group(1)), int(match.group(2))


def check_run(run: str) -> str:
    if re.fullmatch(NAME_PATTERN, run) is None:
        raise PrepareError(f"EDGEBENCH_RUN {run!r} is not one folder name; use letters, digits, '.', '_' and '-'")
    return run


def prepare(results: Path, cache: Path, run: str, owner: str) -> Path:
    """The run's folder, created (a symlink in its place is refused, not followed) and given with `cache` to
    `owner`."""
    uid, gid = parse_owner(owner)
    folder = results / check_run(run)
    try:
        os.mkdir(folder, 0o755)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise PrepareError(f"{folder} exists and is not a folder; remove it") from None
    for path in (folder, cache):
        os.chown(path, uid, gid, follow_symlinks=False)
    return folder


def main(argv: list[str]) -> int:
    try:
        results, cache = argv
        prepare(Path(results), Path(cache), os.environ.get(ENV_RUN, ""), os.environ.get(ENV_OWNER, ""))
    except (PrepareError, OSError) as exc:
        print(f"edgebench prepare: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
