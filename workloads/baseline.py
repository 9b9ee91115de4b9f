"""The runtime baseline R of the memory model: measured, never assumed.

`python -m workloads.baseline THREADS` imports what a cell imports, builds and runs a tiny model
through the cell's own code path on THREADS torch threads (so torch's thread pools, allocator and
lazy kernels are initialised), and prints its peak RSS (VmHWM). The memory model runs it once per
environment (Python, library versions, interpreter path, processor) and thread count and caches
the figure under ~/.cache/edgebench/.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from devices.cache import measured_once
from devices.environment import CELL_LIBRARIES

#: A model whose own memory is negligible (a few hundred KiB) next to R.
PROBE_CONFIG = {
    "model_type": "opt",
    "vocab_size": 64,
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "ffn_dim": 16,
    "max_position_embeddings": 16,
    "word_embed_proj_dim": 8,
}


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def default_threads() -> int:
    """torch's threads in a process that sets none: one per CPU (a cell's come from its clock)."""
    return os.cpu_count() or 1


def measure_in_this_process(real_task: bool = False, threads: int | None = None) -> int:
    """Peak RSS after the imports and first use of a cell's code path on `threads` torch threads. With
    real_task, also what a real task adds before its data: the datasets library loading a small labelled
    file, and a tokenizer."""
    import torch

    torch.set_num_threads(threads or default_threads())
    from transformers import AutoConfig, AutoModelForCausalLM

    import workloads.cell  # noqa: F401 - everything a cell imports
    from workloads.methods import Backprop, ZerothOrder  # noqa: F401

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**PROBE_CONFIG))
    ids = torch.randint(0, 64, (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    if real_task:
        import tempfile

        from workloads.models import load_tokenizer
        from workloads.params import WorkloadParams
        from workloads.tasks import real_task as load_real_task

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "probe.csv"
            path.write_text("text,label\n" + "".join(f"probe review {i},{i % 2}\n" for i in range(64)))
            params = WorkloadParams(model="minilm-l1", task=str(path), batch=4, seq_len=16, eval_examples=8)
            load_real_task(params, load_tokenizer(params.model, params.trust_remote_code))
    return peak_rss_bytes()


@functools.cache
def runtime_baseline_bytes(real_task: bool = False, threads: int | None = None) -> int | None:
    """R for this environment and thread count (default: one per CPU; and for real tasks, which also load
    datasets and a tokenizer): from the cache, else measured now in a fresh subprocess (a few seconds).
    None when it cannot be measured here (then there is no prediction, rather than a guessed one)."""
    kind = "real-task" if real_task else "synthetic"
    threads = threads or default_threads()
    figure = measured_once(
        f"runtime-{kind}-{threads}t",
        ["workloads.baseline", str(threads), *(["--real-task"] if real_task else [])],
        packages=CELL_LIBRARIES,
        valid=lambda value: isinstance(value, int) and value > 0,
    )
    return figure


if __name__ == "__main__":
    print(measure_in_this_process(real_task="--real-task" in sys.argv[1:], threads=int(sys.argv[1])))
