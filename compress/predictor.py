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
from typing import Iterable, Sequence

import numpy as np

from compress.common import build_task, json_default, max_seq_length, read_manifest, runtime_of
from compress.runtimes import as_heads, open_session


class Predictor:
    def __init__(self, model_dir: Path, manifest: dict, session, tokenizer, task):
        self.model_dir, self.manifest, self.session = Path(model_dir), manifest, session
        self.tokenizer, self.task = tokenizer, task
        self.heads = manifest["heads"]
        self.max_seq_length = max_seq_length(manifest, task)
        self.runtime = session.name

    @classmethod
    def from_dir(cls, model_dir, backend: str | None = None, threads: int = 1, task: str | None = None,
                 data_dir: str | None = None, rss_marks: list | None = None) -> "Predictor":
        """``rss_marks``: a list to append ``(stage, VmRSS KiB)`` to after the tokenizer, task and session
        (``tinydistill bench``'s memory breakdown)."""
        from compress.common import rss_kib
        from tasks.tokenization import load_tokenizer

        marks = rss_marks if rss_marks is not None else []
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        if not manifest.get("tokenizer"):
            raise ValueError(f"{model_dir / 'manifest.json'}: no tokenizer recorded; cannot predict from text")
        tokenizer = load_tokenizer(model_dir, manifest["tokenizer"])
        marks.append(("tokenizer", rss_kib()))
        task_obj = build_task(manifest, data_dir=data_dir, task_name=task)
        marks.append(("task", rss_kib()))
        session = open_session(model_dir, manifest, runtime_of(manifest, backend), threads)
        marks.append(("session (model)", rss_kib()))
        return cls(model_dir, manifest, session, tokenizer, task_obj)

    # -- pieces ---------------------------------------------------------------------------------
    def examples(self, texts: Iterable) -> list:
        from tasks.base import Example

        out = []
        for t in texts:
            if isinstance(t, Example):
                out.append(t)
            elif isinstance(t, (tuple, list)):
                out.append(Example(text=t[0], text_pair=t[1] if len(t) > 1 else None))
            else:
                out.append(Example(text=str(t)))
        return out

    def encode(self, examples: Sequence) -> list:
        if self.task is not None:
            return [self.task.encode(ex, self.tokenizer) for ex in examples]
        from tasks.base import Encoded

        out = []
        for ex in examples:
            t = self.tokenizer.encode(ex.text, ex.text_pair, max_length=self.max_seq_length)
            out.append(Encoded(t.ids, t.token_type_ids, t.offsets, {}))
        return out

    def collate(self, encoded: Sequence) -> dict[str, np.ndarray]:
        from tasks.base import Task

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

    # -- end to end -----------------------------------------------------------------------------
    def predict(self, texts: Iterable, batch_size: int = 32) -> list[dict]:
        """Texts (or ``(text, pair)`` tuples, or ``Example``s) -> decoded dicts, in order."""
        examples = self.examples(texts)
        results = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            encoded = self.encode(chunk)
            logits = self.logits(self.collate(encoded))
            for i, (ex, enc) in enumerate(zip(chunk, encoded)):
                one = {}
                for head in self.heads:
                    z = logits[head["name"]][i]
                    one[head["name"]] = z[: len(enc.input_ids)] if head["kind"] == "token" else z
                results.append(self.decode(ex, one, enc))
        return results

    def all_logits(self, examples: Sequence, batch_size: int = 64) -> tuple[dict[str, np.ndarray], list]:
        """Logits of every example (token heads padded to the longest example) and the encodings."""
        encoded = self.encode(examples)
        chunks = []
        for start in range(0, len(encoded), batch_size):
            chunks.append(self.logits(self.collate(encoded[start:start + batch_size])))
        merged = {}
        for head in self.heads:
            parts = [c[head["name"]] for c in chunks]
            if head["kind"] == "token":
                length = max(p.shape[1] for p in parts)
                parts = [np.pad(p, ((0, 0), (0, length - p.shape[1]), (0, 0))) for p in parts]
            merged[head["name"]] = np.concatenate(parts, 0)
        return merged, encoded

    def evaluate(self, examples: Sequence, batch_size: int = 64) -> dict[str, float]:
        if self.task is None:
            raise ValueError(f"{self.model_dir}: no task recorded in the manifest; pass task=NAME")
        logits, encoded = self.all_logits(examples, batch_size)
        return self.task.compute_metrics(logits, encoded)


class _NoHeads:
    """Stand-in ``self`` for ``Task.collate`` when a model directory records no task."""

    def heads(self):
        return []


# -- command line -------------------------------------------------------------------------------------
def cli_predict(args) -> int:
    from compress.common import cli_predict as _cli_predict

    return _cli_predict(args)


def cli_evaluate(args) -> int:
    from compress.common import open_predictor

    predictor = open_predictor(args.model_dir, backend=args.backend, threads=args.threads, task=args.task,
                               data_dir=args.data_dir)
    if predictor.task is None:
        raise ValueError(f"{args.model_dir}: the manifest records no task; pass --task NAME")
    examples = predictor.task.load_file(args.file) if args.file else predictor.task.load("dev")
    if not examples:
        from tasks.base import DataError

        raise DataError(args.file or f"{predictor.task.name} dev split", None,
                        "no examples to evaluate (empty file?)")
    metrics = predictor.evaluate(examples, batch_size=args.batch_size)
    print(json.dumps({"model_dir": str(args.model_dir), "runtime": predictor.runtime, "task": predictor.task.name,
                      "examples": len(examples), "metrics": metrics}, ensure_ascii=False, indent=2,
                     default=json_default))
    return 0



if __name__ == "__main__":  # pragma: no cover - used by the "does not import paddle" check
    p = Predictor.from_dir(sys.argv[1], backend=sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps(p.predict(sys.argv[3:] or ["你好"]), ensure_ascii=False, default=json_default))
    print("PADDLE_IMPORTED" if "paddle" in sys.modules else "PADDLE_NOT_IMPORTED")
