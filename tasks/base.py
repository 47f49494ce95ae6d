"""The task-adapter contract shared by every task (and read by models, the KD engine and compression).

A task adapter knows where its files come from, how to read them (clear ``DataError`` naming file and
line on a bad row), how to encode an example for a tokenizer, which output heads a model needs, how
to score predictions and how to decode raw outputs into what a user reads.  It knows nothing about
models: predictions arrive as numpy arrays of logits per head.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal, Sequence


from tinydistill.distill.logs import get_logger
from tinydistill.distill.records import field, record
from tinydistill.distill.schema import from_dict, to_dict

log = get_logger("tinydistill.tasks")

IGNORE_INDEX = -100  # label id of positions a token-level loss/metric must skip (padding, specials)


class DataError(ValueError):
    """Bad input data.  The message starts with ``path:line:`` and says what was expected."""

    def __init__(self, path: Any, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


@record(frozen=True)
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


@record
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


@record(frozen=True)
class Span:
    """A labelled character span ``text[start:end]`` (end exclusive)."""

    label: str
    start: int
    end: int


@record
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


@record
class TaskOptions:
    """Options every task accepts (the ``task:`` config section, less ``name``)."""

    max_seq_length: int = 128
    #: directory holding the data set's files (default: $TINYDISTILL_DATA, else the download cache)
    data_dir: str | None = None
    #: ``raise``: a bad row stops reading with ``DataError``; ``skip``: it is counted in
    #: ``task.skipped`` and reported as one warning per file
    on_error: Literal["raise", "skip"] = "raise"
    #: a labelled file in this task's format (e.g. the official test set) on which a run evaluates its final
    #: models next to dev (``--test-file``); a relative path: from the working directory, else ``data_dir``,
    #: else the data set's folder
    test: str | None = None
    #: also report every metric on the evaluation rows whose text does not occur in the training split
    dedup_eval: bool = False
    #: train on a fixed random subset of this many training examples (None: all); dev is unchanged.  For
    #: results sized to a compute budget and for learning curves over the amount of labelled data
    max_train_examples: int | None = None
    #: the seed of that subset (the same seed and size always give the same examples, in file order)
    train_subset_seed: int = 0

    def validate(self) -> None:
        if self.max_seq_length < 3:
            raise ValueError(f"max_seq_length must be >= 3, got {self.max_seq_length}")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ValueError(f"max_train_examples must be >= 1 (or null for all), got {self.max_train_examples}")


# Decoding one example is pure Python (lists or numpy rows alike), so a deployed predictor process need not
# import numpy (see compress/ort_capi.py); batch work (collate, metrics) imports numpy where it runs.
def softmax(values: Sequence[float]) -> list[float]:
    """Softmax of one row of logits."""
    top = max(values)
    exps = [math.exp(float(v) - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


class Task:
    """Base class of task adapters; subclasses register with ``@TASKS.register(name)``.

    Constructor keyword arguments are the task options of the ``task:`` config section (at least
    ``max_seq_length``, ``data_dir``, ``on_error``), checked strictly against ``Options``.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = TaskOptions
    #: dataset name in ``tasks.datasets`` (``tinydistill data``) whose files this task reads
    dataset: ClassVar[str | None] = None
    #: name of the metric used to pick the best checkpoint and to compare models
    main_metric: ClassVar[str] = "accuracy"

    def __init__(self, **options: Any):
        self.options = from_dict(self.Options, options, "task")
        #: rows skipped in ``on_error: skip`` mode (the ``DataError`` of each)
        self.skipped: list[DataError] = []

    def options_dict(self) -> dict:
        return to_dict(self.options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"

    # -- reading helpers --------------------------------------------------------------------
    def bad_row(self, error: DataError) -> None:
        """Raise ``error`` (``on_error: raise``) or record it in ``self.skipped`` (``skip``)."""
        if self.options.on_error == "raise":
            raise error
        self.skipped.append(error)

    def read_lines(self, path: str | Path) -> Iterator[tuple[int, str]]:
        """``(line_number, text)`` of a UTF-8 file (BOM and line ends stripped); an undecodable line is
        a bad row.  Warns once with the count if rows of this file were skipped."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        skipped_before = len(self.skipped)
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self.bad_row(DataError(path, number, f"undecodable bytes (expected UTF-8 text): {exc.reason} "
                                                         f"at byte {exc.start}"))
                    continue
                if number == 1:
                    text = text.lstrip("\ufeff")
                yield number, text.rstrip("\r\n")
        n = len(self.skipped) - skipped_before
        if n:
            log.warning("%s: skipped %d bad row(s) (on_error: skip); first: %s", path, n, self.skipped[skipped_before])

    # -- data ---------------------------------------------------------------------------------
    def heads(self) -> list[HeadSpec]:
        raise NotImplementedError

    def use_heads(self, heads: Sequence[dict]) -> None:
        """Take the label lists a model directory records (``manifest["heads"]``): a model's output index
        means the label it was trained with, whatever a label file says now, and a deployed model decodes
        without the training data.  Tasks whose labels are fixed need nothing; others override this."""

    def load(self, split: str) -> list[Example]:
        """Examples of ``split`` ("train", "dev", "test"), read from the configured data directory."""
        raise NotImplementedError

    def load_file(self, path: str) -> list[Example]:
        """Examples from any file in this task's format (e.g. an official test set)."""
        raise NotImplementedError

    def training_examples(self) -> list[Example]:
        """What a run trains on: ``load("train")``, cut to ``max_train_examples`` if that is set (a random
        subset drawn with ``train_subset_seed``, kept in file order)."""
        examples = self.load("train")
        n = self.options.max_train_examples
        if n is None or n >= len(examples):
            return examples
        import random

        keep = sorted(random.Random(self.options.train_subset_seed).sample(range(len(examples)), n))
        return [examples[i] for i in keep]

    def data_folder(self) -> Path | None:
        """The folder this task reads its files from (None: the task names its files itself)."""
        if self.dataset is None:
            return Path(self.options.data_dir) if self.options.data_dir else None
        from tinydistill.tasks.datasets import resolve_data_dir

        return resolve_data_dir(self.dataset, self.options.data_dir)

    def test_path(self) -> Path | None:
        """The hold-out file of ``options.test`` (None when none is configured)."""
        if not self.options.test:
            return None
        path = Path(self.options.test).expanduser()
        if not path.is_absolute() and not path.exists():
            for folder in (self.options.data_dir, self.data_folder()):
                if folder is not None and (Path(folder) / path).exists():
                    path = Path(folder) / path
                    break
        if not path.is_file():
            raise FileNotFoundError(f"{path}: task.test: no such file (a labelled file in the {self.name} format)")
        return path

    def load_test(self) -> list[Example]:
        """The labelled examples of ``options.test`` ([] when none is configured)."""
        path = self.test_path()
        return self.load_file(str(path)) if path is not None else []

    def split_info(self) -> dict:
        """What a run should record about how train/dev were formed (seed, sizes, ids); empty when the
        splits are fixed files."""
        return {}

    def data_summary(self) -> list[str]:
        """Lines ``tinydistill data check`` prints (counts, labels, split)."""
        return [f"  {split}: {len(self.load(split)):,} examples" for split in ("train", "dev")]

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, example: Example, tokenizer) -> Encoded:
        raise NotImplementedError

    def tokenize(self, example: Example, tokenizer):
        """``tokenizer.encode`` of an example at ``max_seq_length``.  A word-level tokenizer takes an augmented
        example's words from the segmentation its masks were drawn on (``meta["word_spans"]``), so a masked
        word is exactly one token on every side."""
        words = {}
        if getattr(tokenizer, "takes_words", False) and example.meta.get("word_spans") is not None:
            words = {"words": example.meta["word_spans"], "words_pair": example.meta.get("word_spans_pair")}
        return tokenizer.encode(example.text, example.text_pair, max_length=self.options.max_seq_length, **words)

    def collate(self, batch: Sequence[Encoded], pad_id: int = 0) -> dict[str, np.ndarray]:
        """Pad a batch: ``input_ids``, ``token_type_ids``, ``attention_mask`` (int64 ``[B, L]``) and
        ``labels/<head>`` (``[B]`` or ``[B, L]`` int64, token labels padded with ``IGNORE_INDEX``)."""
        import numpy as np

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
