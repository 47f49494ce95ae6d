"""The end-to-end loop every predictor shares: texts -> chunks -> encode -> collate -> logits -> decode.

``compress.predictor.Predictor`` (numpy arrays, every runtime) and ``compress.ort_capi.CPredictor`` (``array``
buffers with a shape, the process without numpy) differ only in what a batch of logits is; each says how to take
one example's row out of a head's output (``row``) and, for metrics, how to make it a numpy array
(``as_array``).  Nothing here imports numpy at module level or on the ``predict`` path: ``all_logits`` and
``evaluate`` do, and the lean deployment process never calls them.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence


class TextPredictor:
    """Base of the predictors; a subclass sets ``heads``, ``task`` and ``model_dir`` and implements ``encode``,
    ``collate``, ``logits``, ``decode`` and ``row``."""

    heads: list[dict]
    task: Any

    def examples(self, texts: Iterable) -> list:
        """Texts, ``(text, pair)`` tuples or ``Example``s -> ``Example``s."""
        from tinydistill.tasks.base import Example

        out = []
        for t in texts:
            if isinstance(t, Example):
                out.append(t)
            elif isinstance(t, (tuple, list)):
                out.append(Example(text=t[0], text_pair=t[1] if len(t) > 1 else None))
            else:
                out.append(Example(text=str(t)))
        return out

    def row(self, output, head: dict, i: int, n_tokens: int):
        """Example ``i``'s logits in a head's batch ``output``: ``[C]``, or ``[n_tokens, C]`` for a token head."""
        raise NotImplementedError

    def as_array(self, output):
        """A head's batch ``output`` as a numpy array (``[B, C]`` or ``[B, L, C]``)."""
        return output

    def predict(self, texts: Iterable, batch_size: int = 32) -> list[dict]:
        """Texts (or ``(text, pair)`` tuples, or ``Example``s) -> decoded dicts, in order."""
        examples = self.examples(texts)
        results = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            encoded = self.encode(chunk)
            batch = self.logits(self.collate(encoded))
            for i, (ex, enc) in enumerate(zip(chunk, encoded)):
                one = {h["name"]: self.row(batch[h["name"]], h, i, len(enc.input_ids)) for h in self.heads}
                results.append(self.decode(ex, one, enc))
        return results

    def all_logits(self, examples: Sequence, batch_size: int = 64) -> tuple[dict, list]:
        """Logits of every example as numpy arrays (token heads padded to the longest example) and the
        encodings."""
        import numpy as np

        encoded = self.encode(self.examples(examples))
        chunks = [self.logits(self.collate(encoded[start:start + batch_size]))
                  for start in range(0, len(encoded), batch_size)]
        merged = {}
        for head in self.heads:
            parts = [self.as_array(c[head["name"]]) for c in chunks]
            if head["kind"] == "token":
                length = max(p.shape[1] for p in parts)
                parts = [np.pad(p, ((0, 0), (0, length - p.shape[1]), (0, 0))) for p in parts]
            merged[head["name"]] = np.concatenate(parts, 0)
        return merged, encoded

    def evaluate(self, examples: Sequence, batch_size: int = 64) -> dict[str, float]:
        """The task's metrics on ``examples`` (through its numpy metric code)."""
        if self.task is None:
            raise ValueError(f"{self.model_dir}: no task recorded in the manifest; pass task=NAME")
        logits, encoded = self.all_logits(examples, batch_size)
        return self.task.compute_metrics(logits, encoded)
