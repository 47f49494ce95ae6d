"""Losses between intermediate features: which teacher feature teaches which student feature, and how.

The recipe is data, after TextBrewer's ``intermediate_matches``: a feature loss holds a list of matches
``{teacher, student, loss, weight, projection}``.  A side names its feature either by an index into the
model output contract (``hidden_states``: 0 = embeddings, 1..N = layers; ``attentions``: layers 1..N; which
one the match's ``loss`` says) or by the module path of a sublayer (torchdistill style: the dotted name
``named_sublayers`` gives, e.g. ``encoder.layers.3`` or ``rnn``), whose output a forward post-hook records
(``distill.hooks.FeatureCapture``; a tuple output counts by its first element).  By path, any ``paddle.nn.Layer`` takes
part without our output contract's hidden states or attentions.

``hidden_mse`` and ``attention_kl`` default to the uniform layer map (``distill.layermap``; ``layer_map``
overrides it), ``minilm`` to last-layer attention plus the value relation of the last attention's
``v_proj``, ``intermediate`` to nothing (its ``matches`` are required).  A loss's term for one comparison is
the weighted mean of its matches (a default map weighs its pairs alike); a loss with matches of several
comparisons logs one term per comparison (``minilm/attention``, ``minilm/value``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from tinydistill.distill.config import LossConfig
from tinydistill.distill.hooks import last_attention_values
from tinydistill.distill.layermap import resolve_layer_map
from tinydistill.distill.losses import LOSSES, Loss, LossInputs, LossSetup, distribution_kl, hidden_mse, value_relation
from tinydistill.distill.schema import ConfigError, require


def _arch(model) -> str:
    return getattr(model, "arch", type(model).__name__)


# ----------------------------------------------------------------------------------------------
# comparisons a match can use
# ----------------------------------------------------------------------------------------------
def _token_mask(feature, mask):
    """The attention mask where ``feature`` is per token ([B, L, ...] with the batch's L), else None."""
    return mask if len(feature.shape) >= 3 and list(feature.shape[:2]) == list(mask.shape) else None


def _hidden(t, s, mask, loss):
    return hidden_mse(s, t, _token_mask(s, mask))


def _attention(t, s, mask, loss):
    if len(t.shape) == 4 and t.shape[1] != s.shape[1]:   # head counts differ: compare head-averaged maps
        t, s = t.mean(axis=1, keepdim=True), s.mean(axis=1, keepdim=True)
    query_mask = mask if len(s.shape) == 4 and s.shape[2] == mask.shape[1] else None
    return distribution_kl(t, s, query_mask)


def _values(t, s, mask, loss):
    heads = loss.relation_heads
    return distribution_kl(value_relation(t, heads, mask), value_relation(s, heads, mask), mask)


@dataclass(frozen=True)
class Comparison:
    fn: Callable          # (teacher feature, student feature, attention_mask, loss) -> scalar
    index: str | None     # what a layer index names: an output-contract list, or None (module paths only)
    first: int            # lowest layer index (attentions count from 1)
    projectable: bool     # a learned linear map may bring the student's width to the teacher's
    label: str            # term suffix when a loss mixes comparisons


MATCH_LOSSES: dict[str, Comparison] = {
    "hidden_mse": Comparison(_hidden, "hidden_states", 0, True, "hidden"),
    "attention_kl": Comparison(_attention, "attentions", 1, False, "attention"),
    "value_relation": Comparison(_values, None, 0, False, "value"),
}
MatchLoss = Literal[tuple(MATCH_LOSSES)]


@dataclass
class MatchConfig:
    """One match: ``teacher`` and ``student`` are a layer index or a module path."""

    teacher: int | str
    student: int | str
    #: how the two features are compared; default: the loss's own (``intermediate``: hidden_mse)
    loss: MatchLoss | None = None
    weight: float = 1.0
    #: a learned linear map from the student's width to the teacher's; default: where the widths differ
    projection: bool | None = None

    def validate(self) -> None:
        require(self, "weight", ge=0)
        for side in ("teacher", "student"):
            ref = getattr(self, side)
            if isinstance(ref, int) and ref < 0:
                raise ValueError(f"{side} must be a layer index >= 0 or a module path, got {ref}")
            if isinstance(ref, str) and not ref.strip():
                raise ValueError(f"{side} must be a layer index or a module path, got an empty string")


@dataclass
class FeatureParams(LossConfig):
    #: which teacher's features (multi-teacher runs)
    teacher_index: int = 0
    #: TextBrewer-style matches; default: the loss's own (the uniform layer map, ...)
    matches: list[MatchConfig] | None = None

    def validate(self) -> None:
        super().validate()
        require(self, "teacher_index", ge=0)
        if self.matches is not None and not self.matches:
            raise ValueError("matches: give at least one match, or leave matches out for the default")


@dataclass
class LayerMapParams(FeatureParams):
    #: {teacher_layer: student_layer}; hidden states count from 0 (embeddings), attentions from 1.
    #: Default: the uniform map (distill.layermap); ``matches`` says the same with more freedom
    layer_map: dict[int, int] | None = None

    def validate(self) -> None:
        super().validate()
        if self.layer_map is not None and self.matches is not None:
            raise ValueError("layer_map: give layer_map or matches, not both")
        for t, s in (self.layer_map or {}).items():
            if t < 0 or s < 0:
                raise ValueError(f"layer_map: layers count from 0 (embeddings), got {{{t}: {s}}}")


@dataclass
class MiniLMParams(FeatureParams):
    #: relation heads of the value relation (default: the student's attention heads)
    relation_heads: int | None = None

    def validate(self) -> None:
        super().validate()
        require(self, "relation_heads", ge=1)


@dataclass
class IntermediateParams(FeatureParams):
    def validate(self) -> None:
        super().validate()
        if self.matches is None:
            raise ValueError("matches: required (a list of {teacher, student, loss, weight, projection})")


@dataclass
class Match:
    """A match resolved against the models."""

    teacher: int | str
    student: int | str
    loss: str
    weight: float = 1.0
    projection: bool | None = None


# ----------------------------------------------------------------------------------------------
# the losses
# ----------------------------------------------------------------------------------------------
def _depth(model, where: str) -> int:
    n = int(getattr(model, "num_layers", 0) or 0)
    if n < 1:
        raise ConfigError(f"{where}: model {_arch(model)!r} has no layers to index (name a sublayer by its "
                          "module path instead)")
    return n


class FeatureLoss(Loss):
    """Matches teacher features to student features (``self.matches``); learned projections per match."""

    Params = FeatureParams
    comparison = "hidden_mse"                         # a match's default ``loss``
    accepts = ("hidden_mse", "attention_kl")          # comparisons its matches may use

    def __init__(self, cfg, setup: LossSetup):
        super().__init__(cfg, setup)
        import paddle
        if not 0 <= cfg.teacher_index < len(setup.teachers):
            raise ConfigError(f"{setup.where}.teacher_index: {cfg.teacher_index} out of range "
                              f"(there are {len(setup.teachers)} teachers)")
        self.teacher = setup.teachers[cfg.teacher_index]
        self.matches = self._listed(cfg.matches) if cfg.matches is not None else self.default_matches()
        needs = {MATCH_LOSSES[m.loss].index if isinstance(ref, int) else "features"
                 for m in self.matches for ref in (m.teacher, m.student)}
        if needs - {"features"} and not setup.aligned:
            raise ConfigError(f"{setup.where}: loss {cfg.type!r} compares {'/'.join(sorted(needs - {'features'}))} "
                              "token by token, which needs teacher and student to use the same tokenizer; "
                              "with different tokenizers use logits-level losses (soft_ce, logits_mse) "
                              "on sequence heads")
        self.needs = frozenset(needs)
        for i, m in enumerate(self.matches):
            for side, ref in (("teacher", m.teacher), ("student", m.student)):
                if isinstance(ref, str):
                    self._capture(side).capture(ref, self._where(i, side))
        for kind in {m.loss for m in self.matches}:
            if not sum(m.weight for m in self.matches if m.loss == kind) > 0:
                raise ConfigError(f"{setup.where}.matches: every {kind} match has weight 0")
        self._probed: dict = {}
        self.projections = paddle.nn.LayerDict()
        self.keys = self._keys()
        for i, m in enumerate(self.matches):
            self._project(i, m)

    # -- building ------------------------------------------------------------------------------
    def default_matches(self) -> list[Match]:
        raise NotImplementedError

    def _where(self, i: int, side: str) -> str:
        return f"{self.setup.where}.matches[{i}].{side}" if self.cfg.matches is not None else self.setup.where

    def _capture(self, side: str):
        cap = self.setup.student_features if side == "student" else \
            (self.setup.teacher_features or [None] * len(self.setup.teachers))[self.cfg.teacher_index]
        if cap is None:
            raise ConfigError(f"{self.setup.where}: features by module path need the engine's hooks "
                              "(LossSetup.student_features / teacher_features)")
        return cap

    def _listed(self, configs) -> list[Match]:
        out = []
        for i, mc in enumerate(configs):
            kind = mc.loss or self.comparison
            if kind not in self.accepts:
                raise ConfigError(f"{self.setup.where}.matches[{i}].loss: {kind!r} is not a comparison of "
                                  f"{self.name} (it takes {', '.join(self.accepts)})")
            comp = MATCH_LOSSES[kind]
            for side, ref, model in (("teacher", mc.teacher, self.teacher), ("student", mc.student,
                                                                              self.setup.student)):
                if not isinstance(ref, int):
                    continue
                where = f"{self.setup.where}.matches[{i}].{side}"
                if comp.index is None:
                    raise ConfigError(f"{where}: {kind} compares sublayer outputs; name one by its module path")
                if comp.index == "attentions":
                    self._need_attention(model, side)
                if not comp.first <= ref <= _depth(model, where):
                    raise ConfigError(f"{where}: {side} layer {ref} out of range {comp.first}..{model.num_layers} "
                                      f"({comp.index})")
            if mc.projection and not comp.projectable:
                raise ConfigError(f"{self.setup.where}.matches[{i}].projection: {kind} compares distributions; "
                                  "they cannot be projected")
            out.append(Match(mc.teacher, mc.student, kind, mc.weight, mc.projection))
        return out

    def _need_attention(self, model, who: str) -> None:
        if not getattr(model, "num_attention_heads", 0):
            raise ConfigError(f"{self.setup.where}: {self.name} needs attention maps, but the {who} "
                              f"{_arch(model)!r} has no attention")

    def _keys(self) -> list[str]:
        # index matches keep the key of their layer pair, which the projections had before matches were data
        keys, seen = [], set()
        for i, m in enumerate(self.matches):
            key = f"t{m.teacher}_s{m.student}" if isinstance(m.teacher, int) and isinstance(m.student, int) \
                else f"m{i}"
            if (key, m.loss) in seen:
                raise ConfigError(f"{self.setup.where}.matches[{i}]: the same match is listed twice")
            seen.add((key, m.loss))
            keys.append(key)
        return keys

    def _width(self, side: str, ref) -> int:
        model = self.setup.student if side == "student" else self.teacher
        k = None if side == "student" else self.cfg.teacher_index
        if self.setup.probe is None:
            if isinstance(ref, str):
                raise ConfigError(f"{self.setup.where}: sizing a projection of {ref!r} needs a probe forward")
            return int(model.hidden_size)
        hidden = isinstance(ref, int)
        if (k, hidden) not in self._probed:
            self._probed[k, hidden] = self.setup.probe(k, hidden)
        out = self._probed[k, hidden]
        if not hidden and ref not in out["features"]:
            raise ConfigError(f"{self.setup.where}: the {side}'s sublayer {ref!r} is not called in its forward, so no "
                              "hook sees its output; name a sublayer the forward calls (one of its children)")
        return int((out["hidden_states"][ref] if hidden else out["features"][ref]).shape[-1])

    def _project(self, i: int, m: Match) -> None:
        import paddle
        if not MATCH_LOSSES[m.loss].projectable:
            return
        s_w, t_w = self._width("student", m.student), self._width("teacher", m.teacher)
        if m.projection is False and s_w != t_w:
            raise ConfigError(f"{self.setup.where}.matches[{i}].projection: widths differ (student {s_w}, "
                              f"teacher {t_w}); set projection: true or leave it out")
        if m.projection or (m.projection is None and s_w != t_w):
            self.projections[self.keys[i]] = paddle.nn.Linear(s_w, t_w)

    # -- training ------------------------------------------------------------------------------
    def parameters(self) -> list:
        return list(self.projections.parameters())

    def state_dict(self) -> dict:
        return dict(self.projections.state_dict())

    def set_state_dict(self, state: dict) -> None:
        self.projections.set_state_dict(state)

    def _feature(self, inputs: LossInputs, side: str, ref, kind: str):
        if side == "student":
            out, feats = inputs.student, inputs.features
        else:
            k = self.cfg.teacher_index
            out, feats = inputs.teachers[k], (inputs.teacher_features[k] if inputs.teacher_features else {})
        if isinstance(ref, int):   # attentions[i - 1] is layer i's
            comp = MATCH_LOSSES[kind]
            return out[comp.index][ref - comp.first]
        if ref not in feats:
            raise RuntimeError(f"{self.setup.where}: the {side}'s sublayer {ref!r} did not run in this forward")
        return feats[ref]

    def __call__(self, inputs: LossInputs) -> dict:
        groups: dict[str, list] = {}
        for m, key in zip(self.matches, self.keys):
            t = self._feature(inputs, "teacher", m.teacher, m.loss)
            s = self._feature(inputs, "student", m.student, m.loss)
            if key in self.projections:
                s = self.projections[key](s)
            if list(t.shape) != list(s.shape) and MATCH_LOSSES[m.loss].projectable:
                raise ValueError(f"{self.setup.where}: teacher feature {m.teacher!r} {list(t.shape)} and student "
                                 f"feature {m.student!r} {list(s.shape)} differ in shape")
            groups.setdefault(m.loss, []).append((m.weight, MATCH_LOSSES[m.loss].fn(t, s, inputs.attention_mask, self)))
        out = {}
        for kind, terms in groups.items():
            value = sum(w * v for w, v in terms) / sum(w for w, _ in terms)
            out[self.name if len(groups) == 1 else f"{self.name}/{MATCH_LOSSES[kind].label}"] = value
        return out


class _LayerMapLoss(FeatureLoss):
    Params = LayerMapParams
    include_embeddings = True

    def default_matches(self) -> list[Match]:
        where = self.setup.where
        layer_map = resolve_layer_map(self.cfg.layer_map, _depth(self.teacher, where),
                                      _depth(self.setup.student, where), self.include_embeddings,
                                      f"{where}.layer_map")
        return [Match(t, s, self.comparison) for t, s in layer_map.items()]

    @property
    def map(self) -> dict:
        """``{teacher_layer: student_layer}`` of the index matches."""
        return {m.teacher: m.student for m in self.matches if isinstance(m.teacher, int)}


@LOSSES.register("hidden_mse",
                 summary="TinyBERT-style hidden-state MSE over a layer map or matches, learned projection if "
                         "widths differ")
class HiddenMSE(_LayerMapLoss):
    pass


@LOSSES.register("attention_kl",
                 summary="KL between teacher and student attention maps over a layer map or matches (per head)")
class AttentionKL(_LayerMapLoss):
    comparison = "attention_kl"
    include_embeddings = False

    def default_matches(self) -> list[Match]:
        self._need_attention(self.teacher, "teacher")
        self._need_attention(self.setup.student, "student")
        return super().default_matches()


@LOSSES.register("minilm", summary="MiniLM: last-layer attention KL + value-relation KL (relation heads)")
class MiniLM(FeatureLoss):
    Params = MiniLMParams
    comparison = "attention_kl"
    accepts = ("attention_kl", "value_relation")

    def __init__(self, cfg, setup: LossSetup):
        self.relation_heads = cfg.relation_heads or int(getattr(setup.student, "num_attention_heads", 0) or 0)
        super().__init__(cfg, setup)
        if any(m.loss == "value_relation" for m in self.matches):
            if not self.relation_heads:
                raise ConfigError(f"{setup.where}.relation_heads: the student has no attention heads to "
                                  "default to; set relation_heads")
            for model, who in ((self.teacher, "teacher"), (setup.student, "student")):
                width = getattr(model, "hidden_size", None)
                if width is not None and int(width) % self.relation_heads:
                    raise ConfigError(f"{setup.where}.relation_heads: {who} width {width} is not divisible by "
                                      f"{self.relation_heads}")

    def default_matches(self) -> list[Match]:
        where = self.setup.where
        for model, who in ((self.teacher, "teacher"), (self.setup.student, "student")):
            if not getattr(model, "num_attention_heads", 0):
                raise ConfigError(f"{where}: minilm needs self-attention, but the {who} {_arch(model)!r} has none")
        return [Match(_depth(self.teacher, where), _depth(self.setup.student, where), "attention_kl"),
                Match(last_attention_values(self.teacher, "teacher", where),
                      last_attention_values(self.setup.student, "student", where), "value_relation")]


@LOSSES.register("intermediate",
                 summary="TextBrewer-style intermediate_matches: listed {teacher, student, loss, weight, projection}, "
                         "by layer index or module path")
class Intermediate(FeatureLoss):
    Params = IntermediateParams

    def default_matches(self) -> list[Match]:  # IntermediateParams requires matches
        raise ConfigError(f"{self.setup.where}.matches: required")
