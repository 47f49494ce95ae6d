"""Intermediate features as data: TextBrewer-style matches by layer index or module path, captured by forward
hooks (torchdistill style) on models that are not ours."""
from __future__ import annotations

import numpy as np
import pytest

from tinydistill.distill.config import loss_config
from tinydistill.distill.schema import ConfigError
from tinydistill.tasks.base import HeadSpec

paddle = pytest.importorskip("paddle")
nn = paddle.nn

HEAD = HeadSpec("label", "sequence", ("0", "1"))


class TinyMLP(nn.Layer):
    """A user's model: embeddings + a 2-layer MLP; returns logits only (no hidden states, no attentions)."""

    def __init__(self, vocab=30, width=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.body = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
        self.head = nn.Linear(width, 2)

    def forward(self, input_ids, **kwargs):
        return {"logits": {"label": self.head(self.body(self.embed(input_ids)).mean(axis=1))}}


class TinyGRU(nn.Layer):
    def __init__(self, vocab=30, width=6):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.rnn = nn.GRU(width, width)
        self.head = nn.Linear(width, 2)

    def forward(self, input_ids, **kwargs):
        out, _ = self.rnn(self.embed(input_ids))
        return {"logits": {"label": self.head(out[:, 0])}}


def _setup(student, teacher, hooks):
    from tinydistill.distill.hooks import FeatureCapture
    from tinydistill.distill.losses import LossSetup
    caps = [FeatureCapture(student, "student", hooks), FeatureCapture(teacher, "teacher", hooks)]
    ids = paddle.to_tensor(np.random.RandomState(0).randint(1, 30, (4, 5)).astype("int64"))

    def probe(k, hidden):
        model, cap = (student, caps[0]) if k is None else (teacher, caps[1])
        cap.clear()
        with paddle.no_grad():
            model(ids)
        return {"features": cap.take()}

    return LossSetup([HEAD], student, [teacher], student_features=caps[0], teacher_features=caps[1:], probe=probe), \
        caps, ids


def _inputs(student, teacher, caps, ids):
    from tinydistill.distill.losses import LossInputs
    caps[1].clear()
    with paddle.no_grad():
        t_out = teacher(ids)
    caps[0].clear()
    s_out = student(ids)
    mask = paddle.ones(ids.shape, dtype="float32")
    return LossInputs(student=s_out, labels={}, attention_mask=mask, token_mask=mask, teachers=[t_out],
                      features=caps[0].take(), teacher_features=[caps[1].take()])


def test_user_models_matched_by_module_path_learn_through_the_hook():
    from tinydistill.distill.losses import build_losses
    paddle.seed(0)
    student, teacher, hooks = TinyGRU(), TinyMLP(), []
    setup, caps, ids = _setup(student, teacher, hooks)
    cfg = loss_config("intermediate", matches=[{"teacher": "body.2", "student": "rnn"},
                                               {"teacher": "embed", "student": "embed", "weight": 0.5}])
    loss, = build_losses([cfg], setup)
    assert loss.needs == {"features"} and [len(h) for h in (caps[0].paths, caps[1].paths)] == [2, 2]
    # widths 6 -> 8 on both matches: a learned projection each, sized by the probe forward
    assert sorted(loss.projections.keys()) == ["m0", "m1"]
    assert tuple(loss.projections["m0"].weight.shape) == (6, 8)
    opt = paddle.optimizer.Adam(learning_rate=0.05, parameters=student.parameters() + loss.parameters())
    values = []
    for step in range(40):
        value = loss(_inputs(student, teacher, caps, ids))["intermediate"]
        value.backward()
        if step == 0:   # gradient reaches the student's hooked GRU through the hook's output
            grads = [p.grad for p in student.rnn.parameters()]
            assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
            assert student.head.weight.grad is None     # the head is not on the matched path
            assert all(p.grad is None for p in teacher.parameters())
        opt.step()
        opt.clear_grad()
        values.append(float(value))
    assert values[-1] < 0.3 * values[0], values
    for h in hooks:
        h.remove()


def test_a_wrong_module_path_is_one_line_naming_the_path_and_nearby_names():
    from tinydistill.distill.losses import build_losses
    student, teacher = TinyGRU(), TinyMLP()
    setup, _, _ = _setup(student, teacher, [])
    with pytest.raises(ConfigError) as err:
        build_losses([loss_config("intermediate", matches=[{"teacher": "body.2", "student": "rnm"}])], setup)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("distill.losses[0].matches[0].student: the student 'TinyGRU' has no sublayer 'rnm'; "
                              "nearby: rnn")
    with pytest.raises(ConfigError, match=r"matches\[0\].teacher: the teacher 'TinyMLP' has no sublayer 'body.7'; "
                                          r"nearby: body, body.0, body.1, body.2$"):
        build_losses([loss_config("intermediate", matches=[{"teacher": "body.7", "student": "rnn"}])], setup)
    # an index needs the output contract's layers; a user's model has none to index
    with pytest.raises(ConfigError, match=r"matches\[0\].student: model 'TinyGRU' has no layers to index"):
        build_losses([loss_config("intermediate", matches=[{"teacher": "body.2", "student": 1}])], setup)
    with pytest.raises(ConfigError, match=r"matches\[0\].projection: widths differ \(student 6, teacher 8\)"):
        build_losses([loss_config("intermediate", matches=[{"teacher": "body.2", "student": "rnn",
                                                            "projection": False}])], setup)
    with pytest.raises(ConfigError, match=r"matches\[0\].loss: 'value_relation' is not a comparison of intermediate"):
        build_losses([loss_config("intermediate", matches=[{"teacher": "body.2", "student": "rnn",
                                                            "loss": "value_relation"}])], setup)


def test_layer_map_is_the_default_list_of_matches():
    from types import SimpleNamespace

    from tinydistill.distill.losses import build_losses
    from tinydistill.distill.losses import LossSetup

    def fake(layers, width, heads=2):
        return SimpleNamespace(num_layers=layers, hidden_size=width, num_attention_heads=heads, arch="fake")

    setup = LossSetup([HEAD], fake(2, 4), [fake(4, 4)])
    default, listed, mapped = build_losses([
        loss_config("hidden_mse"),
        loss_config("hidden_mse", matches=[{"teacher": 0, "student": 0}, {"teacher": 2, "student": 1},
                                           {"teacher": 4, "student": 2}]),
        loss_config("hidden_mse", layer_map={0: 0, 2: 1, 4: 2})], setup)
    assert default.map == listed.map == mapped.map == {0: 0, 2: 1, 4: 2}
    h = [paddle.to_tensor(np.random.RandomState(i).randn(2, 3, 4).astype("float32")) for i in range(5)]
    from tinydistill.distill.losses import LossInputs
    inputs = LossInputs(student={"hidden_states": h[:3]}, labels={}, attention_mask=paddle.ones([2, 3]),
                        token_mask=paddle.ones([2, 3]), teachers=[{"hidden_states": h}])
    assert float(default(inputs)["hidden_mse"]) == pytest.approx(float(listed(inputs)["hidden_mse"]))
    # match weights: a weighted mean of the matches' terms; one loss mixing comparisons logs each
    mixed, = build_losses([loss_config("intermediate", matches=[
        {"teacher": 2, "student": 1, "weight": 3.0}, {"teacher": 4, "student": 2, "weight": 1.0},
        {"teacher": 4, "student": 2, "loss": "attention_kl"}])], setup)
    from tinydistill.distill.losses import hidden_mse
    att = paddle.nn.functional.softmax(paddle.to_tensor(np.random.RandomState(9).randn(2, 2, 3, 3).astype("float32")))
    inputs.student["attentions"] = [att, att]
    inputs.teachers[0]["attentions"] = [None, None, None, att]
    terms = mixed(inputs)
    expected = (3 * float(hidden_mse(h[1], h[2])) + float(hidden_mse(h[2], h[4]))) / 4
    assert set(terms) == {"intermediate/hidden", "intermediate/attention"}
    assert float(terms["intermediate/hidden"]) == pytest.approx(expected, rel=1e-5)
    assert float(terms["intermediate/attention"]) == pytest.approx(0.0, abs=1e-6)
    assert mixed.needs == {"hidden_states", "attentions"}
    with pytest.raises(ConfigError, match=r"matches\[0\].student: student layer 3 out of range 0..2"):
        build_losses([loss_config("hidden_mse", matches=[{"teacher": 1, "student": 3}])], setup)
    with pytest.raises(ConfigError, match=r"matches\[1\]: the same match is listed twice"):
        build_losses([loss_config("hidden_mse", matches=[{"teacher": 1, "student": 1}] * 2)], setup)


def _engine_models(data_dir):
    from tests.test_distill_train import _setup as real_setup
    return real_setup(data_dir, "chnsenticorp", n_train=48, n_dev=16, max_len=24)


def test_engine_distils_into_a_user_student_by_module_path(data_dir):
    """Our ERNIE teacher teaches a user's GRU student (which has no output contract beyond logits) through
    hooks on both; the hooks are gone after training."""
    from tinydistill.distill.config import DistillConfig
    from tinydistill.distill.engine import Distiller

    task, tok, teacher, _, tr, dev = _engine_models(data_dir)
    paddle.seed(3)
    student = TinyGRU(vocab=tok.vocab_size, width=16)
    before = student.rnn.parameters()[0].numpy().copy()
    def config(teacher_path):
        return DistillConfig.from_dict({"epochs": 1, "max_steps": 3, "batch_size": 16, "threads": 1, "progress": False,
                                        "losses": [{"type": "hard_ce"}, {"type": "intermediate", "matches": [
                                            {"teacher": teacher_path, "student": "rnn"}]}]})

    # our ERNIE runs its encoder layers' parameters itself (teachers/ernie_model.py): a layer's output is
    # its norm2's; the layer itself is never called, which the probe forward finds out
    with pytest.raises(ConfigError, match=r"losses\[1\]: the teacher's sublayer 'backbone.encoder.layers.1' is not "
                                          r"called in its forward"):
        Distiller(student, tok, task, tr, dev, config("backbone.encoder.layers.1"), None,
                  teachers=[(teacher, tok)]).fit()
    cfg = config("backbone.encoder.layers.1.norm2")
    seen = []

    class Record:
        def __getattr__(self, name):
            return lambda engine, *args: seen.append(args[0]) if name == "on_step_end" else None

    engine = Distiller(student, tok, task, tr, dev, cfg, None, teachers=[(teacher, tok)], callbacks=[Record()])
    engine.fit()
    assert len(seen) == 3 and all(float(logs["loss/intermediate"]) > 0 for logs in seen)
    assert [p for p in engine.losses[1].parameters()][0].shape == [16, 64]     # GRU 16 -> ERNIE 64
    assert not np.allclose(student.rnn.parameters()[0].numpy(), before)
    assert engine._hooks == []
    layer = dict(teacher.named_sublayers())["backbone.encoder.layers.1.norm2"]
    assert not layer._forward_post_hooks and not student.rnn._forward_post_hooks


def test_engine_takes_features_from_a_user_teacher_without_logits(data_dir):
    """A user's teacher lends only a feature (its MLP's output); no loss reads its logits."""
    from tinydistill.distill.config import DistillConfig
    from tinydistill.distill.engine import Distiller

    task, tok, _, student, tr, dev = _engine_models(data_dir)

    class FeaturesOnly(TinyMLP):
        def forward(self, input_ids, **kwargs):
            return self.body(self.embed(input_ids))

    teacher = FeaturesOnly(vocab=tok.vocab_size, width=32)
    cfg = DistillConfig.from_dict({"epochs": 1, "max_steps": 2, "batch_size": 16, "threads": 1, "progress": False,
                                   "losses": [{"type": "hard_ce"}, {"type": "intermediate", "weight": 0.1, "matches": [
                                       {"teacher": "body.1", "student": "backbone.encoder.layers.0.norm2"}]}]})
    result = Distiller(student, tok, task, tr, dev, cfg, None, teachers=[(teacher, tok)]).fit()
    assert result.global_step == 2 and result.cache == {}     # online teacher: no logits computed up front
