"""Figures of this environment that are measured once in a fresh subprocess and cached, never assumed.

The runtime baseline of the memory model and the host's matmul throughput are both such figures:
`measured_once` looks one up under ~/.cache/edgebench (or $EDGEBENCH_CACHE), keyed by everything
that changes it, else runs `python -m MODULE ARGS` (which prints the figure as its last line of JSON)
and stores the result atomically. Concurrent harnesses (containers sharing a cache volume, test workers)
take turns under a lock, so the first measures and the others read its figure. A read-only home only loses
the cache, not the figure.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devices.environment import OFFLINE_ENV, library_versions
from devices.pyexec import SAFE_CWD, module_argv


def cache_dir() -> Path:
    root = os.environ.get("EDGEBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgebench")
    return Path(root)


def allocator_environment() -> dict[str, str]:
    """The C allocator's tuning in this environment (glibc reads GLIBC_TUNABLES and the MALLOC_*_ variables at
    start-up): it changes what a freed tensor leaves resident, so cells inherit it and cached memory figures are
    keyed on it."""
    return {k: v for k, v in os.environ.items() if k == "GLIBC_TUNABLES" or k.startswith("MALLOC_")}


def environment(packages: tuple[str, ...]) -> dict[str, str]:
    """What a cached measurement depends on: interpreter, the packages it uses, processor and allocator tuning."""
    versions = library_versions(packages)
    return {
        "python": sys.executable,
        "python_version": versions.pop("python"),
        "cpu": cpu_model(),
        **versions,
        **allocator_environment(),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def measured_once(
    kind: str,
    argv: list[str],
    packages: tuple[str, ...],
    valid: Callable[[Any], bool] = lambda figure: True,
    timeout_s: float = 300,
) -> Any:
    """The cached figure `kind` for this environment (keyed on `packages`' versions), else `python -m argv...`
    run now and cached. A cached figure that is not `valid` (e.g. hand-edited) is measured again.

    None when the measurement fails here: callers then have no figure rather than a guessed one."""
    env_facts = environment(packages)
    key = hashlib.sha256(json.dumps(env_facts, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"{kind}-{key}.json"
    with _turn(path):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            figure = json.loads(path.read_text())["figure"]
            if valid(figure):
                return figure
        figure = _measure(argv, timeout_s)
        if figure is None or not valid(figure):
            return None
        with contextlib.suppress(OSError):  # a read-only home (e.g. a read-only container) only loses the cache
            # mkstemp, not the pid: containers sharing a volume all run the harness under the same small pid.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump({"figure": figure, "environment": env_facts}, handle)
            os.replace(tmp, path)
        return figure


@contextlib.contextmanager
def _turn(path: Path) -> Iterator[None]:
    """Hold `path`'s lock while looking it up and measuring it; no lock (and no cache) where it cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 - held across the yield
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _measure(argv: list[str], timeout_s: float) -> Any:
    """The figure `python -m argv...` prints as its last line of JSON, or None when it fails."""
    try:
        out = subprocess.run(
            module_argv(*argv),
            cwd=SAFE_CWD,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **OFFLINE_ENV},
            timeout=timeout_s,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
