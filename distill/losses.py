"""Distillation losses (``LOSSES`` registry; ``tinydistill list losses``).

Every loss is a class ``cls(cfg: LossConfig, setup: LossSetup)`` whose call
``loss(inputs: LossInputs, temperature) -> {term_name: scalar tensor}`` returns unweighted terms; the
trainer multiplies their sum by the (scheduled) weight and logs every term.  Logits-level losses apply
per head (term ``<loss>/<head>``): sequence heads average over examples, token heads over real tokens
(``token_mask``: attention_mask and not a special token; hard_ce: labels != IGNORE_INDEX).

Teacher and student may use different tokenizers (ERNIE teacher -> jieba Bi-LSTM student): logits-level
KD on *sequence* heads works through per-example teacher outputs; token heads, hidden states and
attentions need the same tokenisation on both sides, and building such a loss otherwise is an error.

No paddle import at module level (``tinydistill list`` must stay light): paddle is imported inside.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill.layermap import resolve_layer_map
from distill.registry import Registry
from distill.schema import ConfigError

LOSSES = Registry("loss")

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
    #: widths of ``hidden_states[i]`` (embeddings may be narrower, e.g. Bi-LSTM); default: hidden_size
    student_widths: list | None = None
    teacher_widths: list | None = None   # per teacher: list of widths


@dataclass
class LossInputs:
    """One batch: model outputs and targets as paddle tensors."""

    student: dict                               # model output dict (+ "values" when a loss needs them)
    labels: dict                                # head -> int64 [B] / [B, L] (IGNORE_INDEX = no label)
    attention_mask: Any                         # float32 [B, L]
    token_mask: Any                             # float32 [B, L]: real text tokens (no padding/specials)
    teacher_logits: dict | None = None          # head -> mixed teacher logits (targets)
    teachers: list = field(default_factory=list)  # per teacher: output dict with internals (online mode)


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
    """Base class.  ``needs``: model internals the loss reads (``hidden_states``, ``attentions``,
    ``values``); ``needs_teacher``: whether it needs teacher outputs."""

    needs_teacher = True
    needs: frozenset = frozenset()

    def __init__(self, cfg, setup: LossSetup):
        self.cfg, self.setup = cfg, setup
        self.name = LOSSES.canonical(cfg.type)
        if self.needs_teacher and not setup.teachers:
            raise ConfigError(f"{setup.where}: loss {cfg.type!r} needs a teacher, but none is given "
                              "(plain fine-tuning / the no-KD baseline uses only hard_ce)")
        if self.needs and self.needs_teacher and not setup.aligned:
            raise ConfigError(f"{setup.where}: loss {cfg.type!r} compares {'/'.join(sorted(self.needs))} "
                              "token by token, which needs teacher and student to use the same tokenizer; "
                              "with different tokenizers use logits-level losses (soft_ce, logits_mse) "
                              "on sequence heads")
        if self.needs and self.needs_teacher and not 0 <= cfg.teacher_index < len(setup.teachers):
            raise ConfigError(f"{setup.where}.teacher_index: {cfg.teacher_index} out of range "
                              f"(there are {len(setup.teachers)} teachers)")

    def parameters(self) -> list:
        """Learnable parameters (trained with the student's optimiser)."""
        return []

    def state_dict(self) -> dict:
        return {}

    def set_state_dict(self, state: dict) -> None:
        pass

    def __call__(self, inputs: LossInputs, temperature: float = 1.0) -> dict:
        raise NotImplementedError


class _HeadLoss(Loss):
    """A logits-level loss applied to every selected head."""

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

    def __call__(self, inputs: LossInputs, temperature: float = 1.0) -> dict:
        out = {}
        for head in self.heads:
            mask = inputs.token_mask if head.kind == "token" else None
            out[f"{self.name}/{head.name}"] = self.term(head, inputs, mask, temperature)
        return out


@LOSSES.register("hard_ce", summary="cross-entropy with gold labels (fine-tuning, no-KD baseline)")
class HardCE(_HeadLoss):
    needs_teacher = False

    def term(self, head, inputs, mask, temperature):
        return hard_ce(inputs.student["logits"][head.name], inputs.labels[head.name])


@LOSSES.register("soft_ce", aliases=("kl",),
                 summary="Hinton KD: KL/soft cross-entropy to teacher softmax at temperature T, x T^2")
class SoftCE(_HeadLoss):
    def term(self, head, inputs, mask, temperature):
        return kl_with_temperature(inputs.student["logits"][head.name], inputs.teacher_logits[head.name],
                                   temperature, mask)


@LOSSES.register("logits_mse", summary="Tang et al. 2019: MSE between student and teacher logits")
class LogitsMSE(_HeadLoss):
    def term(self, head, inputs, mask, temperature):
        return logits_mse(inputs.student["logits"][head.name], inputs.teacher_logits[head.name], mask)


def _depth(model, what: str, where: str) -> int:
    n = int(getattr(model, "num_layers", 0) or 0)
    if n < 1:
        raise ConfigError(f"{where}: model {getattr(model, 'arch', type(model).__name__)!r} has no {what}")
    return n


@LOSSES.register("hidden_mse",
                 summary="TinyBERT-style hidden-state MSE over a layer map, learned projection if widths differ")
class HiddenMSE(Loss):
    needs = frozenset({"hidden_states"})

    def __init__(self, cfg, setup: LossSetup):
        super().__init__(cfg, setup)
        import paddle
        teacher = setup.teachers[cfg.teacher_index]
        self.map = resolve_layer_map(cfg.layer_map, _depth(teacher, "layers", setup.where),
                                     _depth(setup.student, "layers", setup.where), True,
                                     f"{setup.where}.layer_map")
        self.projections = paddle.nn.LayerDict()
        for t_layer, s_layer in self.map.items():
            s_w = setup.student_widths[s_layer] if setup.student_widths else int(setup.student.hidden_size)
            t_w = (setup.teacher_widths[cfg.teacher_index][t_layer] if setup.teacher_widths
                   else int(teacher.hidden_size))
            if s_w != t_w:
                self.projections[f"t{t_layer}_s{s_layer}"] = paddle.nn.Linear(s_w, t_w)

    def parameters(self) -> list:
        return list(self.projections.parameters())

    def state_dict(self) -> dict:
        return dict(self.projections.state_dict())

    def set_state_dict(self, state: dict) -> None:
        self.projections.set_state_dict(state)

    def __call__(self, inputs: LossInputs, temperature: float = 1.0) -> dict:
        s_hidden = inputs.student["hidden_states"]
        t_hidden = inputs.teachers[self.cfg.teacher_index]["hidden_states"]
        terms = []
        for t_layer, s_layer in self.map.items():
            s = s_hidden[s_layer]
            key = f"t{t_layer}_s{s_layer}"
            if key in self.projections:
                s = self.projections[key](s)
            terms.append(hidden_mse(s, t_hidden[t_layer], inputs.attention_mask))
        return {self.name: sum(terms[1:], terms[0]) / len(terms)}


def _match_heads(teacher_att, student_att):
    """Per-head comparison when head counts match, else compare head-averaged maps."""
    if teacher_att.shape[1] == student_att.shape[1]:
        return teacher_att, student_att
    return teacher_att.mean(axis=1, keepdim=True), student_att.mean(axis=1, keepdim=True)


@LOSSES.register("attention_kl",
                 summary="KL between teacher and student attention maps over a layer map (per head)")
class AttentionKL(Loss):
    needs = frozenset({"attentions"})

    def __init__(self, cfg, setup: LossSetup):
        super().__init__(cfg, setup)
        teacher = setup.teachers[cfg.teacher_index]
        for model, who in ((teacher, "teacher"), (setup.student, "student")):
            if not getattr(model, "num_attention_heads", 0):
                raise ConfigError(f"{setup.where}: attention_kl needs attention maps, but the {who} "
                                  f"{getattr(model, 'arch', type(model).__name__)!r} has no attention")
        self.map = resolve_layer_map(cfg.layer_map, teacher.num_layers, setup.student.num_layers, False,
                                     f"{setup.where}.layer_map")

    def __call__(self, inputs: LossInputs, temperature: float = 1.0) -> dict:
        s_att = inputs.student["attentions"]
        t_att = inputs.teachers[self.cfg.teacher_index]["attentions"]
        terms = [distribution_kl(*_match_heads(t_att[t - 1], s_att[s - 1]), inputs.attention_mask)
                 for t, s in self.map.items()]
        return {self.name: sum(terms[1:], terms[0]) / len(terms)}


@LOSSES.register("minilm",
                 summary="MiniLM: last-layer attention KL + value-relation KL (relation heads)")
class MiniLM(Loss):
    needs = frozenset({"attentions", "values"})

    def __init__(self, cfg, setup: LossSetup):
        super().__init__(cfg, setup)
        teacher = setup.teachers[cfg.teacher_index]
        for model, who in ((teacher, "teacher"), (setup.student, "student")):
            if not getattr(model, "num_attention_heads", 0):
                raise ConfigError(f"{setup.where}: minilm needs self-attention, but the {who} "
                                  f"{getattr(model, 'arch', type(model).__name__)!r} has none")
        self.relation_heads = cfg.relation_heads or int(setup.student.num_attention_heads)
        for model, who in ((teacher, "teacher"), (setup.student, "student")):
            if int(model.hidden_size) % self.relation_heads:
                raise ConfigError(f"{setup.where}.relation_heads: {who} width {model.hidden_size} is not "
                                  f"divisible by {self.relation_heads}")

    def __call__(self, inputs: LossInputs, temperature: float = 1.0) -> dict:
        t_out = inputs.teachers[self.cfg.teacher_index]
        mask = inputs.attention_mask
        att = distribution_kl(*_match_heads(t_out["attentions"][-1], inputs.student["attentions"][-1]), mask)
        t_rel = value_relation(t_out["values"], self.relation_heads, mask)
        s_rel = value_relation(inputs.student["values"], self.relation_heads, mask)
        return {f"{self.name}/attention": att, f"{self.name}/value": distribution_kl(t_rel, s_rel, mask)}


def build_losses(configs, setup: LossSetup) -> list:
    """Instantiate every configured loss (errors name ``distill.losses[i]``)."""
    out = []
    for i, cfg in enumerate(configs):
        where = f"{setup.where}[{i}]"
        cls = LOSSES.get(cfg.type)
        out.append(cls(cfg, LossSetup(setup.heads, setup.student, setup.teachers, setup.aligned, where,
                                      setup.student_widths, setup.teacher_widths)))
    return out
