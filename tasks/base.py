"""The task-adapter contract shared by every task (and read by models, the KD engine and compression).

A task adapter knows where its files come from, how to read them (clear ``DataError`` naming file and
line on a bad row), how to encode an example for a tokenizer, which output heads a model needs, how
to score predictions and how to decode raw outputs into what a user reads.  It knows nothing about
models: predictions arrive as numpy arrays of logits per head.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import numpy as np

IGNORE_INDEX = -100  # label id of positions a token-level loss/metric must skip (padding, specials)


class DataError(ValueError):
    """Bad input data.  The message starts with ``path:line:`` and says what was expected."""

    def __init__(self, path: Any, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class HeadSpec:
    """One output head a model must provide for a task.

    ``kind`` is ``"sequence"`` (one label per example, logits ``[batch, num_labels]``, computed from the
    pooled output) or ``"token"`` (one label per token, logits ``[batch, seq_len, num_labels]``).
    """

    name: str
    kind: Literal["sequence", "token"]
    labels: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadSpec":
        return cls(d["name"], d["kind"], tuple(d["labels"]))


@dataclass
class Example:
    """One raw example.

    ``labels`` holds gold labels by head name in task terms (strings, or for SLU slots a list of
    ``Span``); it is empty for unlabelled text (e.g. augmented examples labelled by a teacher).
    ``meta`` carries provenance: ``{"file": ..., "line": ..., "session": ...}``.
    """

    text: str
    text_pair: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Span:
    """A labelled character span ``text[start:end]`` (end exclusive)."""

    label: str
    start: int
    end: int


@dataclass
class Encoded:
    """An example encoded for one tokenizer.

    ``labels`` maps head name to an int (sequence head) or a list of ints aligned with ``input_ids``
    (token head, ``IGNORE_INDEX`` on special/padding tokens).  ``offsets`` are the character spans of
    every token in ``text`` (``(0, 0)`` for special tokens), used by ``Task.decode``.
    """

    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int]]
    labels: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class of task adapters; subclasses register with ``@TASKS.register(name)``.

    Constructor keyword arguments are the task options of the ``task:`` config section (at least
    ``max_seq_length``, ``data_dir``, ``on_error``).
    """

    name: ClassVar[str] = ""
    #: dataset name in ``tasks.datasets`` (``tinydistill data``) whose files this task reads
    dataset: ClassVar[str | None] = None
    #: name of the metric used to pick the best checkpoint and to compare models
    main_metric: ClassVar[str] = "accuracy"

    # -- data ---------------------------------------------------------------------------------
    def heads(self) -> list[HeadSpec]:
        raise NotImplementedError

    def load(self, split: str) -> list[Example]:
        """Examples of ``split`` ("train", "dev", "test"), read from the configured data directory."""
        raise NotImplementedError

    def load_file(self, path: str) -> list[Example]:
        """Examples from any file in this task's format (e.g. an official test set)."""
        raise NotImplementedError

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, example: Example, tokenizer) -> Encoded:
        raise NotImplementedError

    def collate(self, batch: Sequence[Encoded], pad_id: int = 0) -> dict[str, np.ndarray]:
        """Pad a batch: ``input_ids``, ``token_type_ids``, ``attention_mask`` (int64 ``[B, L]``) and
        ``labels/<head>`` (``[B]`` or ``[B, L]`` int64, token labels padded with ``IGNORE_INDEX``)."""
        length = max(len(e.input_ids) for e in batch)
        out = {
            "input_ids": np.full((len(batch), length), pad_id, dtype="int64"),
            "token_type_ids": np.zeros((len(batch), length), dtype="int64"),
            "attention_mask": np.zeros((len(batch), length), dtype="int64"),
        }
        for i, e in enumerate(batch):
            n = len(e.input_ids)
            out["input_ids"][i, :n] = e.input_ids
            out["token_type_ids"][i, :n] = e.token_type_ids
            out["attention_mask"][i, :n] = 1
        for head in self.heads():
            if not all(head.name in e.labels for e in batch):
                continue
            if head.kind == "sequence":
                out[f"labels/{head.name}"] = np.array([e.labels[head.name] for e in batch], dtype="int64")
            else:
                arr = np.full((len(batch), length), IGNORE_INDEX, dtype="int64")
                for i, e in enumerate(batch):
                    arr[i, : len(e.labels[head.name])] = e.labels[head.name]
                out[f"labels/{head.name}"] = arr
        return out

    # -- evaluation and decoding --------------------------------------------------------------
    def compute_metrics(self, logits: dict[str, np.ndarray], encoded: Sequence[Encoded]) -> dict[str, float]:
        """Metrics (percentages, 0-100) from logits per head, row-aligned with ``encoded``."""
        raise NotImplementedError

    def decode(self, example: Example, logits: dict[str, np.ndarray], encoded: Encoded) -> dict:
        """One example's raw outputs (logits per head, without batch dim) -> a readable dict."""
        raise NotImplementedError

    def texts(self, split: str = "train") -> list[str]:
        """Raw texts of a split (vocabulary building, vocab pruning, augmentation)."""
        out = []
        for ex in self.load(split):
            out.append(ex.text)
            if ex.text_pair:
                out.append(ex.text_pair)
        return out
