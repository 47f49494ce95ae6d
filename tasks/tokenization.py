"""Tokenizers with character offsets, behind the ``TOKENIZERS`` registry (no paddle import).

* ``ernie-wordpiece``: ERNIE's WordPiece (lower-casing, CJK characters split) on the fast Rust
  ``tokenizers`` library; ids equal paddlenlp's ``ErnieTokenizer(vocab_file=...)``, including its
  truncation rule, its splitting of symbols (``～``, ``￥``) and the vocabulary's duplicate tokens (the
  ERNIE 3.0 vocab lists ``$`` twice, at ids 12084 and 18005; both libraries map ``$`` to the later id
  and never emit the earlier one).  Checked on every ChnSentiCorp and NLPCC text; the only known
  differences are characters whose Unicode category differs between Python 3.11's ``unicodedata``
  (Unicode 14, used by paddlenlp) and the Rust library's newer tables (a few thousand rare code points,
  none in the data).  ``vocab_size`` is the number of lines (ids), 39,980 for ERNIE 3.0.
* ``char``: one token per non-space character; ``jieba-word``: jieba words.  Both build their
  vocabulary from training texts (``min_freq``, ``max_size``) with ``[PAD]=0, [UNK]=1, [MASK]=2``
  and add no special tokens.

Every tokenizer: ``encode(text, text_pair=None, max_length=None) -> TokenizedText`` (offsets are
character spans in ``text``, or in ``text_pair`` for tokens with ``token_type_id`` 1; special tokens
have ``(0, 0)``), ``words(text)`` (jieba words with offsets, for augmentation), ``save(dir) -> spec``
and ``load_tokenizer(dir, spec)``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from tinydistill.distill.fsutil import atomic_write_text
from tinydistill.distill.records import record
from tinydistill.distill.registry import Registry

TOKENIZERS = Registry("tokenizer")
# what paddlenlp's tokenizer_utils._is_symbol treats as a symbol
_SYMBOLS = r"[\p{S}\x{00AD}\x{00B2}\x{00BA}\x{3007}\x{00B5}\x{00D8}\x{014B}\x{01B1}]"
VOCAB_FILE = "vocab.txt"

_jieba = None


def jieba_module():
    """jieba, imported on first use (its dictionary load takes ~0.5 s) with its log silenced."""
    global _jieba
    if _jieba is None:
        import logging

        import jieba

        jieba.setLogLevel(logging.ERROR)
        logging.getLogger("jieba").setLevel(logging.ERROR)
        _jieba = jieba
    return _jieba


def jieba_words(text: str) -> list[tuple[str, int, int]]:
    """jieba words of ``text`` as ``(word, start, end)``; whitespace-only pieces are dropped."""
    return [(w, s, e) for w, s, e in jieba_module().tokenize(text) if w.strip()]


@record
class TokenizedText:
    ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int]]
    tokens: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def read_vocab(path: str | Path) -> list[str]:
    """One token per line, id = line number (duplicates are kept so ids stay line numbers)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def _truncate_pair(a: list, b: list, budget: int) -> tuple[list, list]:
    """paddlenlp/HF ``longest_first``: drop one token at a time from the longer sequence."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return a, b


class BaseTokenizer:
    kind = ""
    #: word-level tokenizers: ``encode(..., words=[(start, end), ...])`` takes its tokens from a given word
    #: segmentation (an augmented example's, see distill/augment.py) instead of cutting the text itself
    takes_words = False
    pad_token = "[PAD]"
    unk_token = "[UNK]"
    mask_token = "[MASK]"

    vocab: list[str]
    _token_to_id: dict[str, int]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int | None:
        return self._token_to_id.get(token)

    @property
    def pad_token_id(self) -> int:
        return self._token_to_id[self.pad_token]

    @property
    def unk_token_id(self) -> int:
        return self._token_to_id[self.unk_token]

    @property
    def mask_token_id(self) -> int | None:
        return self._token_to_id.get(self.mask_token)

    def words(self, text: str) -> list[tuple[str, int, int]]:
        return jieba_words(text)

    def _save_vocab(self, out_dir: str | Path) -> None:
        atomic_write_text(Path(out_dir) / VOCAB_FILE, "".join(t + "\n" for t in self.vocab))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


@TOKENIZERS.register("ernie-wordpiece", summary="ERNIE WordPiece (fast Rust tokenizers; ids equal paddlenlp ErnieTokenizer)")
class ErnieWordPieceTokenizer(BaseTokenizer):
    """ERNIE/BERT WordPiece from a vocab file: ``[CLS] a [SEP] (b [SEP])``, offsets of specials (0, 0)."""

    kind = "ernie-wordpiece"
    cls_token = "[CLS]"
    sep_token = "[SEP]"

    def __init__(self, vocab_file: str | Path | None = None, *, vocab: Sequence[str] | None = None,
                 lowercase: bool = True):
        from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece

        if (vocab_file is None) == (vocab is None):
            raise ValueError("give exactly one of vocab_file or vocab")
        self.vocab = list(vocab) if vocab is not None else read_vocab(vocab_file)
        self.lowercase = lowercase
        # later duplicates win, as in paddlenlp's Vocab.load_vocabulary and in tokenizers' WordPiece
        self._token_to_id = {t: i for i, t in enumerate(self.vocab)}
        missing = [t for t in (self.pad_token, self.unk_token, self.cls_token, self.sep_token)
                   if t not in self._token_to_id]
        if missing:
            raise ValueError(f"ERNIE vocabulary lacks special tokens {missing}")
        # Built from parts rather than BertWordPieceTokenizer, which registers [CLS]/[UNK]/... as added
        # tokens and so would match them inside raw text; paddlenlp splits "[CLS]" in text like any text.
        self._tok = Tokenizer(WordPiece(dict(self._token_to_id), unk_token=self.unk_token,
                                        max_input_chars_per_word=100))
        # paddlenlp drops every Unicode "C*" character, including unassigned code points (Cn)
        self._tok.normalizer = normalizers.Sequence([
            normalizers.Replace(Regex(r"\p{Cn}"), ""),
            normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                       lowercase=lowercase)])
        # paddlenlp's BasicTokenizer also isolates every symbol (Unicode S*, plus a few code points)
        # like punctuation, e.g. "～", "￥", "⊿"; BERT's pre-tokenizer does not
        self._tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.BertPreTokenizer(),
            pre_tokenizers.Split(Regex(_SYMBOLS), behavior="isolated")])
        self.cls_token_id = self._token_to_id[self.cls_token]
        self.sep_token_id = self._token_to_id[self.sep_token]

    @classmethod
    def from_vocab(cls, tokens: Sequence[str], lowercase: bool = True) -> "ErnieWordPieceTokenizer":
        """Build from a token list (id = index), e.g. a pruned vocabulary."""
        return cls(vocab=tokens, lowercase=lowercase)

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, text_pair: str | None = None, max_length: int | None = None) -> TokenizedText:
        a = self._tok.encode(text, add_special_tokens=False)
        a_items = list(zip(a.ids, a.offsets, a.tokens))
        b_items = []
        if text_pair is not None:
            b = self._tok.encode(text_pair, add_special_tokens=False)
            b_items = list(zip(b.ids, b.offsets, b.tokens))
        if max_length is not None:
            budget = max_length - (3 if text_pair is not None else 2)
            if budget < 0:
                raise ValueError(f"max_length {max_length} leaves no room for the special tokens")
            a_items, b_items = _truncate_pair(a_items, b_items, budget) if text_pair is not None else \
                (a_items[:budget], [])
        cls_ = (self.cls_token_id, (0, 0), self.cls_token)
        sep_ = (self.sep_token_id, (0, 0), self.sep_token)
        items = [cls_] + a_items + [sep_]
        types = [0] * len(items)
        if text_pair is not None:
            items += b_items + [sep_]
            types += [1] * (len(b_items) + 1)
        return TokenizedText([i for i, _, _ in items], types, [tuple(o) for _, o, _ in items],
                             [t for _, _, t in items])

    def save(self, out_dir: str | Path) -> dict:
        self._save_vocab(out_dir)
        return {"type": self.kind, "vocab_file": VOCAB_FILE, "lowercase": self.lowercase}

    @classmethod
    def load(cls, directory: str | Path, spec: dict) -> "ErnieWordPieceTokenizer":
        return cls(Path(directory) / spec.get("vocab_file", VOCAB_FILE), lowercase=spec.get("lowercase", True))

    @staticmethod
    def describe(name: str = "") -> str:
        return "vocab from a file (e.g. ERNIE 3.0's 40k vocab), [CLS]/[SEP] added"


class VocabTokenizer(BaseTokenizer):
    """Shared part of the char and jieba-word tokenizers (vocabulary built from training texts)."""

    specials = ("[PAD]", "[UNK]", "[MASK]")

    def __init__(self, vocab: Sequence[str], lowercase: bool = True):
        self.vocab = list(vocab)
        if tuple(self.vocab[:3]) != self.specials:
            raise ValueError(f"{self.kind} vocabulary must start with {self.specials}")
        self.lowercase = lowercase
        self._token_to_id = {t: i for i, t in enumerate(self.vocab)}

    def pieces(self, text: str, words: Sequence[tuple[int, int]] | None = None) -> list[tuple[str, int, int]]:
        raise NotImplementedError

    def _norm(self, piece: str) -> str:
        return piece.lower() if self.lowercase else piece

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None,
              lowercase: bool = True) -> "VocabTokenizer":
        """Vocabulary of pieces with count >= ``min_freq``, most frequent first (ties: first seen),
        at most ``max_size`` entries including the 3 specials."""
        probe = cls(list(cls.specials), lowercase=lowercase)
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(probe._norm(p) for p, _, _ in probe.pieces(text))
        keep = [t for t, c in counts.most_common() if c >= min_freq and t not in cls.specials]
        if max_size is not None:
            keep = keep[: max(0, max_size - len(cls.specials))]
        return cls(list(cls.specials) + keep, lowercase=lowercase)

    def tokenize(self, text: str) -> list[str]:
        return [p for p, _, _ in self.pieces(text)]

    def encode(self, text: str, text_pair: str | None = None, max_length: int | None = None,
               words: Sequence[tuple[int, int]] | None = None,
               words_pair: Sequence[tuple[int, int]] | None = None) -> TokenizedText:
        a = self.pieces(text, words)
        b = self.pieces(text_pair, words_pair) if text_pair is not None else []
        if max_length is not None:
            a, b = _truncate_pair(a, b, max_length) if text_pair is not None else (a[:max_length], [])
        unk = self.unk_token_id
        items = a + b
        return TokenizedText([self._token_to_id.get(self._norm(p), unk) for p, _, _ in items],
                             [0] * len(a) + [1] * len(b), [(s, e) for _, s, e in items],
                             [p for p, _, _ in items])

    def save(self, out_dir: str | Path) -> dict:
        self._save_vocab(out_dir)
        return {"type": self.kind, "vocab_file": VOCAB_FILE, "lowercase": self.lowercase}

    @classmethod
    def load(cls, directory: str | Path, spec: dict) -> "VocabTokenizer":
        return cls(read_vocab(Path(directory) / spec.get("vocab_file", VOCAB_FILE)),
                   lowercase=spec.get("lowercase", True))

    @staticmethod
    def describe(name: str = "") -> str:
        return "vocab built from training texts (min_freq, max_size); [PAD]=0 [UNK]=1 [MASK]=2"


@TOKENIZERS.register("char", summary="one token per character (vocab from training texts)")
class CharTokenizer(VocabTokenizer):
    kind = "char"

    def pieces(self, text: str, words: Sequence[tuple[int, int]] | None = None) -> list[tuple[str, int, int]]:
        return [(c, i, i + 1) for i, c in enumerate(text) if not c.isspace()]


@TOKENIZERS.register("jieba-word", summary="jieba words (vocab from training texts)")
class JiebaWordTokenizer(VocabTokenizer):
    kind = "jieba-word"
    takes_words = True

    def pieces(self, text: str, words: Sequence[tuple[int, int]] | None = None) -> list[tuple[str, int, int]]:
        if words is None:
            return jieba_words(text)
        return [(text[s:e], s, e) for s, e in words if text[s:e].strip()]


def load_tokenizer(directory: str | Path, spec: dict) -> BaseTokenizer:
    """Rebuild the tokenizer that ``tok.save(directory)`` returned ``spec`` for."""
    return TOKENIZERS.get(spec["type"]).load(directory, spec)
