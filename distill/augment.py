"""Tang et al. (2019) data augmentation for distillation, on raw Chinese texts (jieba words).

For each training example, ``n_iter`` tries, each from *that example's own words*:

1. per word (punctuation and spaces, jieba tag ``x``, are kept), draw u ~ U(0, 1): if u < p_mask the word is masked; elif u < p_mask + p_pos it is replaced by
   another word with the same jieba.posseg tag, drawn by frequency from the training texts;
2. with probability p_ng the example is cut to a random n-gram of its words, n ~ U{ngram_range}.

Tries equal to the original or to an earlier try are dropped.  The augmented examples carry no gold
labels: the teacher(s) label them.  Everything is drawn from ``numpy.random.default_rng((seed, index))``
per example, so the output is deterministic under the seed and does not depend on other examples.

Masking is tokenizer-independent: the augmented text keeps the masked word's characters and records its
character span in ``meta["mask_spans"]``; ``apply_masks`` then collapses the tokens of each span into a
single mask token of *each* model's own vocabulary ([MASK], or UNK where the vocabulary has no mask
token), so an ERNIE teacher and a jieba-word Bi-LSTM student see the same masked example.  The word
segmentation the masks were drawn on (jieba.posseg) is recorded too (``meta["word_spans"]``), and word-level
tokenizers take their tokens from it instead of cutting the augmented text again: jieba.cut of the new text
can join a masked word with its neighbour (4.3 % of masked spans on ChnSentiCorp), and the student's mask
token would then hide more characters than the teacher's.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Sequence

import numpy as np

from tinydistill.distill.config import AugmentConfig


def pos_words(text: str) -> list[tuple[str, str]]:
    """(word, POS tag) pairs of ``text`` by jieba.posseg (joins back to ``text``)."""
    import jieba
    import jieba.posseg as pseg
    jieba.setLogLevel(logging.WARNING)
    return [(p.word, p.flag) for p in pseg.lcut(text)]


class Augmenter:
    """Tang et al. augmentation with a POS vocabulary built from ``texts`` (the training texts)."""

    def __init__(self, cfg: AugmentConfig, texts: Sequence[str] = (), seed: int = 0):
        self.cfg, self.seed = cfg, int(seed) + int(cfg.seed)
        self._tagged: dict[str, list[tuple[str, str]]] = {}
        by_tag: dict[str, Counter] = defaultdict(Counter)
        if cfg.p_pos > 0:
            for text in texts:
                for word, tag in self.tagged(text):
                    if word.strip() and tag != "x":
                        by_tag[tag][word] += 1
        # tag -> (words, cumulative probabilities); sorted for determinism
        self.pos_vocab = {}
        for tag, counts in by_tag.items():
            words = sorted(counts)
            freq = np.array([counts[w] for w in words], dtype="float64")
            self.pos_vocab[tag] = (words, np.cumsum(freq / freq.sum()))

    def tagged(self, text: str) -> list[tuple[str, str]]:
        if text not in self._tagged:
            self._tagged[text] = pos_words(text)
        return self._tagged[text]

    def _replace(self, word: str, tag: str, rng) -> str:
        entry = self.pos_vocab.get(tag)
        if entry is None:
            return word
        words, cum = entry
        return words[min(int(np.searchsorted(cum, rng.random(), side="right")), len(words) - 1)]

    def _words_pass(self, tagged, rng):
        """Step 1 on one text: list of (word, masked) after masking / POS replacement."""
        out = []
        for word, tag in tagged:
            u = rng.random()
            if not word.strip() or tag == "x":  # whitespace / punctuation: kept as is
                out.append((word, False))
            elif u < self.cfg.p_mask:
                out.append((word, True))
            elif u < self.cfg.p_mask + self.cfg.p_pos:
                out.append((self._replace(word, tag, rng), False))
            else:
                out.append((word, False))
        return out

    def _ngram(self, words, rng):
        lo, hi = self.cfg.ngram_range
        n = min(int(rng.integers(lo, hi + 1)), len(words))
        start = int(rng.integers(0, len(words) - n + 1))
        return words[start:start + n]

    @staticmethod
    def _join(words) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
        """(text, masked spans, spans of every word) of a word list."""
        text, spans, word_spans, pos = [], [], [], 0
        for word, masked in words:
            if masked:
                spans.append((pos, pos + len(word)))
            word_spans.append((pos, pos + len(word)))
            text.append(word)
            pos += len(word)
        return "".join(text), spans, word_spans

    def augment_one(self, text: str, text_pair: str | None, index: int) -> list[dict]:
        """Augmented variants of one example: dicts ``text, text_pair, mask_spans, mask_spans_pair,
        word_spans, word_spans_pair`` (``word_spans_pair`` None when the pair text is the original one)."""
        rng = np.random.default_rng((self.seed, int(index)))
        tagged = self.tagged(text)
        tagged_pair = self.tagged(text_pair) if text_pair else None
        seen = {(text, (), text_pair, ())}
        out = []
        for _ in range(self.cfg.n_iter):
            words = self._words_pass(tagged, rng)
            pair_words = self._words_pass(tagged_pair, rng) if tagged_pair else None
            if words and rng.random() < self.cfg.p_ng:
                words = self._ngram(words, rng)
            new_text, spans, word_spans = self._join(words)
            new_pair, pair_spans, pair_word_spans = (self._join(pair_words) if pair_words is not None
                                                     else (text_pair, [], None))
            key = (new_text, tuple(spans), new_pair, tuple(pair_spans))
            if not new_text.strip() or key in seen:
                continue
            seen.add(key)
            out.append({"text": new_text, "text_pair": new_pair, "mask_spans": spans,
                        "mask_spans_pair": pair_spans, "word_spans": word_spans,
                        "word_spans_pair": pair_word_spans})
        return out


def augment_examples(examples, cfg: AugmentConfig, seed: int = 0, vocab_texts: Sequence[str] | None = None):
    """Augmented copies (``tasks.base.Example`` without labels) of ``examples``, in example order.

    ``meta``: ``augmented_from`` (index of the source example), ``aug_id`` (0.. per source),
    ``mask_spans`` / ``mask_spans_pair`` (character spans to mask), ``word_spans`` / ``word_spans_pair``
    (the word segmentation the masks were drawn on), ``source`` (the source's meta).
    """
    from tinydistill.tasks.base import Example

    if vocab_texts is None:
        vocab_texts = [t for e in examples for t in (e.text, e.text_pair) if t]
    aug = Augmenter(cfg, vocab_texts, seed)
    out = []
    for i, ex in enumerate(examples):
        for k, var in enumerate(aug.augment_one(ex.text, ex.text_pair, i)):
            out.append(Example(var["text"], var["text_pair"], {},
                               {"augmented_from": i, "aug_id": k, "mask_spans": var["mask_spans"],
                                "mask_spans_pair": var["mask_spans_pair"], "word_spans": var["word_spans"],
                                "word_spans_pair": var["word_spans_pair"], "source": dict(ex.meta)}))
    return out


def apply_masks(encoded, example, tokenizer):
    """Collapse the tokens of each masked span of ``example`` into one mask token of ``tokenizer``.

    ``encoded`` is a ``tasks.base.Encoded`` of ``example``; returns a new one (same object when nothing
    is masked).  Tokens of the pair text are those with token_type_id 1.
    """
    spans = example.meta.get("mask_spans") or []
    pair_spans = example.meta.get("mask_spans_pair") or []
    if not spans and not pair_spans:
        return encoded
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    from tinydistill.tasks.base import Encoded

    keep, group_of = [], {}
    for t, (start, end) in enumerate(encoded.offsets):
        group = None
        if end > start:
            use = pair_spans if (example.text_pair and encoded.token_type_ids[t] == 1) else spans
            for g, (s, e) in enumerate(use):
                if start < e and end > s:  # token overlaps the masked word
                    group = (id(use), g)
                    break
        if group is None:
            keep.append((t, False))
        elif group not in group_of:
            group_of[group] = t
            keep.append((t, True))
    ids = [mask_id if masked else encoded.input_ids[t] for t, masked in keep]
    idx = [t for t, _ in keep]
    labels = {h: ([v[t] for t in idx] if isinstance(v, list) else v) for h, v in encoded.labels.items()}
    offsets = [encoded.offsets[t] for t in idx]
    return Encoded(ids, [encoded.token_type_ids[t] for t in idx], offsets, labels)
