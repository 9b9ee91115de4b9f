"""The four methods behind one interface: `step(batch, step, seconds) -> loss`.

inference: no-grad forwards only (the reference for MeZO's memory and time); mezo: see workloads.mezo;
bp-checkpointed / bp: backprop with and without gradient checkpointing. Training methods take each step's lr
from workloads.schedule (`seconds`: training time before the step, for schedules over a time budget).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from devices.roofline import PhaseMeter, null_meter
from workloads.mezo import MeZO, no_decay
from workloads.models import SequenceClassifier, checkpointing_enabled, enable_checkpointing
from workloads.params import WorkloadParams
from workloads.phases import PhaseCosts, batch_shape
from workloads.schedule import lr_factor

#: What a method keeps between steps besides the trained tensors, for a checkpoint: JSON-able values, and
#: tensors by name (workloads.resume saves both and hands them back on resume).
MethodState = tuple[dict[str, Any], dict[str, torch.Tensor]]


class Method(Protocol):
    def step(self, batch: dict[str, torch.Tensor], step: int, seconds: float = 0.0) -> float: ...

    def ready_for_eval(self) -> None:
        """Leave the model's weights as trained (MeZO's fused steps keep a perturbation pending between steps)."""

    def state(self) -> MethodState: ...

    def load_state(self, values: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None: ...


class Stateless:
    """A method that keeps nothing between steps but the weights."""

    def state(self) -> MethodState:
        return {}, {}

    def load_state(self, values: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        pass


class Metered:
    """A method that reports its phases (FLOPs, bytes, CPU time) to the cell's meter: the roofline clock's input."""

    meter: PhaseMeter = null_meter()
    costs: PhaseCosts | None = None

    def metered(self, meter: PhaseMeter, costs: PhaseCosts) -> None:
        self.meter, self.costs = meter, costs

    def forward_cost(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        cost = self.costs.forward(*batch_shape(batch)) if self.costs else None
        return (cost.flops, cost.traffic) if cost else (0.0, 0.0)


def forward_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """One forward in eval mode under inference_mode: what inference and MeZO both pay per pass."""
    with torch.inference_mode():
        return float(model(**batch).loss)


class Inference(Stateless, Metered):
    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval().requires_grad_(False)

    def step(self, batch: dict[str, torch.Tensor], step: int, seconds: float = 0.0) -> float:
        with self.meter.phase("forward", *self.forward_cost(batch)):
            return forward_loss(self.model, batch)

    def ready_for_eval(self) -> None:
        pass


class ZerothOrder(Metered):
    def __init__(
        self, model: nn.Module, named: list[tuple[str, nn.Parameter]], params: WorkloadParams
    ) -> None:
        self.model = model.eval().requires_grad_(False)  # nothing keeps autograd state
        self.params = params
        self.optimizer = MeZO(
            named,
            lr=params.learning_rate,
            eps=params.eps,
            weight_decay=params.weight_decay,
            n_queries=params.n_queries,
            variant=params.zo_variant,
            seed=params.seed,
            noise=params.zo_noise,
        )

        self.head_only = isinstance(model, SequenceClassifier) and {id(p) for _, p in named} <= {
            id(p) for p in model.head.parameters()
        }

    def step(self, batch: dict[str, torch.Tensor], step: int, seconds: float = 0.0) -> float:
        lr = self.params.learning_rate * lr_factor(self.params, step, seconds)
        if not self.head_only:
            return self._passes(lambda: self._forward(batch), step, lr)
        # Only the head is perturbed: the backbone's features are the same for every perturbed forward, so
        # they are computed once per step and each query costs two evaluations of the head alone.
        with self.meter.phase("forward", *self.forward_cost(batch)), torch.inference_mode():
            features = self.model.pool(batch["input_ids"], batch["attention_mask"])

        def head_loss() -> float:
            with torch.inference_mode():
                logits = self.model.scores(features)
                return float(nn.functional.cross_entropy(logits.float(), batch["labels"]))

        return self._passes(head_loss, step, lr)

    def _forward(self, batch: dict[str, torch.Tensor]) -> float:
        with self.meter.phase("forward", *self.forward_cost(batch)):
            return forward_loss(self.model, batch)

    def _passes(self, loss_fn, step: int, lr: float) -> float:
        """The optimizer's step, its perturb / restore / update passes timed as one phase (the forwards inside it
        are their own), charged the bytes and FLOPs the passes counted."""
        opt = self.optimizer
        traffic, flops = opt.traffic, opt.flops
        with self.meter.phase("mezo passes") as passes:
            loss = opt.step(loss_fn, step, lr)
            passes.add(opt.flops - flops, opt.traffic - traffic)
        return loss

    def ready_for_eval(self) -> None:
        opt = self.optimizer
        traffic, flops = opt.traffic, opt.flops
        with self.meter.phase("mezo passes") as passes:
            opt.restore()
            passes.add(opt.flops - flops, opt.traffic - traffic)

    def state(self) -> MethodState:
        """The step whose +eps*z the weights carry (saved as they are: a resumed run stays bit-identical)."""
        pending = self.optimizer.pending
        return {"pending": list(pending) if pending is not None else None}, {}

    def load_state(self, values: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        pending = values.get("pending")
        self.optimizer.pending = (int(pending[0]), int(pending[1])) if pending is not None else None


def make_optimizer(named: list[tuple[str, nn.Parameter]], params: WorkloadParams) -> torch.optim.Optimizer:
    """SGD, SGD with momentum, or AdamW; no weight decay on biases and norms. foreach=False keeps the
    optimizer's temporaries to one tensor at a time (the memory model assumes so)."""
    decay = [p for n, p in named if not no_decay(n, p)]
    rest = [p for n, p in named if no_decay(n, p)]
    groups = [{"params": decay, "weight_decay": params.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    lr = params.learning_rate
    if params.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, foreach=False)
    momentum = 0.9 if params.optimizer == "sgd-momentum" else 0.0
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=False)


class Backprop(Metered):
    def __init__(
        self,
        model: nn.Module,
        named: list[tuple[str, nn.Parameter]],
        params: WorkloadParams,
        checkpointed: bool,
    ) -> None:
        if checkpointed:
            enable_checkpointing(model)
        self.model = model.train()
        self.params = params
        self.optimizer = make_optimizer(named, params)

    def step(self, batch: dict[str, torch.Tensor], step: int, seconds: float = 0.0) -> float:
        lr = self.params.learning_rate * lr_factor(self.params, step, seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        rows, seq = batch_shape(batch)
        costs = self.costs
        with self.meter.phase("forward", *self.forward_cost(batch)):
            loss = self.model(**batch).loss
        backward = costs.backward(rows, seq) if costs else None
        with self.meter.phase("backward", *((backward.flops, backward.traffic) if backward else ())):
            loss.backward()
        update = costs.optimizer() if costs else None
        with self.meter.phase("optimizer", *((update.flops, update.traffic) if update else ())):
            self.optimizer.step()
        return float(loss.detach())

    def ready_for_eval(self) -> None:
        pass

    def state(self) -> MethodState:
        """The optimizer's state: its tensors by `opt/<param index>/<key>`, the rest (param groups) as values."""
        saved = self.optimizer.state_dict()
        tensors = {f"opt/{i}/{k}": v for i, per in saved["state"].items() for k, v in per.items() if torch.is_tensor(v)}
        plain = {str(i): {k: v for k, v in per.items() if not torch.is_tensor(v)} for i, per in saved["state"].items()}
        return {"param_groups": saved["param_groups"], "plain": plain}, tensors

    def load_state(self, values: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        per: dict[int, dict[str, Any]] = {int(i): dict(plain) for i, plain in values["plain"].items()}
        for name, tensor in tensors.items():
            _, index, key = name.split("/", 2)
            per.setdefault(int(index), {})[key] = tensor
        self.optimizer.load_state_dict({"state": per, "param_groups": values["param_groups"]})


def trainable_numel(params: WorkloadParams, named: list[tuple[str, nn.Parameter]]) -> int:
    """Parameters the method updates, counted on the model's tensors (workloads.memory_model.trainable_count
    predicts them from its shape): none for inference, whatever `select_trainable` left trainable otherwise."""
    return sum(p.numel() for _, p in named) if params.method != "inference" else 0


def make_method(
    params: WorkloadParams, model: nn.Module, named: list[tuple[str, nn.Parameter]], meter: PhaseMeter | None = None
) -> Method:
    """The method of `params`; with a `meter`, it reports its phases to it (the roofline clock)."""
    method = _build(params, model, named)
    if meter is not None:
        method.metered(meter, PhaseCosts(params, trainable_numel(params, named)))
    return method


def _build(params: WorkloadParams, model: nn.Module, named: list[tuple[str, nn.Parameter]]) -> Inference | ZerothOrder | Backprop:
    if params.method == "inference":
        return Inference(model)
    if params.method == "mezo":
        return ZerothOrder(model, named, params)
    method = Backprop(model, named, params, checkpointed=params.method == "bp-checkpointed")
    if params.method == "bp-checkpointed" and not checkpointing_enabled(model):
        raise RuntimeError("gradient checkpointing was requested but the model did not enable it")
    return method
