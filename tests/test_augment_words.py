"""Augmentation: the jieba-word student's masked token hides exactly the characters the masks were drawn on
(the teacher's [MASK] span), because its tokens come from the augmenter's own word segmentation."""
from __future__ import annotations

from tinydistill.distill.augment import augment_examples
from tinydistill.distill.config import AugmentConfig
from tinydistill.distill.trainer import encode_examples
from tinydistill.experiments.tokenizers import char_wordpiece_vocab
from tinydistill.tasks import build_task
from tinydistill.tasks.tokenization import ErnieWordPieceTokenizer, JiebaWordTokenizer


def _masked_chars(encoded, tokenizer) -> list[tuple[int, int]]:
    mask = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    return [o for i, o in zip(encoded.input_ids, encoded.offsets) if i == mask and o[1] > o[0]]


def test_student_and_teacher_mask_the_same_characters(data_dir):
    task = build_task("chnsenticorp", data_dir=str(data_dir), max_seq_length=512)
    train = task.load("train")[:60]
    texts = [ex.text for ex in train]
    student = JiebaWordTokenizer.build(texts)
    teacher = ErnieWordPieceTokenizer.from_vocab(char_wordpiece_vocab(texts))
    aug = augment_examples(train, AugmentConfig(p_mask=0.3, p_pos=0.0, p_ng=0.0, n_iter=4), seed=1)
    assert aug and all(ex.meta["word_spans"] for ex in aug)
    spans = total = 0
    for ex, s_enc, t_enc in zip(aug, encode_examples(task, aug, student), encode_examples(task, aug, teacher)):
        wanted = sorted(map(tuple, ex.meta["mask_spans"]))
        total += len(wanted)
        # the student's mask tokens are the masked words exactly (one token each, same characters) ...
        assert sorted(_masked_chars(s_enc, student)) == wanted, (ex.text, wanted, _masked_chars(s_enc, student))
        # ... and the teacher's one [MASK] per word covers the same characters
        t_spans = _masked_chars(t_enc, teacher)
        assert len(t_spans) == len(wanted)
        spans += sum(1 for (a, b), (c, d) in zip(sorted(t_spans), wanted) if a == c)
    assert total > 200 and spans == total
    # unmasked words are the recorded words too: the student's tokens tile the augmenter's segmentation
    ex = aug[0]
    enc = student.encode(ex.text, words=ex.meta["word_spans"])
    assert enc.offsets == [tuple(w) for w in ex.meta["word_spans"] if ex.text[w[0]:w[1]].strip()]


def test_originals_are_still_cut_by_jieba():
    tok = JiebaWordTokenizer.build(["来一首周华健的花心"])
    assert tok.encode("来一首周华健的花心").tokens == ["来", "一首", "周华健", "的", "花心"]
