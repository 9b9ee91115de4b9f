"""MeZO (Malladi et al. 2023): SPSA with the seed trick, perturbing the weights in place.

z is never stored. Every chunk of every trainable tensor has its own generator, seeded from
(query seed, tensor index, chunk index), so z is regenerated exactly for each pass, chunks are
independent, and the passes run on all of the device's threads (drawing normals is the costly part:
at this model size it costs more than the forwards when done on one thread). Extra memory: one
chunk-sized buffer per worker thread. A step with one query makes 3 passes over the weights, one draw
of z each: perturb +eps, perturb -eps twice, then restore (+eps) and update in the same pass.

Why -eps twice and not -2eps once: fl(fl(w + d) - d) is w unless fp32 cannot hold w + d (then no in-place
scheme can give w back: that element's low bits are gone), and likewise for w - d. Going through w on the
way from w + d to w - d keeps the restore bit-identical for every element where fp32 can represent both
perturbed values; fl(fl(fl(w + d) - 2d) + d) misses w by an ulp on about half of all elements.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from workloads.params import ZO_CHUNK, ZO_MAX_WORKERS

_SEED_MOD = 2**62


def no_decay(name: str, tensor: torch.Tensor) -> bool:
    """Biases and normalisation weights get no weight decay (as in the MeZO reference and AdamW practice)."""
    return tensor.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def zo_workers() -> int:
    """Threads that draw z: the cell's torch thread count (the device's cores), at most ZO_MAX_WORKERS."""
    return max(1, min(torch.get_num_threads(), ZO_MAX_WORKERS))


class MeZO:
    """One zeroth-order optimizer over a list of named tensors; `step(loss_fn, step)` runs one SPSA step."""

    def __init__(
        self,
        named: list[tuple[str, nn.Parameter]],
        lr: float,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        n_queries: int = 1,
        variant: str = "spsa",
        seed: int = 0,
        chunk: int = ZO_CHUNK,
        workers: int | None = None,
    ) -> None:
        self.tensors = [p.data for _, p in named]
        self.decay = [0.0 if no_decay(n, p) else weight_decay for n, p in named]
        self.lr, self.eps, self.n_queries, self.variant = lr, eps, n_queries, variant
        self.seed = seed
        self.chunk = max(1, min(chunk, max((t.numel() for t in self.tensors), default=1)))
        self.parts = [
            (i, start) for i, t in enumerate(self.tensors) for start in range(0, t.numel(), self.chunk)
        ]
        workers = workers or zo_workers()
        threaded = workers > 1 and sum(t.numel() for t in self.tensors) > chunk
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="mezo") if threaded else None
        )  # small: inline
        self._local = threading.local()
        self.last_projected_grads: list[float] = []

    def query_seed(self, step: int, query: int) -> int:
        return (self.seed * 1_000_003 + step * 1_009 + query) % _SEED_MOD

    def _buffer(self, like: torch.Tensor, slot: int, size: int) -> torch.Tensor:
        """This thread's reusable buffer for (dtype, device, slot)."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        key = (like.dtype, like.device, slot)
        if key not in buffers:
            buffers[key] = torch.empty(self.chunk, dtype=like.dtype, device=like.device)
        return buffers[key][:size]

    def z(self, seed: int, index: int, start: int, slot: int = 0) -> torch.Tensor:
        """z for the chunk of tensor `index` that starts at `start`, for query seed `seed` (in a reused buffer)."""
        tensor = self.tensors[index]
        size = min(self.chunk, tensor.numel() - start)
        gen = torch.Generator(device=tensor.device)
        gen.manual_seed((seed * 1_000_033 + index * 100_003 + start // self.chunk) % _SEED_MOD)
        return self._buffer(tensor, slot, size).normal_(generator=gen)

    def _part(self, index: int, start: int) -> torch.Tensor:
        return self.tensors[index].view(-1)[start : start + self.chunk]

    def _each_part(self, work: Callable[[int, int], None]) -> None:
        if self._pool is None:
            for index, start in self.parts:
                work(index, start)
        else:
            for future in [self._pool.submit(work, index, start) for index, start in self.parts]:
                future.result()

    def perturb(self, seed: int, scale: float, times: int = 1) -> None:
        """theta += scale * z(seed), `times` times over (one draw of z), chunk by chunk."""

        @torch.no_grad()
        def work(index: int, start: int) -> None:
            part, z = self._part(index, start), self.z(seed, index, start)
            for _ in range(times):
                part.add_(z, alpha=scale)

        self._each_part(work)

    def step(self, loss_fn: Callable[[], float], step: int) -> float:
        """One (n-)SPSA step; returns the mean of the perturbed losses."""
        seeds = [self.query_seed(step, q) for q in range(self.n_queries)]
        grads, losses = [], []
        for q, seed in enumerate(seeds):
            self.perturb(seed, self.eps)
            plus = loss_fn()
            self.perturb(seed, -self.eps, times=2)
            minus = loss_fn()
            grads.append((plus - minus) / (2 * self.eps))
            losses += [plus, minus]
            if q < len(seeds) - 1:
                self.perturb(seed, self.eps)  # restore before the next query; the last one is restored below
        self.last_projected_grads = grads
        self.restore_and_update(seeds, grads)
        return sum(losses) / len(losses)

    def restore_and_update(self, seeds: list[int], grads: list[float]) -> None:
        """Undo the last query's -eps, then theta -= lr * (mean_q g_q z_q + wd * theta); `sign` uses the
        sign of the averaged estimate (ZO-SignSGD). One pass: the last query's z is drawn once for both."""
        n, last = len(seeds), seeds[-1]
        simple = n == 1 and self.variant == "spsa"

        @torch.no_grad()
        def work(index: int, start: int) -> None:
            part = self._part(index, start)
            shrink = 1.0 - self.lr * self.decay[index]
            estimate = None if simple else self._buffer(part, 1, part.numel()).zero_()
            for seed, g in zip(seeds, grads, strict=True):
                z = self.z(seed, index, start)
                if seed == last:
                    part.add_(z, alpha=self.eps)
                    if shrink != 1.0:
                        part.mul_(shrink)
                if estimate is None:
                    part.add_(z, alpha=-self.lr * g)
                else:
                    estimate.add_(z, alpha=g / n)
            if estimate is not None:
                part.add_(estimate.sign_() if self.variant == "sign" else estimate, alpha=-self.lr)

        self._each_part(work)
