"""The description of one cell's workload: every axis a spec's matrix may vary.

Torch-free: the harness validates specs and expands cells with this in its lean parent process.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["mezo", "bp-checkpointed", "bp", "inference"]
Optimizer = Literal["sgd", "sgd-momentum", "adamw"]

#: Learning rates used when the spec gives none: MeZO needs far smaller steps than AdamW.
DEFAULT_LR = {"mezo": 1e-6, "bp-checkpointed": 1e-4, "bp": 1e-4, "inference": 0.0}
#: MeZO works on z this many elements at a time (4 MiB in fp32), on at most ZO_MAX_WORKERS threads (with
#: `zo_noise: normal`, each thread draws z into its own chunk buffer); shared by workloads.mezo and the memory model.
ZO_CHUNK = 1 << 20
ZO_MAX_WORKERS = 4
#: `zo_noise: table`: the shared noise table holds at most ZO_TABLE normals (16 MiB in fp32; MeZO's peak must stay
#: within 3% of inference's, about 1.3 GB on opt-125m) and at least ZO_TABLE_MIN, so that even a tiny model has
#: many distinct slices to draw z from.
ZO_TABLE = 1 << 22
ZO_TABLE_MIN = 1 << 16
#: `eval_at`: log (1/64 .. 1/2 of the budget) or log:N (N halvings, 1 to 20).
EVAL_AT_PATTERN = r"^log(:([1-9]|1[0-9]|20))?$"
DEFAULT_HALVINGS = 6


def noise_table_size(trainable: int) -> int:
    """Elements of MeZO's noise table for `trainable` trained elements: the next power of two, clamped to
    [ZO_TABLE_MIN, ZO_TABLE] (no need for more normals than a step perturbs)."""
    return min(ZO_TABLE, max(ZO_TABLE_MIN, 1 << max(trainable - 1, 0).bit_length()))


class WorkloadParams(BaseModel):
    """One cell's workload. Every field may be a matrix axis in a spec."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field(min_length=1, description="ladder name (e.g. opt-8m), hub id, or local directory")
    task: str = Field(default="synthetic", min_length=1, description="synthetic, rotten_tomatoes, glue/sst2, or a file")
    text_column: str | None = Field(default=None, min_length=1, description="text column of a dataset (default text)")
    label_column: str | None = Field(default=None, min_length=1, description="label column of a dataset (default label)")
    method: Method = "mezo"
    optimizer: Optimizer = Field(default="adamw", description="backprop optimizer (ignored by MeZO)")
    lr: float | None = Field(default=None, gt=0, description="learning rate; per-method default when omitted")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        default="constant", description="after warm-up: constant lr, or linear / cosine decay to 0 over the budget"
    )
    warmup_steps: int = Field(default=0, ge=0, description="linear lr warm-up from 0, in steps whatever the budget")
    weight_decay: float = Field(default=0.0, ge=0)
    eps: float = Field(default=1e-3, gt=0, description="MeZO perturbation scale")
    n_queries: int = Field(default=1, ge=1, description="n-SPSA: estimates averaged per MeZO step")
    zo_variant: Literal["spsa", "sign"] = Field(default="spsa", description="sign: zo-sgd-sign update")
    zo_noise: Literal["normal", "table"] = Field(
        default="table",
        description="MeZO's z: fresh normals per pass (normal) or signed slices of a per-cell table of normals "
        "(table, ~10x cheaper to draw); the default is the one benchmarks/bench_workloads_memory.py shows faster "
        "at equal accuracy",
    )
    tuning: Literal["full", "lora", "head"] = "full"
    head: Literal["prototype", "prompt"] = Field(
        default="prototype",
        description="a classifier's head: a linear head started at the label prompts' embeddings (prototype), or "
        "the label prompts re-embedded by the current backbone at every forward (prompt; needs a trained backbone)",
    )
    dtype: Literal["fp32", "bf16"] = "fp32"
    trust_remote_code: bool = Field(
        default=False,
        description="let a hub model run its own Python code when loaded (off unless a spec sets it; the report warns)",
    )
    batch: int = Field(default=8, ge=1)
    seq_len: int = Field(default=64, ge=1)
    padding: Literal["longest", "max_length"] = Field(
        default="longest",
        description="training batches padded to their longest example (after the first two, which are padded to "
        "seq_len so the peak is reached at once) or always to seq_len; evaluation batches always to their longest",
    )
    max_steps: int | None = Field(default=10, ge=1, description="step budget")
    max_seconds: float | None = Field(default=None, gt=0, description="training-time budget, in the cell clock's seconds")
    eval_every: int | None = Field(default=None, ge=1, description="evaluate every k steps (plus step 0 and the end)")
    eval_seconds: float | None = Field(default=None, gt=0, description="evaluate every k seconds of training time")
    eval_examples: int | Literal["all"] = Field(
        default=512, description="examples of validation and of test each scores; all: the whole splits"
    )
    eval_at: str | None = Field(
        default=None,
        description="log: also evaluate at 1/64, 1/32, ..., 1/2 of the budget (log:N: N halvings, 1..20), so a "
        "long curve costs few evaluations",
    )
    stop_when_flat: float | None = Field(
        default=None,
        gt=0,
        description="stop training, from a quarter of the budget on, once validation accuracy gained under this "
        "many points over each of the last two doublings of training time (eval_at: log evaluates at every "
        "halving); null: train the whole budget",
    )
    evaluate: bool = Field(
        default=True,
        description="false: hold the evaluated examples but score none (a run that asks only whether training fits)",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _budget(self) -> WorkloadParams:
        if self.max_steps is None and self.max_seconds is None:
            raise ValueError("give a budget: max_steps, max_seconds or both")
        return self

    @model_validator(mode="after")
    def _warmup_within_budget(self) -> WorkloadParams:
        """max_steps caps the steps whatever other budget there is, so a longer warm-up never reaches the lr. A
        max_seconds budget needs the device's speed: harness.plan.warmup.warmup_problem checks it when cells are planned."""
        if self.max_steps is not None and self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"warmup_steps {self.warmup_steps} is not below max_steps {self.max_steps}, so the warm-up never "
                "ends; use fewer warmup_steps or more max_steps"
            )
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


    @field_validator("eval_at")
    @classmethod
    def _eval_at_form(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(EVAL_AT_PATTERN, value):
            raise ValueError(f"eval_at {value!r}: use log (1/64, 1/32, ..., 1/2 of the budget) or log:N (N halvings, 1 to 20)")
        return value

    @model_validator(mode="after")
    def _stop_when_flat_needs_doublings(self) -> WorkloadParams:
        if self.stop_when_flat is None:
            return self
        if self.eval_at is None:
            raise ValueError("stop_when_flat needs eval_at: log (an evaluation at every halving of the budget)")
        if self.eval_every is not None or self.eval_seconds is not None:
            raise ValueError("stop_when_flat judges eval_at's halvings alone; drop eval_every and eval_seconds")
        return self

    def budget_share(self, steps: int, seconds: float) -> float:
        """The share of the budget `steps` and `seconds` of training have spent, in the unit eval_at's points are
        placed in: seconds of a time budget, else steps."""
        if self.max_seconds is not None:
            return seconds / self.max_seconds
        assert self.max_steps is not None  # _budget: one of the two is set
        return steps / self.max_steps

    @model_validator(mode="after")
    def _eval_examples(self) -> WorkloadParams:
        if isinstance(self.eval_examples, int) and self.eval_examples < 1:
            raise ValueError(f"eval_examples {self.eval_examples}: give at least 1, or all")
        return self

    @model_validator(mode="after")
    def _prompt_head_needs_a_backbone(self) -> WorkloadParams:
        if self.head == "prompt" and self.tuning == "head":
            raise ValueError(
                "head: prompt ties the classes to the backbone, which tuning: head leaves frozen; use head: "
                "prototype with tuning: head, or train the backbone (tuning: full or lora)"
            )
        return self

    def evaluated(self, split_size: int) -> int:
        """How many examples of a held-out split of `split_size` each evaluation scores."""
        return split_size if self.eval_examples == "all" else min(self.eval_examples, split_size)

    def eval_fractions(self) -> list[float]:
        """The shares of the budget at which `eval_at` asks for an evaluation (step 0 and the end always are)."""
        if self.eval_at is None:
            return []
        halvings = int(self.eval_at.partition(":")[2] or DEFAULT_HALVINGS)
        return [2.0**-k for k in range(halvings, 0, -1)]


AXES = tuple(WorkloadParams.model_fields)
