"""Mixing the logits of several teachers into one target per example and head (numpy, per batch).

``MIXERS`` maps ``MixingConfig.mode`` to ``f(logits [K, B, ...C], mask, weights) -> [K, B] weights``;
the target is the per-example weighted average of the teachers' logits.  numpy is imported inside the
functions: ``tinydistill list`` imports this module for ``MIXERS`` and stays numpy-free.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tinydistill.distill.config import MixingConfig
from tinydistill.distill.registry import Registry

if TYPE_CHECKING:
    import numpy as np

MIXERS = Registry("mixer")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    import numpy as np

    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@MIXERS.register("fixed", summary="the same weight per teacher for every example (mixing.weights, default equal)")
def _fixed(stack: np.ndarray, mask: np.ndarray | None, weights: list[float] | None) -> np.ndarray:
    import numpy as np

    k, b = stack.shape[:2]
    w = np.ones(k) if weights is None else np.asarray(weights, dtype="float64")
    if len(w) != k:
        raise ValueError(f"mixing.weights has {len(w)} entries for {k} teachers")
    if w.sum() <= 0:
        raise ValueError("mixing.weights must not all be 0")
    return np.repeat((w / w.sum())[:, None], b, axis=1)


@MIXERS.register("confidence", summary="per example, each teacher weighted by its top softmax probability "
                                       "(times mixing.weights, if given)")
def _confidence(stack: np.ndarray, mask: np.ndarray | None, weights: list[float] | None) -> np.ndarray:
    import numpy as np

    conf = softmax(stack.astype("float64")).max(axis=-1)          # [K, B] or [K, B, L]
    if conf.ndim == 3:                                             # token head: mean over real tokens
        m = np.ones(conf.shape[1:]) if mask is None else mask.astype("float64")
        conf = (conf * m[None]).sum(-1) / np.maximum(m.sum(-1), 1.0)[None]
    if weights is not None:                                        # optional prior per teacher
        conf = conf * np.asarray(weights, dtype="float64")[:, None]
    return conf / np.maximum(conf.sum(0, keepdims=True), 1e-12)


def mix_logits(per_teacher: list[dict[str, np.ndarray]], cfg: MixingConfig,
               token_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``per_teacher[k][head]`` is ``[B, C]`` or ``[B, L, C]``; returns the mixed logits per head."""
    import numpy as np

    if len(per_teacher) == 1:
        return dict(per_teacher[0])
    out = {}
    for head in per_teacher[0]:
        stack = np.stack([t[head] for t in per_teacher])           # [K, B, ...]
        w = MIXERS.get(cfg.mode)(stack, token_mask, cfg.weights)        # [K, B]
        w = w.reshape(w.shape + (1,) * (stack.ndim - 2))
        out[head] = (stack * w).sum(0).astype("float32")
    return out


def evaluate_mixture(teachers, task, examples, cfg: MixingConfig, batch_size: int = 256) -> dict:
    """Metrics of the teachers' mixed logits (what a multi-teacher run distils from) on ``examples``:
    the accuracy of the teacher *ensemble*, which is the figure to set against the student's.  Token heads
    are mixed position by position, so they need every teacher to tokenise alike."""
    from tinydistill.distill.batching import encode_examples, predict_logits, stack_logits

    heads = task.heads()
    per_teacher, encoded = [], None
    for model, tok in teachers:
        enc = encode_examples(task, examples, tok)
        encoded = encoded or enc
        per_teacher.append(stack_logits(predict_logits(model, task, enc, tok.pad_token_id, batch_size), heads))
    for head in heads:
        if head.kind == "token" and len({t[head.name].shape for t in per_teacher}) > 1:
            raise ValueError(f"head {head.name!r}: the teachers tokenise differently; token heads cannot be mixed")
    return task.compute_metrics(mix_logits(per_teacher, cfg), encoded)
