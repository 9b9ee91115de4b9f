"""Checkpointed backprop computes the same gradients as plain backprop, and checkpointing is really on."""

from __future__ import annotations

import torch
from torch import nn

from workloads.methods import make_method, make_optimizer
from workloads.models import build_model, checkpointing_enabled, enable_checkpointing, trainable_parameters
from workloads.params import WorkloadParams
from workloads.tasks import synthetic_task


def _grads(method: str) -> tuple[dict[str, torch.Tensor], bool]:
    params = WorkloadParams(model="opt-1m", method=method, batch=2, seq_len=16)
    torch.manual_seed(0)
    model = build_model(params, "lm", 2).model
    batch = synthetic_task(params, 30522, decoder=True).batch(0)
    make_method(params, model, trainable_parameters(model))  # enables checkpointing for bp-checkpointed
    torch.manual_seed(1)  # same dropout masks in both runs (checkpoint replays the RNG state)
    model(**batch).loss.backward()
    return {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }, checkpointing_enabled(model)


def test_checkpointed_and_plain_backprop_give_the_same_gradients():
    plain, plain_on = _grads("bp")
    ckpt, ckpt_on = _grads("bp-checkpointed")
    assert ckpt_on and not plain_on
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(3))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_plain_modules_are_checkpointed_with_torch_utils_checkpoint():
    torch.manual_seed(0)
    plain, ckpt = Blocks(), Blocks()
    ckpt.load_state_dict(plain.state_dict())
    enable_checkpointing(ckpt)
    assert checkpointing_enabled(ckpt) and not checkpointing_enabled(plain)
    x = torch.randn(4, 8)
    plain(x).sum().backward()
    ckpt(x).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_optimizers_skip_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    named = list(model.named_parameters())
    for name in ("sgd", "sgd-momentum", "adamw"):
        params = WorkloadParams(model="opt-1m", method="bp", optimizer=name, weight_decay=0.1)
        groups = make_optimizer(named, params).param_groups
        decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
        assert decayed == [model[0].weight], name
    assert make_optimizer(named, params).defaults.get("foreach") is False


def _features_need_grad(model_name: str, method: str, tuning: str) -> bool:
    """Whether the pooled features a classifier's head reads carry a graph back into the backbone."""
    from workloads.models import select_trainable

    params = WorkloadParams(model=model_name, method=method, tuning=tuning, batch=2, seq_len=16)
    built = build_model(params, "classification", 2)
    model = select_trainable(built.model, tuning, built.family)
    make_method(params, model, trainable_parameters(model))
    batch = synthetic_task(params, 1000, decoder=False).batch(0)
    return model.pool(batch["input_ids"], batch["attention_mask"]).requires_grad


def test_a_checkpointed_linear_probe_does_not_backpropagate_through_the_frozen_backbone():
    """transformers' checkpointing makes the embeddings' output require grad; a head-only cell must not keep a
    graph through every frozen layer for it (the memory model plans a probe with no saved activations)."""
    assert not _features_need_grad("bert-11m", "bp-checkpointed", "head")
    assert not _features_need_grad("bert-11m", "bp", "head")
    assert _features_need_grad("bert-11m", "bp-checkpointed", "full")
    assert _features_need_grad("bert-11m", "bp-checkpointed", "lora")
