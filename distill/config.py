"""Config sections of the distillation engine (strict dataclasses, loaded with ``distill.schema.from_dict``).

One engine serves teacher fine-tuning, the no-KD student baseline and distillation; they differ only in
``losses`` (and whether teachers are passed to ``distill.trainer.train``)::

    fine-tuning / baseline:  losses: [{type: hard_ce}]
    Tang et al. 2019:        losses: [{type: logits_mse}], augment: {p_mask: 0.1, p_pos: 0.1, p_ng: 0.25, n_iter: 20}
    Hinton KD + TinyBERT:    losses: [{type: soft_ce, temperature: 2}, {type: hard_ce, weight: 0.5},
                                      {type: hidden_mse, layer_map: {0: 0, 6: 1, 12: 2}}]
    TextBrewer-style matches:  losses: [{type: intermediate, matches: [{teacher: 12, student: 4},
                                      {teacher: encoder.layers.11, student: rnn, loss: hidden_mse}]}]

Each loss entry is checked against that loss's own parameter class (``LossConfig``, ``distill.losses``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tinydistill.distill.schema import ConfigError, from_dict, registered_name, require


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
    """What every loss entry has.  ``type`` names an entry of ``distill.losses.LOSSES`` (``tinydistill list
    losses``); the rest of an entry is that loss's own parameters, a subclass of this one declared with the
    loss (``Loss.Params``, e.g. ``SoftCE.Params`` adds ``heads``, ``temperature``, ``temperature_schedule``).
    Loading a ``LossConfig`` picks the class from ``type``, so a key another loss takes (``layer_map`` on
    ``soft_ce``) is an unknown key naming the loss's own keys."""

    type: str
    weight: float = 1.0
    weight_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def validate(self) -> None:
        require(self, "weight", ge=0)

    @classmethod
    def config_class_for(cls, data: dict, path: str) -> tuple[type, str]:
        """The parameter class of loss ``data["type"]`` (``distill.schema.from_dict`` calls this)."""
        # by kind, not by import: distill.losses builds on this module (its Params subclass LossConfig)
        from tinydistill.distill.registry import get_registry

        losses = get_registry("losses")
        if "type" not in data:
            raise ConfigError(f"{path}.type: required key is missing (the loss: tinydistill list losses)")
        name = registered_name(losses, data["type"], f"{path}.type", "loss")
        return losses.get(name).Params, f"loss {name!r}"

    @property
    def active(self) -> bool:
        """Whether the term counts at some step (a weight of 0 throughout switches a loss off)."""
        end = self.weight_schedule.end if self.weight_schedule.type != "constant" else None
        return self.weight > 0 or bool(end and end > 0)


def loss_config(type: str, path: str = "loss", **params) -> LossConfig:
    """``{type: ..., **params}`` checked against the loss's own parameter class."""
    return from_dict(LossConfig, {"type": type, **params}, path)


#: the keys every loss entry had, with their defaults, when one class held the fields of every loss
_UNION_KEYS = {"weight": 1.0, "temperature": 1.0, "weight_schedule": {"type": "constant", "end": None},
               "temperature_schedule": {"type": "constant", "end": None}, "heads": None, "layer_map": None,
               "relation_heads": None, "teacher_index": 0}


def loss_identity(obj):
    """``obj`` (a plain config mapping) with every resolved loss entry in the shape it had before each loss
    declared its own parameters: the keys of the former union class filled in with their defaults, later
    keys only where set.  Run ids, teacher keys and checkpoints hash this view, so the configs that ran
    before keep their results.  A resolved entry is one that ``to_dict`` wrote (it has ``weight_schedule``);
    entries kept as written (compression steps' ``losses``) are hashed as written, as before."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key == "losses" and isinstance(value, list) and value and \
                    all(isinstance(v, dict) and "type" in v and "weight_schedule" in v for v in value):
                out[key] = [{**_UNION_KEYS, **{k: v for k, v in loss.items() if k in _UNION_KEYS or k == "type"
                                                 or v is not None}} for loss in value]
            else:
                out[key] = loss_identity(value)
        return out
    if isinstance(obj, list):
        return [loss_identity(v) for v in obj]
    return obj


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
    losses: list[LossConfig] = field(default_factory=lambda: [loss_config("hard_ce")])
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
        """Strict load (each loss entry against its own parameter class; errors name the key path)."""
        return from_dict(cls, data or {}, path)
