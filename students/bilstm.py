"""Registers the Bi-LSTM student of Tang et al. (2019) (no paddle import here; model in students/models.py).

Embedding (word ids from the jieba-word tokenizer, or characters from the char tokenizer: the vocabulary
size comes from the tokenizer) -> one bidirectional LSTM layer -> pooling over the real tokens (``max``,
``mean``, or ``last``: the final states of both directions, as in Tang et al.) -> one MLP hidden layer ->
sequence heads.  Token heads read the per-token LSTM outputs.  ``hidden_states`` = [embedding output
(width ``embedding_size``), LSTM output (width ``2 * hidden_size``)]; ``attentions`` = [].
"""
from __future__ import annotations

from tinydistill.students.common import StudentSpec, register


def count(cfg: dict) -> int:
    v, e, h, m = cfg["vocab_size"], cfg["embedding_size"], cfg["hidden_size"], cfg["mlp_size"]
    lstm = 2 * (4 * h * e + 4 * h * h + 2 * 4 * h)  # two directions: W_ih, W_hh, b_ih, b_hh
    return v * e + lstm + (2 * h * m + m)


BILSTM = register(StudentSpec(
    name="bilstm",
    summary="Bi-LSTM of Tang et al. 2019 (embedding, 1 BiLSTM layer, pooling, MLP); word or char input",
    defaults=dict(vocab_size=None, embedding_size=300, hidden_size=300, mlp_size=300, pooling="max",
                  activation="tanh", dropout=0.1, padding_idx=0),
    model_class="tinydistill.students.models:BiLSTMStudent",
    count=count,
))
