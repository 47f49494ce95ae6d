"""Encoding, batch order, padding and batched inference for the engine (``distill.engine``).

Batch order: ``epoch_batches`` gives one epoch's batches as a pure function of (seed, epoch), so a resumed
run replays the same order and skips the batches it has done.  With ``length_bucketing`` the examples are
shuffled, cut into windows of ``bucket_window`` batches, sorted by length within each window, batched, and
the batches shuffled again: batches hold examples of similar length (little padding) while every epoch
still mixes the whole training set.  Without it the order is ``paddle.io.DistributedBatchSampler``'s,
exactly as the loop before the engine had it (so old results can be reproduced step for step).

Inference (``predict_logits``, ``evaluate``) sorts by length too and restores the input order, runs without
gradients and at ``eval_batch_size`` (default 256): a dev pass is a handful of large, tightly padded batches.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tinydistill.distill.augment import apply_masks
from tinydistill.tasks.base import IGNORE_INDEX


def encode_examples(task, examples, tokenizer) -> list:
    """``task.encode`` every example; augmented examples get their masked words collapsed to one mask
    token of this tokenizer."""
    return [apply_masks(task.encode(ex, tokenizer), ex, tokenizer) for ex in examples]


def collate(task, encoded: Sequence, pad_id: int) -> dict[str, np.ndarray]:
    """``task.collate`` plus ``labels/<head>`` for every head (IGNORE_INDEX where an example has no gold
    label, e.g. augmented copies) and ``token_mask`` (1 on real text tokens, 0 on specials/padding)."""
    batch = task.collate(encoded, pad_id)
    length = batch["input_ids"].shape[1]
    for head in task.heads():
        if f"labels/{head.name}" in batch:
            continue
        if head.kind == "sequence":
            batch[f"labels/{head.name}"] = np.array([e.labels.get(head.name, IGNORE_INDEX) for e in encoded],
                                                    dtype="int64")
        else:
            arr = np.full((len(encoded), length), IGNORE_INDEX, dtype="int64")
            for i, e in enumerate(encoded):
                lab = e.labels.get(head.name)
                if lab is not None:
                    arr[i, :len(lab)] = lab
            batch[f"labels/{head.name}"] = arr
    tm = np.zeros((len(encoded), length), dtype="float32")
    for i, e in enumerate(encoded):
        tm[i, :len(e.offsets)] = [1.0 if end > start else 0.0 for start, end in e.offsets]
    batch["token_mask"] = tm
    return batch


def model_forward(model, batch, hidden=False, attentions=False):
    """The output contract of ``model`` on a collated numpy batch."""
    import paddle
    return model(paddle.to_tensor(batch["input_ids"]), token_type_ids=paddle.to_tensor(batch["token_type_ids"]),
                 attention_mask=paddle.to_tensor(batch["attention_mask"]),
                 output_hidden_states=hidden, output_attentions=attentions)


# ----------------------------------------------------------------------------------------------
# batch order
# ----------------------------------------------------------------------------------------------
def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, *, bucketing: bool = True,
                  window: int = 50, world: int = 1, rank: int = 0) -> list[list[int]]:
    """This rank's batches (lists of example indices) of one epoch; deterministic in (seed, epoch)."""
    n = len(lengths)
    if not bucketing:
        import paddle
        sampler = paddle.io.DistributedBatchSampler(list(range(n)), batch_size=batch_size, num_replicas=world,
                                                    rank=rank, shuffle=True)
        sampler.set_epoch(seed * 1000 + epoch)
        return [list(b) for b in sampler]
    rng = np.random.RandomState((seed * 1000 + epoch) % (2 ** 32))
    order = rng.permutation(n)
    span = max(1, window) * batch_size
    lens = np.asarray(lengths)
    batches = []
    for start in range(0, n, span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lens[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    if world > 1:  # every rank gets the same number of batches (the last ones repeat from the start)
        per_rank = -(-len(batches) // world)
        batches = (batches * 2)[:per_rank * world][rank::world]
    return batches


# ----------------------------------------------------------------------------------------------
# inference
# ----------------------------------------------------------------------------------------------
def predict_logits(model, task, encoded: Sequence, pad_id: int, batch_size: int = 256) -> list[dict]:
    """Per-example logits ``{head: [C] | [L, C]}`` (token heads cut to the example's length), eval mode,
    no gradients; examples are batched in length order and returned in input order."""
    import paddle
    was_training = model.training
    model.eval()
    out: list = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    try:
        with paddle.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                chunk = [encoded[i] for i in idx]
                logits = model_forward(model, collate(task, chunk, pad_id))["logits"]
                arrays = {h: v.numpy() for h, v in logits.items()}
                for j, (i, e) in enumerate(zip(idx, chunk)):
                    out[i] = {h: (a[j, :len(e.input_ids)] if a.ndim == 3 else a[j]) for h, a in arrays.items()}
    finally:
        if was_training:
            model.train()
    return out


def stack_logits(per_example: list[dict], heads) -> dict[str, np.ndarray]:
    """Per-example logits -> ``{head: [N, C] | [N, Lmax, C]}`` (token heads zero-padded)."""
    out = {}
    for head in heads:
        rows = [p[head.name] for p in per_example]
        if head.kind == "sequence":
            out[head.name] = np.stack(rows)
        else:
            length = max(len(r) for r in rows)
            arr = np.zeros((len(rows), length, rows[0].shape[-1]), dtype="float32")
            for i, r in enumerate(rows):
                arr[i, :len(r)] = r
            out[head.name] = arr
    return out


def pad_rows(rows: list[dict], length: int) -> dict[str, np.ndarray]:
    """Per-example logits of one batch -> arrays, token heads padded to the student batch's ``length``."""
    out = {}
    for head in rows[0]:
        if rows[0][head].ndim == 1:
            out[head] = np.stack([r[head] for r in rows])
        else:
            arr = np.zeros((len(rows), length, rows[0][head].shape[-1]), dtype="float32")
            for i, r in enumerate(rows):
                if len(r[head]) > length:
                    raise ValueError(f"teacher token logits ({len(r[head])} tokens) longer than the student's "
                                     f"batch ({length}): token-level KD needs the same tokenization")
                arr[i, :len(r[head])] = r[head]
            out[head] = arr
    return out


def evaluate(model, tokenizer, task, examples, batch_size: int = 256, encoded=None) -> dict:
    """Metrics of ``model`` on ``examples`` (``task.compute_metrics``, percentages)."""
    if encoded is None:
        encoded = encode_examples(task, examples, tokenizer)
    per_example = predict_logits(model, task, encoded, tokenizer.pad_token_id, batch_size)
    return task.compute_metrics(stack_logits(per_example, task.heads()), encoded)
