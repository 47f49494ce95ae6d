"""Model zoo: every registered teacher/student builds through its real builder, obeys the output contract,
saves and reloads identically, loads paddlenlp checkpoints, and fails clearly where it must."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinydistill.distill.schema import ConfigError  # importing distill first pins the legacy program format

import paddle  # noqa: E402  isort: skip
from tinydistill.students import STUDENTS
from tinydistill.tasks.base import HeadSpec
from tinydistill.teachers import TEACHERS
from tinydistill.teachers.base import ModelLoadError, build_model, count_parameters, load_model_dir, read_manifest, \
    save_model_dir
from tinydistill.teachers.ernie import ARCHS, param_count

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 500
SLU = [HeadSpec("intent", "sequence", tuple(f"intent{i}" for i in range(11))),
       HeadSpec("slot", "token", tuple(f"tag{i}" for i in range(32)))]
SENTIMENT = [HeadSpec("label", "sequence", ("0", "1"))]
TINY = {  # architecture overrides that keep every registered name cheap to build
    "ernie": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128),
    "bilstm": dict(embedding_size=32, hidden_size=16, mlp_size=24),
    "textcnn": dict(embedding_size=32, num_filters=8, kernel_sizes=[1, 2, 3], mlp_size=24),
}
ALL = [("teacher", n) for n in TEACHERS.names()] + [("student", n) for n in STUDENTS.names()]


def tiny(name: str) -> dict:
    return TINY.get(name, TINY["ernie"])


def batch(seed: int = 0, lengths=(9, 6, 3)):
    rng = np.random.RandomState(seed)
    length = max(lengths)
    ids = np.zeros((len(lengths), length), "int64")
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.randint(1, VOCAB, n)
        mask[i, :n] = 1
    return paddle.to_tensor(ids), paddle.zeros_like(paddle.to_tensor(ids)), paddle.to_tensor(mask)


def logits_np(model, inputs) -> dict:
    out = model(*inputs)["logits"]
    return {k: v.numpy() for k, v in out.items()}


# -- registries ------------------------------------------------------------------------------------
def test_registries_hold_the_whole_family():
    sizes = ("base", "medium", "mini", "micro", "nano", "pico")
    expected = {f"ernie-3.0-tiny-{s}-v2-zh" for s in sizes} | {f"ernie-3.0-tiny-{s}-v1-zh" for s in sizes[:-1]}
    # the Bi-LSTM and TextCNN can teach too (ensemble members, a student's own ensemble)
    assert set(TEACHERS.names()) == expected | {"ernie-gram-zh", "bilstm", "textcnn"}
    assert {"bilstm", "textcnn", "ernie-3.0-tiny-nano-v2-zh", "ernie-3.0-tiny-pico-v2-zh"} <= set(STUDENTS.names())
    assert "ernie-3.0-tiny-base-v2-zh" not in STUDENTS.names()


def test_arch_table_equals_paddlenlp_configs():
    from paddlenlp.transformers import ErnieConfig, ErnieGramConfig

    for name, arch in ARCHS.items():
        cls = ErnieGramConfig if name.startswith("ernie-gram") else ErnieConfig
        config = cls.from_pretrained(name)
        assert {k: getattr(config, k) for k in arch} == arch, name


@pytest.mark.parametrize("name,overrides", [
    ("ernie-3.0-tiny-pico-v2-zh", {}),
    ("ernie-3.0-tiny-nano-v1-zh", dict(num_hidden_layers=1)),  # task-type embedding counted
    ("ernie-gram-zh", TINY["ernie"]),
    ("ernie-3.0-tiny-mini-v2-zh", dict(TINY["ernie"], num_attention_heads_per_layer=[1, 2],
                                       intermediate_size_per_layer=[40, 128])),  # width-pruned shapes
])
def test_param_count_arithmetic_matches_a_built_model(name, overrides):
    model = build_model("teacher", name, SENTIMENT, **overrides)
    assert param_count({**ARCHS[name], **model.model_config}) == count_parameters(model.backbone)


def test_nano_and_pico_sizes_as_paddlenlp_gives():
    assert round(param_count(ARCHS["ernie-3.0-tiny-nano-v2-zh"]) / 1e6, 1) == 17.9
    assert round(param_count(ARCHS["ernie-3.0-tiny-pico-v2-zh"]) / 1e6, 1) == 6.0


@pytest.mark.parametrize("name", ["bilstm", "textcnn"])
def test_student_param_count_arithmetic(name):
    spec = __import__(f"tinydistill.students.{name}", fromlist=["x"])
    model = build_model("student", name, SENTIMENT, vocab_size=VOCAB, **TINY[name])
    body = sum(int(p.numel()) for k, p in model.named_parameters() if not k.startswith("task_heads."))
    assert spec.count(model.model_config) == body


def test_list_verbose_shows_counts_without_importing_paddle():
    code = ("import sys; from tinydistill.experiments.cli import main; main(['list', 'teachers', '-v']); "
            "main(['list', 'students', '-v']); assert 'paddle' not in sys.modules, 'paddle imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert set(TEACHERS.names()) | set(STUDENTS.names()) <= set(lines)
    assert "17.9 M params" in lines["ernie-3.0-tiny-nano-v2-zh"]
    assert "6.0 M params" in lines["ernie-3.0-tiny-pico-v2-zh"]
    assert "per vocab entry" in lines["bilstm"]


# -- the output contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("heads", [SLU, SENTIMENT], ids=["slu", "sentiment"])
@pytest.mark.parametrize("kind,name", ALL)
def test_every_model_forward_backward_contract(kind, name, heads):
    paddle.seed(0)
    if name == "textcnn" and any(h.kind == "token" for h in heads):
        with pytest.raises(ConfigError, match="sequence heads only"):
            build_model(kind, name, heads, vocab_size=VOCAB, **tiny(name))
        return
    model = build_model(kind, name, heads, vocab_size=VOCAB, **tiny(name))
    assert (model.arch, model.kind, model.heads) == (name, kind, heads)
    json.dumps(model.model_config)  # JSON-able
    model.train()
    ids, types, mask = batch()
    b, length = ids.shape
    out = model(ids, types, mask, output_hidden_states=True, output_attentions=True)
    for h in heads:
        want = [b, h.num_labels] if h.kind == "sequence" else [b, length, h.num_labels]
        assert out["logits"][h.name].shape == want, h.name
    hidden, att = out["hidden_states"], out["attentions"]
    assert len(hidden) == model.num_layers + 1
    assert all(x.shape[:2] == [b, length] for x in hidden) and hidden[-1].shape[2] == model.hidden_size
    if model.num_attention_heads:
        assert len(att) == model.num_layers
        for a in att:
            assert a.shape == [b, model.num_attention_heads, length, length]
            probs = a.numpy()
            np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
            assert (probs >= 0).all() and probs[2, :, :, 3:].max() < 1e-6  # padded keys get no attention
    else:
        assert att == []
    plain = model(ids, types, mask)
    assert plain["hidden_states"] == [] and plain["attentions"] == []

    loss = 0.0
    for h in heads:
        logits = out["logits"][h.name]
        labels = paddle.zeros(logits.shape[:-1], dtype="int64")
        loss = loss + paddle.nn.functional.cross_entropy(logits.reshape([-1, h.num_labels]), labels.reshape([-1]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if not p.stop_gradient]
    assert all(g is not None for g in grads[:1] + grads[-2:])
    assert float(paddle.abs(grads[0]).sum()) > 0  # reaches the embedding


@pytest.mark.parametrize("name,options", [
    ("ernie-3.0-tiny-nano-v2-zh", {}),
    ("bilstm", dict(pooling="max")), ("bilstm", dict(pooling="mean")), ("bilstm", dict(pooling="last")),
    ("textcnn", {}),
])
def test_padding_does_not_change_outputs(name, options):
    heads = SENTIMENT if name == "textcnn" else SLU
    model = build_model("student", name, heads, vocab_size=VOCAB, **{**tiny(name), **options})
    model.eval()
    short = batch(5, lengths=(6, 4))
    ids, types, mask = (paddle.concat([t, paddle.zeros([2, 5], "int64")], axis=1) for t in short)
    a, b = logits_np(model, short), logits_np(model, (ids, types, mask))
    np.testing.assert_allclose(a[heads[0].name], b[heads[0].name], atol=1e-5)
    if len(heads) > 1:  # token logits of the real tokens
        np.testing.assert_allclose(a["slot"][0], b["slot"][0, :6], atol=1e-5)
        np.testing.assert_allclose(a["slot"][1, :4], b["slot"][1, :4], atol=1e-5)


def test_attention_probabilities_ignore_attention_dropout():
    model = build_model("student", "ernie-3.0-tiny-pico-v2-zh", SENTIMENT, vocab_size=VOCAB,
                        attention_probs_dropout_prob=0.5, **TINY["ernie"])
    model.train()
    att = model(*batch(), output_attentions=True)["attentions"]
    np.testing.assert_allclose(att[0].numpy().sum(-1), 1.0, rtol=1e-5)


def test_encoder_equals_paddlenlp_encoder():
    model = build_model("teacher", "ernie-3.0-tiny-base-v1-zh", SLU, vocab_size=VOCAB, **TINY["ernie"])
    model.eval()
    ids, types, mask = batch(1)
    ours = model(ids, types, mask, output_hidden_states=True)["hidden_states"]
    seq, _, hidden = model.backbone(ids, types, attention_mask=mask, output_hidden_states=True)[:3]
    for a, b in zip(ours, hidden):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_width_pruned_layers_run():
    model = build_model("student", "ernie-3.0-tiny-nano-v2-zh", SLU, vocab_size=VOCAB,
                        **dict(TINY["ernie"], num_attention_heads_per_layer=[1, 2],
                               intermediate_size_per_layer=[40, 128]))
    out = model(*batch(), output_attentions=True)
    assert [a.shape[1] for a in out["attentions"]] == [1, 2]


def test_export_forward_is_static_graph_friendly(tmp_path):
    from tinydistill.compress.export import save_program

    for name, heads in (("ernie-3.0-tiny-nano-v2-zh", SLU), ("bilstm", SLU), ("textcnn", SENTIMENT)):
        model = build_model("student", name, heads, vocab_size=VOCAB, **tiny(name))
        model.eval()
        inputs = batch(2)
        want = [v.numpy() for v in model.export_forward(*inputs)]
        path = str(tmp_path / name / "model")
        save_program(model, path)
        loaded = paddle.jit.load(path)
        got = loaded(*inputs)
        got = [got] if isinstance(got, paddle.Tensor) else list(got)
        assert len(got) == len(heads)
        for a, b in zip(want, got):
            np.testing.assert_allclose(a, b.numpy(), atol=1e-5)


# -- model directories -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ernie-3.0-tiny-nano-v2-zh", "ernie-gram-zh", "bilstm", "textcnn"])
def test_save_reload_identical_logits(tmp_path, name, ernie_vocab):
    from tinydistill.tasks.tokenization import CharTokenizer, ErnieWordPieceTokenizer, JiebaWordTokenizer

    texts = ["导航去北京西站", "播放刘德华的歌", "打开空调", "北京今天天气怎么样"]
    tok = {"bilstm": lambda: JiebaWordTokenizer.build(texts), "textcnn": lambda: CharTokenizer.build(texts)}.get(
        name, lambda: ErnieWordPieceTokenizer(ernie_vocab))()
    heads = SENTIMENT if name == "textcnn" else SLU
    model = build_model("student" if name in STUDENTS else "teacher", name, heads, vocab_size=tok.vocab_size,
                        **tiny(name))
    model.eval()
    enc = tok.encode("导航去北京西站", max_length=16)
    inputs = [paddle.to_tensor([enc.ids]), paddle.to_tensor([enc.token_type_ids]),
              paddle.ones([1, len(enc.ids)], dtype="int64")]
    want = logits_np(model, inputs)
    out = save_model_dir(tmp_path / "m", model, tok, extra={"note": "test"})
    assert {"manifest.json", "model_state.pdparams"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    manifest = read_manifest(out)
    assert manifest["tinydistill"] == 1 and manifest["format"] == "dygraph" and manifest["arch"] == name
    assert manifest["heads"] == [h.to_dict() for h in heads] and manifest["extra"] == {"note": "test"}
    assert manifest["task"] is None and manifest["tokenizer"]["type"] == tok.kind
    loaded, tok2, _ = load_model_dir(out)
    assert tok2.encode("导航去北京西站").ids == tok.encode("导航去北京西站").ids
    got = logits_np(loaded, inputs)
    for k in want:
        np.testing.assert_array_equal(want[k], got[k])
    # the same directory as `init` of a fresh build: identical when the heads match
    again = build_model(model.kind, name, heads, init=str(out))
    again.eval()
    for k, v in logits_np(again, inputs).items():
        np.testing.assert_array_equal(want[k], v)


def test_save_with_task_and_without_tokenizer(tmp_path, data_dir):
    from tinydistill.tasks import build_task

    task = build_task("nlpcc2018_slu", data_dir=str(data_dir), max_seq_length=16)
    model = build_model("student", "ernie-3.0-tiny-pico-v2-zh", task.heads(), vocab_size=VOCAB, **TINY["ernie"])
    save_model_dir(tmp_path / "m", model, None, task=task)
    manifest = read_manifest(tmp_path / "m")
    assert manifest["task"]["name"] == "nlpcc2018_slu" and manifest["task"]["options"]["max_seq_length"] == 16
    assert manifest["max_seq_length"] == 16 and manifest["tokenizer"] is None
    assert [len(h["labels"]) for h in manifest["heads"]] == [11, 32]
    loaded, tok, _ = load_model_dir(tmp_path / "m")
    assert tok is None and loaded.heads == task.heads()
    # overwriting an existing directory is atomic too and leaves no temporaries
    save_model_dir(tmp_path / "m", model, None, task=task)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_init_from_model_dir_with_other_heads_keeps_encoder(tmp_path):
    model = build_model("student", "ernie-3.0-tiny-nano-v2-zh", SLU, vocab_size=VOCAB, **TINY["ernie"])
    save_model_dir(tmp_path / "m", model)
    other = build_model("student", "ernie-3.0-tiny-nano-v2-zh", SENTIMENT, init=str(tmp_path / "m"))
    model.eval(), other.eval()
    inputs = batch(3)
    a = model(*inputs, output_hidden_states=True)["hidden_states"][-1].numpy()
    b = other(*inputs, output_hidden_states=True)["hidden_states"][-1].numpy()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ModelLoadError, match="cannot initialise"):
        build_model("student", "bilstm", SLU, init=str(tmp_path / "m"))
    with pytest.raises(ModelLoadError, match="tokenizer has 600 tokens"):
        build_model("student", "ernie-3.0-tiny-nano-v2-zh", SLU, init=str(tmp_path / "m"), vocab_size=600)


def test_corrupt_weights_give_model_load_error(tmp_path):
    model = build_model("student", "bilstm", SENTIMENT, vocab_size=VOCAB, **TINY["bilstm"])
    save_model_dir(tmp_path / "m", model)
    manifest = read_manifest(tmp_path / "m")
    manifest["model_config"]["hidden_size"] = 20
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="shape mismatch"):
        load_model_dir(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        load_model_dir(tmp_path)


# -- paddlenlp checkpoints and pretrained weights -------------------------------------------------
@pytest.mark.parametrize("name,cls_name", [
    ("ernie-3.0-tiny-nano-v2-zh", "ErnieModel"),
    ("ernie-3.0-tiny-micro-v1-zh", "ErnieForSequenceClassification"),  # "ernie." prefix + its own head
    ("ernie-gram-zh", "ErnieGramModel"),
])
def test_paddlenlp_save_pretrained_dir_loads(tmp_path, name, cls_name):
    import paddlenlp.transformers as pt

    config_cls = pt.ErnieGramConfig if "gram" in name else pt.ErnieConfig
    config = config_cls.from_pretrained(name)
    for k, v in dict(TINY["ernie"], vocab_size=VOCAB).items():
        setattr(config, k, v)
    if "gram" in name:
        config.embedding_size = config.hidden_size
    paddle.seed(7)
    ref = getattr(pt, cls_name)(config)
    ref.eval()
    ref.save_pretrained(str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "model_state.pdparams").is_file()
    model = build_model("teacher", name, SLU, init=str(tmp_path / "ckpt"), vocab_size=VOCAB - 20)
    model.eval()
    assert model.model_config["num_hidden_layers"] == 2 and model.model_config["vocab_size"] == VOCAB
    inputs = batch(4)
    base = getattr(ref, "ernie", ref)
    seq, pooled = base(inputs[0], inputs[1], attention_mask=inputs[2])[:2]
    ours = model(*inputs, output_hidden_states=True)["hidden_states"][-1]
    np.testing.assert_allclose(ours.numpy(), seq.numpy(), atol=1e-5)
    np.testing.assert_allclose(model.backbone.pooler(ours).numpy(), pooled.numpy(), atol=1e-5)
    if "gram" in name:
        with pytest.raises(ModelLoadError, match="does not match"):
            build_model("teacher", "ernie-3.0-tiny-nano-v2-zh", SLU, init=str(tmp_path / "ckpt"))


def test_init_errors_are_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="neither 'scratch', 'pretrained' nor an existing directory"):
        build_model("student", "ernie-3.0-tiny-nano-v2-zh", SLU, init=str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="config.json"):
        build_model("student", "ernie-3.0-tiny-nano-v2-zh", SLU, init=str(tmp_path))
    with pytest.raises(ModelLoadError, match="no pretrained weights"):
        build_model("student", "bilstm", SLU, init="pretrained", vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="did you mean 'hidden_size'"):
        build_model("student", "ernie-3.0-tiny-nano-v2-zh", SLU, hiden_size=64)
    with pytest.raises(ConfigError, match="did you mean 'pooling'"):
        build_model("student", "bilstm", SLU, vocab_size=VOCAB, pooing="max")
    with pytest.raises(ConfigError, match="needs vocab_size"):
        build_model("student", "bilstm", SLU)


def test_pretrained_offline_clear_error_and_no_lock_files(tmp_path):
    home = tmp_path / "ppnlp"
    code = (
        "import os, sys\n"
        "from paddlenlp.utils.env import MODEL_HOME\n"
        "before = sorted(os.path.relpath(os.path.join(d, f), MODEL_HOME) for d, ds, fs in os.walk(MODEL_HOME) "
        "for f in ds + fs)\n"
        "from tinydistill.teachers.base import build_model, ModelLoadError\n"
        "from tinydistill.tasks.base import HeadSpec\n"
        "try:\n"
        "    build_model('student', 'ernie-3.0-tiny-pico-v2-zh', [HeadSpec('label', 'sequence', ('0', '1'))],"
        " init='pretrained')\n"
        "except ModelLoadError as exc:\n"
        "    print('ERROR', exc)\n"
        "after = sorted(os.path.relpath(os.path.join(d, f), MODEL_HOME) for d, ds, fs in os.walk(MODEL_HOME) "
        "for f in ds + fs)\n"
        "print('BEFORE', before)\nprint('AFTER', after)\n"
    )
    env = dict(os.environ, PPNLP_HOME=str(home))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.stdout.splitlines() if " " in line}
    if "ERROR" not in lines:
        pytest.skip("a network is available here: the pretrained weights downloaded")
    message = lines["ERROR"]
    assert "cannot be fetched" in message and "init: scratch" in message and "local directory" in message
    assert "\n" not in message.strip()
    assert lines["BEFORE"] == lines["AFTER"]
    assert not list(home.rglob("*.lock"))


def test_bilstm_equals_paddle_bidirectional_lstm_with_lengths():
    """Our two-LSTM formulation (export-friendly) computes exactly paddle's bidirectional LSTM over each
    row's real tokens (``sequence_length``), padded rows included."""
    model = build_model("student", "bilstm", SLU, vocab_size=VOCAB, **tiny("bilstm"))
    model.eval()
    e, h = model.model_config["embedding_size"], model.model_config["hidden_size"]
    ref = paddle.nn.LSTM(e, h, direction="bidirect")
    fw, bw = model.lstm_fw.state_dict(), model.lstm_bw.state_dict()
    ref.set_state_dict({**{k: fw[k] for k in ref.state_dict() if "reverse" not in k and k in fw},
                        **{k: bw[k.replace("_reverse", "")] for k in ref.state_dict() if "reverse" in k}})
    ids, types, mask = batch(9, lengths=(9, 5))
    out = model(ids, types, mask, output_hidden_states=True)["hidden_states"][-1]
    expected, _ = ref(model.embeddings(ids), sequence_length=paddle.to_tensor([9, 5], dtype="int32"))
    np.testing.assert_allclose(out.numpy()[0], expected.numpy()[0], atol=1e-6)
    np.testing.assert_allclose(out.numpy()[1, :5], expected.numpy()[1, :5], atol=1e-6)
    assert np.abs(out.numpy()[1, 5:]).max() == 0.0  # padding positions are zero, as in paddle's LSTM
