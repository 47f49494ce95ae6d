"""The distillation engine end to end on real data (tiny models, a few hundred lines, few steps)."""
from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from tinydistill.distill.config import DistillConfig  # noqa: E402
from tinydistill.distill.schema import ConfigError  # noqa: E402
from tinydistill.distill.trainer import KILL_ENV, encode_examples, evaluate, predict_logits, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEACHER = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128)
STUDENT = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)


def _setup(data_dir, name, n_train=240, n_dev=80, max_len=48):
    from tinydistill.tasks import build_task
    from tinydistill.tasks.tokenization import ErnieWordPieceTokenizer
    from tinydistill.teachers.base import build_model
    task = build_task(name, data_dir=str(data_dir), max_seq_length=max_len)
    tok = ErnieWordPieceTokenizer(data_dir / "vocab" / "ernie-3.0" / "vocab.txt")
    paddle.seed(1)
    teacher = build_model("teacher", "ernie-3.0-tiny-nano-v2-zh", task.heads(), vocab_size=tok.vocab_size, **TEACHER)
    student = build_model("student", "ernie-3.0-tiny-pico-v2-zh", task.heads(), vocab_size=tok.vocab_size, **STUDENT)
    return task, tok, teacher, student, task.load("train")[:n_train], task.load("dev")[:n_dev]


def tb_tags(tb_dir) -> set[str]:
    """Scalar tags in tensorboardX event files (read with tensorboardX's own protobufs)."""
    from tensorboardX.proto import event_pb2
    tags = set()
    for file in glob.glob(str(Path(tb_dir) / "events*")):
        data, i = Path(file).read_bytes(), 0
        while i < len(data):
            n = struct.unpack("Q", data[i:i + 8])[0]
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            tags.update(v.tag for v in event.summary.value)
            i += 12 + n + 4
    return tags


def test_distil_chnsenticorp_every_loss(data_dir, tmp_path):
    from tinydistill.teachers.base import load_model_dir
    task, tok, teacher, student, tr, dev = _setup(data_dir, "chnsenticorp")
    train(teacher, tok, task, tr, dev, DistillConfig(epochs=1, lr=1e-3, batch_size=32, progress=False),
          tmp_path / "teacher")
    cfg = DistillConfig.from_dict({
        "epochs": 1, "lr": 1e-3, "batch_size": 32, "progress": False, "log_every": 1,
        "cache_dir": str(tmp_path / "cache"),
        "losses": [{"type": "hard_ce", "weight": 0.5}, {"type": "soft_ce", "temperature": 2.0},
                   {"type": "logits_mse"}, {"type": "hidden_mse"}, {"type": "attention_kl"},
                   {"type": "minilm"}]})
    result = train(student, tok, task, tr, dev, cfg, tmp_path / "student", teachers=[(teacher, tok)])
    assert result.global_step == 8 and len(result.history) == 1
    assert set(result.best_metrics) >= {"accuracy"} and 0 <= result.best_metrics["accuracy"] <= 100
    tags = tb_tags(tmp_path / "student" / "tb")
    expected = {"train/loss", "train/lr", "dev/accuracy"} | {f"train/loss/{t}" for t in (
        "hard_ce/label", "soft_ce/label", "logits_mse/label", "hidden_mse", "attention_kl",
        "minilm/attention", "minilm/value")}
    assert expected <= tags, expected - tags
    history = json.loads((tmp_path / "student" / "history.json").read_text())
    assert history["main_metric"] == "accuracy" and history["evals"][0]["step"] == 8
    # the best checkpoint (= the final state: one evaluation) reloads with identical logits
    loaded, loaded_tok, manifest = load_model_dir(result.best_dir)
    assert manifest["extra"]["dev_metrics"] == result.best_metrics
    opt = paddle.load(str(tmp_path / "student" / "checkpoint" / "optimizer.pdopt"))
    moments = [k for k in opt if k.startswith("loss3.p") and "moment1" in k]   # hidden_mse projections
    assert len(moments) == 4 and all(float(opt[k].abs().sum()) > 0 for k in moments)   # 2 pairs; trained
    for model in (student, teacher):                      # the MiniLM value hooks are gone again
        assert not any(m._forward_post_hooks for m in model.sublayers() if isinstance(m, paddle.nn.Linear))
    saved = paddle.load(str(result.best_dir / "model_state.pdparams"))
    assert set(saved) == set(student.state_dict())        # the learned KD projections are not saved
    enc = encode_examples(task, dev, tok)
    a = predict_logits(student, task, enc, tok.pad_token_id)
    b = predict_logits(loaded, task, encode_examples(task, dev, loaded_tok), loaded_tok.pad_token_id)
    assert all(np.array_equal(x["label"], y["label"]) for x, y in zip(a, b))
    assert evaluate(loaded, loaded_tok, task, dev) == result.best_metrics


def test_distil_slu_with_cache_augmentation_and_two_teachers(data_dir, tmp_path):
    from tinydistill.teachers.base import build_model
    task, tok, teacher, student, tr, dev = _setup(data_dir, "nlpcc2018_slu", n_train=160, n_dev=60, max_len=24)
    teacher2 = build_model("teacher", "ernie-3.0-tiny-nano-v2-zh", task.heads(), vocab_size=tok.vocab_size, **TEACHER)
    teachers = [(teacher, tok), (teacher2, tok)]
    cfg = {"epochs": 1, "lr": 1e-3, "batch_size": 32, "progress": False, "log_every": 1,
           "cache_dir": str(tmp_path / "cache"), "mixing": {"mode": "confidence"},
           "augment": {"p_mask": 0.2, "p_pos": 0.2, "p_ng": 0.3, "n_iter": 2},
           "losses": [{"type": "hard_ce"}, {"type": "soft_ce", "temperature": 2.0,
                                            "temperature_schedule": {"type": "linear", "end": 1.0}}]}
    first = train(student, tok, task, tr, dev, DistillConfig.from_dict(cfg), tmp_path / "s1", teachers=teachers)
    n = first.num_train_examples
    assert n > len(tr)                                     # augmented copies were added
    assert first.cache == {"hits": 0, "misses": 2 * n}
    assert {"sentence_accuracy", "intent_accuracy", "slot_f1"} <= set(first.best_metrics)
    tags = tb_tags(tmp_path / "s1" / "tb")
    assert {"train/loss/hard_ce/intent", "train/loss/hard_ce/slot", "train/loss/soft_ce/intent",
            "train/loss/soft_ce/slot", "dev/sentence_accuracy"} <= tags
    # another student of the same sweep reuses every teacher output from disk
    other = build_model("student", "ernie-3.0-tiny-pico-v2-zh", task.heads(), vocab_size=tok.vocab_size, **STUDENT)
    second = train(other, tok, task, tr, dev, DistillConfig.from_dict(cfg), tmp_path / "s2", teachers=teachers)
    assert second.cache == {"hits": 2 * n, "misses": 0}


def test_bilstm_student_with_its_own_tokenizer(data_dir, tmp_path):
    """Tang et al.: ERNIE teacher -> jieba-word Bi-LSTM, MSE on logits, masking + POS + n-gram augmentation."""
    from tinydistill.tasks.tokenization import JiebaWordTokenizer
    from tinydistill.teachers.base import build_model, load_model_dir
    task, tok, teacher, _, tr, dev = _setup(data_dir, "chnsenticorp", n_train=160, n_dev=60)
    word_tok = JiebaWordTokenizer.build([e.text for e in tr], min_freq=1)
    bilstm = build_model("student", "bilstm", task.heads(), vocab_size=word_tok.vocab_size,
                         embedding_size=32, hidden_size=32, mlp_size=32)
    cfg = DistillConfig.from_dict({"epochs": 1, "lr": 2e-3, "batch_size": 32, "progress": False,
                                   "cache_dir": str(tmp_path / "cache"),
                                   "augment": {"n_iter": 2}, "losses": [{"type": "logits_mse"}]})
    result = train(bilstm, word_tok, task, tr, dev, cfg, tmp_path / "bilstm", teachers=[(teacher, tok)])
    assert result.cache["misses"] == result.num_train_examples > len(tr)
    loaded, loaded_tok, _ = load_model_dir(result.best_dir)
    assert evaluate(loaded, loaded_tok, task, dev) == result.best_metrics
    # token-level / hidden-state losses need the same tokenisation on both sides
    slu = pytest.importorskip("tinydistill.tasks").build_task("nlpcc2018_slu", data_dir=str(data_dir), max_seq_length=24)
    slu_student = build_model("student", "bilstm", slu.heads(), vocab_size=word_tok.vocab_size,
                              embedding_size=16, hidden_size=16, mlp_size=16)
    slu_teacher = build_model("teacher", "ernie-3.0-tiny-nano-v2-zh", slu.heads(), vocab_size=tok.vocab_size, **TEACHER)
    with pytest.raises(ConfigError, match=r"losses\[0\].*token head\(s\) slot.*heads: \[intent\]"):
        train(slu_student, word_tok, slu, slu.load("train")[:8], slu.load("dev")[:8],
              DistillConfig.from_dict({"losses": [{"type": "soft_ce"}], "progress": False}),
              tmp_path / "slu", teachers=[(slu_teacher, tok)])


def test_fine_tuning_baseline_early_stopping(data_dir, tmp_path):
    task, tok, _, student, tr, dev = _setup(data_dir, "chnsenticorp", n_train=128, n_dev=40)
    cfg = DistillConfig(epochs=10, lr=0.0, warmup_ratio=0.0, batch_size=32, eval_every=2,
                        early_stopping_patience=2, progress=False)
    result = train(student, tok, task, tr, dev, cfg, tmp_path / "ft")
    # lr 0: the dev metric never improves after the first evaluation -> stop after 1 + patience evals
    assert result.stopped_early and result.global_step == 6 and len(result.history) == 3
    assert result.best_step == 2
    with pytest.raises(ConfigError, match="needs a teacher"):
        train(student, tok, task, tr, dev, DistillConfig.from_dict({"losses": [{"type": "soft_ce"}]}), tmp_path / "x")
    with pytest.raises(ConfigError, match="augment: augmented copies have no gold labels"):
        train(student, tok, task, tr, dev, DistillConfig.from_dict({"augment": {}}), tmp_path / "y")


RESUME_SCRIPT = """
import sys, json
from pathlib import Path
import paddle
sys.path.insert(0, {root!r})
from tests.test_distill_train import _setup
from tinydistill.distill.config import DistillConfig
from tinydistill.distill.trainer import train
task, tok, teacher, student, tr, dev = _setup(Path({data!r}), "chnsenticorp", n_train=96, n_dev=40)
cfg = DistillConfig.from_dict({{"epochs": 2, "lr": 1e-3, "batch_size": 16, "eval_every": 4, "progress": False,
                               "threads": 1, "length_bucketing": True, "bucket_window": 2,
                               "losses": [{{"type": "hard_ce"}}, {{"type": "soft_ce", "temperature": 2.0}},
                                          {{"type": "hidden_mse"}}]}})
res = train(student, tok, task, tr, dev, cfg, sys.argv[1], teachers=[(teacher, tok)], resume=sys.argv[2] == "1")
print(json.dumps({{"best": res.best_metrics, "step": res.global_step}}))
"""


def test_resume_after_kill_matches_uninterrupted_run(data_dir, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(root=str(ROOT), data=str(data_dir)))
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}

    def run(out, resume, kill=None):
        e = dict(env, **({KILL_ENV: str(kill)} if kill else {}))
        return subprocess.run([sys.executable, str(script), str(tmp_path / out), resume], env=e,
                              capture_output=True, text=True, timeout=300)

    full = run("full", "0")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = run("killed", "0", kill=7)                    # checkpoint at step 4, killed at step 7
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = json.loads((tmp_path / "killed" / "checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["batch_in_epoch"] == 4
    resumed = run("killed", "1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = json.loads(full.stdout.strip().splitlines()[-1]), json.loads(resumed.stdout.strip().splitlines()[-1])
    assert a == b and a["step"] == 12
    ha = json.loads((tmp_path / "full" / "history.json").read_text())
    hb = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert ha == hb and [e["step"] for e in ha["evals"]] == [4, 8, 12]
    wa = paddle.load(str(tmp_path / "full" / "checkpoint" / "student.pdparams"))
    wb = paddle.load(str(tmp_path / "killed" / "checkpoint" / "student.pdparams"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    pa = paddle.load(str(tmp_path / "full" / "checkpoint" / "losses.pdparams"))["2"]
    pb = paddle.load(str(tmp_path / "killed" / "checkpoint" / "losses.pdparams"))["2"]
    assert pa and all(np.array_equal(pa[k].numpy(), pb[k].numpy()) for k in pa)   # learned projections too


DP_SCRIPT = """
import sys, json, hashlib
from pathlib import Path
sys.path.insert(0, {root!r})
import paddle.distributed as dist
from tests.test_distill_train import _setup
from tinydistill.distill.config import DistillConfig
from tinydistill.distill.trainer import train
task, tok, teacher, student, tr, dev = _setup(Path({data!r}), "chnsenticorp", n_train=128, n_dev=40)
cfg = DistillConfig.from_dict({{"epochs": 2, "lr": 1e-3, "batch_size": 16, "progress": False,
                               "cache_dir": sys.argv[1] + "/cache",
                               "losses": [{{"type": "hard_ce"}}, {{"type": "soft_ce"}}, {{"type": "hidden_mse"}}]}})
res = train(student, tok, task, tr, dev, cfg, sys.argv[1] + "/out", teachers=[(teacher, tok)])
h = hashlib.sha1(b"".join(v.numpy().tobytes() for _, v in sorted(student.state_dict().items()))).hexdigest()
print("RESULT", json.dumps({{"rank": dist.get_rank(), "steps": res.global_step, "weights": h}}), flush=True)
"""


def test_data_parallel_two_cpu_processes(data_dir, tmp_path):
    """``python -m paddle.distributed.launch --nproc_per_node 2`` on CPU (gloo): every rank takes half of
    each global batch, gradients are averaged, the replicas stay identical and only rank 0 writes."""
    script = tmp_path / "dp.py"
    script.write_text(DP_SCRIPT.format(root=str(ROOT), data=str(data_dir)))
    proc = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                           "--log_dir", str(tmp_path / "log"), str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    logs = "".join(p.read_text() for p in sorted((tmp_path / "log").glob("workerlog.*")))
    assert proc.returncode == 0, (proc.stdout + proc.stderr + logs)[-3000:]
    results = {r["rank"]: r for r in (json.loads(line.split("RESULT ", 1)[1]) for line in logs.splitlines()
                                      if line.startswith("RESULT "))}
    assert set(results) == {0, 1}
    assert results[0]["steps"] == results[1]["steps"] == 8          # 128 examples / (16 x 2 ranks) x 2 epochs
    assert results[0]["weights"] == results[1]["weights"]           # replicas in sync
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [e["step"] for e in history["evals"]] == [4, 8]
