"""NLPCC 2018 task 4 spoken-language understanding: intent + slot filling for an in-car assistant.

Corpus format (``corpus.train.txt``, also the official test set's format), one utterance a line,
a blank line between sessions::

    session_id <TAB> utterance <TAB> intent <TAB> slot-annotated utterance

e.g. ``117194488  来一首周华健的花心  music.play  来一首<singer>周华健</singer>的<song>花心</song>``.
A slot value may read ``<song>asr||corrected</song>``: the utterance column holds the ASR form, so the
annotated column with every ``asr||corrected`` replaced by ``asr`` and the tags removed is exactly the
utterance (true for all 21,352 rows; the reader checks it).  Gold slots are ``Span``s of character
offsets into the utterance; the corrected form is kept in ``example.meta["corrections"]``.

Heads: ``intent`` (sequence, 11 intents) and ``slot`` (token, BIO tags incl. ``PAD`` and ``O``: 32).
Slot tags are aligned to the tokenizer's tokens through offsets: the first token overlapping a span gets
``B-<slot>``, the following ones ``I-<slot>``, others ``O``, special tokens ``IGNORE_INDEX``.  Decoding
BIO (seqeval rules: a chunk starts at ``B-`` or at an ``I-`` of a new type) gives character spans again
(a span whose boundary falls inside one token - e.g. ``100`` in the word piece ``100ml`` - comes back
widened to that token's edges).

Decoded output: ``{"intent", "confidence", "slots": [{"slot", "entity", "pos": [first, last]}]}`` with
``pos`` the *inclusive* character indices of the entity in the text (as in PaddleNLP's ERNIE 3.0 Tiny
example: ``周华健`` in ``来一首周华健的花心`` is ``[3, 5]``).

Train/dev: the corpus is split by session (no session in both) with a seeded shuffle
(``split_seed``, ``dev_ratio``; default 4:1); ``split_info()`` records it.  Label lists come from the
label files (``label_files: true``) or from the corpus (sorted); ids are only used inside one task
instance, so no result depends on the order of lines in a label file.

Metrics (percent): ``sentence_accuracy`` (the ERNIE 3.0 Tiny example's "accuracy": intent right and,
unless the intent never has slots in the training split, every slot span right; that set of intents
is computed from the data, not hard-coded ids), ``sentence_accuracy_strict`` (intent and all spans
right, always), ``intent_accuracy``, span-level ``slot_precision``/``slot_recall``/``slot_f1``.
Gold spans for metrics are decoded from the encoded gold tags, so they are those inside the
``max_seq_length`` window (as in the ERNIE example).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from tinydistill.distill.records import record
from tinydistill.tasks import TASKS
from tinydistill.tasks.base import IGNORE_INDEX, DataError, Encoded, Example, HeadSpec, Span, Task, TaskOptions, argmax, softmax
from tinydistill.tasks.datasets import resolve_data_dir

CORPUS = "corpus.train.txt"
INTENT_FILE = "intent_label.txt"
SLOT_FILE = "slot_label.txt"
NON_SLOT_TAGS = ("PAD", "O")
_TAG = re.compile(r"<(/?)([^<>]*)>")


def parse_markup(annotated: str) -> tuple[str, list[Span], list[str | None]]:
    """``来一首<singer>周华健</singer>`` -> (plain text, spans, corrections).

    ``asr||corrected`` values contribute ``asr`` to the text.  Raises ``ValueError`` (message says what
    was expected) on unclosed, mismatched, nested or empty tags and on a stray ``<``/``>``.
    """
    text, spans, corrections = [], [], []
    pos, length, open_tag, start = 0, 0, None, 0
    for m in _TAG.finditer(annotated):
        chunk = annotated[pos:m.start()]
        if "<" in chunk or ">" in chunk:
            raise ValueError(f"stray {'<' if '<' in chunk else '>'} at column {pos + 1}")
        closing, label = m.group(1) == "/", m.group(2).strip()
        if open_tag is None:
            text.append(chunk)
            length += len(chunk)
        else:
            value = chunk
        if not label:
            raise ValueError(f"empty tag {m.group(0)!r} at column {m.start() + 1}")
        if not closing:
            if open_tag is not None:
                raise ValueError(f"tag <{label}> at column {m.start() + 1} opened inside <{open_tag}> "
                                 f"(expected </{open_tag}> first)")
            open_tag, start = label, length
        else:
            if open_tag is None:
                raise ValueError(f"closing tag </{label}> at column {m.start() + 1} without an opening tag")
            if label != open_tag:
                raise ValueError(f"mismatched tags: <{open_tag}> closed by </{label}> at column {m.start() + 1}")
            asr, sep, corrected = value.partition("||")
            if not asr.strip():
                raise ValueError(f"empty value in <{label}> at column {m.start() + 1}")
            text.append(asr)
            length += len(asr)
            spans.append(Span(label, start, length))
            corrections.append(corrected if sep else None)
            open_tag = None
        pos = m.end()
    rest = annotated[pos:]
    if open_tag is not None:
        raise ValueError(f"unclosed tag <{open_tag}> (expected </{open_tag}>)")
    if "<" in rest or ">" in rest:
        raise ValueError(f"stray {'<' if '<' in rest else '>'} at column {pos + 1}")
    text.append(rest)
    return "".join(text), spans, corrections


def bio_tags(spans: Sequence[Span], offsets: Sequence[tuple[int, int]]) -> list[str | None]:
    """BIO tag per token: the first token overlapping a span gets ``B-``, the others ``I-``; tokens
    outside spans ``O``; special tokens (empty offsets) None."""
    tags: list[str | None] = [None if e <= s else "O" for s, e in offsets]
    for span in spans:
        inside = [i for i, (s, e) in enumerate(offsets) if e > s and s < span.end and e > span.start]
        for k, i in enumerate(inside):
            tags[i] = ("B-" if k == 0 else "I-") + span.label
    return tags


def decode_spans(tags: Sequence[str | None], offsets: Sequence[tuple[int, int]]) -> list[Span]:
    """seqeval-style chunks of BIO ``tags`` (None/PAD/O end a chunk) as character spans."""
    spans, label, start, end = [], None, 0, 0
    for tag, (s, e) in zip(tags, offsets):
        if tag is None or e <= s:
            continue
        kind, _, name = tag.partition("-")
        if kind == "I" and name == label:
            end = e
            continue
        if label is not None:
            spans.append(Span(label, start, end))
            label = None
        if kind in ("B", "I") and name:
            label, start, end = name, s, e
    if label is not None:
        spans.append(Span(label, start, end))
    return spans


@record
class SluOptions(TaskOptions):
    dev_ratio: float = 0.2
    split_seed: int = 42
    #: true: label lists from intent_label.txt/slot_label.txt; false: from the corpus (sorted)
    label_files: bool = True

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.dev_ratio < 1.0:
            raise ValueError(f"dev_ratio must be between 0 and 1, got {self.dev_ratio}")


@TASKS.register("nlpcc2018_slu", summary="NLPCC 2018 task 4 in-car SLU: intent (11) + BIO slots (32)")
class NlpccSluTask(Task):
    """Joint intent classification and slot filling on the raw NLPCC 2018 task 4 corpus."""

    name = "nlpcc2018_slu"
    dataset = "nlpcc2018_task4"
    main_metric = "sentence_accuracy"
    Options = SluOptions

    def __init__(self, **options):
        super().__init__(**options)
        self._corpus: list[Example] | None = None
        self._labels: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._split: dict[str, list[Example]] | None = None
        self._slotless: frozenset[str] | None = None
        self._tag_index: dict[str, int] | None = None

    @staticmethod
    def describe(name: str = "") -> str:
        return "heads intent (sequence, 11) + slot (token, 32 BIO); data nlpcc2018_task4; split by session"

    # -- files and labels -------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return resolve_data_dir(self.dataset, self.options.data_dir)

    def _label_file(self, name: str) -> tuple[str, ...]:
        labels, seen = [], {}
        path = self.folder / name
        for number, line in self.read_lines(path):
            label = line.strip()
            if not label:
                continue
            if label in seen:
                raise DataError(path, number, f"duplicate label {label!r} (first on line {seen[label]})")
            seen[label] = number
            labels.append(label)
        return tuple(labels)

    def _load_labels(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if self._labels is None:
            if self.options.label_files:
                intents, slots = self._label_file(INTENT_FILE), self._label_file(SLOT_FILE)
                missing = [t for t in NON_SLOT_TAGS if t not in slots]
                if missing:
                    raise DataError(self.folder / SLOT_FILE, None, f"slot labels must include {missing}")
            else:
                corpus = self._read(self.folder / CORPUS, check_labels=False)
                intents = tuple(sorted({ex.labels["intent"] for ex in corpus}))
                names = sorted({s.label for ex in corpus for s in ex.labels["slot"]})
                slots = NON_SLOT_TAGS + tuple(f"{p}-{n}" for n in names for p in "BI")
            self._labels = (intents, slots)
        return self._labels

    def use_heads(self, heads) -> None:
        by_name = {h["name"]: tuple(h["labels"]) for h in heads}
        if "intent" in by_name and "slot" in by_name:
            self._labels = (by_name["intent"], by_name["slot"])

    @property
    def intents(self) -> tuple[str, ...]:
        return self._load_labels()[0]

    @property
    def slot_tags(self) -> tuple[str, ...]:
        return self._load_labels()[1]

    def heads(self) -> list[HeadSpec]:
        return [HeadSpec("intent", "sequence", self.intents), HeadSpec("slot", "token", self.slot_tags)]

    # -- reading ----------------------------------------------------------------------------
    def _read(self, path: Path, check_labels: bool = True) -> list[Example]:
        intents = set(self.intents) if check_labels else None
        tags = set(self.slot_tags) if check_labels else None
        out = []
        for number, line in self.read_lines(path):
            if not line.strip():
                continue  # session boundary
            fields = line.split("\t")
            if len(fields) != 4:
                self.bad_row(DataError(path, number, "missing column: expected 4 tab-separated columns "
                                                     f"(session id, utterance, intent, annotated utterance), "
                                                     f"got {len(fields)}"))
                continue
            session, utterance, intent, annotated = fields
            try:
                if not utterance.strip():
                    raise ValueError("empty text (the utterance column is empty)")
                if not intent.strip():
                    raise ValueError("empty intent column")
                if intents is not None and intent not in intents:
                    raise ValueError(f"unknown intent {intent!r} (expected one of: {', '.join(sorted(intents))})")
                plain, spans, corrections = parse_markup(annotated)
                if plain != utterance:
                    raise ValueError(f"the annotated utterance without its tags reads {plain!r}, expected the "
                                     f"utterance {utterance!r}")
                for span in spans:
                    if tags is not None and f"B-{span.label}" not in tags:
                        raise ValueError(f"unknown slot {span.label!r} (expected one of: "
                                         f"{', '.join(sorted({t[2:] for t in tags if t[:2] in ('B-', 'I-')}))})")
            except ValueError as exc:
                self.bad_row(DataError(path, number, f"{exc}"))
                continue
            meta = {"file": str(path), "line": number, "session": session}
            if any(c is not None for c in corrections):
                meta["corrections"] = corrections
            out.append(Example(utterance, None, {"intent": intent, "slot": spans}, meta))
        return out

    def corpus(self) -> list[Example]:
        if self._corpus is None:
            self._corpus = self._read(self.folder / CORPUS)
        return self._corpus

    def _splits(self) -> dict[str, list[Example]]:
        if self._split is None:
            corpus = self.corpus()
            sessions = list(dict.fromkeys(ex.meta["session"] for ex in corpus))  # first-appearance order
            order = sorted(sessions)
            import random  # here: a predictor process never splits the corpus

            random.Random(self.options.split_seed).shuffle(order)
            n_dev = int(round(len(order) * self.options.dev_ratio))
            dev = set(order[:n_dev])
            self._split = {"train": [ex for ex in corpus if ex.meta["session"] not in dev],
                           "dev": [ex for ex in corpus if ex.meta["session"] in dev]}
        return self._split

    def split_info(self) -> dict:
        """What a run records about its split: seed, ratio, sizes and the dev session ids."""
        import hashlib  # here: a predictor process imports this module and hashes nothing

        split = self._splits()
        dev_sessions = sorted({ex.meta["session"] for ex in split["dev"]})
        return {"split_seed": self.options.split_seed, "dev_ratio": self.options.dev_ratio,
                "train_examples": len(split["train"]), "dev_examples": len(split["dev"]),
                "train_sessions": len({ex.meta["session"] for ex in split["train"]}),
                "dev_sessions": len(dev_sessions),
                "dev_sessions_sha256": hashlib.sha256("\n".join(dev_sessions).encode()).hexdigest(),
                "dev_session_ids": dev_sessions}

    def load(self, split: str) -> list[Example]:
        if split in ("train", "dev"):
            return list(self._splits()[split])
        if split == "test":
            path = self.folder / "corpus.test.txt"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the official test set is not in the data directory; "
                                        f"evaluate it with --file PATH")
            return self.load_file(str(path))
        raise ValueError(f"unknown split {split!r} (train, dev, test)")

    def load_file(self, path: str) -> list[Example]:
        return self._read(Path(path))

    def slotless_intents(self) -> frozenset[str]:
        """Intents that never carry a slot in the training split (computed from the data)."""
        if self._slotless is None:
            train = self._splits()["train"]
            seen = {ex.labels["intent"] for ex in train}
            with_slots = {ex.labels["intent"] for ex in train if ex.labels["slot"]}
            self._slotless = frozenset(seen - with_slots)
        return self._slotless

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, example: Example, tokenizer) -> Encoded:
        tok = self.tokenize(example, tokenizer)
        labels = {}
        if "intent" in example.labels:
            labels["intent"] = self.intents.index(example.labels["intent"])
        if "slot" in example.labels:
            if self._tag_index is None:
                self._tag_index = {t: i for i, t in enumerate(self.slot_tags)}
            index = self._tag_index
            labels["slot"] = [IGNORE_INDEX if t is None else index[t]
                              for t in bio_tags(example.labels["slot"], tok.offsets)]
        return Encoded(tok.ids, tok.token_type_ids, tok.offsets, labels)

    def tags_to_spans(self, tag_ids: Sequence[int], offsets: Sequence[tuple[int, int]],
                      mask: Sequence[int] | None = None) -> list[Span]:
        """Decode tag ids (positions where ``mask`` is IGNORE_INDEX or offsets are empty are skipped)."""
        names = self.slot_tags
        tags = []
        for i, (t, _) in enumerate(zip(tag_ids, offsets)):
            skip = t == IGNORE_INDEX or (mask is not None and mask[i] == IGNORE_INDEX)
            tags.append(None if skip else names[int(t)])
        return decode_spans(tags, offsets)

    # -- metrics and decoding -----------------------------------------------------------------
    def compute_metrics(self, logits: dict[str, np.ndarray], encoded: Sequence[Encoded]) -> dict[str, float]:
        import numpy as np

        intent_pred = np.asarray(logits["intent"]).argmax(-1)
        slot_pred = np.asarray(logits["slot"]).argmax(-1)
        slotless = {self.intents.index(i) for i in self.slotless_intents() if i in self.intents}
        n = len(encoded)
        intent_ok = sent_ok = strict_ok = tp = n_pred = n_gold = 0
        for i, e in enumerate(encoded):
            gold_tags = e.labels["slot"]
            gold = set(self.tags_to_spans(gold_tags, e.offsets))
            pred = set(self.tags_to_spans(slot_pred[i][: len(gold_tags)], e.offsets, mask=gold_tags))
            tp += len(gold & pred)
            n_pred += len(pred)
            n_gold += len(gold)
            right_intent = int(intent_pred[i]) == e.labels["intent"]
            intent_ok += right_intent
            strict_ok += right_intent and gold == pred
            sent_ok += right_intent and (gold == pred or e.labels["intent"] in slotless)
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_gold if n_gold else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return {"sentence_accuracy": 100.0 * sent_ok / n, "sentence_accuracy_strict": 100.0 * strict_ok / n,
                "intent_accuracy": 100.0 * intent_ok / n, "slot_precision": 100.0 * p,
                "slot_recall": 100.0 * r, "slot_f1": 100.0 * f1}

    def decode(self, example: Example, logits: dict[str, np.ndarray], encoded: Encoded) -> dict:
        probs = softmax(logits["intent"])
        best = argmax(probs)
        n = len(encoded.input_ids)
        tag_ids = [argmax(row) for row in logits["slot"][:n]]
        spans = self.tags_to_spans(tag_ids, encoded.offsets)
        return {"intent": self.intents[best], "confidence": float(probs[best]),
                "slots": [{"slot": s.label, "entity": example.text[s.start:s.end], "pos": [s.start, s.end - 1]}
                          for s in spans]}

    # -- tinydistill data check -------------------------------------------------------------
    def data_summary(self) -> list[str]:
        corpus = self.corpus()
        info = self.split_info()
        n_spans = sum(len(ex.labels["slot"]) for ex in corpus)
        n_corr = sum(1 for ex in corpus if "corrections" in ex.meta)
        intents = Counter(ex.labels["intent"] for ex in corpus)
        lines = [
            f"  utterances: {len(corpus):,} in {len({ex.meta['session'] for ex in corpus}):,} sessions; "
            f"{n_spans:,} slot spans; {n_corr:,} utterances with ASR corrections (asr||corrected)",
            f"  labels ({'label files' if self.options.label_files else 'from the corpus'}): "
            f"{len(self.intents)} intents, {len(self.slot_tags)} slot tags "
            f"({len([t for t in self.slot_tags if t.startswith('B-')])} slot types + {', '.join(NON_SLOT_TAGS)})",
            f"  split (by session, seed {info['split_seed']}, dev_ratio {info['dev_ratio']}): "
            f"train {info['train_examples']:,} utterances / {info['train_sessions']:,} sessions, "
            f"dev {info['dev_examples']:,} utterances / {info['dev_sessions']:,} sessions "
            f"(dev sessions sha256 {info['dev_sessions_sha256'][:12]})",
            f"  intents without slots in train: {', '.join(sorted(self.slotless_intents()))}",
            "  intents: " + ", ".join(f"{k} {v:,}" for k, v in intents.most_common()),
        ]
        if self.skipped:
            lines.append(f"  skipped bad rows: {len(self.skipped)} (first: {self.skipped[0]})")
        return lines
