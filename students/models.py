"""Bi-LSTM and TextCNN student models (imports paddle; registered in students/bilstm.py, students/textcnn.py).

Both obey the output contract of ``distill/modeldir.py`` and offer ``export_forward(input_ids, token_type_ids,
attention_mask)`` -> tuple of logits in ``heads`` order for ``paddle.jit.to_static``.  ``token_type_ids`` is
accepted and ignored (single-segment models).
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from tinydistill.distill.schema import ConfigError
from tinydistill.teachers.heads import TaskHeads, default_inputs

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def _choice(cfg: dict, key: str, allowed) -> str:
    if cfg[key] not in allowed:
        raise ConfigError(f"option {key}: {cfg[key]!r} is not one of {', '.join(map(repr, allowed))}")
    return cfg[key]


def _masked_max(x, mask):  # x [B, L, D], mask [B, L] (1 = token)
    m = paddle.unsqueeze(mask.astype(x.dtype), -1)
    return paddle.max(x + (1.0 - m) * -1e4, axis=1)


def _masked_mean(x, mask):
    m = paddle.unsqueeze(mask.astype(x.dtype), -1)
    return paddle.sum(x * m, axis=1) / paddle.clip(paddle.sum(m, axis=1), min=1.0)


def _gather_rows(x, index):
    """``x[b, index[b, t]]`` for ``x`` [B, L, D] and int64 ``index`` [B, T] -> [B, T, D] (exports as Gather)."""
    batch, length = paddle.shape(x)[0], paddle.shape(x)[1]
    offsets = paddle.unsqueeze(paddle.arange(batch, dtype="int64") * length.astype("int64"), 1)
    flat = paddle.reshape(x, [-1, x.shape[-1]])
    out = paddle.gather(flat, paddle.reshape(index + offsets, [-1]))
    return paddle.reshape(out, [batch, -1, x.shape[-1]])


class _Student(nn.Layer):
    def __init__(self, heads, cfg: dict):
        super().__init__()
        self.heads = list(heads)
        self.model_config = dict(cfg)
        self.pad_token_id = cfg["padding_idx"]
        self.num_layers, self.num_attention_heads = 1, 0
        self.arch, self.kind = "", "student"
        self.embeddings = nn.Embedding(cfg["vocab_size"], cfg["embedding_size"], padding_idx=cfg["padding_idx"])
        self.dropout = nn.Dropout(cfg["dropout"])

    def export_forward(self, input_ids, token_type_ids, attention_mask):
        # token_type_ids is unused; tie it into the graph with a zero term so that every exported model has
        # the same three inputs (paddle.jit.save rejects a feed that no output depends on)
        attention_mask = attention_mask + token_type_ids * 0
        logits = self.forward(input_ids, token_type_ids, attention_mask)["logits"]
        return tuple(logits[h.name] for h in self.heads)


class BiLSTMStudent(_Student):
    """Tang et al.'s Bi-LSTM; see students/bilstm.py."""

    def __init__(self, heads, cfg: dict):
        super().__init__(heads, cfg)
        h = cfg["hidden_size"]
        self.pooling = _choice(cfg, "pooling", ("max", "mean", "last"))
        self.activation = ACTIVATIONS[_choice(cfg, "activation", tuple(ACTIVATIONS))]()
        # Two one-directional LSTMs instead of nn.LSTM(direction="bidirect", sequence_length=...): paddle2onnx
        # drops ``sequence_length``, so the exported reverse direction would start on padding.  Reversing each
        # row within its own length (a gather) gives the same bidirectional LSTM in dygraph and in every export.
        self.lstm_fw = nn.LSTM(cfg["embedding_size"], h, num_layers=1, direction="forward")
        self.lstm_bw = nn.LSTM(cfg["embedding_size"], h, num_layers=1, direction="forward")
        self.mlp = nn.Linear(2 * h, cfg["mlp_size"])
        self.task_heads = TaskHeads(self.heads, cfg["mlp_size"], 2 * h, cfg["dropout"])
        self.hidden_size = 2 * h

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, output_hidden_states=False,
                output_attentions=False):
        _, attention_mask = default_inputs(input_ids, token_type_ids, attention_mask, self.pad_token_id)
        emb = self.embeddings(input_ids)
        x = self.dropout(emb)
        mask = attention_mask.astype("int64")
        lengths = paddle.sum(mask, axis=1, keepdim=True)  # [B, 1]
        pos = paddle.unsqueeze(paddle.arange(paddle.shape(input_ids)[1], dtype="int64"), 0)  # [1, L]
        rev = paddle.where(pos < lengths, lengths - 1 - pos, pos)  # reverse each row's real tokens in place
        fw, _ = self.lstm_fw(x)
        bw_rev, _ = self.lstm_bw(_gather_rows(x, rev))
        bw = _gather_rows(bw_rev, rev)  # the permutation is its own inverse
        out = paddle.concat([fw, bw], axis=-1) * paddle.unsqueeze(mask.astype(fw.dtype), -1)
        if self.pooling == "max":
            pooled = _masked_max(out, attention_mask)
        elif self.pooling == "mean":
            pooled = _masked_mean(out, attention_mask)
        else:  # final states: forward at the last real token, backward at the first
            last = _gather_rows(fw, paddle.clip(lengths - 1, min=0))
            pooled = paddle.concat([paddle.squeeze(last, 1), bw[:, 0]], axis=-1)
        pooled = self.activation(self.mlp(self.dropout(pooled)))
        return {"logits": self.task_heads(pooled, out),
                "hidden_states": [emb, out] if output_hidden_states else [], "attentions": []}


class TextCNNStudent(_Student):
    """Kim's TextCNN; see students/textcnn.py."""

    def __init__(self, heads, cfg: dict):
        token = [h.name for h in heads if h.kind != "sequence"]
        if token:
            raise ConfigError(f"textcnn has sequence heads only; head(s) {token} need per-token outputs "
                             "(use bilstm or an ERNIE student)")
        super().__init__(heads, cfg)
        e, f = cfg["embedding_size"], cfg["num_filters"]
        if not cfg["kernel_sizes"]:
            raise ConfigError("option kernel_sizes: give at least one kernel size")
        self.convs = nn.LayerList([nn.Conv1D(e, f, k, padding="same", data_format="NLC")
                                   for k in cfg["kernel_sizes"]])
        width = f * len(cfg["kernel_sizes"])
        self.mlp = nn.Linear(width, cfg["mlp_size"])
        self.task_heads = TaskHeads(self.heads, cfg["mlp_size"], None, cfg["dropout"])
        self.hidden_size = width

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, output_hidden_states=False,
                output_attentions=False):
        _, attention_mask = default_inputs(input_ids, token_type_ids, attention_mask, self.pad_token_id)
        emb = self.embeddings(input_ids)
        x = self.dropout(emb)
        conv = paddle.concat([F.relu(c(x)) for c in self.convs], axis=-1)
        pooled = F.relu(self.mlp(self.dropout(_masked_max(conv, attention_mask))))
        return {"logits": self.task_heads(pooled, None),
                "hidden_states": [emb, conv] if output_hidden_states else [], "attentions": []}
