"""Registers a small TextCNN student (Kim 2014) (no paddle import here; model in students/models.py).

Embedding -> parallel 1-D convolutions (``kernel_sizes``, ``num_filters`` each, ReLU, "same" padding) ->
max-pooling over the real tokens -> one MLP hidden layer -> sequence heads.  Sequence heads only: asking
for a token head is an error.  ``hidden_states`` = [embedding output, concatenated convolution outputs
(width ``num_filters * len(kernel_sizes)``)]; ``attentions`` = [].
"""
from __future__ import annotations

from tinydistill.students.common import StudentSpec, register


def count(cfg: dict) -> int:
    v, e, f, m = cfg["vocab_size"], cfg["embedding_size"], cfg["num_filters"], cfg["mlp_size"]
    ks = cfg["kernel_sizes"]
    return v * e + sum(k * e * f + f for k in ks) + (len(ks) * f * m + m)


TEXTCNN = register(StudentSpec(
    name="textcnn",
    summary="small TextCNN (embedding, 1-D convolutions, max-pool, MLP); sequence heads only",
    defaults=dict(vocab_size=None, embedding_size=128, num_filters=128, kernel_sizes=[1, 2, 3], mlp_size=128,
                  dropout=0.1, padding_idx=0),
    model_class="tinydistill.students.models:TextCNNStudent",
    count=count,
))
