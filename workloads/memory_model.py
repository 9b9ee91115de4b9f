"""Analytic peak-memory model, torch-free: its terms, given a host's measured figures (workloads.host_memory).

peak RSS = R + data + resident weights + method terms, with R (interpreter + torch + allocator) and a no-grad
forward's allocator retention measured once per environment and thread count (workloads.baseline,
workloads.calibration), and what the allocator keeps derived from its tuning (workloads.allocator). The activation terms are counts of the tensors transformers' OPT / BERT / MPNet layers keep
in fp32 on CPU (saved for backward, or live at a no-grad forward's peak), taken with
`torch.autograd.graph.saved_tensors_hooks` and the profiler's allocation events; the few other constants that are not
counts were fitted on a calibration sweep and are validated on a disjoint one and on random shapes
(docs/workloads.md, "Analytic memory model"; benchmarks/bench_memory_model.py, bench_memory_random.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workloads.allocator import FITTED, MMAP_CEILING, Allocator
from workloads.params import ZO_CHUNK, ZO_MAX_WORKERS, WorkloadParams, noise_table_size
from workloads.registry import ModelShape
from workloads.sources import ROTTEN_TOMATOES, SYNTHETIC, split_sizes

BYTES = {"fp32": 4, "bf16": 2}
OPTIMIZER_STATE = {"sgd": 0, "sgd-momentum": 1, "adamw": 2}  # states per trainable weight, in its dtype
LORA_RANK = 8
INDEX_BYTES = 8  # token ids, attention masks and labels are int64

#: What one layer keeps for backward, in elements per token as multiples of (H, A*S, F), counted with
#: saved_tensors_hooks (unique storages, weights excluded). An encoder layer trains with dropout, so BERT's SDPA
#: takes its math path: linear inputs (Q/K/V share one, the attention output's, the MLP's two: H, H, F), Q and K
#: and V for the two matmuls (3 H), the softmax output, its dropout mask and the dropped probabilities (3 A*S), two
#: hidden dropout masks and two LayerNorm inputs (4 H) and GELU's input (F). OPT's attention has no dropout, so
#: SDPA's flash kernel keeps Q, K, V and its output (4 H) and no A*S term; ReLU's output doubles as fc2's input.
#: LoRA freezes the base linears, whose inputs are then not kept (the adapters reuse Q/V's input); "frozen" layers
#: (a tied LM head, or a checkpointed classifier head, see `saved_counts`) keep only their input-gradient path.
SAVED_PER_TOKEN = {
    ("encoder", "full"): (10, 3, 2),
    ("encoder", "lora"): (8, 3, 1),
    ("encoder", "frozen"): (7, 3, 1),
    ("decoder", "full"): (10, 0, 1),
    ("decoder", "lora"): (9, 0, 1),
    ("decoder", "frozen"): (8, 0, 1),
}
#: Kept before the first layer by a fully trained encoder: the embeddings' LayerNorm input and dropout mask (H each).
ENCODER_EMBEDDING_SAVED = 2
#: Families whose attention runs through SDPA's flash kernel when no dropout is active (no B*A*S*S scores).
FLASH_ATTENTION = {"bert", "opt"}
#: Live at a no-grad forward's peak, per token (counted with the profiler's allocation events): in the MLP, the
#: embedding output, the layer input and the attention output (3 H) beside the intermediate and its activation
#: (2 F); in attention, those plus Q, K, V, the context and its reshaped copy (7 H), plus the B*A*S*S scores and
#: probabilities (and with dropout, the dropped probabilities) where SDPA's flash kernel does not run.
MLP_PHASE_HIDDEN, MLP_PHASE_FFN = 3, 2
ATTENTION_PHASE_HIDDEN = 7
ATTENTION_SCORES = {False: 2, True: 3}  # B*A*S*S tensors live at once, without / with attention dropout
#: OPT's forward fills a key/value cache (2 H per layer and token; `use_cache` is on) that lives until it returns.
KV_CACHE_PER_LAYER = 2
#: Measured on the cells (opt-30m, opt-125m): an LM forward's peak holds about this share of the tied embedding matrix
#: beyond its logits (the first large matmul's retained buffers: a warm LM head's matmul alone holds only its logits).
LM_HEAD_PACKING = 0.8
#: AdamW (foreach=False) builds its denominator for one tensor at a time (sqrt, then the division): two temporaries
#: as large as the largest trained tensor; SGD updates in place. A tied LM head / embedding sums two gradients.
OPTIMIZER_TEMPORARIES = {"sgd": 0, "sgd-momentum": 0, "adamw": 2}
TIED_GRADIENT_TEMPORARIES = 1
#: An LM's backward starts with its log-softmax kept for backward and two B*S*V gradients (of the log-softmax and of
#: the logits): the logits phase; the optimizer's temporaries come later, after those are freed.
LM_BACKWARD_LOGITS = 3
# The allocator (glibc malloc) does not return every freed tensor: tensors up to its mmap threshold (which rises to
# the largest freed one, up to 32 MiB) come from the heap, whose holes later tensors reuse only in part. A no-grad
# forward's retention is measured on each host (`Allocator`, workloads.calibration); backprop's is fitted on the
# calibration sweep (3 steps; docs/workloads.md), in units of the counted live tensors it retains:
#: plain backprop: besides what is kept, the forward's freed temporaries and the backward's gradients, in the part of
#: one layer's saved set served from the heap: HEAP_WORKING_LAYERS * L / (L + 1), growing with depth (0.5-0.9 measured
#: at one layer, 1.3-1.4 at three to six);
HEAP_WORKING_LAYERS = 1.6
#: checkpointed backprop holds every layer's input and one recomputed layer's saved set at a time; the heap
#: retains freed recomputed sets besides, RECOMPUTED_RETAINED + RECOMPUTED_RETAINED_PER_LAYER * (L - 1) of the part of
#: a set that is served from the heap (its tensors under MMAP_CEILING), never more than plain backprop would;
RECOMPUTED_RETAINED = 0.6
RECOMPUTED_RETAINED_PER_LAYER = 0.42
#: plain backprop with frozen weights (LoRA, a tied LM head): no large gradients or optimizer states refill the first
#: step's freed activations, so the next step's land in new memory: the heap holds two steps' kept tensors (of those
#: it serves; a mapped tensor is returned when freed).
FROZEN_STEPS_RETAINED = 2
#: A real task's examples as Python strings and the datasets library's table, per example (fitted).
TEXT_BYTES_PER_EXAMPLE = 675
#: A frozen embedding of a memory-mapped checkpoint becomes resident where read: each example read maps about this
#: much of it (its new tokens' rows with the kernel's 64 KiB fault-around window, whatever the width; fitted on
#: mpnet-l1 and minilm-l1 after 16 to 9,000 reviews, with the checkpoint faulted in by the mapping:
#: `weights.drop_cached_pages`) ...
MAPPED_BYTES_PER_EXAMPLE = 400 << 10
#: ... up to this share of it: the rest holds tokens English reviews never use (89% of both embeddings was mapped
#: after 3,000 and after 9,000 reviews).
MAPPED_SHARE = 0.89
#: The tokenised splits are written slice by slice into tensors allocated once; the tokenizer's per-slice buffers,
#: freed into the heap, leave this many times the tensors' bytes resident (fitted: 1.48 from S = 32 to 256).
TOKENIZED_RESIDENT = 1.5
#: Deduplicated examples of the tasks whose size is known without loading them (docs/workloads.md, Tasks).
KNOWN_TASK_EXAMPLES = {ROTTEN_TOMATOES: 12_752}


@dataclass(frozen=True)
class Breakdown:
    """The terms of one prediction, in bytes (what `edgebench estimate --json` prints)."""

    runtime: int
    data: int
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
            + self.data
            + self.weights
            + self.gradients
            + self.optimizer
            + self.activations
            + self.logits
            + self.zo_buffer
        )


def is_lm(shape: ModelShape, params: WorkloadParams) -> bool:
    return shape.is_decoder and params.task == SYNTHETIC


def head_size(shape: ModelShape, num_labels: int) -> int:
    return shape.hidden * num_labels + num_labels


def param_count(shape: ModelShape, params: WorkloadParams, num_labels: int = 2) -> int:
    """Every parameter of the model a cell of `params` builds, head included: the backbone and a classifier's
    head of `num_labels` labels (a language model's head, on the synthetic task, is tied to its embeddings and
    adds none). The count a cell measures (metrics.param_count) and the one every report and estimate uses."""
    return shape.params + (0 if is_lm(shape, params) else head_size(shape, num_labels))


def trainable_count(shape: ModelShape, params: WorkloadParams, num_labels: int) -> int:
    lm = is_lm(shape, params)
    head = shape.largest_tensor if lm else head_size(shape, num_labels)
    if params.tuning == "head":
        return head
    if params.tuning == "lora":  # two rank-r adapters on the query and value projections of every layer
        return shape.layers * 2 * 2 * LORA_RANK * shape.hidden + (0 if lm else head)
    return param_count(shape, params, num_labels)


def resident_weights(shape: ModelShape, params: WorkloadParams, pretrained: bool, num_labels: int) -> int:
    """Weight bytes that are really resident. A pretrained fp32 checkpoint's tensors are views of its memory-mapped
    safetensors file, so a page counts once it is read or written: every layer's weights are read by each forward,
    but a frozen word embedding only around the rows of the tokens read (`mapped_embedding`)."""
    w = BYTES[params.dtype]
    total = w * param_count(shape, params, num_labels)
    written = params.method in ("mezo", "bp", "bp-checkpointed") and params.tuning == "full"
    if not pretrained or params.dtype != "fp32" or written:
        return total
    embedding = w * shape.vocab * shape.hidden
    return total - embedding + mapped_embedding(params, embedding)


def mapped_embedding(params: WorkloadParams, embedding: int) -> int:
    """Bytes of a frozen memory-mapped embedding read by a cell: MAPPED_BYTES_PER_EXAMPLE per distinct example (the
    evaluated ones, then every training batch), saturating at MAPPED_SHARE of it as the mapped windows overlap (a
    time budget runs an unknown number of steps: it counts that share). Random tokens spread over the whole
    vocabulary: the synthetic task counts it all."""
    if params.task == SYNTHETIC:
        return embedding
    reached = MAPPED_SHARE * embedding
    if params.max_steps is None:
        return int(reached)
    held_out = evaluated_examples(params)
    if held_out is None:  # the whole of splits of unknown size
        return int(reached)
    examples = held_out + params.max_steps * params.batch
    return int(reached * -math.expm1(-examples * MAPPED_BYTES_PER_EXAMPLE / reached))


def evaluated_examples(params: WorkloadParams) -> int | None:
    """The held-out examples a cell scores, both splits together; None for whole splits of an unknown task."""
    examples = KNOWN_TASK_EXAMPLES.get(params.task)
    if examples is None:
        return None if params.eval_examples == "all" else 2 * params.eval_examples
    sizes = split_sizes(examples)
    return params.evaluated(sizes["validation"]) + params.evaluated(sizes["test"])


def data_bytes(params: WorkloadParams) -> int:
    """A real task in memory: its examples' texts, and the tokenised splits (int64 token ids and attention masks of
    the train split and of the evaluated examples of validation and test, and the labels; TOKENIZED_RESIDENT times
    their bytes). Zero for the synthetic task and for tasks whose size is unknown before loading them."""
    examples = KNOWN_TASK_EXAMPLES.get(params.task)
    if examples is None:
        return 0
    sizes = split_sizes(examples)
    rows = sizes["train"] + (evaluated_examples(params) or 0)
    return examples * TEXT_BYTES_PER_EXAMPLE + int(TOKENIZED_RESIDENT * rows * INDEX_BYTES * (2 * params.seq_len + 1))


def per_token_elements(shape: ModelShape, s: int, counts: tuple[int, int, int]) -> int:
    hidden, scores, ffn = counts
    return hidden * shape.hidden + scores * shape.heads * s + ffn * shape.ffn


def saved_counts(shape: ModelShape, params: WorkloadParams) -> tuple[int, int, int] | None:
    """SAVED_PER_TOKEN of the cell's layers; None when nothing in the backbone needs a gradient (a classifier's
    head alone: a linear probe, checkpointed or not)."""
    kind = "decoder" if shape.is_decoder else "encoder"
    tuning = params.tuning
    if tuning == "head":
        if not is_lm(shape, params):
            return None
        tuning = "frozen"
    return SAVED_PER_TOKEN[(kind, tuning)]


def layer_saved(shape: ModelShape, params: WorkloadParams, b: int, s: int) -> int:
    """Elements one layer keeps for backward."""
    counts = saved_counts(shape, params)
    return b * s * per_token_elements(shape, s, counts) if counts else 0


def heap_saved(shape: ModelShape, params: WorkloadParams, b: int, s: int, ceiling: int = MMAP_CEILING) -> int:
    """Elements of one layer's saved set in tensors glibc may serve from its heap (at most `ceiling` bytes each:
    B*S*H, B*A*S*S and B*S*F tensors, each kind counted where one tensor of it fits)."""
    counts = saved_counts(shape, params)
    if counts is None:
        return 0
    w = BYTES[params.dtype]
    sizes = (b * s * shape.hidden, b * shape.heads * s * s, b * s * shape.ffn)
    return sum(count * size for count, size in zip(counts, sizes, strict=True) if w * size <= ceiling)


def position_bias(shape: ModelShape, b: int, s: int) -> int:
    """MPNet's relative-position bias (B*A*S*S elements), computed once per forward and added to every layer's
    scores: live through the whole forward, and a checkpoint input of every layer."""
    return b * shape.heads * s * s if shape.family == "mpnet" else 0


def working_set(shape: ModelShape, b: int, s: int, dropout: bool) -> int:
    """Elements live at the peak of one layer's forward that keeps nothing for backward: the larger of the MLP's and
    the attention's working sets."""
    mlp = MLP_PHASE_HIDDEN * shape.hidden + MLP_PHASE_FFN * shape.ffn
    flash = shape.family in FLASH_ATTENTION and not (dropout and not shape.is_decoder)
    scores = 0 if flash else ATTENTION_SCORES[dropout] * shape.heads * s
    return b * s * max(mlp, ATTENTION_PHASE_HIDDEN * shape.hidden + scores)


def no_grad_activations(shape: ModelShape, b: int, s: int, dropout: bool, alloc: Allocator) -> float:
    """Elements of a no-grad forward's high-water mark: one layer's working set with what the allocator retains of
    it, and the tensors that live through the whole forward, allocated once (OPT's key/value cache, MPNet's position
    bias)."""
    cache = KV_CACHE_PER_LAYER * shape.layers * b * s * shape.hidden if shape.is_decoder else 0
    return alloc.no_grad_retention * working_set(shape, b, s, dropout) + cache + position_bias(shape, b, s)


@dataclass(frozen=True)
class Activations:
    """Elements of activation memory at backprop's peak: `resident` stays through the optimizer's step (the heap's
    share and what it retains), `returned` is in tensors glibc maps on their own, which the backward returns as it
    goes while the gradients are allocated."""

    resident: float
    returned: float = 0


def backprop_activations(shape: ModelShape, params: WorkloadParams, b: int, s: int, alloc: Allocator) -> Activations:
    """What is kept for backward (every layer's saved set, or, when checkpointed, every layer's input and the
    recomputed layers' sets the heap retains) and the backward's working set; a classifier whose head alone trains
    keeps nothing and peaks in its training-mode forward instead."""
    layer = layer_saved(shape, params, b, s)
    if layer == 0:
        return Activations(no_grad_activations(shape, b, s, dropout=True, alloc=alloc))
    full = params.tuning == "full"
    hidden = b * s * shape.hidden
    embedding = ENCODER_EMBEDDING_SAVED * hidden if not shape.is_decoder and full else 0
    # MPNet's position bias is a checkpoint input of every layer, and without checkpointing its gradient sums over
    # every layer's backward: one B*A*S*S tensor either way.
    bias = position_bias(shape, b, s)
    kept = embedding + bias
    served = BYTES[params.dtype] * hidden <= alloc.mmap_ceiling, BYTES[params.dtype] * bias <= alloc.mmap_ceiling
    kept_heap = embedding * served[0] + bias * served[1]
    heap = heap_saved(shape, params, b, s, alloc.mmap_ceiling)
    returned = kept - kept_heap + shape.layers * (layer - heap)
    if full:
        resident = kept_heap + shape.layers * heap + HEAP_WORKING_LAYERS * shape.layers / (shape.layers + 1) * heap
    else:
        resident = FROZEN_STEPS_RETAINED * (kept_heap + shape.layers * heap)
    if params.method == "bp-checkpointed":
        inputs = kept + shape.layers * hidden
        retained = RECOMPUTED_RETAINED + RECOMPUTED_RETAINED_PER_LAYER * (shape.layers - 1)
        checkpointed = inputs + layer + retained * heap
        if checkpointed < resident + returned:
            return Activations(checkpointed)
    return Activations(resident, returned)


def zo_bytes(params: WorkloadParams, shape: ModelShape, trainable: int, w: int) -> int:
    """MeZO's own memory (workloads.mezo): the noise table (`table`) or one z buffer per worker (`normal`), plus
    one estimate buffer per worker for ZO-SignSGD."""
    buffers = (params.zo_noise == "normal") + (params.zo_variant == "sign")
    table = noise_table_size(trainable) if params.zo_noise == "table" else 0
    return w * (table + ZO_MAX_WORKERS * buffers * min(ZO_CHUNK, shape.largest_tensor))


def breakdown(
    params: WorkloadParams,
    shape: ModelShape,
    runtime: int,
    num_labels: int = 2,
    pretrained: bool = False,
    alloc: Allocator = FITTED,
) -> Breakdown:
    w = BYTES[params.dtype]
    b, s = params.batch, min(params.seq_len, shape.max_positions)
    lm = is_lm(shape, params)
    trainable = trainable_count(shape, params, num_labels)
    largest = w * shape.largest_tensor
    logits = 4 * b * s * shape.vocab if lm else 0  # fp32 logits of an LM head
    weights = resident_weights(shape, params, pretrained, num_labels)
    data = data_bytes(params)
    if params.method in ("inference", "mezo"):
        zo = zo_bytes(params, shape, trainable, w) if params.method == "mezo" else 0
        # An LM keeps its logits and their log-softmax, and holds LM_HEAD_PACKING of its tied embedding matrix.
        head = int(LM_HEAD_PACKING * largest) if lm else 0
        acts = int(w * no_grad_activations(shape, b, s, dropout=False, alloc=alloc))
        return Breakdown(runtime, data, weights, 0, 0, acts, 2 * logits + head, zo)
    grads = trainable * w
    # torch keeps optimizer states in the parameter's dtype (exp_avg, exp_avg_sq of a bf16 weight are bf16)
    optimizer = OPTIMIZER_STATE[params.optimizer] * w * trainable
    acts = backprop_activations(shape, params, b, s, alloc)
    temporaries = 0
    if params.tuning == "full" or (params.tuning == "head" and lm):  # the largest tensor trains
        temporaries = OPTIMIZER_TEMPORARIES[params.optimizer] + (TIED_GRADIENT_TEMPORARIES if lm else 0)
    logits_phase = LM_BACKWARD_LOGITS * logits
    # The optimizer's temporaries come after the LM's logits phase is freed: mapped on their own, they reuse its
    # memory and the peak holds the larger of the two; from the heap, they stay beside it.
    mapped = largest > alloc.mmap_ceiling
    extra = max(0, temporaries * largest - logits_phase) if mapped else temporaries * largest
    # Returned activations and the gradients replacing them peak at the backward's start or at the optimizer's step.
    beyond = max(w * acts.returned - grads, extra)
    return Breakdown(runtime, data, weights, grads, optimizer, int(w * acts.resident + beyond), logits_phase, 0)
