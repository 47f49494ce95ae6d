"""Tokenizers: ERNIE WordPiece ids equal paddlenlp's ErnieTokenizer on real texts; char/jieba vocabularies."""
from __future__ import annotations

import pytest

from tinydistill.tasks.tokenization import (TOKENIZERS, CharTokenizer, ErnieWordPieceTokenizer, JiebaWordTokenizer,
                                load_tokenizer, read_vocab)


def real_texts(data_dir) -> list[str]:
    dev = (data_dir / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[2] for line in dev]  # ALL 1,200 ChnSentiCorp dev texts
    corpus = (data_dir / "nlpcc2018_task4" / "corpus.train.txt").read_text(encoding="utf-8").splitlines()
    utterances = [line.split("\t")[1] for line in corpus if line]
    return texts + utterances[::5]  # + 4,271 NLPCC utterances (every 5th)


@pytest.fixture(scope="module")
def paddle_tokenizer_cls():
    pytest.importorskip("paddlenlp")
    from paddlenlp.transformers import ErnieTokenizer

    return ErnieTokenizer


def test_ernie_ids_equal_paddlenlp_on_real_texts(data_dir, ernie_vocab, paddle_tokenizer_cls):
    ref = paddle_tokenizer_cls(vocab_file=str(ernie_vocab))
    tok = ErnieWordPieceTokenizer(ernie_vocab)
    texts = real_texts(data_dir)
    assert len(texts) > 5000
    tricky = ["价格 $99 和 $ 5", "[CLS] 文本里的 [UNK] 与 [MASK]", "ÀÉÎ café Ｆｕｌｌ　ｗｉｄｔｈ", "x" * 150 + " y",
              "\t空白\u200b字符\x00", "😀表情"]
    mismatches = [t for t in texts + tricky if tok.encode(t).ids != ref(t)["input_ids"]]
    assert mismatches == []
    # the duplicate "$" (ids 12084 and 18005): both map "$" to the later id
    assert tok.encode("$").ids[1] == ref("$")["input_ids"][1] == 18005
    # pairs and truncation (longest_first, like paddlenlp)
    for a, b, n in [(texts[0], texts[1], 32), (texts[2], "短", 16), ("短", texts[3], 16), (texts[4], None, 10)]:
        ours = tok.encode(a, b, max_length=n)
        theirs = ref(a, b, max_length=n, truncation=True) if b else ref(a, max_length=n, truncation=True)
        assert ours.ids == theirs["input_ids"] and ours.token_type_ids == theirs["token_type_ids"]
        assert len(ours.ids) <= n


def test_ernie_offsets_point_into_the_text(data_dir, ernie_vocab):
    tok = ErnieWordPieceTokenizer(ernie_vocab)
    text = "来一首周华健的花心 Hello"
    enc = tok.encode(text)
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    assert enc.offsets[0] == enc.offsets[-1] == (0, 0)
    assert [text[s:e] for s, e in enc.offsets[1:-1]] == list("来一首周华健的花心") + ["Hello"]
    pair = tok.encode("你好", "世界")
    assert pair.token_type_ids == [0, 0, 0, 0, 1, 1, 1] and pair.offsets[4:6] == [(0, 1), (1, 2)]


def test_ernie_from_vocab_list_matches_paddlenlp(tmp_path, ernie_vocab, paddle_tokenizer_cls):
    """A pruned vocabulary (vocab_prune) gives the same ids as paddlenlp with that vocab file."""
    full = read_vocab(ernie_vocab)
    texts = ["来一首周华健的花心", "播放dj歌曲", "导航到信阳市汽车配件城", "打电话100ml", "unaffable 价格$5"]
    used = {t for text in texts for t in ErnieWordPieceTokenizer(ernie_vocab).tokenize(text)}
    pruned = [t for t in full if t in used or (t.startswith("[") and t.endswith("]"))
              or t in ("un", "##aff", "##able", "$")]
    pruned.remove("周")  # now unknown -> [UNK]
    tok = ErnieWordPieceTokenizer.from_vocab(pruned)
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("".join(t + "\n" for t in pruned), encoding="utf-8")
    ref = paddle_tokenizer_cls(vocab_file=str(vocab_file))
    for text in texts:
        assert tok.encode(text).ids == ref(text)["input_ids"]
    assert tok.unk_token_id in tok.encode("周").ids
    assert tok.vocab_size == len(pruned) < 100


def test_ernie_save_load_round_trip(tmp_path, ernie_vocab):
    tok = TOKENIZERS.get("ernie-wordpiece")(ernie_vocab)
    spec = tok.save(tmp_path)
    assert spec["type"] == "ernie-wordpiece"
    again = load_tokenizer(tmp_path, spec)
    assert again.vocab == tok.vocab and again.vocab_size == 39980  # id = line number, [UNK] is 39979
    assert again.encode("播放周杰伦的稻香").ids == tok.encode("播放周杰伦的稻香").ids
    assert (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id) == (0, 39979, 3)


@pytest.mark.parametrize("cls", [CharTokenizer, JiebaWordTokenizer])
def test_vocab_tokenizers_build_save_load(cls, tmp_path):
    texts = ["播放周杰伦的稻香", "播放周杰伦的晴天", "导航到北京", "播放 音乐"] * 2 + ["罕见字龘"]
    tok = cls.build(texts, min_freq=2)
    assert tok.vocab[:3] == ["[PAD]", "[UNK]", "[MASK]"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id) == (0, 1, 2)
    assert "龘" not in tok.vocab and all(" " not in t for t in tok.vocab)
    enc = tok.encode("播放 龘")
    assert tok.unk_token_id in enc.ids and tok.pad_token_id not in enc.ids
    assert ["播放 龘"[s:e] for s, e in enc.offsets] == enc.tokens  # offsets point into the text
    small = cls.build(texts, min_freq=1, max_size=5)
    assert small.vocab_size == 5
    spec = tok.save(tmp_path)
    again = load_tokenizer(tmp_path, spec)
    assert type(again) is cls and again.vocab == tok.vocab
    assert again.encode("播放周杰伦的稻香").ids == tok.encode("播放周杰伦的稻香").ids
    pair = tok.encode("播放周杰伦的稻香", "导航到北京", max_length=4)
    assert len(pair.ids) == 4 and 0 in pair.token_type_ids and 1 in pair.token_type_ids


def test_char_tokenizer_lowercases_and_skips_spaces():
    tok = CharTokenizer.build(["ab c", "AB"])
    assert tok.encode("A b").tokens == ["A", "b"]
    assert tok.encode("A b").ids == [tok.token_to_id("a"), tok.token_to_id("b")]
    assert tok.encode("A b").offsets == [(0, 1), (2, 3)]


def test_words_are_jieba_words_with_offsets(ernie_vocab):
    for tok in (ErnieWordPieceTokenizer(ernie_vocab), CharTokenizer.build(["x"])):
        words = tok.words("来一首周华健的花心 好吗")
        assert ("周华健", 3, 6) in words
        assert all(w.strip() for w, _, _ in words)


def test_registry_lists_all_tokenizers():
    assert set(TOKENIZERS.names()) == {"ernie-wordpiece", "char", "jieba-word"}
