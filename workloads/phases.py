"""FLOPs and bytes of memory traffic of each phase of a step, for the roofline clock (devices.roofline).

Counted per call from the batch actually run (dynamic padding changes the shape), torch-free:

- forward: FLOPs as workloads.flops (2 per matmul weight per token, plus attention's two S x S products); traffic:
  the weights read once, each layer's activations written and read once (about 10 hidden-size and 2 ffn-size
  tensors per token, and the heads' S x S scores), and an LM head's logits.
- backward: 2 forwards of FLOPs (1 when only adapters or a head train) plus a recomputed forward under
  checkpointing; traffic: the weights read again, each trainable weight's gradient written (and read back where it
  accumulates), activations read and their gradients written (twice the forward's).
- optimizer: AdamW reads weight, gradient and two moments and writes weight and moments (28 bytes per fp32 weight,
  about 12 FLOPs); SGD 12 bytes (20 with momentum).
- MeZO's parameter passes: the bytes are counted by the optimizer itself as it runs (workloads.mezo `bytes_moved`).

Bytes per element follow the cell's dtype for weights and activations; optimizer state is fp32. These are estimates
of unavoidable traffic: caches may save some of it on the host and on the device alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from workloads.memory_model import is_lm
from workloads.params import WorkloadParams
from workloads.registry import ModelShape, model_shape

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZER = {"adamw": (28.0, 12.0), "sgd": (12.0, 2.0), "sgd-momentum": (20.0, 4.0)}  # bytes, FLOPs per weight


@dataclass(frozen=True)
class Cost:
    flops: float = 0.0
    traffic: float = 0.0


class PhaseCosts:
    """The costs of one cell's phases; every figure is zero for a model of unknown shape (FLOPs-only clock)."""

    def __init__(self, params: WorkloadParams, trainable: int) -> None:
        self.params, self.trainable = params, trainable
        self.shape: ModelShape | None = model_shape(params.model)
        self.width = BYTES.get(params.dtype, 4)

    def forward(self, batch: int, seq: int) -> Cost:
        shape = self.shape
        if shape is None:
            return Cost()
        lm = is_lm(shape, self.params)
        matmul = shape.layers * (4 * shape.hidden**2 + 2 * shape.hidden * shape.ffn)
        head = shape.vocab * shape.hidden if lm else 0
        tokens = batch * seq
        flops = 2.0 * (matmul + head) * tokens + 4.0 * shape.layers * batch * seq**2 * shape.hidden
        per_layer = tokens * (10 * shape.hidden + 2 * shape.ffn) + batch * shape.heads * seq**2
        logits = tokens * shape.vocab if lm else 0
        weights = shape.params if lm else matmul
        traffic = self.width * (weights + 2 * shape.layers * per_layer + 2 * logits)
        return Cost(flops, traffic)

    def backward(self, batch: int, seq: int) -> Cost:
        forward = self.forward(batch, seq)
        if self.shape is None:
            return forward
        passes = 2 if self.params.tuning == "full" else 1
        recompute = 1 if self.params.method == "bp-checkpointed" else 0
        activations = forward.traffic - self.width * self.shape.params
        traffic = (
            (1 + recompute) * forward.traffic + 2 * max(activations, 0.0) + 2 * self.width * self.trainable
        )
        return Cost((passes + recompute) * forward.flops, traffic)

    def optimizer(self) -> Cost:
        per_byte, per_flop = OPTIMIZER.get(self.params.optimizer, OPTIMIZER["adamw"])
        return Cost(per_flop * self.trainable, per_byte * self.trainable)


def batch_shape(batch: dict) -> tuple[int, int]:
    """(rows, tokens per row) of a batch of input_ids."""
    rows, seq = batch["input_ids"].shape[:2]
    return int(rows), int(seq)
