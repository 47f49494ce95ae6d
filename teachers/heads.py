"""Task heads shared by every model (imports paddle; import it lazily from registering modules).

A sequence head reads the pooled output (``[B, D_seq]``), a token head reads every token (``[B, L, D_tok]``);
an SLU model gets both on one encoder, like ERNIE 3.0 Tiny's ``JointErnie`` (intent on the pooled output,
slots on the sequence output).  Every model keeps it as ``model.task_heads`` (parameters
``task_heads.classifiers.<head>.weight/bias``).
"""
from __future__ import annotations

import paddle
from paddle import nn

from tinydistill.distill.schema import ConfigError


class TaskHeads(nn.Layer):
    def __init__(self, heads, seq_dim: int, token_dim: int | None, dropout: float = 0.1):
        super().__init__()
        self.specs = list(heads)
        init = paddle.ParamAttr(initializer=nn.initializer.TruncatedNormal(mean=0.0, std=0.02))
        layers = {}
        for h in self.specs:
            if h.kind == "sequence":
                dim = seq_dim
            elif h.kind == "token":
                if token_dim is None:
                    raise ConfigError(f"head {h.name!r}: this model has no per-token output, token heads unsupported")
                dim = token_dim
            else:
                raise ConfigError(f"head {h.name!r}: unknown head kind {h.kind!r} (sequence|token)")
            layers[h.name] = nn.Linear(dim, h.num_labels, weight_attr=init)
        self.classifiers = nn.LayerDict(layers)
        self.dropout = nn.Dropout(dropout)

    def forward(self, pooled, tokens=None) -> dict:
        pooled = self.dropout(pooled) if pooled is not None else None
        tokens = self.dropout(tokens) if tokens is not None else None
        return {h.name: self.classifiers[h.name](pooled if h.kind == "sequence" else tokens) for h in self.specs}


def extended_mask(attention_mask, dtype: str = "float32"):
    """int ``[B, L]`` (1 = token) -> additive ``[B, 1, 1, L]`` mask (0 or -1e4), no gradient."""
    mask = (1.0 - paddle.unsqueeze(attention_mask, axis=[1, 2]).astype(dtype)) * -1e4
    mask.stop_gradient = True
    return mask


def default_inputs(input_ids, token_type_ids, attention_mask, pad_token_id: int = 0):
    if token_type_ids is None:
        token_type_ids = paddle.zeros_like(input_ids)
    if attention_mask is None:
        attention_mask = (input_ids != pad_token_id).astype("int64")
    return token_type_ids, attention_mask

