"""Vocabulary pruning and DynaBERT-style width pruning (imports paddle).

Both work on dygraph model directories and write dygraph model directories that ``load_model_dir``
rebuilds from their manifest (``vocab_size``/``max_position_embeddings``, and
``num_attention_heads_per_layer``/``intermediate_size_per_layer`` in ``model_config``).
"""
from __future__ import annotations

import copy
import time
from collections import Counter

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from tinydistill.compress.common import build_task
from tinydistill.compress.evaluation import require_float, step_report, task_and_data
from tinydistill.compress.steps import NotApplicable
from tinydistill.distill.modeldir import load_model_dir, save_model_dir


def _dygraph(in_dir, step: str):
    require_float(in_dir, step)
    model, tok, manifest = load_model_dir(in_dir)  # ModelLoadError names exported dirs clearly
    if tok is None:
        raise ValueError(f"{in_dir}: {step} needs the model's tokenizer (manifest 'tokenizer' is null)")
    return model, tok, manifest


def _replace(model, name: str, new) -> None:
    parent = model
    *path, last = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, last, new)


def _new_embedding(old, rows: np.ndarray, padding_idx):
    emb = nn.Embedding(rows.shape[0], rows.shape[1], padding_idx=padding_idx)
    emb.weight.set_value(rows.astype(old.weight.numpy().dtype))
    return emb


# -- vocab_prune ---------------------------------------------------------------------------------------
def special_ids(tok) -> list[int]:
    names = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    ids = {tok.token_to_id(getattr(tok, n)) for n in names if getattr(tok, n, None)}
    return sorted(i for i in ids if i is not None)


def pruned_tokenizer(tok, tokens: list[str]):
    if hasattr(type(tok), "from_vocab"):
        return type(tok).from_vocab(tokens, lowercase=getattr(tok, "lowercase", True))
    return type(tok)(tokens, lowercase=getattr(tok, "lowercase", True))


def vocab_prune(in_dir, out_dir, p, ctx) -> dict:
    started = time.time()
    model, tok, manifest = _dygraph(in_dir, "vocab_prune")
    task = build_task(manifest, data_dir=ctx.data_dir)
    counts: Counter[int] = Counter()
    for text in task.texts("train"):
        counts.update(tok.encode(text).ids)
    old_size = tok.vocab_size
    keep = set(special_ids(tok))
    for i, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if count < p.min_count or (p.max_vocab_size is not None and len(keep) >= p.max_vocab_size):
            break
        keep.add(i)
    keep_ids = np.array(sorted(keep), dtype="int64")
    new_tok = pruned_tokenizer(tok, [tok.vocab[i] for i in keep_ids])
    new_pad = new_tok.pad_token_id

    embeddings = [(n, l) for n, l in model.named_sublayers() if isinstance(l, nn.Embedding)]
    words = [(n, l) for n, l in embeddings if l.weight.shape[0] == old_size]
    if not words:
        raise NotApplicable(f"{model.arch}: no embedding with {old_size} rows (the tokenizer's vocabulary)")
    for name, layer in words:
        pad = new_pad if layer._padding_idx is not None else None
        _replace(model, name, _new_embedding(layer, layer.weight.numpy()[keep_ids], pad))
    cfg = model.model_config
    cfg["vocab_size"] = len(keep_ids)
    for key in ("pad_token_id", "padding_idx"):
        if key in cfg and cfg[key] is not None:
            cfg[key] = new_pad

    positions = None
    max_len = getattr(task.options, "max_seq_length", None)
    if p.cut_positions and max_len and cfg.get("max_position_embeddings", 0) > max_len:
        for name, layer in embeddings:
            if name.endswith("position_embeddings"):
                _replace(model, name, _new_embedding(layer, layer.weight.numpy()[:max_len], None))
        positions = (cfg["max_position_embeddings"], max_len)
        cfg["max_position_embeddings"] = max_len

    total = sum(counts.values())
    covered = sum(c for i, c in counts.items() if i in keep)
    extra = dict(manifest.get("extra") or {})
    info = {"vocab_before": old_size, "vocab_after": int(len(keep_ids)),
            "train_token_coverage": round(100.0 * covered / max(total, 1), 3),
            "positions": list(positions) if positions else None}
    extra["vocab_prune"] = info
    save_model_dir(out_dir, model, new_tok, task, extra=extra)
    return step_report("vocab_prune", p, in_dir, out_dir, ctx, started, extra=info)


# -- width_prune ---------------------------------------------------------------------------------------
def transformer_layers(model) -> list:
    return [l for l in model.sublayers() if isinstance(l, nn.TransformerEncoderLayer)]


def task_loss(model, batch: dict, heads) -> paddle.Tensor:
    """Sum over heads of the cross-entropy with the gold labels (token heads skip IGNORE_INDEX)."""
    t = {k: paddle.to_tensor(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    logits = model(t["input_ids"], t["token_type_ids"], t["attention_mask"])["logits"]
    loss = 0.0
    for head in heads:
        z, y = logits[head.name], paddle.to_tensor(batch[f"labels/{head.name}"])
        loss = loss + F.cross_entropy(z.reshape([-1, z.shape[-1]]), y.reshape([-1]), ignore_index=-100)
    return loss


def importance(model, task, tok, examples, batch_size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-layer head and FFN-neuron importance: |sum over a unit's output weights of w * dL/dw|, summed over
    batches (first-order Taylor estimate of the loss change when the unit is removed; Michel et al. 2019,
    DynaBERT).  For a head this equals |dL/d(head mask)|."""
    layers = transformer_layers(model)
    heads_imp = [np.zeros(l.self_attn.num_heads) for l in layers]
    ffn_imp = [np.zeros(l.linear1.weight.shape[1]) for l in layers]
    encoded = [task.encode(ex, tok) for ex in examples]
    model.eval()
    for start in range(0, len(encoded), batch_size):
        batch = task.collate(encoded[start:start + batch_size], pad_id=tok.pad_token_id)
        loss = task_loss(model, batch, task.heads())
        loss.backward()
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            w = attn.out_proj.weight
            contrib = (w * w.grad).sum(axis=1).numpy().reshape(attn.num_heads, attn.head_dim).sum(1)
            heads_imp[i] += np.abs(contrib)
            w2 = layer.linear2.weight
            ffn_imp[i] += np.abs((w2 * w2.grad).sum(axis=1).numpy())
        model.clear_gradients()
    return heads_imp, ffn_imp


def _linear(weight: np.ndarray, bias: np.ndarray | None):
    lin = nn.Linear(weight.shape[0], weight.shape[1], bias_attr=None if bias is not None else False)
    lin.weight.set_value(weight)
    if bias is not None:
        lin.bias.set_value(bias)
    return lin


def slice_layer(layer, keep_heads: np.ndarray, keep_neurons: np.ndarray) -> None:
    """Keep the given heads (in the given order) and FFN neurons of a ``TransformerEncoderLayer`` in place."""
    attn = layer.self_attn
    hd = attn.head_dim
    cols = (keep_heads[:, None] * hd + np.arange(hd)[None, :]).reshape(-1)
    for proj in ("q_proj", "k_proj", "v_proj"):
        old = getattr(attn, proj)
        setattr(attn, proj, _linear(old.weight.numpy()[:, cols], old.bias.numpy()[cols]))
    attn.out_proj = _linear(attn.out_proj.weight.numpy()[cols, :], attn.out_proj.bias.numpy())
    attn.num_heads, attn.embed_dim = len(keep_heads), len(keep_heads) * hd
    l1, l2 = layer.linear1, layer.linear2
    layer.linear1 = _linear(l1.weight.numpy()[:, keep_neurons], l1.bias.numpy()[keep_neurons])
    layer.linear2 = _linear(l2.weight.numpy()[keep_neurons, :], l2.bias.numpy())


def prune_width(model, heads_imp, ffn_imp, width: float, ffn_width: float | None = None) -> dict:
    """Slice every layer to ``width`` of its heads and ``ffn_width`` (default: ``width``) of its FFN neurons, most
    important first (DynaBERT's reordering); update ``model.model_config`` so the model directory rebuilds."""
    ffn_width = width if ffn_width is None else ffn_width
    heads, inters = [], []
    for layer, h_imp, f_imp in zip(transformer_layers(model), heads_imp, ffn_imp):
        k = max(1, int(round(width * len(h_imp))))
        m = max(1, int(round(ffn_width * len(f_imp))))
        keep_h = np.argsort(-h_imp, kind="stable")[:k]
        keep_f = np.argsort(-f_imp, kind="stable")[:m]
        slice_layer(layer, keep_h, keep_f)
        heads.append(k)
        inters.append(m)
    model.model_config["num_attention_heads_per_layer"] = heads
    model.model_config["intermediate_size_per_layer"] = inters
    return {"heads_per_layer": heads, "intermediate_per_layer": inters}


def width_prune(in_dir, out_dir, p, ctx) -> dict:
    from tinydistill.compress.evaluation import dir_metrics
    from tinydistill.distill.config import DistillConfig
    from tinydistill.distill.schema import from_dict, to_dict
    from tinydistill.distill.trainer import evaluate, train

    started = time.time()
    model, tok, manifest = _dygraph(in_dir, "width_prune")
    layers = transformer_layers(model)
    if not layers or "num_attention_heads" not in model.model_config:
        raise NotApplicable(f"{manifest['arch']} has no transformer layers (multi-head attention + FFN) to "
                            "prune; width_prune applies to the ERNIE students")
    task, train_ex, dev_ex = task_and_data(manifest, ctx)
    teacher = copy.deepcopy(model)
    teacher.eval()
    paddle.seed(ctx.seed)
    heads_imp, ffn_imp = importance(model, task, tok, train_ex[: p.importance_examples], p.batch_size)
    heads_width, ffn_width = p.widths
    shapes = prune_width(model, heads_imp, ffn_imp, heads_width, ffn_width)
    before = {k: float(v) for k, v in evaluate(model, tok, task, dev_ex).items()}
    extra_info = {"width": p.width, "heads_width": heads_width, "ffn_width": ffn_width, **shapes,
                  "dev_metrics_before_recovery": before, "head_importance": [np.round(h, 6).tolist() for h in heads_imp]}
    if p.recover is not None:
        cfg = from_dict(DistillConfig, {**to_dict(p.recover), "seed": ctx.seed, "progress": ctx.progress},
                        "compress.width_prune.recover")
        # trained in memory: the engine loads the best dev weights back into ``model``
        result = train(model, tok, task, train_ex, dev_ex, cfg, None, teachers=[(teacher, tok)])
        extra_info["recovery"] = {"best_metrics": result.best_metrics, "steps": result.global_step,
                                  "best_step": result.best_step, "epochs": round(result.epochs_run, 3)}
    extra = dict(manifest.get("extra") or {})
    extra["width_prune"] = {k: v for k, v in extra_info.items() if k != "head_importance"}
    save_model_dir(out_dir, model, tok, task, extra=extra)
    _, metrics = dir_metrics(out_dir, ctx, dev_ex)
    return step_report("width_prune", p, in_dir, out_dir, ctx, started, extra=extra_info, metrics=metrics)
