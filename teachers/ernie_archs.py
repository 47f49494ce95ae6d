"""The ERNIE 3.0 Tiny / ERNIE-Gram architecture table, option types and parameter count (no paddle, no registry).

``ARCHS`` is paddlenlp 2.8.1's architecture table for these names (``ErnieConfig.from_pretrained(name)``;
absent ``intermediate_size`` = the ErnieConfig default 3072), kept here so that ``tinydistill list -v`` can
count parameters without importing paddle; ``tests/test_models.py`` checks it against paddlenlp.  Read by the
registering module (``teachers/ernie.py``) and the model code (``teachers/ernie_model.py``), which import
nothing of each other at module level.
"""
from __future__ import annotations

_V2 = dict(max_position_embeddings=2048, type_vocab_size=4, task_type_vocab_size=16, use_task_id=False,
           vocab_size=40000)
_V1 = dict(_V2, use_task_id=True)


def _arch(base: dict, layers: int, hidden: int, heads: int, inter: int, **extra) -> dict:
    return dict(base, num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                intermediate_size=inter, **extra)


SIZES = {  # size -> (layers, hidden, heads, intermediate)
    "base": (12, 768, 12, 3072), "medium": (6, 768, 12, 3072), "mini": (6, 384, 12, 1536),
    "micro": (4, 384, 12, 1536), "nano": (4, 312, 12, 1248), "pico": (3, 128, 2, 512),
}
ARCHS: dict[str, dict] = {}
for _size, _shape in SIZES.items():
    _tt = {"task_type_vocab_size": 3} if _size == "base" else {}
    ARCHS[f"ernie-3.0-tiny-{_size}-v2-zh"] = _arch(_V2, *_shape, **_tt)
    if _size != "pico":
        ARCHS[f"ernie-3.0-tiny-{_size}-v1-zh"] = _arch(_V1, *_shape, **_tt)
ARCHS["ernie-gram-zh"] = _arch(dict(max_position_embeddings=512, type_vocab_size=2, vocab_size=18018),
                               12, 768, 12, 3072, embedding_size=768)

STUDENT_SIZES = ("mini", "micro", "nano", "pico")

#: ``options`` a config may give an ERNIE model and their types (checked when the config is loaded, before
#: paddle is imported); the same keys as ``teachers.ernie_model.ERNIE_KEYS`` / ``GRAM_KEYS`` + ``EXTRA_KEYS``
OPTION_TYPES = {
    **{k: int for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                        "max_position_embeddings", "type_vocab_size", "pad_token_id")},
    "hidden_act": str, "hidden_dropout_prob": float, "attention_probs_dropout_prob": float,
    "initializer_range": float,
    "classifier_dropout": float | None, "num_attention_heads_per_layer": list[int] | None,
    "intermediate_size_per_layer": list[int] | None,
}
ERNIE_OPTION_TYPES = {**OPTION_TYPES, "task_type_vocab_size": int, "use_task_id": bool, "task_id": int,
                      "layer_norm_eps": float}
GRAM_OPTION_TYPES = {**OPTION_TYPES, "embedding_size": int}


def family(name: str) -> str:
    return "ernie-gram" if name.startswith("ernie-gram") else "ernie"


def param_count(cfg: dict) -> int:
    """Parameters of the encoder (embeddings + layers + pooler, no task heads) from the config alone.

    Honours the per-layer shapes of a width-pruned model (``num_attention_heads_per_layer``,
    ``intermediate_size_per_layer``; head width stays ``hidden_size / num_attention_heads``).
    """
    h, n = cfg["hidden_size"], cfg["num_hidden_layers"]
    e = cfg.get("embedding_size") or h
    if e != h:
        raise ValueError("embedding_size must equal hidden_size")
    emb = (cfg["vocab_size"] + cfg["max_position_embeddings"] + cfg.get("type_vocab_size", 0)) * h + 2 * h
    if cfg.get("use_task_id"):
        emb += cfg["task_type_vocab_size"] * h
    head_dim = h // cfg["num_attention_heads"]
    heads = cfg.get("num_attention_heads_per_layer") or [cfg["num_attention_heads"]] * n
    inters = cfg.get("intermediate_size_per_layer") or [cfg["intermediate_size"]] * n
    layers = 0
    for a, f in zip(heads, inters):
        w = a * head_dim
        layers += 3 * (h * w + w) + (w * h + h)  # q, k, v, out projections
        layers += (h * f + f) + (f * h + h)  # feed-forward
        layers += 4 * h  # two layer norms
    return emb + layers + (h * h + h)  # + pooler
