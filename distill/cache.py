"""Teacher-output cache: teacher logits computed once per (teacher, example text, augmentation) on disk.

Layout: ``<root>/<teacher fingerprint>/<batch hash>.npz``.  The fingerprint hashes everything that
changes a teacher's logits: architecture, model config, every weight, the tokenizer (type and
vocabulary), the task's heads and ``max_seq_length``.  Each file holds the logits of a set of examples
keyed by ``example_key`` (text, text pair and mask spans, so an augmented copy is its own entry); a
later run - another epoch, another student of a sweep, a resumed run - loads every file of the
fingerprint and computes only the examples it has not seen.  Files are written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from tinydistill.distill.fsutil import atomic_write_bytes, cache_dir


def default_cache_root() -> Path:
    return cache_dir("teacher_logits")


def example_key(example) -> str:
    meta = example.meta or {}
    payload = json.dumps([example.text, example.text_pair, meta.get("mask_spans") or [],
                          meta.get("mask_spans_pair") or []], ensure_ascii=False)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


def teacher_fingerprint(model, tokenizer, task) -> str:
    h = hashlib.blake2b(digest_size=16)
    heads = [hd.to_dict() for hd in task.heads()]
    options = getattr(task, "options", None)
    h.update(json.dumps([getattr(model, "arch", type(model).__name__), getattr(model, "model_config", {}),
                         heads, getattr(options, "max_seq_length", None), type(tokenizer).__name__],
                        sort_keys=True, default=str).encode())
    h.update("\n".join(tokenizer.vocab).encode("utf-8"))
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(value.numpy()).tobytes())
    return h.hexdigest()


class TeacherCache:
    """Per-example teacher logits (``{head: [C] | [L, C]}``) of one teacher fingerprint."""

    def __init__(self, root: str | os.PathLike, fingerprint: str):
        self.dir = Path(root) / fingerprint
        self._index: dict[str, dict[str, np.ndarray]] | None = None

    def _load(self) -> dict:
        if self._index is None:
            self._index = {}
            for file in sorted(self.dir.glob("*.npz")) if self.dir.is_dir() else []:
                with np.load(file, allow_pickle=False) as data:
                    keys = [str(k) for k in data["keys"]]
                    heads = sorted({name.split(":", 1)[1] for name in data.files if ":" in name})
                    for head in heads:
                        if f"seq:{head}" in data.files:
                            rows = list(data[f"seq:{head}"])
                        else:
                            rows = np.split(data[f"tok:{head}"], np.cumsum(data[f"len:{head}"])[:-1])
                        for key, row in zip(keys, rows):
                            self._index.setdefault(key, {})[head] = row
        return self._index

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        return self._load().get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._load()

    def put(self, keys: list[str], outputs: list[dict[str, np.ndarray]]) -> None:
        """Store the logits of ``keys`` (one new file, written atomically)."""
        if not keys:
            return
        arrays = {"keys": np.array(keys)}
        for head, first in outputs[0].items():
            if first.ndim == 1:
                arrays[f"seq:{head}"] = np.stack([o[head] for o in outputs]).astype("float32")
            else:
                arrays[f"tok:{head}"] = np.concatenate([o[head] for o in outputs]).astype("float32")
                arrays[f"len:{head}"] = np.array([len(o[head]) for o in outputs], dtype="int64")
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        name = hashlib.blake2b("\n".join(keys).encode(), digest_size=16).hexdigest()
        atomic_write_bytes(self.dir / f"{name}.npz", buf.getvalue())
        index = self._load()
        for key, out in zip(keys, outputs):
            index[key] = out
