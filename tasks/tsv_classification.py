"""Single-text or text-pair classification from delimited text files, configured from options only.

``tsv_classification`` needs no code for a new data set::

    task: {name: tsv_classification, train: data/train.tsv, dev: data/dev.tsv, header: true,
           text_column: text_a, text_pair_column: null, label_column: label, labels: [neg, pos]}

Columns are header names (``header: true``) or 0-based indices.  ``labels`` fixes the label list
(its order defines the head's ids); without it the sorted labels of the training file are used.
Relative paths are read relative to ``data_dir`` when that is set.  ``ChnSentiCorp`` reuses this reader.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


from tinydistill.distill.records import record
from tinydistill.tasks import TASKS
from tinydistill.tasks.base import DataError, Encoded, Example, HeadSpec, Task, TaskOptions, argmax, softmax


@record(frozen=True)
class Layout:
    """How to read one delimited file."""

    text: int | str
    label: int | str | None
    text_pair: int | str | None = None
    header: bool = True
    delimiter: str = "\t"


class ClassificationTask(Task):
    """Shared reader, encoding, metrics and decoding of text (pair) classification tasks."""

    head_name = "label"
    main_metric = "accuracy"

    def __init__(self, **options):
        super().__init__(**options)
        self._labels: tuple[str, ...] | None = None

    @staticmethod
    def describe(name: str = "") -> str:
        return "head label (sequence); accuracy, macro_f1"

    # subclasses say where each split lives and how its rows look
    def split_path(self, split: str) -> Path:
        raise NotImplementedError

    def layout(self, split: str | None) -> Layout:
        raise NotImplementedError

    def fixed_labels(self) -> tuple[str, ...] | None:
        return None

    # -- labels and heads ---------------------------------------------------------------------
    def use_heads(self, heads) -> None:
        for h in heads:
            if h["name"] == self.head_name:
                self._labels = tuple(h["labels"])

    @property
    def labels(self) -> tuple[str, ...]:
        if self._labels is None:
            fixed = self.fixed_labels()
            if fixed is None:
                found = {ex.labels[self.head_name] for ex in self._read(self.split_path("train"),
                                                                         self.layout("train"), None)}
                fixed = tuple(sorted(found))
            if len(fixed) < 2 or len(set(fixed)) != len(fixed):
                raise DataError(self.split_path("train"), None,
                                f"need at least 2 distinct labels, got {list(fixed)}")
            self._labels = tuple(fixed)
        return self._labels

    def heads(self) -> list[HeadSpec]:
        return [HeadSpec(self.head_name, "sequence", self.labels)]

    # -- reading ------------------------------------------------------------------------------
    def load(self, split: str) -> list[Example]:
        if split not in ("train", "dev", "test"):
            raise ValueError(f"unknown split {split!r} (train, dev, test)")
        return self._read(self.split_path(split), self.layout(split), self.labels,
                          require_labels=split != "test")

    def load_file(self, path: str, require_labels: bool = True) -> list[Example]:
        return self._read(Path(path), self.layout(None), self.labels, require_labels=require_labels)

    def _read(self, path: Path, layout: Layout, labels: Sequence[str] | None,
              require_labels: bool = True) -> list[Example]:
        rows = self.read_lines(path)
        columns: list[str] | None = None
        if layout.header:
            for number, line in rows:
                columns = line.split(layout.delimiter)
                break
            else:
                raise DataError(path, 1, "empty file (expected a header row)")

        def index(col, what, required):
            if col is None:
                return None
            if isinstance(col, int):
                return col
            if columns is None:
                raise DataError(path, None, f"{what} {col!r} is a name but the file has no header (header: false)")
            if col not in columns:
                if not required:
                    return None
                raise DataError(path, 1, f"missing column {col!r} for the {what} (header has: {', '.join(columns)})")
            return columns.index(col)

        text_i = index(layout.text, "text", True)
        pair_i = index(layout.text_pair, "text pair", True)
        label_i = index(layout.label, "label", require_labels)
        width = len(columns) if columns is not None else None
        need = 1 + max(i for i in (text_i, pair_i, label_i) if i is not None)
        known = set(labels) if labels is not None else None
        out = []
        for number, line in rows:
            if not line.strip():
                continue
            fields = line.split(layout.delimiter)
            if (width is not None and len(fields) != width) or len(fields) < need:
                expect = f"{width} columns ({', '.join(columns)})" if width is not None else f"at least {need} columns"
                self.bad_row(DataError(path, number, f"missing column: expected {expect} separated by "
                                                     f"{layout.delimiter!r}, got {len(fields)}"))
                continue
            text = fields[text_i]
            pair = fields[pair_i] if pair_i is not None else None
            if not text.strip() or (pair is not None and not pair.strip()):
                self.bad_row(DataError(path, number, "empty text"))
                continue
            ex_labels = {}
            if label_i is not None:
                label = fields[label_i].strip()
                if known is not None and label not in known:
                    self.bad_row(DataError(path, number, f"unknown label {label!r} (expected one of: "
                                                         f"{', '.join(sorted(known))})"))
                    continue
                ex_labels[self.head_name] = label
            out.append(Example(text, pair, ex_labels, {"file": str(path), "line": number}))
        return out

    # -- encoding, metrics, decoding ----------------------------------------------------------
    def encode(self, example: Example, tokenizer) -> Encoded:
        tok = self.tokenize(example, tokenizer)
        labels = {}
        if self.head_name in example.labels:
            labels[self.head_name] = self.labels.index(example.labels[self.head_name])
        return Encoded(tok.ids, tok.token_type_ids, tok.offsets, labels)

    def compute_metrics(self, logits: dict[str, np.ndarray], encoded: Sequence[Encoded]) -> dict[str, float]:
        import numpy as np

        pred = np.asarray(logits[self.head_name]).argmax(-1)
        gold = np.array([e.labels[self.head_name] for e in encoded])
        f1s = []
        for c in range(len(self.labels)):
            tp = int(((pred == c) & (gold == c)).sum())
            denom = int((pred == c).sum() + (gold == c).sum())
            f1s.append(2 * tp / denom if denom else 0.0)
        return {"accuracy": 100.0 * float((pred == gold).mean()), "macro_f1": 100.0 * float(np.mean(f1s))}

    def decode(self, example: Example, logits: dict[str, np.ndarray], encoded: Encoded) -> dict:
        probs = softmax(logits[self.head_name])
        best = argmax(probs)
        return {"label": self.labels[best], "confidence": float(probs[best]),
                "probs": {label: float(p) for label, p in zip(self.labels, probs)}}

    def data_summary(self) -> list[str]:
        lines = []
        for split in ("train", "dev", "test"):
            try:
                path = self.split_path(split)
            except FileNotFoundError:
                continue
            if not path.is_file():
                continue
            examples = self.load(split)
            counts = {label: 0 for label in self.labels}
            for ex in examples:
                if self.head_name in ex.labels:
                    counts[ex.labels[self.head_name]] += 1
            dist = ", ".join(f"{k}: {v:,}" for k, v in counts.items()) if any(counts.values()) else "unlabelled"
            lines.append(f"  {split}: {len(examples):,} examples ({dist})")
        if self.skipped:
            lines.append(f"  skipped bad rows: {len(self.skipped)} (first: {self.skipped[0]})")
        return lines


@record
class TsvClassificationOptions(TaskOptions):
    train: str | None = None
    dev: str | None = None
    test: str | None = None  # a labelled hold-out file, as for every task (relative: to data_dir)
    text_column: int | str = "text_a"
    text_pair_column: int | str | None = None
    label_column: int | str = "label"
    header: bool = True
    delimiter: str = "\t"
    #: label list (its order defines the ids); null: the sorted labels found in the training file
    labels: list[str] | None = None

    def validate(self) -> None:
        super().validate()
        if not self.header and any(isinstance(c, str) for c in (self.text_column, self.label_column,
                                                                  self.text_pair_column) if c is not None):
            raise ValueError("with header: false, text_column/text_pair_column/label_column must be indices")
        if self.labels is None and self.train is None:
            raise ValueError("give either labels or a train file to derive them from")


@TASKS.register("tsv_classification", summary="any single-text or text-pair classification TSV, from options only")
class TsvClassificationTask(ClassificationTask):
    """Generic delimited-file classification (paths, columns and labels from the config)."""

    name = "tsv_classification"
    Options = TsvClassificationOptions

    def split_path(self, split: str) -> Path:
        value = getattr(self.options, split)
        if value is None:
            raise FileNotFoundError(f"task.{split}: no file configured for the {split} split")
        path = Path(value).expanduser()
        if not path.is_absolute() and self.options.data_dir:
            path = Path(self.options.data_dir) / path
        return path

    def layout(self, split: str | None) -> Layout:
        o = self.options
        return Layout(o.text_column, o.label_column, o.text_pair_column, o.header, o.delimiter)

    def fixed_labels(self) -> tuple[str, ...] | None:
        return tuple(self.options.labels) if self.options.labels is not None else None
