"""Exact-duplicate texts within and between splits (``tinydistill data check``, ``task.dedup_eval``).

A text is an example's ``text`` (plus ``text_pair``) exactly as read: verbatim duplicates only, no
normalisation, so every count can be checked with ``grep -xF``.  On ChnSentiCorp 338 of the 1,200 dev
reviews occur verbatim in train.tsv; a model that memorises training texts is scored on those for free,
so ``dedup_eval: true`` also reports every metric on the evaluation rows whose text is not in train.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from tinydistill.tasks.base import Example


def text_key(example: Example) -> str:
    return example.text if example.text_pair is None else f"{example.text}\t{example.text_pair}"


def _label_key(example: Example) -> str:
    return repr(sorted(example.labels.items(), key=lambda kv: kv[0]))


def within(examples: Sequence[Example]) -> dict:
    """Duplicates inside one split: rows, distinct texts, rows repeating an earlier text, texts that occur
    more than once, and of those the texts whose copies carry different labels."""
    counts = Counter(text_key(ex) for ex in examples)
    labels: dict[str, set] = {}
    for ex in examples:
        if counts[text_key(ex)] > 1:
            labels.setdefault(text_key(ex), set()).add(_label_key(ex))
    return {"rows": len(examples), "distinct": len(counts), "duplicate_rows": len(examples) - len(counts),
            "repeated_texts": sum(1 for c in counts.values() if c > 1),
            "conflicting_labels": sum(1 for v in labels.values() if len(v) > 1)}


def seen_texts(examples: Iterable[Example]) -> frozenset[str]:
    return frozenset(text_key(ex) for ex in examples)


def unseen(examples: Sequence[Example], seen: frozenset[str]) -> list[Example]:
    """The examples whose text is not in ``seen`` (e.g. ``seen_texts(train)``), in order."""
    return [ex for ex in examples if text_key(ex) not in seen]


def between(train: Sequence[Example], other: Sequence[Example]) -> dict:
    """Rows (and distinct texts) of ``other`` whose text occurs verbatim in ``train``."""
    seen = seen_texts(train)
    rows = [text_key(ex) for ex in other if text_key(ex) in seen]
    return {"rows": len(rows), "of": len(other), "distinct": len(set(rows))}


def overlap_lines(splits: dict[str, Sequence[Example]]) -> list[str]:
    """``tinydistill data check`` lines: duplicates within every split, then every later split against the
    first one (train)."""
    names = list(splits)
    lines = ["  exact-duplicate texts:"]
    for name in names:
        w = within(splits[name])
        lines.append(f"    within {name}: {w['duplicate_rows']:,} of {w['rows']:,} rows repeat an earlier text "
                     f"({w['repeated_texts']:,} texts occur more than once, {w['conflicting_labels']:,} of them "
                     "with different labels)")
    for name in names[1:]:
        b = between(splits[names[0]], splits[name])
        pct = 100.0 * b["rows"] / b["of"] if b["of"] else 0.0
        lines.append(f"    {name} in {names[0]}: {b['rows']:,} of {b['of']:,} {name} texts ({pct:.1f} %) occur "
                     f"verbatim in {names[0]} ({b['distinct']:,} distinct)")
    return lines
