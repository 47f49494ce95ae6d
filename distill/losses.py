"""Distillation losses (``LOSSES`` registry; ``tinydistill list losses``).

A loss is a class registered in ``LOSSES`` with its own parameter dataclass ``Params`` (a subclass of
``distill.config.LossConfig``: ``type``, ``weight``, ``weight_schedule``); a config entry
``{type: soft_ce, temperature: 2.0, weight: 0.5}`` is checked against that class, so adding a loss is one
class in one file.  ``cls(cfg: Params, setup: LossSetup)`` is built once; its call ``loss(inputs:
LossInputs) -> {term_name: scalar tensor}`` returns unweighted terms; the trainer multiplies their sum by
the (scheduled) weight and logs every term.  Logits-level losses apply per head (term ``<loss>/<head>``):
sequence heads average over examples, token heads over real tokens (``token_mask``: attention_mask and not
a special token; hard_ce: labels != IGNORE_INDEX).  Losses between intermediate features (hidden states,
attentions, outputs of sublayers named by module path) are in ``distill.features``.

Teacher and student may use different tokenizers (ERNIE teacher -> jieba Bi-LSTM student): logits-level
KD on *sequence* heads works through per-example teacher outputs; token heads, hidden states and
attentions need the same tokenisation on both sides, and building such a loss otherwise is an error.

No paddle import at module level (``tinydistill list`` must stay light): paddle is imported inside.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tinydistill.distill.config import LossConfig, ScheduleConfig
from tinydistill.distill.registry import Registry
from tinydistill.distill.schedules import scheduled
from tinydistill.distill.schema import ConfigError, require

#: ``distill.features`` registers the feature-matching losses (hidden_mse, attention_kl, minilm, intermediate)
LOSSES = Registry("loss", modules=("tinydistill.distill.features",))

EPS = 1e-12


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
@dataclass
class LossSetup:
    """What a loss needs to know when it is built."""

    heads: list                      # list[tasks.base.HeadSpec]
    student: Any                     # model (num_layers, hidden_size, num_attention_heads attributes)
    teachers: list = field(default_factory=list)
    #: teacher(s) and student tokenise identically (same tokenizer type and vocabulary)
    aligned: bool = True
    where: str = "distill.losses"    # config key path for error messages
    #: ``distill.features.FeatureCapture`` of the student and of every teacher (sublayers by module path)
    student_features: Any = None
    teacher_features: list | None = None
    #: ``probe(k, hidden)``: one eval-mode forward of the student (k=None) or teacher k on two training
    #: examples -> its output dict plus ``features`` (what the captures recorded); gives feature widths
    probe: Callable | None = None


@dataclass
class LossInputs:
    """One batch: model outputs and targets as paddle tensors."""

    student: dict                               # model output dict
    labels: dict                                # head -> int64 [B] / [B, L] (IGNORE_INDEX = no label)
    attention_mask: Any                         # float32 [B, L]
    token_mask: Any                             # float32 [B, L]: real text tokens (no padding/specials)
    teacher_logits: dict | None = None          # head -> mixed teacher logits (targets)
    teachers: list = field(default_factory=list)  # per teacher: output dict with internals (online mode)
    features: dict = field(default_factory=dict)  # student: module path -> captured sublayer output
    teacher_features: list = field(default_factory=list)  # per teacher: module path -> output
    step: int = 0                               # optimisation step and total steps (for schedules)
    total_steps: int = 1


# ----------------------------------------------------------------------------------------------
# functional forms on raw tensors (unit-tested with hand-computed values)
# ----------------------------------------------------------------------------------------------
def masked_mean(values, mask=None):
    """Mean of ``values`` over positions where ``mask`` is 1 (all when None); 0 when the mask is empty
    (still connected to the graph so backward works)."""
    import paddle
    if mask is None:
        return values.mean()
    mask = mask.astype(values.dtype)
    return (values * mask).sum() / paddle.clip(mask.sum(), min=1.0)


def kl_with_temperature(student_logits, teacher_logits, temperature=1.0, mask=None):
    """Hinton KD: T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over rows
    (over ``mask`` rows for token heads).  KL equals soft cross-entropy minus the teacher's entropy,
    so the gradient is the same and the value is 0 when the student matches the teacher."""
    import paddle.nn.functional as F
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, axis=-1)
    log_p_t = F.log_softmax(teacher_logits / t, axis=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(axis=-1)
    return masked_mean(kl, mask) * (t * t)


def logits_mse(student_logits, teacher_logits, mask=None):
    """Tang et al. 2019: mean squared error between logits (mean over classes, then rows)."""
    se = ((student_logits - teacher_logits) ** 2).mean(axis=-1)
    return masked_mean(se, mask)


def hard_ce(logits, labels, ignore_index=-100):
    """Cross-entropy with gold labels; rows/tokens with ``ignore_index`` (no gold label) are skipped."""
    import paddle
    import paddle.nn.functional as F
    valid = (labels != ignore_index)
    safe = paddle.where(valid, labels, paddle.zeros_like(labels))
    ce = F.cross_entropy(logits, safe.unsqueeze(-1), reduction="none").squeeze(-1)
    return masked_mean(ce, valid)


def hidden_mse(student_h, teacher_h, mask=None):
    """MSE between hidden states [B, L, H] (same width), averaged over real tokens and dimensions."""
    se = ((student_h - teacher_h) ** 2).mean(axis=-1)
    return masked_mean(se, mask)


def distribution_kl(teacher_p, student_p, query_mask=None):
    """KL(teacher || student) between attention-like distributions [B, h, L, L] over the last axis,
    averaged over heads and real query positions."""
    import paddle
    tp = paddle.clip(teacher_p, min=EPS)
    sp = paddle.clip(student_p, min=EPS)
    kl = (teacher_p * (tp.log() - sp.log())).sum(axis=-1)  # [B, h, L]
    if query_mask is None:
        return kl.mean()
    mask = query_mask.unsqueeze(1).expand_as(kl)
    return masked_mean(kl, mask)


def value_relation(values, relation_heads, key_mask=None):
    """MiniLM relation softmax(V V^T / sqrt(d_r)) of values [B, L, H] split into ``relation_heads``
    heads of width d_r = H / relation_heads; padded keys get probability 0.  -> [B, R, L, L]."""
    import paddle
    import paddle.nn.functional as F
    b, length, width = values.shape
    if width % relation_heads:
        raise ConfigError(f"minilm: value width {width} is not divisible by relation_heads {relation_heads}")
    d = width // relation_heads
    v = values.reshape([b, length, relation_heads, d]).transpose([0, 2, 1, 3])
    scores = paddle.matmul(v, v, transpose_y=True) / (d ** 0.5)
    if key_mask is not None:
        scores = scores + (1.0 - key_mask.astype(scores.dtype)).unsqueeze(1).unsqueeze(1) * -1e9
    return F.softmax(scores, axis=-1)


# ----------------------------------------------------------------------------------------------
# loss classes
# ----------------------------------------------------------------------------------------------
class Loss:
    """Base class.  ``Params``: the loss's parameter class; ``needs_teacher``: whether it reads teacher
    outputs (everything but ``hard_ce``); ``needs``: model internals it reads (``hidden_states``,
    ``attentions``, ``features``; set per instance by feature losses), which make the teachers run online."""

    Params = LossConfig
    needs_teacher = True
    needs: frozenset = frozenset()

    def __init__(self, cfg, setup: LossSetup):
        self.cfg, self.setup = cfg, setup
        self.name = LOSSES.canonical(cfg.type)
        if self.needs_teacher and not setup.teachers:
            raise ConfigError(f"{setup.where}: loss {cfg.type!r} needs a teacher, but none is given "
                              "(plain fine-tuning / the no-KD baseline uses only hard_ce)")

    @classmethod
    def describe(cls, name: str = "") -> str:
        """Its parameters (``tinydistill list losses -v``)."""
        from dataclasses import fields
        return "params: " + ", ".join(f.name for f in fields(cls.Params))

    def weight_at(self, step: int, total_steps: int) -> float:
        return scheduled(self.cfg.weight, self.cfg.weight_schedule, step, total_steps)

    def parameters(self) -> list:
        """Learnable parameters (trained with the student's optimiser)."""
        return []

    def state_dict(self) -> dict:
        return {}

    def set_state_dict(self, state: dict) -> None:
        pass

    def __call__(self, inputs: LossInputs) -> dict:
        raise NotImplementedError


@dataclass
class HeadParams(LossConfig):
    #: heads this loss applies to; default: every head of the task
    heads: list[str] | None = None


@dataclass
class TemperatureParams(HeadParams):
    #: softmax temperature; the term is scaled by T^2
    temperature: float = 1.0
    temperature_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def validate(self) -> None:
        super().validate()
        require(self, "temperature", gt=0)


class _HeadLoss(Loss):
    """A logits-level loss applied to every selected head."""

    Params = HeadParams

    def __init__(self, cfg, setup: LossSetup):
        super().__init__(cfg, setup)
        by_name = {h.name: h for h in setup.heads}
        names = cfg.heads if cfg.heads is not None else list(by_name)
        for name in names:
            if name not in by_name:
                raise ConfigError(f"{setup.where}.heads: unknown head {name!r} (task heads: "
                                  f"{', '.join(by_name)})")
        self.heads = [by_name[n] for n in names]
        if self.needs_teacher and not setup.aligned:
            token = [h.name for h in self.heads if h.kind == "token"]
            if token:
                raise ConfigError(
                    f"{setup.where}: loss {cfg.type!r} on token head(s) {', '.join(token)} needs teacher and "
                    f"student to use the same tokenizer (they differ here); restrict it to sequence heads "
                    f"with heads: [{', '.join(h.name for h in self.heads if h.kind == 'sequence')}]")

    def __call__(self, inputs: LossInputs) -> dict:
        out = {}
        for head in self.heads:
            mask = inputs.token_mask if head.kind == "token" else None
            out[f"{self.name}/{head.name}"] = self.term(head, inputs, mask)
        return out


@LOSSES.register("hard_ce", summary="cross-entropy with gold labels (fine-tuning, no-KD baseline)")
class HardCE(_HeadLoss):
    needs_teacher = False

    def term(self, head, inputs, mask):
        return hard_ce(inputs.student["logits"][head.name], inputs.labels[head.name])


@LOSSES.register("soft_ce", aliases=("kl",),
                 summary="Hinton KD: KL/soft cross-entropy to teacher softmax at temperature T, x T^2")
class SoftCE(_HeadLoss):
    Params = TemperatureParams

    def term(self, head, inputs, mask):
        t = scheduled(self.cfg.temperature, self.cfg.temperature_schedule, inputs.step, inputs.total_steps)
        return kl_with_temperature(inputs.student["logits"][head.name], inputs.teacher_logits[head.name], t, mask)


@LOSSES.register("logits_mse", summary="Tang et al. 2019: MSE between student and teacher logits")
class LogitsMSE(_HeadLoss):
    def term(self, head, inputs, mask):
        return logits_mse(inputs.student["logits"][head.name], inputs.teacher_logits[head.name], mask)


def uses_teacher(configs) -> bool:
    """Whether loss entries ``configs`` read teacher outputs: a loss other than ``hard_ce`` with a weight
    that is not 0 throughout training."""
    return any(LOSSES.get(c.type).needs_teacher and c.active for c in configs)


def build_losses(configs, setup: LossSetup) -> list:
    """Instantiate every configured loss (errors name ``distill.losses[i]``)."""
    from dataclasses import replace
    return [LOSSES.get(cfg.type)(cfg, replace(setup, where=f"{setup.where}[{i}]")) for i, cfg in enumerate(configs)]
