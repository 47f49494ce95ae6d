"""Unit tests of the distillation engine's parts: losses on small tensors (hand-computed values), layer
maps, schedules, multi-teacher mixing, teacher-output cache, Tang et al. augmentation, config."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from tinydistill.distill.config import AugmentConfig, DistillConfig, MixingConfig, ScheduleConfig, loss_config
from tinydistill.distill.layermap import resolve_layer_map, uniform_layer_map
from tinydistill.distill.schedules import scheduled
from tinydistill.distill.schema import ConfigError
from tinydistill.tasks.base import Example, HeadSpec

paddle = pytest.importorskip("paddle")

SEQ = HeadSpec("intent", "sequence", ("a", "b"))
TOK = HeadSpec("slot", "token", ("O", "B", "I"))


def t(x, dtype="float32"):
    return paddle.to_tensor(np.asarray(x, dtype=dtype))


# -- functional losses --------------------------------------------------------------------------------
def test_kl_with_temperature_hand_values():
    from tinydistill.distill.losses import kl_with_temperature
    s, te = t([[0.0, 0.0]]), t([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)       # KL([.75,.25] || [.5,.5])
    assert float(kl_with_temperature(s, te, 1.0)) == pytest.approx(expected, rel=1e-5)
    # T = 2 on doubled teacher logits gives the same distributions, scaled by T^2
    assert float(kl_with_temperature(s, t([[2 * math.log(3.0), 0.0]]), 2.0)) == pytest.approx(4 * expected, rel=1e-5)
    assert float(kl_with_temperature(te, te, 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_token_losses_are_masked_to_real_tokens():
    from tinydistill.distill.losses import hard_ce, kl_with_temperature, logits_mse
    s = t([[[1.0, 2.0], [100.0, -100.0]]])       # [B=1, L=2, C=2]; position 1 is padding
    te = t([[[0.0, 0.0], [-100.0, 100.0]]])
    mask = t([[1.0, 0.0]])
    assert float(logits_mse(s, te, mask)) == pytest.approx(2.5)           # mean(1, 4)
    assert float(kl_with_temperature(te, te, 1.0, mask)) == pytest.approx(0.0, abs=1e-6)
    labels = paddle.to_tensor(np.array([[1, -100]], dtype="int64"))
    assert float(hard_ce(t([[[0.0, 0.0], [50.0, -50.0]]]), labels)) == pytest.approx(math.log(2), rel=1e-5)


def test_hard_ce_skips_examples_without_gold_label_and_keeps_graph():
    from tinydistill.distill.losses import hard_ce
    logits = t([[0.0, 0.0], [0.0, math.log(3.0)]])
    logits.stop_gradient = False
    labels = paddle.to_tensor(np.array([-100, 1], dtype="int64"))
    assert float(hard_ce(logits, labels)) == pytest.approx(-math.log(0.75), rel=1e-5)
    none = hard_ce(logits, paddle.to_tensor(np.array([-100, -100], dtype="int64")))
    assert float(none) == 0.0
    none.backward()                                  # still differentiable (zero gradient)
    assert np.allclose(logits.grad.numpy(), 0.0)


def test_hidden_mse_distribution_kl_and_value_relation():
    from tinydistill.distill.losses import distribution_kl, hidden_mse, value_relation
    s = t([[[1.0, 1.0], [9.0, 9.0]]])
    te = t([[[0.0, 0.0], [0.0, 0.0]]])
    assert float(hidden_mse(s, te, t([[1.0, 0.0]]))) == pytest.approx(1.0)
    tp = t([[[[0.5, 0.5], [1.0, 0.0]]]])              # [B=1, h=1, L=2, L=2]
    sp = t([[[[0.75, 0.25], [0.0, 1.0]]]])
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert float(distribution_kl(tp, sp, t([[1.0, 0.0]]))) == pytest.approx(expected, rel=1e-5)
    rel = value_relation(t(np.random.RandomState(0).randn(2, 3, 4)), 2, t([[1, 1, 0], [1, 1, 1]])).numpy()
    assert rel.shape == (2, 2, 3, 3)
    assert np.allclose(rel.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(rel[0, :, :, 2], 0.0)          # padded key gets no mass


# -- loss classes ---------------------------------------------------------------------------------------
def _model(layers=2, width=4, heads=2, arch="fake"):
    return SimpleNamespace(num_layers=layers, hidden_size=width, num_attention_heads=heads, arch=arch)


def test_loss_classes_apply_per_head_and_validate():
    from tinydistill.distill.losses import LOSSES, LossInputs, LossSetup, build_losses
    assert {"hard_ce", "soft_ce", "logits_mse", "hidden_mse", "attention_kl", "minilm"} <= set(LOSSES.names())
    setup = LossSetup([SEQ, TOK], _model(), [_model()])
    soft, = build_losses([loss_config("soft_ce", temperature=2.0)], setup)
    inputs = LossInputs(
        student={"logits": {"intent": t([[0.0, 0.0]]), "slot": t([[[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]])}},
        labels={}, attention_mask=t([[1.0, 1.0]]), token_mask=t([[1.0, 0.0]]),
        teacher_logits={"intent": t([[2 * math.log(3.0), 0.0]]), "slot": t([[[0.0, 0.0, 0.0], [0.0, 0.0, 9.0]]])})
    terms = soft(inputs)
    assert set(terms) == {"soft_ce/intent", "soft_ce/slot"}
    assert float(terms["soft_ce/intent"]) == pytest.approx(4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)), rel=1e-5)
    assert float(terms["soft_ce/slot"]) == pytest.approx(0.0, abs=1e-6)     # only the unmasked token counts
    with pytest.raises(ConfigError, match="needs a teacher"):
        build_losses([loss_config("soft_ce")], LossSetup([SEQ], _model(), []))
    with pytest.raises(ConfigError, match=r"losses\[0\].heads: unknown head 'nope'"):
        build_losses([loss_config("hard_ce", heads=["nope"])], LossSetup([SEQ], _model(), []))


def test_different_tokenizers_allow_sequence_kd_only():
    from tinydistill.distill.losses import LossSetup, build_losses
    setup = LossSetup([SEQ, TOK], _model(), [_model()], aligned=False)
    with pytest.raises(ConfigError, match="token head.*slot.*same tokenizer"):
        build_losses([loss_config("logits_mse")], setup)
    build_losses([loss_config("logits_mse", heads=["intent"])], setup)
    with pytest.raises(ConfigError, match="same tokenizer"):
        build_losses([loss_config("hidden_mse")], setup)


def test_hidden_mse_projection_is_learnable_and_layer_mapped():
    from tinydistill.distill.losses import LossInputs, LossSetup, build_losses
    paddle.seed(0)
    loss, = build_losses([loss_config("hidden_mse")], LossSetup([SEQ], _model(2, 4), [_model(4, 6)]))
    assert loss.map == {0: 0, 2: 1, 4: 2}
    params = loss.parameters()
    assert len(params) == 6 and tuple(params[0].shape) == (4, 6)       # 3 pairs x (weight, bias)
    s_hidden = [t(np.random.RandomState(i).randn(1, 3, 4)) for i in range(3)]
    t_hidden = [t(np.random.RandomState(10 + i).randn(1, 3, 6)) for i in range(5)]
    inputs = LossInputs(student={"hidden_states": s_hidden}, labels={}, attention_mask=t([[1, 1, 0]]),
                        token_mask=t([[1, 1, 0]]), teachers=[{"hidden_states": t_hidden}])
    value = loss(inputs)["hidden_mse"]
    value.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params)
    same, = build_losses([loss_config("hidden_mse", layer_map={2: 1})], LossSetup([SEQ], _model(1, 4), [_model(2, 4)]))
    assert same.parameters() == [] and same.map == {2: 1}
    with pytest.raises(ConfigError, match=r"layer_map: student layer 5"):
        build_losses([loss_config("hidden_mse", layer_map={2: 5})], LossSetup([SEQ], _model(1, 4), [_model(2, 4)]))


def test_attention_losses_need_attention():
    from tinydistill.distill.losses import LossInputs, LossSetup, build_losses
    with pytest.raises(ConfigError, match="has no attention"):
        build_losses([loss_config("attention_kl")], LossSetup([SEQ], _model(1, 4, 0, "bilstm"), [_model()]))
    loss, = build_losses([loss_config("attention_kl")], LossSetup([SEQ], _model(1, 4, 2), [_model(2, 4, 4)]))
    assert loss.map == {2: 1}
    uniform = t(np.full((1, 2, 2, 2), 0.5))
    inputs = LossInputs(student={"attentions": [uniform]}, labels={}, attention_mask=t([[1, 1]]),
                        token_mask=t([[1, 1]]), teachers=[{"attentions": [None, t(np.full((1, 4, 2, 2), 0.5))]}])
    assert float(loss(inputs)["attention_kl"]) == pytest.approx(0.0, abs=1e-6)   # head counts differ: averaged


# -- layer maps, schedules, mixing ---------------------------------------------------------------------
def test_uniform_layer_map():
    assert uniform_layer_map(12, 4) == {0: 0, 3: 1, 6: 2, 9: 3, 12: 4}
    assert uniform_layer_map(12, 5) == {0: 0, 2: 1, 5: 2, 7: 3, 10: 4, 12: 5}
    assert uniform_layer_map(4, 4, include_embeddings=False) == {1: 1, 2: 2, 3: 3, 4: 4}
    assert uniform_layer_map(2, 4, include_embeddings=False) == {1: 2, 2: 4}
    for teacher in range(1, 13):
        for student in range(1, 7):
            m = uniform_layer_map(teacher, student)
            assert max(m) == teacher and max(m.values()) == student   # last layer -> last layer
    with pytest.raises(ConfigError, match="teacher layer 13"):
        resolve_layer_map({13: 1}, 12, 4)


def test_schedules():
    lin = ScheduleConfig("linear", end=1.0)
    assert scheduled(5.0, ScheduleConfig(), 7, 10) == 5.0
    assert [scheduled(5.0, lin, s, 5) for s in range(5)] == [5.0, 4.0, 3.0, 2.0, 1.0]
    with pytest.raises(ConfigError, match="needs 'end'"):
        DistillConfig.from_dict({"losses": [{"type": "soft_ce", "temperature_schedule": {"type": "linear"}}]})


def test_mixing_fixed_and_confidence():
    from tinydistill.distill.multiteacher import mix_logits
    a = {"intent": np.array([[4.0, 0.0], [0.0, 0.0]])}
    b = {"intent": np.array([[0.0, 0.0], [0.0, 8.0]])}
    fixed = mix_logits([a, b], MixingConfig("fixed", [3.0, 1.0]))["intent"]
    assert np.allclose(fixed, [[3.0, 0.0], [0.0, 2.0]])
    conf = mix_logits([a, b], MixingConfig("confidence"))["intent"]
    # example 0: teacher a is confident, b uniform -> a weighs more; example 1 the other way round
    p = 1 / (1 + math.exp(-4))
    assert conf[0, 0] == pytest.approx(4 * p / (p + 0.5), rel=1e-5)
    assert conf[1, 1] > 4.0


# -- teacher-output cache ------------------------------------------------------------------------------
def test_teacher_cache_roundtrip(tmp_path):
    from tinydistill.distill.cache import TeacherCache, example_key
    ex = [Example("一", None), Example("二", None), Example("一", None, meta={"mask_spans": [(0, 1)]})]
    keys = [example_key(e) for e in ex]
    assert len(set(keys)) == 3                          # an augmented (masked) copy is its own entry
    cache = TeacherCache(tmp_path, "fp")
    outs = [{"intent": np.array([i, -i], "float32"), "slot": np.full((i + 1, 3), i, "float32")} for i in range(3)]
    cache.put(keys[:2], outs[:2])
    cache.put(keys[2:], outs[2:])
    fresh = TeacherCache(tmp_path, "fp")               # another run reads both files from disk
    for key, out in zip(keys, outs):
        got = fresh.get(key)
        assert np.array_equal(got["intent"], out["intent"]) and np.array_equal(got["slot"], out["slot"])
    assert TeacherCache(tmp_path, "other").get(keys[0]) is None


# -- augmentation --------------------------------------------------------------------------------------
SENTENCES = ["这个酒店的服务态度非常好，房间也很干净。", "手机电池太不耐用了，一天要充三次电。",
             "我想听周杰伦的七里香", "导航去北京首都国际机场"]


def test_augmented_examples_come_from_their_own_sentence():
    """Would catch PaddleNLP's old bug (every augmented sample built from the last sentence's tokens)."""
    from tinydistill.distill.augment import augment_examples
    ex = [Example(s, None, {"label": "1"}, {"line": i}) for i, s in enumerate(SENTENCES)]
    ngram_only = augment_examples(ex, AugmentConfig(p_mask=0, p_pos=0, p_ng=1.0, ngram_range=[1, 3], n_iter=10), 1)
    assert {a.meta["augmented_from"] for a in ngram_only} == set(range(len(SENTENCES)))
    for a in ngram_only:
        assert a.text in SENTENCES[a.meta["augmented_from"]] and a.text != SENTENCES[a.meta["augmented_from"]]
        assert a.labels == {} and a.meta["source"] == {"line": a.meta["augmented_from"]}
    masked = augment_examples(ex, AugmentConfig(p_mask=0.5, p_pos=0, p_ng=0, n_iter=5), 1)
    assert masked and all(a.text == SENTENCES[a.meta["augmented_from"]] and a.meta["mask_spans"] for a in masked)
    pos = augment_examples(ex, AugmentConfig(p_mask=0, p_pos=0.5, p_ng=0, n_iter=5), 1)
    for a in pos:                                           # replaced words, same punctuation skeleton
        src = SENTENCES[a.meta["augmented_from"]]
        assert [c for c in a.text if c in "，。"] == [c for c in src if c in "，。"]
        assert a.text != src


def test_augmentation_is_deterministic_under_the_seed():
    from tinydistill.distill.augment import augment_examples
    cfg = AugmentConfig(p_mask=0.2, p_pos=0.2, p_ng=0.3, n_iter=8)
    ex = [Example(s) for s in SENTENCES]
    a = [(x.meta["augmented_from"], x.text, tuple(x.meta["mask_spans"])) for x in augment_examples(ex, cfg, 7)]
    b = [(x.meta["augmented_from"], x.text, tuple(x.meta["mask_spans"])) for x in augment_examples(ex, cfg, 7)]
    c = [(x.meta["augmented_from"], x.text, tuple(x.meta["mask_spans"])) for x in augment_examples(ex, cfg, 8)]
    assert a == b and a != c
    assert len(set(a)) == len(a)                         # duplicates of one source dropped


def test_apply_masks_collapses_each_masked_word_to_one_mask_token(ernie_vocab):
    from tinydistill.distill.augment import apply_masks
    from tinydistill.tasks.base import Encoded
    from tinydistill.tasks.tokenization import ErnieWordPieceTokenizer
    tok = ErnieWordPieceTokenizer(ernie_vocab)
    text = "我想听周杰伦的七里香"
    enc = tok.encode(text)
    encoded = Encoded(list(enc.ids), list(enc.token_type_ids), list(enc.offsets), {"slot": list(range(len(enc.ids)))})
    ex = Example(text, meta={"mask_spans": [(3, 6), (7, 10)]})
    out = apply_masks(encoded, ex, tok)
    assert len(out.input_ids) == len(encoded.input_ids) - 4           # 2 words of 3 chars -> 1 token each
    assert out.input_ids.count(tok.mask_token_id) == 2
    assert out.input_ids[0] == encoded.input_ids[0] and out.input_ids[-1] == encoded.input_ids[-1]  # CLS/SEP
    assert len(out.labels["slot"]) == len(out.input_ids) == len(out.offsets)
    assert apply_masks(encoded, Example(text), tok) is encoded


def test_config_is_strict():
    cfg = DistillConfig.from_dict({"losses": [{"type": "kl", "temperature": 2}], "augment": {"n_iter": 3}})
    assert cfg.losses[0].temperature == 2.0 and cfg.augment.n_iter == 3
    with pytest.raises(ConfigError, match=r"distill.losses\[0\].temprature: unknown key; did you mean 'temperature'"):
        DistillConfig.from_dict({"losses": [{"type": "soft_ce", "temprature": 2}]})
    with pytest.raises(ConfigError, match=r"distill.losses\[0\].type: unknown loss 'soft_cee'"):
        DistillConfig.from_dict({"losses": [{"type": "soft_cee"}]})
    with pytest.raises(ConfigError, match="p_mask"):
        DistillConfig.from_dict({"augment": {"p_mask": 1.5}})
