"""Analytic peak-memory model (DESIGN.md), torch-free: the harness parent and `edgebench estimate` use it.

peak = R + weights + method terms, with R (interpreter + torch + allocator) measured once per
environment (workloads.baseline). The activation coefficients are the per-layer working sets of
transformers' OPT / BERT / MPNet layers in fp32 on CPU, counted from the tensors each layer keeps
(see docs/workloads.md for the derivation and the measured validation).
"""

from __future__ import annotations

from dataclasses import dataclass

from workloads.baseline import runtime_baseline_bytes
from workloads.params import ZO_CHUNK, ZO_MAX_WORKERS, WorkloadParams, noise_table_size
from workloads.registry import ModelShape, ladder_names, ladder_of, model_shape, resolve
from workloads.sources import SYNTHETIC

BYTES = {"fp32": 4, "bf16": 2}
OPTIMIZER_STATE = {"sgd": 0, "sgd-momentum": 1, "adamw": 2}  # states per trainable weight, in its dtype
LORA_RANK = 8
#: Measured here (docs/workloads.md): the LM head's matmul holds a packed copy of most of the tied embedding
#: matrix during a forward, and backprop holds about 2.5 largest-tensor-sized temporaries.
LM_HEAD_PACKING = 0.8
BP_LARGEST_TEMPORARIES = 2.5


@dataclass(frozen=True)
class Breakdown:
    """The terms of one prediction, in bytes (what `edgebench estimate --json` prints)."""

    runtime: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    zo_buffer: int

    @property
    def total(self) -> int:
        return (
            self.runtime
            + self.weights
            + self.gradients
            + self.optimizer
            + self.activations
            + self.logits
            + self.zo_buffer
        )


def trainable_count(shape: ModelShape, params: WorkloadParams, num_labels: int) -> int:
    head = shape.hidden * num_labels + num_labels if not is_lm(shape, params) else shape.largest_tensor
    if params.tuning == "head":
        return head
    if params.tuning == "lora":  # two rank-r adapters on the query and value projections of every layer
        return shape.layers * 2 * 2 * LORA_RANK * shape.hidden + (0 if is_lm(shape, params) else head)
    return shape.params + (0 if is_lm(shape, params) else head)


def is_lm(shape: ModelShape, params: WorkloadParams) -> bool:
    return shape.is_decoder and params.task == "synthetic"


def layer_working_set(shape: ModelShape, b: int, s: int, w: int) -> int:
    """One layer's live tensors during a no-grad forward: attention scores and probabilities (B*A*S*S each),
    the MLP's intermediate (B*S*F, twice around the activation) and a few hidden-sized tensors."""
    return w * (2 * b * shape.heads * s * s + 2 * b * s * shape.ffn + 6 * b * s * shape.hidden)


def layer_saved_for_backward(shape: ModelShape, b: int, s: int, w: int) -> int:
    """What one layer keeps for backward: Korthikanti et al.'s B*S*H*(34 + 5*A*S/H) bytes counts 16-bit GPU
    tensors; on CPU in fp32 transformers' OPT layers keep about 5 hidden-sized tensors, the attention
    probabilities and the MLP intermediate (calibrated on this machine; docs/workloads.md). BERT layers keep
    two more: GELU needs its input besides the output the next matmul keeps (ReLU needs only the output), and
    attention-probability dropout keeps its output besides its input."""
    per_layer = 5 * b * s * shape.hidden + b * shape.heads * s * s + b * s * shape.ffn
    if not shape.is_decoder:
        per_layer += b * s * shape.ffn + b * shape.heads * s * s
    return w * per_layer


def position_bias(shape: ModelShape, b: int, s: int, w: int) -> int:
    """MPNet's relative-position bias (B*A*S*S), computed once per forward and added to every layer's attention
    scores, so it lives for the whole forward and is kept once for backward (BERT-like otherwise)."""
    return w * b * shape.heads * s * s if shape.family == "mpnet" else 0


def zo_bytes(params: WorkloadParams, shape: ModelShape, trainable: int, w: int) -> int:
    """MeZO's own memory (workloads.mezo): the noise table (`table`) or one z buffer per worker (`normal`), plus
    one estimate buffer per worker for ZO-SignSGD."""
    buffers = (params.zo_noise == "normal") + (params.zo_variant == "sign")
    table = noise_table_size(trainable) if params.zo_noise == "table" else 0
    return w * (table + ZO_MAX_WORKERS * buffers * min(ZO_CHUNK, shape.largest_tensor))


def breakdown(params: WorkloadParams, shape: ModelShape, runtime: int, num_labels: int = 2) -> Breakdown:
    w = BYTES[params.dtype]
    b, s = params.batch, min(params.seq_len, shape.max_positions)
    lm = is_lm(shape, params)
    total_params = shape.params + (0 if lm else shape.hidden * num_labels + num_labels)
    trainable = trainable_count(shape, params, num_labels)
    largest = w * shape.largest_tensor
    logits = 4 * b * s * shape.vocab if lm else 0  # fp32 logits of an LM head
    weights = total_params * w
    bias = position_bias(shape, b, s, w)
    if params.method in ("inference", "mezo"):
        zo = zo_bytes(params, shape, trainable, w) if params.method == "mezo" else 0
        # An LM keeps its logits and their log-softmax; its head's matmul packs the (tied) embedding matrix.
        head = int(LM_HEAD_PACKING * largest) if lm else 0
        acts = layer_working_set(shape, b, s, w) + bias
        return Breakdown(runtime, weights, 0, 0, acts, 2 * logits + head, zo)
    grads = trainable * w
    # torch keeps optimizer states in the parameter's dtype (exp_avg, exp_avg_sq of a bf16 weight are bf16)
    optimizer = OPTIMIZER_STATE[params.optimizer] * w * trainable
    if params.method == "bp":
        acts = shape.layers * layer_saved_for_backward(shape, b, s, w) + bias
    else:  # checkpointed: every layer's input, plus one layer recomputed with its saved tensors
        acts = shape.layers * b * s * shape.hidden * w + layer_saved_for_backward(shape, b, s, w) + bias
    # Temporaries as large as the largest tensor: its gradient's second contribution (tied LM head / embedding
    # backward) and the optimizer's per-tensor denominators; only for fully trained models.
    temporaries = int(BP_LARGEST_TEMPORARIES * largest) if params.tuning == "full" else 0
    return Breakdown(runtime, weights, grads, optimizer, acts + temporaries, 3 * logits, 0)


def predict_breakdown(params: WorkloadParams) -> Breakdown | None:
    """None when the model's shape is unknown or the runtime baseline cannot be measured here."""
    shape = model_shape(params.model)
    runtime = runtime_baseline_bytes(params.task != SYNTHETIC) if shape is not None else None
    if shape is None or runtime is None:
        return None
    return breakdown(params, shape, runtime)


def predict_peak_bytes(params: WorkloadParams) -> int | None:
    """Predicted peak process memory (bytes) of the cell, or None for a model whose shape is unknown."""
    result = predict_breakdown(params)
    return result.total if result else None


def largest_fitting(params: WorkloadParams, cap_bytes: int, ladder: str | None = None) -> str | None:
    """The largest rung of `ladder` (opt, bert, pretrained; default the params' model's own, see
    `registry.ladder_of`) predicted to fit under the cap."""
    ladder = ladder or ladder_of(resolve(params.model))
    runtime = runtime_baseline_bytes(params.task != SYNTHETIC)
    if runtime is None:
        return None
    best = None
    for name in ladder_names(ladder):
        candidate = params.model_copy(update={"model": name})
        rung = model_shape(name)
        assert rung is not None
        if breakdown(candidate, rung, runtime).total <= cap_bytes:
            best = name
    return best


def fit_ratio(params: WorkloadParams, cap_bytes: int, ladder: str | None = None) -> float | None:
    """Parameters of the largest MeZO-trainable model / of the largest checkpointed-BP one under the cap."""
    mezo = largest_fitting(params.model_copy(update={"method": "mezo"}), cap_bytes, ladder)
    bp = largest_fitting(params.model_copy(update={"method": "bp-checkpointed"}), cap_bytes, ladder)
    if mezo is None or bp is None:
        return None
    mezo_shape, bp_shape = model_shape(mezo), model_shape(bp)
    assert mezo_shape and bp_shape
    return mezo_shape.params / bp_shape.params
