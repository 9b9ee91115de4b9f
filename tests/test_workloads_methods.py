"""MeZO on a classifier: the head-only fast path makes exactly the step of the generic path; every method's
steps take their lr from the shared schedule."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from workloads.methods import Backprop, ZerothOrder, forward_loss
from workloads.models import build_model, select_trainable, trainable_parameters
from workloads.params import WorkloadParams
from workloads.schedule import lr_factor
from workloads.tasks import synthetic_task


def test_head_only_mezo_reuses_features_and_makes_the_generic_step():
    params = WorkloadParams(
        model="bert-4m", method="mezo", tuning="head", lr=0.1, n_queries=3, batch=4, seq_len=8
    )
    batch = synthetic_task(params, 30522, decoder=False).batch(0)
    heads = []
    for fast in (True, False):
        torch.manual_seed(0)
        model = select_trainable(build_model(params, "classification", 2).model, "head", "bert")
        method = ZerothOrder(model, trainable_parameters(model), params)
        assert method.head_only
        if fast:
            method.step(batch, step=3)
        else:
            method.optimizer.step(lambda m=model: forward_loss(m, batch), 3)
        assert method.optimizer.pending == (4, 0)  # fused: step 4's perturbation is already applied
        method.ready_for_eval()
        assert method.optimizer.pending is None
        heads.append(model.head.weight.detach().clone())
    torch.testing.assert_close(heads[0], heads[1], rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    untouched = build_model(params, "classification", 2).model.head.weight
    assert not torch.allclose(heads[0], untouched)


def _opt_1m(params: WorkloadParams):
    """opt-1m as a causal LM with every weight trainable, and its synthetic task."""
    torch.manual_seed(0)
    built = build_model(params, "lm", 2)
    return select_trainable(built.model, "full", built.family), synthetic_task(params, built.vocab, decoder=True)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_backprop_takes_each_steps_lr_from_the_schedule(optimizer):
    params = WorkloadParams(
        model="opt-1m", method="bp", optimizer=optimizer, lr=1e-2, warmup_steps=2, lr_schedule="linear",
        max_steps=8, batch=2, seq_len=8,
    )  # fmt: skip
    model, task = _opt_1m(params)
    method = Backprop(model, trainable_parameters(model), params, checkpointed=False)
    before = [p.detach().clone() for p in model.parameters()]
    method.step(task.batch(0), 0)  # warm-up starts at lr 0: nothing moves
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    for step in (1, 2, 5):
        method.step(task.batch(step), step)
        expected = 1e-2 * lr_factor(params, step, 0.0)
        assert [g["lr"] for g in method.optimizer.param_groups] == pytest.approx([expected] * 2)
    assert not torch.equal(before[0], next(model.parameters()))


def test_mezo_updates_with_the_lr_of_the_step_it_takes():
    """The fused pass applies step t's update with step t + 1's perturbation: the lr must still be step t's."""
    params = WorkloadParams(
        model="opt-1m", method="mezo", lr=1e-3, warmup_steps=1, lr_schedule="cosine", max_steps=None,
        max_seconds=10.0, batch=2, seq_len=8,
    )  # fmt: skip
    model, task = _opt_1m(params)
    method = ZerothOrder(model, trainable_parameters(model), params)
    before = [p.detach().clone() for p in model.parameters()]
    method.step(task.batch(0), 0, 0.0)
    method.ready_for_eval()  # lr 0 at step 0: only MeZO's +/-eps round trips touch the weights
    for a, b in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    method.optimizer.step = mock.Mock(wraps=method.optimizer.step)
    for step, seconds in [(1, 2.5), (2, 5.0), (3, 9.0)]:
        method.step(task.batch(step), step, seconds)
        assert method.optimizer.step.call_args.args[2] == pytest.approx(1e-3 * lr_factor(params, step, seconds))
    assert method.optimizer.step.call_args.args[2] < 1e-4  # cosine near the end of the time budget
