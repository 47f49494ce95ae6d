"""ERNIE 3.0 Tiny / ERNIE-Gram encoders with task heads (imports paddle and paddlenlp).

The encoder is paddlenlp's own ``ErnieModel`` / ``ErnieGramModel`` (``model.backbone``: ``embeddings``,
``encoder.layers[i]`` = standard ``paddle.nn.TransformerEncoderLayer`` with ``self_attn.{q,k,v,out}_proj``,
``linear1``/``linear2``, ``norm1``/``norm2``; ``pooler``), so paddlenlp checkpoints load unchanged and width
pruning can slice heads and FFN neurons in place.  The layers are run by ``encoder_layer_forward`` below
rather than by paddlenlp's encoder: paddle's ``MultiHeadAttention`` returns attention weights *after*
dropout, whereas the contract promises the post-softmax probabilities.  The computation is otherwise the
same (a test checks the outputs equal paddlenlp's in eval mode) and uses ``self_attn.num_heads`` /
``head_dim`` of each layer, so layers with pruned heads run as they are.
"""
from __future__ import annotations

import os
from pathlib import Path

import paddle
import paddle.nn.functional as F
from paddle import nn

from tinydistill.distill.modeldir import ModelLoadError, load_state_strict, load_with_matching_heads, read_manifest
from tinydistill.distill.schema import ConfigError
from tinydistill.teachers.ernie_archs import ARCHS, family
from tinydistill.teachers.heads import TaskHeads, default_inputs, extended_mask

# config fields recorded in ``model_config`` (everything that shapes or initialises the encoder)
CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
               "type_vocab_size", "initializer_range", "pad_token_id")
ERNIE_KEYS = CONFIG_KEYS + ("task_type_vocab_size", "use_task_id", "task_id", "layer_norm_eps")
GRAM_KEYS = CONFIG_KEYS + ("embedding_size",)
# model-level options (not paddlenlp config fields)
EXTRA_KEYS = ("classifier_dropout", "num_attention_heads_per_layer", "intermediate_size_per_layer")
BACKBONE_PREFIXES = ("embeddings.", "encoder.", "pooler.")


def _classes(fam: str):
    if fam == "ernie-gram":
        from paddlenlp.transformers import ErnieGramConfig, ErnieGramModel
        return ErnieGramConfig, ErnieGramModel, "ernie_gram", GRAM_KEYS
    from paddlenlp.transformers import ErnieConfig, ErnieModel
    return ErnieConfig, ErnieModel, "ernie", ERNIE_KEYS


def encoder_layer_forward(layer, x, mask):
    """One post-LN transformer layer (``nn.TransformerEncoderLayer`` parameters) -> (output, attention probs)."""
    attn = layer.self_attn
    nh, hd = attn.num_heads, attn.head_dim

    def split(t):
        return paddle.transpose(paddle.reshape(t, [0, 0, nh, hd]), [0, 2, 1, 3])

    q, k, v = split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))
    probs = F.softmax(paddle.matmul(q * (hd ** -0.5), k, transpose_y=True) + mask, axis=-1)
    ctx = paddle.matmul(F.dropout(probs, p=attn.dropout, training=layer.training), v)
    ctx = paddle.reshape(paddle.transpose(ctx, [0, 2, 1, 3]), [0, 0, nh * hd])
    x = layer.norm1(x + layer.dropout1(attn.out_proj(ctx)))
    ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))
    return layer.norm2(x + layer.dropout2(ff)), probs


class ErnieForTasks(nn.Layer):
    """ERNIE-family encoder + ``TaskHeads``; obeys the contract in ``distill/modeldir.py``.

    ``export_forward(input_ids, token_type_ids, attention_mask)`` -> tuple of logits in ``self.heads``
    order; that is the function to wrap with ``paddle.jit.to_static`` (no Python control flow on tensors).
    """

    def __init__(self, backbone, heads, model_config: dict, pad_token_id: int = 0):
        super().__init__()
        self.backbone = backbone
        self.heads = list(heads)
        self.model_config = dict(model_config)
        self.pad_token_id = pad_token_id
        h = model_config["hidden_size"]
        dropout = model_config.get("classifier_dropout")
        self.task_heads = TaskHeads(self.heads, h, h, model_config["hidden_dropout_prob"] if dropout is None
                                    else dropout)
        self.hidden_size = h
        self.num_layers = len(backbone.encoder.layers)
        self.num_attention_heads = model_config["num_attention_heads"]
        self.arch, self.kind = "", "student"

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, output_hidden_states=False,
                output_attentions=False):
        token_type_ids, attention_mask = default_inputs(input_ids, token_type_ids, attention_mask,
                                                        self.pad_token_id)
        mask = extended_mask(attention_mask)
        x = self.backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        hidden, attentions = [x] if output_hidden_states else [], []
        for layer in self.backbone.encoder.layers:
            x, probs = encoder_layer_forward(layer, x, mask)
            if output_hidden_states:
                hidden.append(x)
            if output_attentions:
                attentions.append(probs)
        pooled = self.backbone.pooler(x)
        return {"logits": self.task_heads(pooled, x), "hidden_states": hidden, "attentions": attentions}

    def export_forward(self, input_ids, token_type_ids, attention_mask):
        logits = self.forward(input_ids, token_type_ids, attention_mask)["logits"]
        return tuple(logits[h.name] for h in self.heads)


def _resize_layers(backbone, cfg: dict) -> None:
    """Give layers the shapes of a width-pruned model (per-layer heads / FFN sizes)."""
    heads = cfg.get("num_attention_heads_per_layer")
    inters = cfg.get("intermediate_size_per_layer")
    n, h = cfg["num_hidden_layers"], cfg["hidden_size"]
    for key, values in (("num_attention_heads_per_layer", heads), ("intermediate_size_per_layer", inters)):
        if values is not None and (len(values) != n or min(values) < 1):
            raise ConfigError(f"{key} must list {n} positive sizes, got {values}")
    head_dim = h // cfg["num_attention_heads"]
    for i, layer in enumerate(backbone.encoder.layers):
        attn = layer.self_attn
        if heads is not None and heads[i] != attn.num_heads:
            w = heads[i] * head_dim
            attn.q_proj, attn.k_proj, attn.v_proj = nn.Linear(h, w), nn.Linear(h, w), nn.Linear(h, w)
            attn.out_proj = nn.Linear(w, h)
            attn.num_heads, attn.embed_dim = heads[i], w
        if inters is not None and inters[i] != layer.linear1.weight.shape[1]:
            layer.linear1, layer.linear2 = nn.Linear(h, inters[i]), nn.Linear(inters[i], h)


def _make_config(name: str, base, options: dict):
    """paddlenlp config for ``name`` (``base``: a config object or None for the registered defaults)."""
    config_cls, _, _, keys = _classes(family(name))
    config = base if base is not None else config_cls.from_pretrained(name)
    allowed = set(keys) | set(EXTRA_KEYS)
    for key, value in options.items():
        if key not in allowed:
            import difflib
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown option {key!r} for {name}{hint} (valid: {', '.join(sorted(allowed))})")
        if key not in EXTRA_KEYS:
            setattr(config, key, value)
    if family(name) == "ernie-gram" and "hidden_size" in options and "embedding_size" not in options:
        config.embedding_size = config.hidden_size
    if config.hidden_size % config.num_attention_heads:
        raise ConfigError(f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads "
                         f"{config.num_attention_heads}")
    model_config = {k: getattr(config, k) for k in keys if hasattr(config, k)}
    model_config.update({k: options[k] for k in EXTRA_KEYS if options.get(k) is not None})
    return config, model_config


def _build(name: str, heads, config, model_config: dict) -> ErnieForTasks:
    _, model_cls, _, _ = _classes(family(name))
    backbone = model_cls(config)
    _resize_layers(backbone, model_config)
    model = ErnieForTasks(backbone, heads, model_config, pad_token_id=config.pad_token_id)
    model.arch = name
    return model


def build_ernie(name: str, heads, init: str = "scratch", vocab_size: int | None = None, **options):
    """Builder behind every registered ERNIE name (see ``distill/modeldir.py`` for ``init`` and ``vocab_size``)."""
    if init == "scratch":
        if vocab_size is not None:
            options = {**options, "vocab_size": int(vocab_size)}
        config, model_config = _make_config(name, None, options)
        return _build(name, heads, config, model_config)
    if init == "pretrained":
        config, model_config = _make_config(name, None, options)
        model = _build(name, heads, config, model_config)
        state = pretrained_state(name)
        _load_backbone(model, state, f"pretrained {name}", vocab_size)
        return model
    path = Path(os.path.expanduser(str(init)))
    if not path.is_dir():
        raise ModelLoadError(f"init: {init!r} is neither 'scratch', 'pretrained' nor an existing directory")
    if (path / "manifest.json").is_file():
        return _from_model_dir(name, heads, path, vocab_size, options)
    return _from_paddlenlp_dir(name, heads, path, vocab_size, options)


def _check_vocab(model, vocab_size, source: str) -> None:
    rows = model.backbone.embeddings.word_embeddings.weight.shape[0]
    if vocab_size is not None and vocab_size > rows:
        raise ModelLoadError(f"{source}: the tokenizer has {vocab_size} tokens but the checkpoint's embedding "
                             f"only {rows} rows; use the checkpoint's vocabulary")


def _load_backbone(model, state: dict, source: str, vocab_size) -> None:
    load_state_strict(model.backbone, state, source)
    _check_vocab(model, vocab_size, source)


def _from_paddlenlp_dir(name, heads, path: Path, vocab_size, options):
    """A paddlenlp ``save_pretrained`` directory: ``config.json`` + ``model_state.pdparams`` (or
    ``model.safetensors``), saved from the bare model or from an ``*For*`` task model (its head is dropped)."""
    config_cls, _, prefix, _ = _classes(family(name))
    weights = [path / f for f in ("model_state.pdparams", "model.safetensors") if (path / f).is_file()]
    if not (path / "config.json").is_file() or not weights:
        raise ModelLoadError(f"init: {path} is not a model directory: expected manifest.json (TinyDistill) or "
                             "config.json + model_state.pdparams (paddlenlp save_pretrained)")
    from paddlenlp.transformers.model_utils import load_state_dict
    try:
        config = config_cls.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - bad config.json
        raise ModelLoadError(f"{path / 'config.json'}: cannot read paddlenlp config: {exc}") from None
    model_type = getattr(config, "model_type", None)
    if model_type and model_type.replace("_", "-") != family(name):
        raise ModelLoadError(f"{path / 'config.json'}: model_type {model_type!r} does not match {name} "
                             f"({family(name)})")
    try:
        config, model_config = _make_config(name, config, options)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
    model = _build(name, heads, config, model_config)
    state = {}
    for key, value in load_state_dict(str(weights[0])).items():
        key = key[len(prefix) + 1:] if key.startswith(prefix + ".") else key
        if key.startswith(BACKBONE_PREFIXES):  # anything else is a paddlenlp task head: not ours
            state[key] = value
    _load_backbone(model, state, str(weights[0]), vocab_size)
    return model


def _from_model_dir(name, heads, path: Path, vocab_size, options):
    """A TinyDistill model directory of the same family: encoder weights, plus the weights of every head
    whose spec (name, kind, labels) equals one of ``heads``."""
    import paddle

    manifest = read_manifest(path)
    if manifest["format"] != "dygraph":
        raise ModelLoadError(f"init: {path} is an exported model (format {manifest['format']!r}); "
                             "initialise from the dygraph model directory it was exported from")
    src = manifest["arch"]
    if src not in ARCHS or family(src) != family(name):
        raise ModelLoadError(f"init: {path} holds {src!r}, which cannot initialise {name} ({family(name)})")
    config_cls = _classes(family(name))[0]
    saved = dict(manifest.get("model_config") or {})
    try:
        base = config_cls(**{k: v for k, v in saved.items() if k not in EXTRA_KEYS})
        config, model_config = _make_config(name, base, {**{k: saved[k] for k in EXTRA_KEYS if k in saved},
                                                         **options})
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
    model = _build(name, heads, config, model_config)
    file = path / "model_state.pdparams"
    load_with_matching_heads(model, paddle.load(str(file)), manifest["heads"], str(file))
    _check_vocab(model, vocab_size, str(file))
    return model


# -- pretrained weights -------------------------------------------------------------------------------
def _snapshot(root: Path) -> set[str]:
    return {os.path.join(d, f) for d, dirs, files in os.walk(root) for f in dirs + files} if root.is_dir() else set()


def _remove_new(root: Path, before: set[str]) -> None:
    """Remove what a failed download created under ``root`` (lock files, empty and temporary dirs)."""
    for path in sorted(_snapshot(root) - before, key=len, reverse=True):
        try:
            os.rmdir(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        except OSError:
            pass  # a non-empty dir that holds something else; leave it


def pretrained_state(name: str) -> dict:
    """The encoder state dict of paddlenlp's pretrained ``name`` (downloaded by paddlenlp when a network
    exists).  Offline: one ModelLoadError, and nothing left behind in paddlenlp's model cache."""
    import logging

    from paddlenlp.utils.env import MODEL_HOME
    from paddlenlp.utils.log import logger

    model_cls = _classes(family(name))[1]
    root = Path(MODEL_HOME)
    before = _snapshot(root)
    level = logger.logger.level
    logger.logger.setLevel(logging.ERROR)
    try:
        return model_cls.from_pretrained(name).state_dict()
    except Exception as exc:  # noqa: BLE001 - paddlenlp raises OSError/ValueError/network errors
        _remove_new(root, before)
        reason = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:120]
        raise ModelLoadError(
            f"init: pretrained: the weights of {name!r} cannot be fetched (no network or model hub unreachable; "
            f"paddlenlp: {type(exc).__name__}: {reason}). Pass a local directory instead (init: /path/to/dir "
            f"with paddlenlp save_pretrained files config.json + model_state.pdparams, or a TinyDistill model "
            f"directory), or use init: scratch") from None
    finally:
        logger.logger.setLevel(level)
