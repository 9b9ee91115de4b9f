"""MeZO's arithmetic: z regenerated exactly, sound seeds, restore, the update rule, fused passes, and
n-SPSA's expectation, for both sources of z."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from workloads.mezo import (
    MASK32,
    MeZO,
    draw_counter,
    generator_seed,
    group_ops,
    mix64,
    table_slice,
)
from workloads.resume import journal_entries, journal_tensor

NOISES = ["normal", "table"]


def _named(*tensors: torch.Tensor) -> list[tuple[str, nn.Parameter]]:
    return [(f"layer{i}.weight", nn.Parameter(t, requires_grad=False)) for i, t in enumerate(tensors)]


@pytest.mark.parametrize("noise", NOISES)
def test_z_is_regenerated_identically_and_differs_across_steps_queries_tensors_and_chunks(noise):
    named = _named(torch.zeros(10), torch.zeros(10))
    opt = MeZO(named, lr=1.0, chunk=4, workers=1, noise=noise)
    first = opt.z((7, 0), 0)
    assert torch.equal(first, opt.z((7, 0), 0))
    for other in (opt.z((8, 0), 0), opt.z((7, 1), 0), opt.z((7, 0), 1)):
        assert not torch.equal(first, other)
    assert not torch.equal(first[:4], first[4:8])  # chunks of one tensor


def _opt125m_named() -> list[tuple[str, nn.Parameter]]:
    """opt-125m's trainable tensors as a cell selects them, on the meta device (no memory, no init)."""
    from workloads.models import build_model, trainable_parameters
    from workloads.params import WorkloadParams

    with torch.device("meta"):
        model = build_model(WorkloadParams(model="opt-125m"), "lm", num_labels=2).model
    return trainable_parameters(model)


def test_generator_seeds_never_collide_in_the_bits_torch_keeps():
    """torch's CPU generator keeps only a seed's low 32 bits; over 10,000 steps x 4 queries x opt-125m's
    chunks, those are all distinct (so are the whole 63-bit seeds), and MeZO uses exactly these seeds."""

    def sample(seed: int) -> torch.Tensor:
        return torch.empty(4).normal_(generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(12345), sample(12345 + (1 << 40)))  # why the low 32 bits must differ
    cell, steps, queries = 12345, 10_000, 4
    opt = MeZO(_opt125m_named(), lr=1e-6, n_queries=queries, seed=cell, noise="normal", workers=1)
    assert len(opt.parts) > 200 and opt.chunk == 1 << 20
    index = np.array([i for i, _ in opt.parts], dtype=np.uint64)
    chunk = np.array([start // opt.chunk for _, start in opt.parts], dtype=np.uint64)
    part = np.arange(len(opt.parts), dtype=np.uint64)
    query = np.arange(queries, dtype=np.uint64)[:, None]
    low = []
    for first in range(0, steps, 2_000):
        step = np.arange(first, first + 2_000, dtype=np.uint64)[:, None, None]
        chunk_hash = mix64(cell, step, query, index, chunk)
        seeds = generator_seed(chunk_hash, draw_counter(step, query, part, queries, len(opt.parts)), cell)
        assert (seeds >> 63 == 0).all()  # fits in 63 bits
        if first == 0:
            for s, q in [(0, 0), (1, 3), (1999, 2)]:
                assert [int(x) for x in seeds[s, q]] == opt._plan((s, q))
        low.append((seeds & MASK32).astype(np.uint32).ravel())
    low = np.sort(np.concatenate(low))
    assert low.size == steps * queries * len(opt.parts) and (low[1:] != low[:-1]).all()


def test_table_slices_stay_inside_the_table_and_flip_signs_half_the_time():
    table, n = 1 << 16, 1000
    slices = [table_slice(mix64(0, step, 0, 3, 1), table, n) for step in range(4000)]
    offsets = [o for o, _ in slices]
    assert min(offsets) >= 0 and max(offsets) <= table - n and len(set(offsets)) > 3800
    negative = sum(sign < 0 for _, sign in slices)
    assert abs(negative - 2000) < 200  # 6 sigma of a fair coin


def test_table_noise_is_a_signed_slice_of_one_normal_table():
    opt = MeZO(_named(torch.zeros(5000)), lr=1.0, chunk=1000, workers=1, noise="table")
    (table,) = opt.tables.values()
    assert table.numel() == 1 << 16 and abs(float(table.mean())) < 0.02 and abs(float(table.std()) - 1) < 0.02
    z = opt.z((3, 1), 0)
    for p, (offset, sign) in enumerate(opt._plan((3, 1))):
        assert torch.equal(z[p * 1000 : (p + 1) * 1000], sign * table[offset : offset + 1000])


def test_operations_sharing_a_z_are_grouped_in_order():
    a, b = (1, 0), (2, 0)
    ops = [(a, 1.0), ("shrink", 0.1), (a, -0.5), (b, 2.0)]
    assert group_ops(ops) == [(a, ops[:3]), (b, ops[3:])]
    assert group_ops([("shrink", 0.1), (b, 1.0)]) == [(b, [("shrink", 0.1), (b, 1.0)])]


@pytest.mark.parametrize("noise", NOISES)
def test_restore_is_bit_identical_wherever_fp32_can_hold_the_perturbed_weights(noise):
    """Bit identity for every element is impossible in place: where |w| is small next to eps*z, fl(w + d)
    drops w's low bits (no fp32 value maps back). For every other element the restore must be exact."""
    torch.manual_seed(0)
    weights = torch.randn(200_000) * 0.02
    original = weights.clone()
    opt = MeZO(_named(weights), lr=0.0, eps=1e-3, chunk=1 << 16, workers=2, noise=noise, fuse=False)
    opt.step(lambda: 0.0, step=3)  # +eps, -eps twice, restore (+eps) and a zero update
    z = opt.z((3, 0), 0)

    def round_trip(sign: float) -> torch.Tensor:  # the same in-place op MeZO uses (fused multiply-add)
        return original.clone().add_(z, alpha=sign * opt.eps).add_(z, alpha=-sign * opt.eps) == original

    representable = round_trip(1.0) & round_trip(-1.0)
    assert representable.float().mean() > 0.85  # the rest is where |w| is comparable to eps*|z|
    assert torch.equal(weights[representable], original[representable])
    ulp = torch.finfo(torch.float32).eps * (original.abs() + 4 * opt.eps)
    assert ((weights - original).abs() <= 2 * ulp).all()


@pytest.mark.parametrize("noise", NOISES)
def test_update_is_minus_lr_times_projected_grad_times_z(noise):
    torch.manual_seed(0)
    w = torch.randn(300, dtype=torch.float64)
    c = torch.randn(300, dtype=torch.float64)
    before = w.clone()
    opt = MeZO(_named(w), lr=0.01, eps=1e-3, chunk=128, workers=2, noise=noise)
    opt.step(lambda: float(c @ w), step=5)
    assert opt.pending == (6, 0)  # fused: the next step's +eps is already applied
    opt.restore()
    z = opt.z((5, 0), 0)
    g = opt.last_projected_grads[0]
    assert abs(g - float(c @ z)) < 1e-6 * abs(g) + 1e-9  # the loss is linear: the estimate is exact
    torch.testing.assert_close(w - before, -0.01 * g * z, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("noise", NOISES)
def test_a_steps_own_lr_replaces_the_base_lr_in_its_update_and_weight_decay(noise):
    """The update is applied in the step's own call (fused with the next step's +eps, which needs no lr)."""
    w = torch.ones(300, dtype=torch.float64)
    c = torch.randn(300, dtype=torch.float64)
    opt = MeZO(_named(w.view(10, 30)), lr=1.0, eps=1e-3, weight_decay=0.5, chunk=128, workers=1, noise=noise)
    opt.step(lambda: float(c @ w), step=2, lr=0.01)
    opt.restore()
    g, z = opt.last_projected_grads[0], opt.z((2, 0), 0).flatten()
    torch.testing.assert_close(w, (1 - 0.01 * 0.5) - 0.01 * g * z, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("noise", NOISES)
def test_weight_decay_skips_biases_and_norms(noise):
    weight, bias = torch.ones(64, 64, dtype=torch.float64), torch.ones(64, dtype=torch.float64)
    named = [
        ("fc.weight", nn.Parameter(weight, requires_grad=False)),
        ("fc.bias", nn.Parameter(bias, requires_grad=False)),
    ]
    opt = MeZO(named, lr=0.1, eps=1e-3, weight_decay=0.5, workers=1, noise=noise)
    opt.step(lambda: 0.0, step=0)  # flat loss: only decay moves the weights
    opt.restore()
    torch.testing.assert_close(weight, torch.full_like(weight, 0.95))
    torch.testing.assert_close(bias, torch.ones_like(bias))


@pytest.mark.parametrize("noise", NOISES)
def test_n_spsa_expectation_points_along_the_true_gradient(noise):
    torch.manual_seed(0)
    dim = 20
    a = torch.randn(dim, dim, dtype=torch.float64)
    hessian = a @ a.T / dim + torch.eye(dim, dtype=torch.float64)
    target = torch.randn(dim, dtype=torch.float64)
    w = torch.randn(dim, dtype=torch.float64)
    start = w.clone()

    def loss() -> float:
        d = w - target
        return float(0.5 * d @ hessian @ d)

    true_grad = hessian @ (start - target)
    opt = MeZO(_named(w), lr=1.0, eps=1e-4, n_queries=4000, workers=1, noise=noise)
    opt.step(loss, step=0)
    opt.restore()
    estimate = start - w  # lr 1: the update is minus the averaged estimate
    cosine = torch.nn.functional.cosine_similarity(estimate, true_grad, dim=0).item()
    assert cosine > 0.9, cosine


@pytest.mark.parametrize("noise", NOISES)
def test_sign_variant_moves_every_weight_by_exactly_lr(noise):
    w = torch.zeros(1000, dtype=torch.float64)
    c = torch.randn(1000, dtype=torch.float64)
    opt = MeZO(_named(w), lr=0.01, eps=1e-3, variant="sign", workers=2, chunk=300, noise=noise)
    opt.step(lambda: float(c @ w), step=1)
    opt.restore()
    torch.testing.assert_close(w.abs(), torch.full_like(w, 0.01), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("noise", "n_queries", "variant"), [("table", 1, "spsa"), ("normal", 2, "spsa"), ("table", 2, "sign")]
)
def test_fused_passes_give_the_unfused_weights_in_two_passes_a_step(noise, n_queries, variant):
    """Fusing the restore and update with the next step's +eps changes no arithmetic before the final restore,
    whose round trip is exact up to an ulp; a one-query step then makes two passes instead of three."""
    starts, results, passes = [], [], []
    for fuse in (True, False):
        torch.manual_seed(0)
        tensors = [torch.randn(3000), torch.randn(64, 64), torch.randn(50)]
        targets = [torch.randn_like(t) for t in tensors]
        starts.append(torch.cat([t.flatten() for t in tensors]))
        opt = MeZO(
            _named(*tensors), lr=1e-4, eps=1e-3, weight_decay=0.1, n_queries=n_queries, variant=variant,
            noise=noise, fuse=fuse, chunk=1000, workers=2,
        )  # fmt: skip
        opt._run = mock.Mock(wraps=opt._run)

        def loss(tensors=tensors, targets=targets) -> float:
            return sum(float(((t - u) ** 2).sum()) for t, u in zip(tensors, targets, strict=True))

        for step in range(20):
            opt.step(loss, step, lr=1e-4 * (1 + step % 3))  # a schedule's lr: each update uses its own step's
        opt.restore()
        results.append(torch.cat([t.flatten() for t in tensors]))
        passes.append(opt._run.call_count)
    assert not torch.allclose(results[0], starts[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-6)
    assert (results[0] == results[1]).float().mean() > 0.5
    if n_queries == 1:
        assert passes == [1 + 2 * 20 + 1, 3 * 20]  # the first +eps, two a step, the final restore


@pytest.mark.parametrize(
    ("noise", "n_queries", "variant"), [("table", 1, "spsa"), ("normal", 2, "spsa"), ("table", 2, "sign")]
)
def test_a_replayed_journal_gives_the_weights_back_bit_for_bit(noise, n_queries, variant):
    """A run's journal replayed on its starting weights reproduces them exactly, mid-step perturbation and
    evaluation restores included; a run continued after the replay stays identical to one never stopped."""

    def start() -> tuple[list[torch.Tensor], MeZO]:
        torch.manual_seed(0)
        tensors = [torch.randn(3000), torch.randn(64, 64), torch.randn(50)]
        opt = MeZO(
            _named(*tensors), lr=1e-3, eps=1e-3, weight_decay=0.1, n_queries=n_queries, variant=variant,
            noise=noise, chunk=1000, workers=2,
        )  # fmt: skip
        return tensors, opt

    def train(tensors: list[torch.Tensor], opt: MeZO, steps: range) -> None:
        targets = [torch.full_like(t, 0.5) for t in tensors]
        for step in steps:
            opt.step(lambda: sum(float(((t - u) ** 2).sum()) for t, u in zip(tensors, targets, strict=True)), step)
            if step % 4 == 3:
                opt.restore()  # an evaluation

    tensors, opt = start()
    opt.keep_journal()
    train(tensors, opt, range(10))
    saved, pending = [t.clone() for t in tensors], opt.pending
    replayed, again = start()
    again.replay(journal_entries(journal_tensor(opt.journal)))  # through the checkpoint's form
    again.pending = pending
    assert all(torch.equal(a, b) for a, b in zip(replayed, saved, strict=True))
    assert again.traffic == 0.0 and len(again.journal) == len(opt.journal)
    train(tensors, opt, range(10, 16))
    train(replayed, again, range(10, 16))
    assert all(torch.equal(a, b) for a, b in zip(replayed, tensors, strict=True))
    assert again.journal == opt.journal
