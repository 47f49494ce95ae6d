"""The tokenizer a teacher/student section asks for (``tokenizer:`` key; see ``config.TokenizerSection``)."""
from __future__ import annotations

import string
from pathlib import Path
from typing import Callable, Iterable

from tinydistill.distill.schema import ConfigError

ERNIE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def default_type(model_name: str) -> str:
    for kind in ("teachers", "students"):
        from tinydistill.distill.registry import get_registry

        reg = get_registry(kind)
        if model_name in reg:
            tok = reg.entry(model_name).meta.get("tokenizer")
            if tok:
                return tok
    return "ernie-wordpiece" if model_name.startswith("ernie") else "jieba-word"


def char_wordpiece_vocab(texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> list[str]:
    """An ERNIE-style WordPiece vocabulary of the texts' characters (CJK characters are whole words for
    ERNIE's pre-tokenizer; ASCII letters and digits get a ``##`` continuation form too)."""
    from tinydistill.tasks.tokenization import CharTokenizer

    chars = CharTokenizer.build(texts, min_freq=min_freq).vocab[3:]
    ascii_ = [c for c in string.ascii_lowercase + string.digits]
    vocab = list(ERNIE_SPECIALS) + [c for c in chars if c not in ascii_] + ascii_ + [f"##{c}" for c in ascii_]
    return vocab[:max_size] if max_size else vocab


def make_tokenizer(section, path: str, train_texts: Callable[[], list[str]]):
    """Build the tokenizer of a model section; ``path`` names the section in errors.

    A scratch ERNIE model without any vocabulary file at hand gets a character vocabulary of the training
    texts (as with ``build: true``), so ``--set teacher.init=scratch`` alone makes a config run offline.
    """
    from tinydistill.tasks.tokenization import TOKENIZERS, ErnieWordPieceTokenizer

    spec = section.tokenizer
    init = Path(section.init) if section.init not in ("scratch", "pretrained") else None
    if init is not None and (init / "manifest.json").is_file() and spec.type is None:
        from tinydistill.teachers.base import read_manifest
        from tinydistill.tasks.tokenization import load_tokenizer

        manifest = read_manifest(init)
        if manifest.get("tokenizer"):
            return load_tokenizer(init, manifest["tokenizer"])  # the tokenizer the weights were trained with
    kind = spec.type or default_type(section.name)
    if kind != "ernie-wordpiece":
        return TOKENIZERS.get(kind).build(train_texts(), min_freq=spec.min_freq, max_size=spec.max_size)
    candidates = [Path(spec.vocab_file).expanduser()] if spec.vocab_file else []
    if init is not None:
        candidates.append(init / "vocab.txt")
    candidates.append(Path.home() / ".paddlenlp" / "models" / section.name / "vocab.txt")
    found = next((c for c in candidates if c.is_file()), None)
    if spec.build or (found is None and not spec.vocab_file and section.init == "scratch"):
        if section.init != "scratch":
            raise ConfigError(f"{path}.tokenizer.build: a built vocabulary only fits init: scratch "
                              f"(init is {section.init!r}); give tokenizer.vocab_file instead")
        return ErnieWordPieceTokenizer.from_vocab(char_wordpiece_vocab(train_texts(), spec.min_freq, spec.max_size))
    if found is not None:
        return ErnieWordPieceTokenizer(found)
    raise ConfigError(f"{path}.tokenizer.vocab_file: no ERNIE vocabulary found (looked at "
                      f"{', '.join(str(c) for c in candidates)}); set tokenizer.vocab_file, or for an offline "
                      f"scratch model use --set {path}.tokenizer.build=true")
