"""MeZO (Malladi et al. 2023): SPSA with the seed trick, perturbing the weights in place.

z is never stored: each trainable tensor gets its own generator seeded from (query seed, tensor index), and
z is drawn in chunks into one reusable buffer, so a pass costs one normal_ per chunk and the extra memory is
one chunk (at most the largest tensor). A step makes 3 passes over the weights for n_queries=1:
perturb +eps, perturb -2eps, then restore and update fused in one pass (z drawn once for both).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from workloads.params import ZO_CHUNK

_SEED_MOD = 2**62


def no_decay(name: str, tensor: torch.Tensor) -> bool:
    """Biases and normalisation weights get no weight decay (as in the MeZO reference and AdamW practice)."""
    return tensor.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


class MeZO:
    """One zeroth-order optimizer over a list of named tensors; `step(loss_fn)` runs one SPSA step."""

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
    ) -> None:
        self.tensors = [p.data for _, p in named]
        self.decay = [0.0 if no_decay(n, p) else weight_decay for n, p in named]
        self.lr, self.eps, self.n_queries, self.variant = lr, eps, n_queries, variant
        self.seed = seed
        self.chunk = max(1, min(chunk, max((t.numel() for t in self.tensors), default=1)))
        self._buffers: dict[tuple[torch.dtype, torch.device, int], torch.Tensor] = {}
        self.last_projected_grads: list[float] = []

    def query_seed(self, step: int, query: int) -> int:
        return (self.seed * 1_000_003 + step * 1_009 + query) % _SEED_MOD

    def _buffer(self, like: torch.Tensor, slot: int = 0) -> torch.Tensor:
        key = (like.dtype, like.device, slot)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(self.chunk, dtype=like.dtype, device=like.device)
        return self._buffers[key]

    def _generator(self, seed: int, index: int, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed((seed * 1_000_033 + index) % _SEED_MOD)

    def _chunks(self, tensor: torch.Tensor):
        flat = tensor.view(-1)
        for start in range(0, flat.numel(), self.chunk):
            yield flat[start : start + self.chunk]

    def z_chunks(self, seed: int, index: int, slot: int = 0):
        """(weight chunk, z chunk) pairs of tensor `index` for query seed `seed`; z lives in a reused buffer."""
        tensor = self.tensors[index]
        gen = self._generator(seed, index, tensor.device)
        for part in self._chunks(tensor):
            yield part, self._buffer(tensor, slot)[: part.numel()].normal_(generator=gen)

    @torch.no_grad()
    def perturb(self, seed: int, scale: float) -> None:
        """theta += scale * z(seed), one tensor and one chunk at a time."""
        for index in range(len(self.tensors)):
            for part, z in self.z_chunks(seed, index):
                part.add_(z, alpha=scale)

    def step(self, loss_fn: Callable[[], float], step: int) -> float:
        """One (n-)SPSA step; returns the mean of the two perturbed losses."""
        seeds = [self.query_seed(step, q) for q in range(self.n_queries)]
        grads, losses = [], []
        for q, seed in enumerate(seeds):
            self.perturb(seed, self.eps)
            plus = loss_fn()
            self.perturb(seed, -2 * self.eps)
            minus = loss_fn()
            grads.append((plus - minus) / (2 * self.eps))
            losses += [plus, minus]
            if q < len(seeds) - 1:
                self.perturb(seed, self.eps)  # restore before the next query; the last restore is fused below
        self.last_projected_grads = grads
        self.restore_and_update(seeds, grads)
        return sum(losses) / len(losses)

    @torch.no_grad()
    def restore_and_update(self, seeds: list[int], grads: list[float]) -> None:
        """Undo the last query's -eps, then theta -= lr * (mean_q g_q z_q + wd * theta) (or its sign)."""
        last, n = seeds[-1], len(seeds)
        for index, tensor in enumerate(self.tensors):
            shrink = 1.0 - self.lr * self.decay[index]
            gens = [self._generator(s, index, tensor.device) for s in seeds]
            for part in self._chunks(tensor):
                size = part.numel()
                estimate = self._buffer(tensor, 1)[:size].zero_() if n > 1 or self.variant == "sign" else None
                for seed, gen, g in zip(seeds, gens, grads, strict=True):
                    z = self._buffer(tensor, 0)[:size].normal_(generator=gen)
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
