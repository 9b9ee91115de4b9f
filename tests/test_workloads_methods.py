"""MeZO on a classifier: the head-only fast path makes exactly the step of the generic path."""

from __future__ import annotations

import torch

from workloads.methods import ZerothOrder, forward_loss
from workloads.models import build_model, select_trainable, trainable_parameters
from workloads.params import WorkloadParams
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
