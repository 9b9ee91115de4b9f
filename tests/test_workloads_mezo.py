"""MeZO's arithmetic: z regenerated exactly, restore, the update rule, and n-SPSA's expectation."""

from __future__ import annotations

import torch
from torch import nn

from workloads.mezo import MeZO


def _named(*tensors: torch.Tensor) -> list[tuple[str, nn.Parameter]]:
    return [(f"layer{i}.weight", nn.Parameter(t, requires_grad=False)) for i, t in enumerate(tensors)]


def test_z_is_regenerated_identically_and_differs_across_seeds_tensors_and_chunks():
    named = _named(torch.zeros(10), torch.zeros(10))
    opt = MeZO(named, lr=1.0, chunk=4, workers=1)
    first = opt.z(7, 0, 0).clone()
    assert torch.equal(first, opt.z(7, 0, 0))
    for other in (opt.z(8, 0, 0), opt.z(7, 1, 0), opt.z(7, 0, 4)):
        assert not torch.equal(first, other)


def test_restore_is_bit_identical_wherever_fp32_can_hold_the_perturbed_weights():
    """Bit identity for every element is impossible in place: where |w| is small next to eps*z, fl(w + d)
    drops w's low bits (no fp32 value maps back). For every other element the restore must be exact."""
    torch.manual_seed(0)
    weights = torch.randn(200_000) * 0.02
    original = weights.clone()
    opt = MeZO(_named(weights), lr=0.0, eps=1e-3, chunk=1 << 16, workers=2)
    opt.step(lambda: 0.0, step=3)  # +eps, -eps twice, restore (+eps) and a zero update
    z = torch.cat([opt.z(opt.query_seed(3, 0), 0, s).clone() for s in range(0, 200_000, 1 << 16)])

    def round_trip(sign: float) -> torch.Tensor:  # the same in-place op MeZO uses (fused multiply-add)
        return original.clone().add_(z, alpha=sign * opt.eps).add_(z, alpha=-sign * opt.eps) == original

    representable = round_trip(1.0) & round_trip(-1.0)
    assert representable.float().mean() > 0.85  # the rest is where |w| is comparable to eps*|z|
    assert torch.equal(weights[representable], original[representable])
    ulp = torch.finfo(torch.float32).eps * (original.abs() + 4 * opt.eps)
    assert ((weights - original).abs() <= 2 * ulp).all()


def test_update_is_minus_lr_times_projected_grad_times_z():
    torch.manual_seed(0)
    w = torch.randn(300, dtype=torch.float64)
    c = torch.randn(300, dtype=torch.float64)
    before = w.clone()
    opt = MeZO(_named(w), lr=0.01, eps=1e-3, chunk=128, workers=2)
    opt.step(lambda: float(c @ w), step=5)
    seed = opt.query_seed(5, 0)
    z = torch.cat([opt.z(seed, 0, start).clone() for start in range(0, 300, 128)])
    g = opt.last_projected_grads[0]
    assert abs(g - float(c @ z)) < 1e-6 * abs(g) + 1e-9  # the loss is linear: the estimate is exact
    torch.testing.assert_close(w - before, -0.01 * g * z, rtol=1e-9, atol=1e-12)


def test_weight_decay_skips_biases_and_norms():
    weight, bias = torch.ones(64, 64, dtype=torch.float64), torch.ones(64, dtype=torch.float64)
    named = [
        ("fc.weight", nn.Parameter(weight, requires_grad=False)),
        ("fc.bias", nn.Parameter(bias, requires_grad=False)),
    ]
    opt = MeZO(named, lr=0.1, eps=1e-3, weight_decay=0.5, workers=1)
    opt.step(lambda: 0.0, step=0)  # flat loss: only decay moves the weights
    torch.testing.assert_close(weight, torch.full_like(weight, 0.95))
    torch.testing.assert_close(bias, torch.ones_like(bias))


def test_n_spsa_expectation_points_along_the_true_gradient():
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
    opt = MeZO(_named(w), lr=1.0, eps=1e-4, n_queries=4000, workers=1)
    opt.step(loss, step=0)
    estimate = start - w  # lr 1: the update is minus the averaged estimate
    cosine = torch.nn.functional.cosine_similarity(estimate, true_grad, dim=0).item()
    assert cosine > 0.9, cosine


def test_sign_variant_moves_every_weight_by_exactly_lr():
    w = torch.zeros(1000, dtype=torch.float64)
    c = torch.randn(1000, dtype=torch.float64)
    opt = MeZO(_named(w), lr=0.01, eps=1e-3, variant="sign", workers=2, chunk=300)
    opt.step(lambda: float(c @ w), step=1)
    torch.testing.assert_close(w.abs(), torch.full_like(w, 0.01), rtol=0, atol=1e-9)
