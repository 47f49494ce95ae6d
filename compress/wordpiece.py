"""ERNIE WordPiece in pure Python, for the lean (numpy-free, ``tokenizers``-free) predictor process.

``tasks.tokenization.ErnieWordPieceTokenizer`` runs on the Rust ``tokenizers`` library; importing it and
building its WordPiece model costs a deployed process a few MiB that a batch-1 predictor on a pruned vocabulary
(a few thousand tokens) does not need.  ``LeanWordPiece`` reproduces the same pipeline step by step (the Rust
library's order):

1. drop unassigned code points (``Cn``), then BERT's normalizer: control characters removed, whitespace to
   ``" "``, CJK ideographs padded with spaces, accents stripped (NFD, marks ``Mn`` removed) and lower-cased;
2. split on whitespace, isolate punctuation (ASCII punctuation or Unicode ``P*``) and symbols (``S*`` plus
   the few code points paddlenlp treats as symbols);
3. greedy longest-match WordPiece with ``##`` continuations; a word with a piece not in the vocabulary, or
   longer than 100 characters, is one ``[UNK]``.

Offsets are character spans of the original text, as the Rust library reports them.  The normalisation of
every distinct character is computed once and cached.  Equality with ``ErnieWordPieceTokenizer`` (ids,
offsets) is tested on every NLPCC utterance; the known differences are those of the Unicode tables
(Python 3.11's ``unicodedata`` is Unicode 14, the Rust library's is newer), none in the data.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

from tinydistill.tasks.tokenization import VOCAB_FILE, TokenizedText, _truncate_pair, read_vocab

_EXTRA_SYMBOLS = frozenset("\u00ad\u00b2\u00ba\u3007\u00b5\u00d8\u014b\u01b1")
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_SPACE, _ISOLATED, _WORD = 0, 1, 2  # what a normalised character does to word boundaries
_MAX_WORD_CHARS = 100


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK)


def _is_punct(c: str) -> bool:
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


class LeanWordPiece:
    """Drop-in for ``ErnieWordPieceTokenizer.encode`` (and its ids/specials) without the Rust library."""

    kind = "ernie-wordpiece"
    takes_words = False  # cuts its own words (like ErnieWordPieceTokenizer)
    pad_token, unk_token, mask_token, cls_token, sep_token = "[PAD]", "[UNK]", "[MASK]", "[CLS]", "[SEP]"

    def __init__(self, vocab: list[str], lowercase: bool = True):
        self.vocab = list(vocab)
        self.lowercase = lowercase
        self._token_to_id = {t: i for i, t in enumerate(self.vocab)}  # later duplicates win, as in the Rust one
        self.unk_token_id = self._token_to_id[self.unk_token]
        self.cls_token_id = self._token_to_id[self.cls_token]
        self.sep_token_id = self._token_to_id[self.sep_token]
        self.pad_token_id = self._token_to_id[self.pad_token]
        self._chars: dict[str, tuple] = {}

    @classmethod
    def load(cls, directory, spec: dict) -> "LeanWordPiece":
        return cls(read_vocab(Path(directory) / spec.get("vocab_file", VOCAB_FILE)), lowercase=spec.get("lowercase", True))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str):
        return self._token_to_id.get(token)

    # -- normalisation and pre-tokenisation of one character ---------------------------------------
    def _normalise(self, c: str) -> tuple:
        """``((normalised char, role), ...)`` for one original character (cached)."""
        cat = unicodedata.category(c)
        if cat == "Cn" or c in ("\x00", "\ufffd"):
            return ()
        if c in "\t\n\r" or cat == "Zs":
            return ((" ", _SPACE),)
        if cat.startswith("C"):
            return ()
        if _is_cjk(ord(c)):
            return ((c, _ISOLATED),)  # padded with spaces by the normaliser: a word of its own
        s = c
        if self.lowercase:  # strip_accents follows lowercase in BERT's normaliser
            s = "".join(x for x in unicodedata.normalize("NFD", s) if unicodedata.category(x) != "Mn")
            s = s.lower()
        out = []
        for x in s:
            xc = unicodedata.category(x)
            if x in "\t\n\r " or xc == "Zs":
                out.append((x, _SPACE))
            elif _is_punct(x) or xc.startswith("S") or x in _EXTRA_SYMBOLS:
                out.append((x, _ISOLATED))
            else:
                out.append((x, _WORD))
        return tuple(out)

    def _words(self, text: str) -> list[tuple[str, list[int]]]:
        """Pre-tokenised words: (normalised word, original index of each of its characters)."""
        cache, words = self._chars, []
        chars: list[str] = []
        origin: list[int] = []
        for i, c in enumerate(text):
            norm = cache.get(c)
            if norm is None:
                norm = cache[c] = self._normalise(c)
            for x, role in norm:
                if role == _WORD:
                    chars.append(x)
                    origin.append(i)
                    continue
                if chars:
                    words.append(("".join(chars), origin))
                    chars, origin = [], []
                if role == _ISOLATED:
                    words.append((x, [i]))
        if chars:
            words.append(("".join(chars), origin))
        return words

    def _wordpiece(self, word: str, origin: list[int], out: list) -> None:
        vocab = self._token_to_id
        if len(word) > _MAX_WORD_CHARS:
            out.append((self.unk_token_id, (origin[0], origin[-1] + 1), self.unk_token))
            return
        tid = vocab.get(word)
        if tid is not None:  # the common case (every CJK character): one piece
            out.append((tid, (origin[0], origin[-1] + 1), word))
            return
        pieces, start, n = [], 0, len(word)
        while start < n:
            end = n
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                tid = vocab.get(piece)
                if tid is not None:
                    pieces.append((tid, (origin[start], origin[end - 1] + 1), piece))
                    break
                end -= 1
            else:
                out.append((self.unk_token_id, (origin[0], origin[-1] + 1), self.unk_token))
                return
            start = end
        out.extend(pieces)

    def _pieces(self, text: str) -> list:
        out: list = []
        for word, origin in self._words(text):
            self._wordpiece(word, origin, out)
        return out

    def tokenize(self, text: str) -> list[str]:
        return [t for _, _, t in self._pieces(text)]

    def encode(self, text: str, text_pair: str | None = None, max_length: int | None = None) -> TokenizedText:
        a = self._pieces(text)
        b = self._pieces(text_pair) if text_pair is not None else []
        if max_length is not None:
            budget = max_length - (3 if text_pair is not None else 2)
            if budget < 0:
                raise ValueError(f"max_length {max_length} leaves no room for the special tokens")
            a, b = _truncate_pair(a, b, budget) if text_pair is not None else (a[:budget], [])
        cls_ = (self.cls_token_id, (0, 0), self.cls_token)
        sep_ = (self.sep_token_id, (0, 0), self.sep_token)
        items = [cls_] + a + [sep_]
        types = [0] * len(items)
        if text_pair is not None:
            items += b + [sep_]
            types += [1] * (len(b) + 1)
        return TokenizedText([i for i, _, _ in items], types, [o for _, o, _ in items], [t for _, _, t in items])


def lean_tokenizer(directory, spec: dict):
    """The tokenizer of a model directory for the lean predictor: ``LeanWordPiece`` for ERNIE WordPiece,
    the project's own (pure-Python) tokenizer for the others."""
    if spec.get("type") == LeanWordPiece.kind:
        return LeanWordPiece.load(directory, spec)
    from tinydistill.tasks.tokenization import load_tokenizer

    return load_tokenizer(directory, spec)
