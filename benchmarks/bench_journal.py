"""What a MeZO journal checkpoint costs against a weights checkpoint, on the model the accuracy claim is about.

A long MeZO cell whose checkpoint must travel between machines in git cannot carry mpnet-base's weights; with
`mezo_checkpoints: journal` it carries the journal of its passes instead (workloads/mezo.py, workloads/resume.py).
For MeZO on mpnet-base (its full weights, one thread, the table noise the cells use) this prints, in one run:
- a training step's host seconds (two forwards of a full 16 x 64 batch and the step's passes; a cell's steps,
  padded to the batch's longest review, cost less) and the passes' alone;
- the journal's compressed bytes per step, against the weights checkpoint's size;
- the host seconds to resume: replaying the journal per step journaled (and the ratio to a training step), against
  reading the weights checkpoint back;
and checks that the replay gives the trained weights back bit for bit.

Run (about a minute, alone on the machine):
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_journal.py \
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

import time

import pytest
import torch

from devices.profile import format_bytes
from workloads import checkpoint
from workloads.methods import forward_loss
from workloads.mezo import MeZO
from workloads.models import build_model, select_trainable, trainable_parameters
from workloads.params import WorkloadParams
from workloads.resume import journal_tensor

STEPS = 60
EVAL_EVERY = 10  # an evaluation's restore every this many steps, as a log-spaced schedule's early ones
TRAIN_STEPS = 3  # steps timed with their forwards (each is two forwards of mpnet-base)


def mpnet_base() -> tuple[torch.nn.Module, list[tuple[str, torch.nn.Parameter]]]:
    built = build_model(WorkloadParams(model="mpnet-base", task="rotten_tomatoes"), "classification", 2)
    model = select_trainable(built.model, "full", built.family)
    return model, trainable_parameters(model)


def timed(work) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


@pytest.mark.timeout(1800)
@pytest.mark.benchmark(group="journal")
def test_journal_against_weights_checkpoint(benchmark, tmp_path):
    torch.set_num_threads(1)
    model, named = mpnet_base()
    start = [p.data.clone() for _, p in named]
    batch = {
        "input_ids": torch.randint(1000, 20000, (16, 64)),
        "attention_mask": torch.ones(16, 64, dtype=torch.long),
        "labels": torch.randint(0, 2, (16,)),
    }

    def journaled_run() -> dict[str, float]:
        opt = MeZO(named, lr=1e-6, eps=1e-2, seed=0)
        opt.keep_journal()
        train = timed(lambda: [opt.step(lambda: forward_loss(model, batch), s) for s in range(TRAIN_STEPS)])
        losses = iter(torch.rand(2 * STEPS).tolist())
        passes = timed(lambda: [_step(opt, s, losses) for s in range(TRAIN_STEPS, STEPS)])
        trained = [p.data.clone() for _, p in named]
        for (_, p), s in zip(named, start, strict=True):
            p.data.copy_(s)
        fresh = MeZO(named, lr=1e-6, eps=1e-2, seed=0)
        replay = timed(lambda: fresh.replay(opt.journal))
        assert all(torch.equal(p.data, t) for (_, p), t in zip(named, trained, strict=True))
        folder = checkpoint.Folder.open(tmp_path)
        tensors = {f"param/{n}": p.data for n, p in named}
        size = checkpoint.save(folder, {"cell_id": "bench"}, {}, tensors)
        read = timed(lambda: checkpoint.restore(checkpoint.read(folder, {"cell_id": "bench"}), tensors))
        return {
            "train": train / TRAIN_STEPS,
            "passes": passes / (STEPS - TRAIN_STEPS),
            "replay": replay / STEPS,
            "journal": journal_tensor(opt.journal).numel() / STEPS,
            "size": size,
            "read": read,
        }

    r = benchmark.pedantic(journaled_run, rounds=1, iterations=1)
    params = sum(p.numel() for _, p in named)
    print(f"\nMeZO on mpnet-base ({params / 1e6:.0f}M trained weights), one thread, {STEPS} steps journaled")
    print(f"training step (16 x 64, two forwards and the passes): {r['train']:.2f} host s; passes alone {r['passes']:.2f}")
    print(
        f"journal: {r['journal']:.0f} bytes a step (5,000 steps: {format_bytes(r['journal'] * 5000)}) vs a weights "
        f"checkpoint of {format_bytes(r['size'])}"
    )
    print(
        f"resume: replay {r['replay']:.3f} host s per step journaled ({r['replay'] / r['train']:.3f}x a training "
        f"step; 5,000 steps: {r['replay'] * 5000 / 60:.0f} min) vs reading the weights {r['read']:.2f} host s"
    )


def _step(opt: MeZO, step: int, losses) -> None:
    """A step's passes with the forwards' losses drawn at random (they only scale the update)."""
    opt.step(lambda: next(losses), step)
    if step % EVAL_EVERY == EVAL_EVERY - 1:
        opt.restore()
