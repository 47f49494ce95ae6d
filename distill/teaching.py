"""What the teachers contribute to a training step: logits computed up front (disk cache or memory), or
online forwards when a loss reads teacher internals (hidden states, attentions, sublayer outputs).

Teacher logits are computed once, before the first step, in large length-sorted batches without
gradients (``distill.batching.predict_logits``) whenever no loss needs internals: through the on-disk
cache (``distill.cache``) with ``teacher_cache: auto``, in memory with ``teacher_cache: off``.  A step then
only gathers its rows.  Only feature losses (``distill.features``) run the teachers inside the loop; what
the teachers' ``distill.hooks.FeatureCapture`` recorded in that forward goes with their outputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tinydistill.distill.batching import collate, encode_examples, model_forward, pad_rows, predict_logits
from tinydistill.distill.cache import TeacherCache, default_cache_root, example_key, teacher_fingerprint
from tinydistill.distill.multiteacher import mix_logits


def same_tokenization(a, b) -> bool:
    return a is b or (type(a) is type(b) and list(a.vocab) == list(b.vocab))


class TeacherTargets:
    """Per step: ``fill(inputs, idx, batch)`` sets ``inputs.teacher_logits`` (mixed over teachers) and, online,
    ``inputs.teachers`` (each teacher's full outputs) and ``inputs.teacher_features`` (per teacher, what its
    capture in ``captures`` recorded)."""

    def __init__(self, task, teachers, examples, encoded, tokenizer, config, losses, captures=None):
        self.task, self.teachers, self.config = task, list(teachers), config
        needs = set().union(*(l.needs for l in losses)) if losses else set()
        self.needs = needs
        self.need_logits = any(l.needs_teacher and not l.needs for l in losses)
        self.online = bool(teachers) and any(l.needs_teacher and l.needs for l in losses)
        self.captures = list(captures) if captures is not None else [None] * len(self.teachers)
        self.per_example, self.stats, self.t_encoded = None, {}, []
        for model, _ in self.teachers:
            model.eval()
        if not self.teachers:
            return
        if self.online:
            self.t_encoded = [encoded if same_tokenization(tokenizer, t_tok) else
                              encode_examples(task, examples, t_tok) for _, t_tok in self.teachers]
        elif self.need_logits:
            self.per_example, self.stats = self._precompute(examples, encoded, tokenizer)

    @property
    def active(self) -> bool:
        return self.online or self.per_example is not None

    def _precompute(self, examples, encoded, tokenizer):
        """Per example, per teacher: logits, from the disk cache (computing and storing only the misses) or,
        with ``teacher_cache: off``, computed here and kept in memory."""
        use_disk = self.config.teacher_cache != "off"
        root = Path(self.config.cache_dir) if self.config.cache_dir else default_cache_root()
        keys = [example_key(ex) for ex in examples]
        per_example: list[list] = [[None] * len(self.teachers) for _ in examples]
        stats = {"hits": 0, "misses": 0}
        for k, (model, t_tok) in enumerate(self.teachers):
            cache = TeacherCache(root, teacher_fingerprint(model, t_tok, self.task)) if use_disk else None
            missing = [i for i, key in enumerate(keys) if cache is None or key not in cache]
            todo = list({keys[i]: i for i in missing}.values())  # duplicate texts are computed once
            computed = {}
            if todo:
                t_enc = [encoded[i] for i in todo] if same_tokenization(tokenizer, t_tok) else \
                    encode_examples(self.task, [examples[i] for i in todo], t_tok)
                outs = predict_logits(model, self.task, t_enc, t_tok.pad_token_id, self.config.eval_batch_size)
                if cache is not None:
                    cache.put([keys[i] for i in todo], outs)
                else:
                    computed = {keys[i]: o for i, o in zip(todo, outs)}
            stats["hits"] += len(keys) - len(missing)
            stats["misses"] += len(missing)
            for i, key in enumerate(keys):
                per_example[i][k] = cache.get(key) if cache is not None else computed[key]
        return per_example, stats

    def fill(self, inputs, idx, batch) -> None:
        import paddle
        per_teacher = []
        if self.per_example is not None:
            rows = [self.per_example[i] for i in idx]
            length = batch["input_ids"].shape[1]
            per_teacher = [pad_rows([r[k] for r in rows], length) for k in range(len(self.teachers))]
        else:
            with paddle.no_grad():
                for k, (model, t_tok) in enumerate(self.teachers):
                    t_batch = collate(self.task, [self.t_encoded[k][i] for i in idx], t_tok.pad_token_id)
                    capture = self.captures[k]
                    if capture is not None:
                        capture.clear()
                    t_out = model_forward(model, t_batch, "hidden_states" in self.needs, "attentions" in self.needs)
                    inputs.teachers.append(t_out)
                    inputs.teacher_features.append(capture.take() if capture is not None else {})
                    if self.need_logits:  # a teacher that only lends features need not give logits
                        per_teacher.append({h: v.numpy() for h, v in t_out["logits"].items()})
        if self.need_logits:
            mixed = mix_logits(per_teacher, self.config.mixing, batch["token_mask"])
            inputs.teacher_logits = {h: paddle.to_tensor(np.asarray(v)) for h, v in mixed.items()}
