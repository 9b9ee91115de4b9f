"""The memory model's allocator terms that are measured on this host rather than carried from the one they were fitted on.

What glibc's heap keeps of a no-grad forward's freed working set (docs/workloads.md, "The allocator") depends on the
host: its C library, torch's build and thread count. So each of ALLOCATOR_TERMS is measured once per environment
and thread count: a pair of reference cells of one model, small and large (REFERENCES, a few seconds each), runs
through the cells' own code path, each in REPEATS fresh processes (`python -m workloads.calibration TERM INDEX
THREADS` prints the median peak RSS: one run moves by up to about 5%), and the term is the value that makes the
model predict the difference of their peaks (`host_memory.host_allocator`; the difference cancels what does not
grow with the shape: the runtime, the weights, first-use buffers). Cached like the runtime baseline
(`devices.cache`).
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from devices.pyexec import SAFE_CWD, module_argv
from workloads.params import WorkloadParams

#: term -> (small, large) reference cells: BERT's inference on the synthetic task (no data to load) at batch 1 and
#: 32 x 256, where the no-grad working set is 3 and 88 MiB.
REFERENCES = {
    "no_grad_retention": (
        WorkloadParams(model="bert-11m", method="inference", batch=1, seq_len=256, max_steps=3),
        WorkloadParams(model="bert-11m", method="inference", batch=32, seq_len=256, max_steps=3),
    ),
}
ALLOCATOR_TERMS = tuple(REFERENCES)
REPEATS = 3


def reference_peak(term: str, index: int, threads: int) -> int:
    """Peak RSS (VmHWM) of `term`'s reference cell `index` run here, on `threads` torch threads, as a cell runs it:
    its model and task prepared, then its steps."""
    import torch

    from workloads.baseline import peak_rss_bytes
    from workloads.cell import prepare
    from workloads.methods import make_method
    from workloads.models import trainable_parameters

    torch.set_num_threads(threads)
    params = REFERENCES[term][index]
    torch.manual_seed(params.seed)
    model, task, _ = prepare(params, torch.device("cpu"))
    method = make_method(params, model, trainable_parameters(model))
    for step in range(params.max_steps or 1):
        method.step(task.batch(step), step)
    return peak_rss_bytes()


def median_peak(term: str, index: int, threads: int) -> int:
    """The median of REPEATS fresh processes' `reference_peak` (each its own heap and address layout)."""
    runs = [
        subprocess.run(
            module_argv("workloads.calibration", term, str(index), str(threads), "--once"),
            cwd=SAFE_CWD,
            capture_output=True,
            text=True,
            check=True,
        )
        for _ in range(REPEATS)
    ]
    return int(statistics.median(int(run.stdout.strip().splitlines()[-1]) for run in runs))


if __name__ == "__main__":
    term, index, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(reference_peak(term, index, threads) if "--once" in sys.argv[4:] else median_peak(term, index, threads))
