"""Config sections of the distillation engine (strict dataclasses, loaded with ``distill.schema.from_dict``).

One engine serves teacher fine-tuning, the no-KD student baseline and distillation; they differ only in
``losses`` (and whether teachers are passed to ``distill.trainer.train``)::

    fine-tuning / baseline:  losses: [{type: hard_ce}]
    Tang et al. 2019:        losses: [{type: logits_mse}], augment: {p_mask: 0.1, p_pos: 0.1, p_ng: 0.25, n_iter: 20}
    Hinton KD + TinyBERT:    losses: [{type: soft_ce, temperature: 2}, {type: hard_ce, weight: 0.5},
                                      {type: hidden_mse, layer_map: {0: 0, 6: 1, 12: 2}}]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from distill.schema import ConfigError, from_dict, require


@dataclass
class ScheduleConfig:
    """How a loss weight or temperature moves over training: ``constant`` keeps the base value;
    ``linear`` goes from the base value at step 0 to ``end`` at the last step."""

    type: Literal["constant", "linear"] = "constant"
    end: float | None = None

    def validate(self) -> None:
        if self.type == "linear" and self.end is None:
            raise ValueError("schedule type 'linear' needs 'end' (the value at the last training step)")


@dataclass
class LossConfig:
    """One loss term.  ``type`` names an entry of ``distill.losses.LOSSES`` (``tinydistill list losses``)."""

    type: str
    weight: float = 1.0
    #: softmax temperature (soft_ce, attention-free losses ignore it)
    temperature: float = 1.0
    weight_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    temperature_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    #: heads this (logits-level) loss applies to; default: every head of the task
    heads: list[str] | None = None
    #: hidden_mse / attention_kl: {teacher_layer: student_layer}; 0 = embeddings for hidden states,
    #: attention layers count from 1.  Default: uniform map (see distill.layermap)
    layer_map: dict[int, int] | None = None
    #: minilm: number of relation heads for the value relation (default: the student's attention heads)
    relation_heads: int | None = None
    #: which teacher provides hidden states / attentions for representation losses (multi-teacher runs)
    teacher_index: int = 0

    def validate(self) -> None:
        require(self, "temperature", gt=0)
        require(self, "weight", ge=0)
        require(self, "relation_heads", ge=1)
        require(self, "teacher_index", ge=0)
        for t, s in (self.layer_map or {}).items():
            if t < 0 or s < 0:
                raise ValueError(f"layer_map: layers count from 0 (embeddings), got {{{t}: {s}}}")


@dataclass
class AugmentConfig:
    """Tang et al. (2019) data augmentation; augmented copies are labelled by the teacher(s).

    Per word: with ``p_mask`` it becomes the mask token ([MASK], or UNK for vocabularies without one);
    otherwise with ``p_pos`` another word of the same part of speech (jieba.posseg, drawn by frequency
    from the training texts).  Then with ``p_ng`` the example is cut to a random n-gram of words, n drawn
    uniformly from ``ngram_range`` (inclusive).  ``n_iter`` tries per example; duplicates are dropped.
    """

    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    ngram_range: list[int] = field(default_factory=lambda: [1, 5])
    n_iter: int = 20
    #: seed offset added to the training seed (augmentation is deterministic under the seed)
    seed: int = 0

    def validate(self) -> None:
        for key in ("p_mask", "p_pos", "p_ng"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"augment.{key} must be in [0, 1], got {getattr(self, key)}")
        if self.p_mask + self.p_pos > 1.0:
            raise ValueError(f"augment.p_mask + augment.p_pos must be <= 1, got {self.p_mask + self.p_pos}")
        if len(self.ngram_range) != 2 or not 1 <= self.ngram_range[0] <= self.ngram_range[1]:
            raise ValueError(f"augment.ngram_range must be [min_n, max_n] with 1 <= min_n <= max_n, "
                             f"got {self.ngram_range}")
        if self.n_iter < 1:
            raise ValueError(f"augment.n_iter must be >= 1, got {self.n_iter}")


@dataclass
class MixingConfig:
    """How the logits of several teachers are combined into one target per example and head.

    ``fixed``: weighted average with ``weights`` (default: equal).  ``confidence``: per example, each
    teacher's weight is its confidence (max softmax probability; mean over real tokens for token heads),
    normalised over teachers.
    """

    mode: Literal["fixed", "confidence"] = "fixed"
    weights: list[float] | None = None


@dataclass
class DistillConfig:
    epochs: int = 3
    #: stop after this many optimisation steps (overrides epochs when smaller)
    max_steps: int | None = None
    lr: float = 5e-5
    batch_size: int = 32
    #: inference batch size of dev evaluation and of the up-front teacher logits (no gradients)
    eval_batch_size: int = 256
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    lr_schedule: Literal["linear", "constant"] = "linear"
    max_grad_norm: float | None = 1.0
    losses: list[LossConfig] = field(default_factory=lambda: [LossConfig(type="hard_ce")])
    augment: AugmentConfig | None = None
    mixing: MixingConfig = field(default_factory=MixingConfig)
    #: evaluate on dev (and checkpoint) every N steps; default: at the end of every epoch
    eval_every: int | None = None
    #: stop when the dev main metric has not improved for this many evaluations
    early_stopping_patience: int | None = None
    seed: int = 42
    #: teacher-output cache: "auto" = use it when no loss needs teacher internals (hidden/attentions)
    teacher_cache: Literal["auto", "off"] = "auto"
    #: where cached teacher logits live (default: $TINYDISTILL_CACHE or ~/.cache/tinydistill/teacher_logits)
    cache_dir: str | None = None
    log_every: int = 10
    progress: bool = True
    #: CPU threads of paddle's kernels; default: every core this process may use (paddle alone uses 1)
    threads: int | None = None
    #: batches of examples of similar length (sorted within windows of ``bucket_window`` batches, then the
    #: batches shuffled): less padding per step; ``false`` gives the plain shuffled order
    length_bucketing: bool = True
    bucket_window: int = 50

    def validate(self) -> None:
        for name in ("epochs", "max_steps", "batch_size", "eval_batch_size", "eval_every", "early_stopping_patience",
                     "log_every", "threads", "bucket_window"):
            require(self, name, ge=1)
        require(self, "lr", gt=0)
        require(self, "weight_decay", ge=0)
        require(self, "warmup_ratio", ge=0, le=1)
        require(self, "max_grad_norm", gt=0)
        if not self.losses:
            raise ValueError("losses: at least one loss is needed (plain fine-tuning: [{type: hard_ce}])")
        if self.mixing.weights is not None and any(w < 0 for w in self.mixing.weights):
            raise ValueError(f"mixing.weights must be >= 0, got {self.mixing.weights}")

    @classmethod
    def from_dict(cls, data: dict | None, path: str = "distill") -> "DistillConfig":
        """Strict load; also checks that every loss type is registered (error names the key path)."""
        cfg = from_dict(cls, data or {}, path)
        from distill.losses import LOSSES
        from distill.registry import RegistryError
        for i, loss in enumerate(cfg.losses):
            try:
                LOSSES.canonical(loss.type)
            except RegistryError as exc:
                raise ConfigError(f"{path}.losses[{i}].type: {exc}") from None
        return cfg
