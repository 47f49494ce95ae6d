"""Run any model directory end to end: tokenise -> run -> decode, on the runtime its manifest names.

    p = Predictor.from_dir("export/onnx-int8", threads=1)
    p.predict(["播放刘德华的忘情水"])  # [{"intent": "music.play", "confidence": 0.99, "slots": [...]}]

On the ``onnxruntime`` runtime nothing here imports paddle: the tokenizer and task code are paddle-free,
so a deployed predictor process stays small (importing paddle alone costs over 300 MiB).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from tinydistill.compress.common import build_task, json_default, max_seq_length, read_manifest, runtime_of
from tinydistill.compress.runtimes import as_heads, open_session
from tinydistill.compress.text_predictor import TextPredictor


class Predictor(TextPredictor):
    """The predictor of every runtime on numpy arrays (the loop itself is ``TextPredictor``'s)."""

    def __init__(self, model_dir: Path, manifest: dict, session, tokenizer, task):
        self.model_dir, self.manifest, self.session = Path(model_dir), manifest, session
        self.tokenizer, self.task = tokenizer, task
        self.heads = manifest["heads"]
        self.max_seq_length = max_seq_length(manifest, task)
        self.runtime = session.name

    @classmethod
    def from_dir(cls, model_dir, runtime: str | None = None, threads: int = 1, task: str | None = None,
                 data_dir: str | None = None, rss_marks: list | None = None, *,
                 backend: str | None = None) -> "Predictor":
        """``runtime``: a ``compress.RUNTIMES`` name (default: the directory's own; ``backend`` is its deprecated
        old name).  ``rss_marks``: a list to append ``(stage, VmRSS KiB)`` to after the tokenizer, task and
        session (``tinydistill bench``'s memory breakdown)."""
        from tinydistill.compress.common import runtime_or_backend, rss_kib
        from tinydistill.tasks.tokenization import load_tokenizer

        runtime = runtime_or_backend(runtime, backend)
        marks = rss_marks if rss_marks is not None else []
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        if not manifest.get("tokenizer"):
            raise ValueError(f"{model_dir / 'manifest.json'}: no tokenizer recorded; cannot predict from text")
        tokenizer = load_tokenizer(model_dir, manifest["tokenizer"])
        marks.append(("tokenizer", rss_kib()))
        task_obj = build_task(manifest, data_dir=data_dir, task_name=task)
        marks.append(("task", rss_kib()))
        session = open_session(model_dir, manifest, runtime_of(manifest, runtime), threads)
        marks.append(("session (model)", rss_kib()))
        return cls(model_dir, manifest, session, tokenizer, task_obj)

    # -- pieces ---------------------------------------------------------------------------------
    def encode(self, examples: Sequence) -> list:
        if self.task is not None:
            return [self.task.encode(ex, self.tokenizer) for ex in examples]
        from tinydistill.tasks.base import Encoded

        out = []
        for ex in examples:
            t = self.tokenizer.encode(ex.text, ex.text_pair, max_length=self.max_seq_length)
            out.append(Encoded(t.ids, t.token_type_ids, t.offsets, {}))
        return out

    def collate(self, encoded: Sequence) -> dict[str, np.ndarray]:
        from tinydistill.tasks.base import Task

        collate = self.task.collate if self.task is not None else Task.collate.__get__(_NoHeads())
        return collate(encoded, pad_id=self.tokenizer.pad_token_id)

    def logits(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model only: a collated batch (``input_ids``, ``token_type_ids``, ``attention_mask``) -> logits."""
        return as_heads(self.session.run(batch), self.heads)

    def decode(self, example, logits: dict[str, np.ndarray], encoded) -> dict:
        if self.task is not None:
            return self.task.decode(example, logits, encoded)
        out = {}
        for head in self.heads:
            z = logits[head["name"]]
            p = np.exp(z - z.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            ids = p.argmax(-1)
            if head["kind"] == "sequence":
                out[head["name"]] = head["labels"][int(ids)]
                out[f"{head['name']}_confidence"] = float(p.max())
            else:
                out[head["name"]] = [head["labels"][int(i)] for i in ids]
        return out

    def row(self, output: np.ndarray, head: dict, i: int, n_tokens: int) -> np.ndarray:
        return output[i][:n_tokens] if head["kind"] == "token" else output[i]


class _NoHeads:
    """Stand-in ``self`` for ``Task.collate`` when a model directory records no task."""

    def heads(self):
        return []


if __name__ == "__main__":  # pragma: no cover - used by the "does not import paddle" check
    p = Predictor.from_dir(sys.argv[1], runtime=sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps(p.predict(sys.argv[3:] or ["你好"]), ensure_ascii=False, default=json_default))
    print("PADDLE_IMPORTED" if "paddle" in sys.modules else "PADDLE_NOT_IMPORTED")
