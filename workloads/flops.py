"""FLOPs of one training step, torch-free, for predicting a step's time on a device from its throughput.

The count is a lower bound on the time at sgemm speed: the matmuls a step cannot avoid, divided by the
device's fp32 matmul throughput. A real step reaches only part of sgemm throughput (small matrices,
element-wise kernels, the optimizer, MeZO's parameter passes), so it takes longer.
"""

from __future__ import annotations

from workloads.memory_model import is_lm
from workloads.params import WorkloadParams
from workloads.registry import ModelShape, model_shape


def forward_flops(shape: ModelShape, params: WorkloadParams) -> float:
    """One forward pass: 2 FLOPs per weight of every matmul per token (embedding lookups cost none; an LM's
    tied head multiplies by the vocabulary), plus attention's two S x S products per layer (QK^T and AV)."""
    tokens = params.batch * params.seq_len
    weights = shape.layers * (4 * shape.hidden**2 + 2 * shape.hidden * shape.ffn)
    if is_lm(shape, params):
        weights += shape.vocab * shape.hidden
    attention = 2 * 2 * shape.layers * params.batch * params.seq_len**2 * shape.hidden
    return 2.0 * weights * tokens + attention


def forward_passes(shape: ModelShape, params: WorkloadParams) -> int:
    """A step's cost in forward passes. MeZO: two per query. Backprop: a backward is about two forwards
    (gradients of activations and of weights), one where only adapters or a tied head train (frozen weights
    get no gradient, the activations' still flow through the network); checkpointing adds a forward.
    A classifier's head alone: the backbone runs once (MeZO reuses its features, backprop stops at the head)."""
    if params.method == "inference" or (params.tuning == "head" and not is_lm(shape, params)):
        return 1
    if params.method == "mezo":
        return 2 * params.n_queries
    backward = 2 if params.tuning == "full" else 1
    return 1 + backward + (1 if params.method == "bp-checkpointed" else 0)


def step_flops(params: WorkloadParams) -> float | None:
    """FLOPs of one step of `params` (a lower bound: see the module); None when the model's shape is unknown."""
    shape = model_shape(params.model)
    if shape is None:
        return None
    return forward_passes(shape, params) * forward_flops(shape, params)


def step_seconds(flops: float | None, gflops: float | None) -> float | None:
    """A lower bound on a step's time: its FLOPs at the device's sgemm throughput (see the module); None when
    either is unknown."""
    return None if flops is None or gflops is None else flops / (gflops * 1e9)
