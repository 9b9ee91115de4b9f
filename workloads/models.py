"""Model builders: whatever `workloads.registry` says a name is (the size ladder from configs, the truncated
pretrained ladders, a hub id or local directory), the classification wrapper, and which parameters a cell trains."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from workloads.params import WorkloadParams
from workloads.registry import family_of, resolve
from workloads.weights import drop_cached_pages

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: Attention projections that LoRA adapts, per family; other architectures get every linear layer.
LORA_TARGETS = {"opt": ["q_proj", "v_proj"], "bert": ["query", "value"], "mpnet": ["q", "v"]}
LORA_RANK = 8
#: Zero-shot head: logits are cosine similarities to the class prototypes times this inverse temperature.
PROTOTYPE_SCALE = 20.0
PROMPT = "It was {}."


class SequenceClassifier(nn.Module):
    """Any transformers backbone + masked mean pooling, L2-normalised (as sentence-transformers pools
    all-MiniLM-L6-v2 and all-mpnet-base-v2) + a head: linear (its weights the zero-shot class prototypes at the
    start, `head: prototype`), or tied to the label prompts (`head: prompt`): each forward re-embeds the prompts
    with the current backbone and scores the cosine to them, so that training the backbone moves the classes
    with it, as prompt-based fine-tuning ties the classes to the MLM head (MeZO's paper: without a prompt MeZO
    stays near chance on SST-2, with one it learns)."""

    def __init__(self, backbone: nn.Module, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden, num_labels, dtype=next(backbone.parameters()).dtype)
        self.register_buffer("prompt_ids", None, persistent=False)  # set by tie_to_prompts (`head: prompt`)
        self.register_buffer("prompt_mask", None, persistent=False)

    def tie_to_prompts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Score classes against these tokenized label prompts, re-embedded at every forward; the head keeps
        only its bias (its weight would be the prototypes the prompts now give)."""
        self.prompt_ids, self.prompt_mask = input_ids, attention_mask

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return nn.functional.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)

    def prototypes(self) -> torch.Tensor:
        """The label prompts' pooled embeddings, centred and normalised, times PROTOTYPE_SCALE."""
        protos = self.pool(self.prompt_ids, self.prompt_mask).float()
        protos = protos - protos.mean(0, keepdim=True) if len(protos) > 1 else protos
        return nn.functional.normalize(protos, dim=-1) * PROTOTYPE_SCALE

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits of pooled features."""
        if self.prompt_ids is None:
            return self.head(features)
        return features @ self.prototypes().to(features.dtype).T + self.head.bias

    def forward(self, input_ids, attention_mask, labels=None):
        logits = self.scores(self.pool(input_ids, attention_mask))
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SimpleNamespace(loss=loss, logits=logits)


@dataclass
class BuiltModel:
    model: nn.Module
    family: str
    vocab: int


def load_tokenizer(model: str, trust_remote_code: bool = False):
    """The model's tokenizer; its repository's own Python code runs only when the spec says trust_remote_code."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve(model).tokenizer.path(), trust_remote_code=trust_remote_code)


def build_model(params: WorkloadParams, kind: str, num_labels: int) -> BuiltModel:
    """kind "lm": a causal LM (decoders on the synthetic task); "classification": backbone + head."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    entry = resolve(params.model)
    dtype = DTYPES[params.dtype]
    auto = AutoModelForCausalLM if kind == "lm" else AutoModel
    if entry.weights is None:
        assert entry.config is not None
        model = auto.from_config(AutoConfig.for_model(**entry.config), dtype=dtype)
    else:
        extra = {"num_hidden_layers": entry.keep_layers} if entry.keep_layers else {}
        drop_cached_pages(entry.weights.weight_files())
        model = auto.from_pretrained(
            entry.weights.path(), dtype=dtype, trust_remote_code=params.trust_remote_code, **extra
        )
    config = model.config
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # mean pooling replaces the BERT / MPNet pooler; its weights would get no gradient
    if kind == "classification":
        hidden = getattr(config, "word_embed_proj_dim", None) or config.hidden_size
        model = SequenceClassifier(model, hidden, num_labels)
    return BuiltModel(model, family_of(config.model_type), config.vocab_size)


def init_head(
    model: SequenceClassifier, tokenizer, label_names: list[str], words: dict[str, str], head: str = "prototype"
) -> None:
    """Zero-shot head: each class's prototype is the normalised pooled embedding of a prompt with its label word,
    so step 0 is already a sensible classifier (cosine to class prototypes) rather than a random one. `prototype`
    copies them into the linear head once; `prompt` ties the head to the prompts (SequenceClassifier)."""
    texts = [PROMPT.format(words.get(name.lower(), name)) for name in label_names]
    enc = tokenizer(texts, padding=True, return_tensors="pt").to(model.head.weight.device)
    was_training = model.training
    model.eval()
    with torch.inference_mode():  # the prompts' tokens stay ordinary tensors: a tied head backpropagates through them
        model.prompt_ids, model.prompt_mask = enc["input_ids"], enc["attention_mask"]
        model.head.weight.copy_(model.prototypes())
        model.prompt_ids = model.prompt_mask = None
        model.head.bias.zero_()
    if head == "prompt":
        model.tie_to_prompts(enc["input_ids"], enc["attention_mask"])
    model.train(was_training)


def select_trainable(model: nn.Module, tuning: str, family: str) -> nn.Module:
    """Freeze what the cell does not train. LoRA wraps the backbone with peft (the head stays trainable).
    Returns the (possibly wrapped) model."""
    is_classifier = isinstance(model, SequenceClassifier)
    if tuning == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=LORA_RANK,
            lora_alpha=2 * LORA_RANK,
            lora_dropout=0.0,
            target_modules=LORA_TARGETS.get(family, "all-linear"),
        )
        if is_classifier:
            model.backbone = get_peft_model(model.backbone, config)  # freezes the backbone but its adapters
            model.head.requires_grad_(True)
        else:
            model = get_peft_model(model, config)
    elif tuning == "head":
        model.requires_grad_(False)
        head = model.head if is_classifier else model.get_output_embeddings()
        head.requires_grad_(True)
    if is_classifier and model.prompt_ids is not None:  # a head tied to the prompts uses its bias alone
        model.head.weight.requires_grad_(False)
    return model


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Unique trainable parameters (tied weights once), in a stable order."""
    seen: set[int] = set()
    out = []
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def enable_checkpointing(model: nn.Module) -> None:
    """transformers' activation (gradient) checkpointing where the model supports it; torch.utils.checkpoint around
    the blocks of its largest ModuleList otherwise (transformers refuses it for MPNet)."""
    targets = [m for m in model.modules() if getattr(m, "supports_gradient_checkpointing", False)]
    if targets:
        targets[0].activation_checkpointing_enable({"use_reentrant": False})
        # Non-reentrant checkpointing needs no input that requires grad (gradients reach the parameters inside each
        # checkpointed layer regardless), but transformers makes the embeddings' output one: a head-only cell (a
        # linear probe) would then backpropagate through every frozen layer.
        targets[0].disable_input_require_grads()
        return
    blocks = max((m for m in model.modules() if isinstance(m, nn.ModuleList)), key=len, default=None)
    if blocks is None:
        raise ValueError("gradient checkpointing needs transformer blocks (an nn.ModuleList) in the model")
    for i, block in enumerate(blocks):
        blocks[i] = CheckpointedBlock(block)


def checkpointing_enabled(model: nn.Module) -> bool:
    """Read back from the modules themselves whether their forward will recompute activations."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


class CheckpointedBlock(nn.Module):
    """Keeps only the block's inputs; recomputes its internals in backward."""

    gradient_checkpointing = True

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        if not self.training:
            return self.block(*args, **kwargs)
        return checkpoint(self.block, *args, use_reentrant=False, **kwargs)
