"""One device slice's writer, as `edgebench run --device SLICE` writes a shared run directory, for test_writers.

    python -m tests.concurrent_writer RUN_DIR SLICE RECORDS [--tear]

Every process claims pid 1, as the harness does in each compose container under `init: true`. It writes its
slice's run info, then appends RECORDS records (skipping those already stored: a resume), printing each cell
id once its append has returned. --tear dies by SIGKILL halfway through writing its first record's line.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from harness.record import store
from harness.record.runinfo import HostFacts
from tests.records_factory import make_record, make_run_info


def tear_writes() -> None:
    """The next write to results.jsonl puts half its bytes in the file, then the process is SIGKILLed."""
    real_write = os.write

    def half_then_die(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        signal.raise_signal(signal.SIGKILL)
        return 0

    os.write = half_then_die  # the store's single write() per line goes through os.write


def main(run_dir: Path, slice_name: str, count: int, tear: bool) -> None:
    os.getpid = lambda: 1  # type: ignore[assignment]
    writer = store.RunStore(run_dir, [slice_name])
    host = HostFacts(hostname=slice_name, platform="Linux", cpus=1, memory_bytes=1 << 30)
    done = writer.prepare(make_run_info(spec_hash="shared", host=host), fresh=False)
    if tear:
        tear_writes()
    for seed in range(count):
        record = make_record(device=slice_name, seed=seed)
        if record.cell_id in done:
            continue
        writer.append(record)
        print(record.cell_id, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), "--tear" in sys.argv[4:])
