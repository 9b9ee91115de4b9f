"""MeZO (Malladi et al. 2023): SPSA with the seed trick, perturbing the weights in place.

z is never stored. The trainable tensors are cut into chunks (ZO_CHUNK elements); each (step, query, tensor,
chunk) has its own z, regenerated exactly for every pass from a seed, so chunks are independent and the passes
run on the device's threads. Two sources of z (`zo_noise`):

- normal: each chunk's z is drawn with `normal_` from a generator seeded for that chunk, into a chunk buffer per
  worker thread. Exact, but drawing costs about 10x the in-place add that applies z (ENVIRONMENT.md).
- table: a shared noise table, as in OpenAI's evolution strategies (Salimans et al. 2017): one 1-D table of
  N(0,1) values drawn once per cell from the cell's seed; a chunk's z is sign * table[offset : offset + n],
  with offset and sign derived from the chunk's 64-bit hash, applied in place without a copy (no buffer).
  Why it is sound: within a slice the components are distinct table entries, so independent N(0,1). Two
  chunks' slices overlap with probability about 2 * chunk / table size, and then share values at shifted
  positions; but every chunk's sign is an independent fair coin, so E[z_a z_b] = E[s_a s_b] E[t_i t_j] = 0
  for elements of different chunks and E[z z^T] = I exactly: the SPSA estimate stays unbiased. The table
  only changes higher moments (a value may recur elsewhere in z with a random sign), as in ES, and a step's
  chunks are slices of one 16 MiB table instead of fresh draws.

Seeds. Every seed is a splitmix64 hash of (cell seed, step, query, tensor, chunk) (`mix64`), not a linear
combination of them (which collides: (q+1, i, c) with (q, i+10, c+3)). torch's CPU generator (mt19937) keeps
only the low 32 bits of a seed, where a hash of 5M chunk draws would collide thousands of times; so the low
32 bits of a generator seed are a keyed bijection of the chunk's draw counter (step, query, chunk in order):
distinct for the first 2^32 chunk draws of a cell (15M one-query steps of opt-125m), by construction.

Passes. A query perturbs +eps (loss+), then -eps twice with one z (loss-), then restores (+eps); the last
query's restore shares its pass with the update theta -= lr * (g z + wd theta). With `fuse`, that pass also
applies the next step's +eps, so a steady-state step makes two passes over the weights: the weights rest at
theta + eps z between steps and `restore()` removes the pending perturbation (before evaluation). Fusing
changes no arithmetic until that restore (every element sees the same operations in the same order), whose
round trip is exact wherever fp32 holds both values, as below. Within a chunk, the
operations of one pass run block by block (ZO_BLOCK elements, weights and z together fit in L2), so a
pass reads the weights from memory once however many operations it applies.

Journal. Every pass is a list of operations of (step, query)-keyed z's and scalars, so the list of passes made
since the cell's first step (`keep_journal`) is the whole trajectory, in kilobytes however large the model: replaying
it on the same starting weights (`replay`) applies the same operations to every element in the same order, giving
the weights back bit for bit, at the cost of the passes alone (no forward). This is the MeZO paper's observation
that a run is stored as its seeds and projected gradients; resumable cells use it to carry a checkpoint in git.

Why -eps twice and not -2eps once: fl(fl(w + d) - d) is w unless fp32 cannot hold w + d (then no in-place
scheme can give w back: that element's low bits are gone), and likewise for w - d. Going through w on the
way from w + d to w - d keeps the restore bit-identical for every element where fp32 can represent both
perturbed values; fl(fl(fl(w + d) - 2d) + d) misses w by an ulp on about half of all elements.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from workloads.params import ZO_CHUNK, ZO_MAX_WORKERS, noise_table_size

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
#: Elements per block when a pass applies several operations to a chunk (512 KiB of fp32 weights + z).
ZO_BLOCK = 1 << 17
#: Operation sources besides a noise key (step, query): weight decay's shrink and ZO-SignSGD's sign estimate.
SHRINK, ESTIMATE = "shrink", "estimate"
_TABLE_TAG = 0x7AB1E  # hashed after the cell seed into the table's seed

Key = tuple[int, int]  # (step, query)
Op = tuple[Key | str, float]  # (source, alpha)
JournalEntry = str  # one pass, JSON: [ops as [[step, query] or name, alpha], estimate as [[step, query], weight]]


def splitmix64(x):
    """splitmix64's finaliser: a bijection of 64-bit integers with full avalanche. Works on Python ints and on
    numpy uint64 arrays alike (their products wrap), so tests can check millions of seeds at once."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def mix64(*fields, state=0):
    """A 64-bit hash of the fields: splitmix64 after folding in each field in turn. Iterative, so
    mix64(a, b, c) == mix64(c, state=mix64(a, b)): a step's prefix is hashed once for all its chunks."""
    for field in fields:
        state = splitmix64(state ^ (field & MASK64))
    return state


def permute32(x, key: int):
    """A keyed bijection of 32-bit integers (xor with the key, then Wellons' lowbias32 hash)."""
    x = (x ^ key) & MASK32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & MASK32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def draw_counter(step, query, part, n_queries: int, n_parts: int):
    """The chunk draw's position in the cell: distinct (step, query, part) give distinct counters."""
    return (step * n_queries + query) * n_parts + part


def generator_seed(chunk_hash, counter, cell_seed: int):
    """A 63-bit generator seed for a chunk with hash mix64(cell seed, step, query, tensor, chunk): the low 32 bits
    (all that torch's CPU generator keeps) are a bijection of the draw counter keyed by the cell seed, so no two
    draws of a cell share them; the high 31 bits come from the hash (generators that keep all 64 bits)."""
    return ((chunk_hash >> 33) << 32) | permute32(counter & MASK32, mix64(cell_seed) & MASK32)


def table_slice(chunk_hash: int, table: int, n: int) -> tuple[int, float]:
    """(offset, sign) of a chunk's z in a table of `table` normals, from the chunk's hash: offset uniform in
    [0, table - n] (from the low 63 bits), sign from the top bit."""
    return (chunk_hash & (MASK64 >> 1)) % (table - n + 1), -1.0 if chunk_hash >> 63 else 1.0


def chunk_layout(sizes: Sequence[int], chunk: int) -> list[tuple[int, int]]:
    """(tensor index, start element) of every chunk, tensor by tensor."""
    return [(i, start) for i, size in enumerate(sizes) for start in range(0, size, chunk)]


def draw_table(size: int, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The cell's noise table: `size` N(0,1) values from the cell's seed (the same for every dtype)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(mix64(seed, _TABLE_TAG) >> 1)
    return torch.empty(size, dtype=torch.float32, device=device).normal_(generator=gen).to(dtype)


def journal_entry(ops: Sequence[Op], estimate: Sequence[tuple[Key, float]]) -> JournalEntry:
    """A pass as one line of JSON, [ops, estimate]: keys as [step, query], SHRINK and ESTIMATE by name, alphas as
    floats (which JSON round-trips exactly). A string, not lists: 5,000 steps' passes then hold about 2 MB of the
    cell's memory instead of about 20 (which a cell close to its cap would feel)."""
    return json.dumps([ops, estimate], separators=(",", ":"))


def ops_from_entry(entry: JournalEntry) -> tuple[list[Op], list[tuple[Key, float]]]:
    """The pass a journal entry records, as `MeZO._run` takes it."""
    ops, estimate = json.loads(entry)
    return (
        [(k if isinstance(k, str) else (int(k[0]), int(k[1])), float(a)) for k, a in ops],
        [((int(k[0]), int(k[1])), float(w)) for k, w in estimate],
    )


def group_ops(ops: Sequence[Op]) -> list[tuple[Key | str | None, list[Op]]]:
    """Consecutive operations that share one z (or need none: SHRINK joins the group before it), with that z's
    source: each group gets its z once (one draw with `normal`) and is applied block by block."""
    groups: list[tuple[Key | str | None, list[Op]]] = []
    for source, alpha in ops:
        if groups and (source == SHRINK or source == groups[-1][0] or groups[-1][0] is None):
            head, members = groups[-1]
            groups[-1] = (source if head is None and source != SHRINK else head, [*members, (source, alpha)])
        else:
            groups.append((None if source == SHRINK else source, [(source, alpha)]))
    return groups


def no_decay(name: str, tensor: torch.Tensor) -> bool:
    """Biases and normalisation weights get no weight decay (as in the MeZO reference and AdamW practice)."""
    return tensor.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def zo_workers() -> int:
    """Threads that draw z (`normal`): the cell's torch thread count (the device's cores), at most ZO_MAX_WORKERS.
    The table needs none: its passes are in-place adds that torch already spreads over its own threads, and a
    pool of Python threads on top oversubscribes them (measured on opt-125m's weights, 2 cores: 0.28 s a
    passes-only step with a 2-thread pool, 0.17 s inline; `normal`: 0.85 s with the pool, 1.42 s inline)."""
    return max(1, min(torch.get_num_threads(), ZO_MAX_WORKERS))


class MeZO:
    """One zeroth-order optimizer over a list of named tensors; `step(loss_fn, step)` runs one SPSA step,
    `restore()` removes the perturbation a fused step leaves pending (call it before reading the weights)."""

    def __init__(
        self,
        named: list[tuple[str, nn.Parameter]],
        lr: float,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        n_queries: int = 1,
        variant: str = "spsa",
        seed: int = 0,
        noise: str = "table",
        fuse: bool = True,
        chunk: int = ZO_CHUNK,
        workers: int | None = None,
    ) -> None:
        self.tensors = [p.data for _, p in named]
        self.decay = [0.0 if no_decay(n, p) else weight_decay for n, p in named]
        self.lr, self.eps, self.n_queries, self.variant = lr, eps, n_queries, variant
        self.seed, self.noise, self.fuse = seed, noise, fuse
        sizes = [t.numel() for t in self.tensors]
        table = noise_table_size(sum(sizes)) if noise == "table" else None
        self.chunk = max(1, min(chunk, max(sizes, default=1), table or chunk))  # a slice fits in the table
        self.parts = chunk_layout(sizes, self.chunk)
        kinds = {(t.dtype, t.device) for t in self.tensors} if table else set()
        self.tables = {kind: draw_table(table, seed, *kind) for kind in kinds}
        workers = workers or zo_workers()
        threaded = noise == "normal" and workers > 1 and sum(sizes) > chunk
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="mezo") if threaded else None
        )  # the table or a small model: inline, on torch's threads
        self._local = threading.local()
        self._plan = functools.lru_cache(maxsize=2 * n_queries + 2)(self._compute_plan)
        self.pending: Key | None = None  # the (step, query) whose +eps*z the weights currently carry
        self.last_projected_grads: list[float] = []
        self.journal: list[JournalEntry] | None = None  # the passes since step 0, when kept (keep_journal)
        self._bytes = sum(t.numel() * t.element_size() for t in self.tensors)
        self.traffic, self.flops = 0.0, 0.0  # what the passes moved and computed so far (the roofline clock's)

    # -- z -------------------------------------------------------------------------------------------------

    def _compute_plan(self, key: Key) -> list:
        """Per chunk, what regenerates its z for `key`: a generator seed (normal) or (offset, sign) (table)."""
        step, query = key
        prefix = mix64(self.seed, step, query)
        plan = []
        for p, (index, start) in enumerate(self.parts):
            chunk_hash = mix64(index, start // self.chunk, state=prefix)
            tensor = self.tensors[index]
            if self.noise == "table":
                table = self.tables[tensor.dtype, tensor.device].numel()
                plan.append(table_slice(chunk_hash, table, min(self.chunk, tensor.numel() - start)))
            else:
                counter = draw_counter(step, query, p, self.n_queries, len(self.parts))
                plan.append(generator_seed(chunk_hash, counter, self.seed))
        return plan

    def _buffer(self, like: torch.Tensor, slot: int) -> torch.Tensor:
        """This thread's reusable chunk buffer for (dtype, device, slot), cut to `like`'s size."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        key = (like.dtype, like.device, slot)
        if key not in buffers:
            buffers[key] = torch.empty(self.chunk, dtype=like.dtype, device=like.device)
        return buffers[key][: like.numel()]

    def _noise(self, entry, part: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(values, sign) with z = sign * values for the chunk `part`, from its plan entry."""
        if self.noise == "table":
            offset, sign = entry
            return self.tables[part.dtype, part.device][offset : offset + part.numel()], sign
        gen = torch.Generator(device=part.device)
        gen.manual_seed(entry)
        return self._buffer(part, 0).normal_(generator=gen), 1.0

    def z(self, key: Key, index: int) -> torch.Tensor:
        """The whole z of tensor `index` for (step, query) `key`, as a new tensor (for tests and analysis)."""
        plan, pieces = self._plan(key), []
        for p, (i, start) in enumerate(self.parts):
            if i == index:
                values, sign = self._noise(plan[p], self._part(index, start))
                pieces.append(values * sign)
        return torch.cat(pieces).view_as(self.tensors[index])

    # -- passes --------------------------------------------------------------------------------------------

    def _part(self, index: int, start: int) -> torch.Tensor:
        return self.tensors[index].view(-1)[start : start + self.chunk]

    def _each_part(self, work: Callable[[int], None]) -> None:
        if self._pool is None:
            for p in range(len(self.parts)):
                work(p)
        else:
            for future in [self._pool.submit(work, p) for p in range(len(self.parts))]:
                future.result()

    def _run(self, ops: Sequence[Op], estimate: Sequence[tuple[Key, float]] = ()) -> None:
        """One pass over the weights applying `ops` in order, chunk by chunk: (key, a) adds a * z(key), (SHRINK, lr)
        multiplies by 1 - lr * weight decay, (ESTIMATE, a) adds a * sign(sum_k w_k z(k)) over `estimate`."""
        if self.journal is not None:
            self.journal.append(journal_entry(ops, estimate))
        plans = {k: self._plan(k) for k, _ in [*ops, *estimate] if k not in (SHRINK, ESTIMATE)}
        groups = group_ops(ops)
        draws = sum(1 for head, _ in groups if isinstance(head, tuple)) + len(estimate)
        self.traffic += self._bytes * (2 + draws)  # read and write the weights, read each z once
        self.flops += 2.0 * self._bytes / self.tensors[0].element_size() * len(ops) if self.tensors else 0.0

        @torch.no_grad()
        def work(p: int) -> None:
            index, start = self.parts[p]
            part = self._part(index, start)
            sources = (self._source(group, p, part, plans, estimate) for group in groups)
            if self.noise == "table":  # every z is a slice of the table: apply all of them block by block
                self._apply(part, index, list(sources))
            else:  # each draw refills this thread's buffer: one z at a time
                for source in sources:
                    self._apply(part, index, [source])

        self._each_part(work)

    def _source(self, group, p: int, part: torch.Tensor, plans, estimate):
        """(values, sign, operations) of one group for chunk p: its z, or none for a lone SHRINK."""
        source, members = group
        if source == ESTIMATE:
            return self._sign_estimate(p, part, plans, estimate), 1.0, members
        if source is None:
            return None, 1.0, members
        return (*self._noise(plans[source][p], part), members)

    def _apply(self, part: torch.Tensor, index: int, sources) -> None:
        """Apply the sources' operations in order, block by block when there are several, so a block of weights
        and its z's stay in L2 while every operation runs: the pass reads the weights from memory once."""
        block = ZO_BLOCK if sum(len(members) for *_, members in sources) > 1 else part.numel()
        for lo in range(0, part.numel(), block):
            piece = part[lo : lo + block]
            for values, sign, members in sources:
                for op, alpha in members:
                    if op == SHRINK:
                        if self.decay[index]:
                            piece.mul_(1.0 - alpha * self.decay[index])
                    else:
                        piece.add_(values[lo : lo + block], alpha=alpha * sign)

    def _sign_estimate(self, p: int, part: torch.Tensor, plans, estimate) -> torch.Tensor:
        """sign(sum_k w_k z_k) for chunk p, in this thread's second buffer."""
        total = self._buffer(part, 1).zero_()
        for key, weight in estimate:
            values, sign = self._noise(plans[key][p], part)
            total.add_(values, alpha=weight * sign)
        return total.sign_()

    def _then_perturb(self, ops: list[Op], key: Key, estimate: Sequence[tuple[Key, float]] = ()) -> None:
        """Run `ops`, then perturb by +eps * z(key): in the same pass when fusing, else in a pass of its own."""
        if self.fuse:
            self._run([*ops, (key, self.eps)], estimate)
        else:
            if ops:
                self._run(ops, estimate)
            self._run([(key, self.eps)])
        self.pending = key

    def restore(self) -> None:
        """Remove a pending +eps * z: the weights become theta again (bit-identical where fp32 holds both)."""
        if self.pending is not None:
            self._run([(self.pending, -self.eps)])
            self.pending = None

    # -- the journal ---------------------------------------------------------------------------------------

    def keep_journal(self, entries: Sequence[JournalEntry] = ()) -> None:
        """From now on, record every pass; `entries` are the passes already replayed (a resumed cell's)."""
        self.journal = list(entries)

    def replay(self, entries: Sequence[JournalEntry]) -> None:
        """Apply a journal's passes to the weights it started from, as they were made (pending perturbation
        included), then keep journaling after them. The passes' traffic is not this cell's work: not counted."""
        traffic, flops = self.traffic, self.flops
        self.journal = None
        for entry in entries:
            self._run(*ops_from_entry(entry))
        self.traffic, self.flops = traffic, flops
        self.keep_journal(entries)

    # -- the step ------------------------------------------------------------------------------------------

    def step(self, loss_fn: Callable[[], float], step: int, lr: float | None = None) -> float:
        """One (n-)SPSA step at learning rate `lr` (default: the constructor's); returns the mean of the perturbed
        losses. The update is applied in this call (fused with step + 1's +eps, which needs no lr), so a
        schedule passes step `step`'s own lr here."""
        lr = self.lr if lr is None else lr
        keys = [(step, q) for q in range(self.n_queries)]
        if self.pending != keys[0]:
            self._then_perturb([(self.pending, -self.eps)] if self.pending else [], keys[0])
        grads, losses = [], []
        for q, key in enumerate(keys):
            plus = loss_fn()
            self._run([(key, -self.eps), (key, -self.eps)])
            minus = loss_fn()
            grads.append((plus - minus) / (2 * self.eps))
            losses += [plus, minus]
            if q < len(keys) - 1:  # restore, and perturb for the next query
                self._then_perturb([(key, self.eps)], keys[q + 1])
        self.last_projected_grads = grads
        update = self._update_ops(keys, grads, lr)
        estimate = [(key, g / len(keys)) for key, g in zip(keys, grads, strict=True)]
        if self.fuse:
            self._then_perturb(update, (step + 1, 0), estimate)
        else:
            self._run(update, estimate)
            self.pending = None
        return sum(losses) / len(losses)

    def _update_ops(self, keys: list[Key], grads: list[float], lr: float) -> list[Op]:
        """Undo the last query's -eps, shrink by weight decay, then theta -= lr * mean_q g_q z_q (`sign`: the sign
        of that mean, ZO-SignSGD, from the pass's estimate). The last query's z comes first: one draw for both."""
        ops: list[Op] = [(keys[-1], self.eps), (SHRINK, lr)]
        if self.variant == "sign":
            return [*ops, (ESTIMATE, -lr)]
        updates = [(key, -lr * g / len(keys)) for key, g in zip(keys, grads, strict=True)]
        return [*ops, updates[-1], *updates[:-1]]
