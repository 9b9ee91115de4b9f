"""How good a step MeZO's estimate is on the models it trains (issue 24, the learning check's "why").

At the pretrained weights a cell starts from (`workloads.cell.prepare`: the zero-shot head, `prototype` or
`prompt`), on Rotten Tomatoes training batches of 16 x 64, in eval mode as MeZO runs:

1. The true gradient g of the batch loss (backprop) and, for QUERIES perturbations z ~ N(0, I), MeZO's projected
   gradient p = (L(w + eps z) - L(w - eps z)) / (2 eps) against the exact directional derivative z.g: their
   correlation says whether eps resolves the derivative; the cosine of the estimate p z with g is about
   sqrt(2 / (pi d)) for d parameters, the estimator's well-known weakness.
2. The one-step change of the loss the estimate's update w - lr p z makes, per learning rate, on the same batch
   and on another training batch (mean and standard error over the queries), beside the first-order change
   along the true gradient, -lr |g|^2 (MeZO's update is g's unbiased estimate): a rate whose mean change is
   positive is past the estimator's stable step.

Run (a few minutes, alone on the machine):
    flock /tmp/edgebench-cpu.lock .venv/bin/python -m pytest benchmarks/bench_zo_gradient.py \
        -o python_files='bench_*.py' --benchmark-only -s
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from workloads.cell import prepare
from workloads.methods import forward_loss
from workloads.models import trainable_parameters
from workloads.params import WorkloadParams

QUERIES = 32
EPS = 1e-3
RATES = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
CASES = [("mpnet-base", "prototype"), ("mpnet-base", "prompt"), ("minilm-l6", "prototype")]


def _batches(model_name: str, head: str):
    params = WorkloadParams(
        model=model_name, task="rotten_tomatoes", method="mezo", head=head, batch=16, seq_len=64, seed=0
    )
    torch.manual_seed(0)
    model, task, _ = prepare(params, torch.device("cpu"))
    return model.eval(), task.batch(0), task.batch(1)


def _gradient(model, named, batch) -> torch.Tensor:
    for _, p in named:
        p.requires_grad_(True)
        p.grad = None
    model(**batch).loss.backward()
    return torch.cat([p.grad.flatten() for _, p in named])


def _shift(named, direction: torch.Tensor, scale: float) -> None:
    with torch.no_grad():
        offset = 0
        for _, p in named:
            n = p.numel()
            p.add_(direction[offset : offset + n].view_as(p), alpha=scale)
            offset += n


def _mean_se(values: list[float]) -> str:
    return f"{statistics.fmean(values):+.2e} +/- {statistics.stdev(values) / math.sqrt(len(values)):.1e}"


def measure(model_name: str, head: str) -> list[str]:
    model, batch, other = _batches(model_name, head)
    named = trainable_parameters(model)
    g = _gradient(model, named, batch)
    d = g.numel()
    base, base_other = forward_loss(model, batch), forward_loss(model, other)
    gen = torch.Generator().manual_seed(1)
    directional, projected, cosines = [], [], []
    changes = {rate: ([], []) for rate in RATES}
    for _ in range(QUERIES):
        z = torch.randn(d, generator=gen)
        _shift(named, z, EPS)
        plus = forward_loss(model, batch)
        _shift(named, z, -2 * EPS)
        minus = forward_loss(model, batch)
        _shift(named, z, EPS)
        p = (plus - minus) / (2 * EPS)
        directional.append(float(z @ g))
        projected.append(p)
        cosines.append(math.copysign(1.0, p) * float(z @ g) / float(z.norm() * g.norm()))
        for rate, (same, held) in changes.items():
            _shift(named, z, -rate * p)
            same.append(forward_loss(model, batch) - base)
            held.append(forward_loss(model, other) - base_other)
            _shift(named, z, rate * p)
    correlation = float(torch.corrcoef(torch.tensor([directional, projected]))[0, 1])
    lines = [
        f"{model_name} ({head} head): d = {d:,} trainable, |g| = {float(g.norm()):.3g}, batch loss {base:.4f}; "
        f"corr(p, z.g) at eps {EPS:g} = {correlation:.4f}; cos(p z, g) mean {statistics.fmean(cosines):+.2e} "
        f"(sqrt(2/(pi d)) = {math.sqrt(2 / (math.pi * d)):.2e}), {QUERIES} queries"
    ]
    for rate, (same, held) in changes.items():
        first_order = -rate * float(g @ g)
        lines.append(
            f"  lr {rate:g}: loss change same batch {_mean_se(same)}, other batch {_mean_se(held)}; "
            f"first order along g {first_order:+.2e}"
        )
    return lines


@pytest.mark.timeout(3600)
def test_zo_estimate_against_the_true_gradient(benchmark, capsys):
    torch.set_num_threads(1)
    results = benchmark.pedantic(lambda: [measure(m, h) for m, h in CASES], rounds=1, iterations=1)
    with capsys.disabled():
        print("\n" + "\n".join(line for lines in results for line in lines))
    for lines in results:
        assert "corr(p, z.g)" in lines[0]
