"""The training engine's parts: length-bucketed batch order, callbacks, in-memory training, threads."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tinydistill.distill.batching import epoch_batches


def _lengths(n=1000, seed=0):
    return np.random.RandomState(seed).randint(3, 64, n).tolist()


def test_bucketed_order_is_deterministic_and_covers_every_example_once():
    lengths = _lengths()
    a = epoch_batches(lengths, 32, seed=7, epoch=3, window=10)
    assert a == epoch_batches(lengths, 32, seed=7, epoch=3, window=10)       # same (seed, epoch): same order
    assert a != epoch_batches(lengths, 32, seed=8, epoch=3, window=10)       # the seed matters
    assert a != epoch_batches(lengths, 32, seed=7, epoch=4, window=10)       # every epoch reshuffles
    flat = [i for b in a for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert len(a) == -(-len(lengths) // 32)


def test_bucketing_cuts_padding_and_keeps_batches_mixed_across_the_set():
    lengths = _lengths()
    arr = np.asarray(lengths)

    def padded(batches):
        return sum(len(b) * int(arr[b].max()) for b in batches) / arr.sum()

    bucketed = epoch_batches(lengths, 32, seed=1, epoch=0, window=10)
    plain = [list(range(i, min(i + 32, len(lengths)))) for i in range(0, len(lengths), 32)]
    assert padded(bucketed) < 1.15 < padded(plain)
    # batch order is shuffled: not sorted by length across the epoch
    maxima = [int(arr[b].max()) for b in bucketed]
    assert maxima != sorted(maxima)


def test_bucketed_order_shards_over_ranks():
    lengths = _lengths(200)
    r0 = epoch_batches(lengths, 16, seed=3, epoch=0, world=2, rank=0)
    r1 = epoch_batches(lengths, 16, seed=3, epoch=0, world=2, rank=1)
    assert len(r0) == len(r1) == 7                          # 13 batches -> 7 per rank (one repeated)
    assert set(i for b in r0 + r1 for i in b) == set(range(200))
    assert len(set(map(tuple, r0)) & set(map(tuple, r1))) == 1   # only the repeated batch


def test_unbucketed_order_is_the_previous_loops_sampler():
    paddle = pytest.importorskip("paddle")
    sampler = paddle.io.DistributedBatchSampler(list(range(100)), batch_size=8, num_replicas=1, rank=0, shuffle=True)
    sampler.set_epoch(5 * 1000 + 2)
    assert epoch_batches([1] * 100, 8, seed=5, epoch=2, bucketing=False) == [list(b) for b in sampler]


def _tiny(data_dir, n_train=96, n_dev=32):
    pytest.importorskip("paddle")
    from tests.test_distill_train import _setup
    return _setup(data_dir, "chnsenticorp", n_train=n_train, n_dev=n_dev, max_len=32)


def test_callbacks_fire_in_order_and_see_the_state(data_dir, tmp_path):
    from tinydistill.distill.config import DistillConfig
    from tinydistill.distill.engine import Callback, Distiller

    task, tok, teacher, student, tr, dev = _tiny(data_dir)

    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_train_begin(self, engine):
            self.events.append(("begin", engine.state.global_step))

        def on_step_end(self, engine, logs):
            assert {"loss", "lr", "loss/hard_ce/label", "loss/soft_ce/label"} <= set(logs)
            self.events.append(("step", engine.state.global_step))

        def on_evaluate(self, engine, metrics, improved):
            assert "accuracy" in metrics
            self.events.append(("eval", engine.state.global_step))

        def on_checkpoint(self, engine, path):
            assert (path / "trainer_state.json").is_file()
            self.events.append(("ckpt", engine.state.global_step))

        def on_stop(self, engine, reason):
            self.events.append(("stop", reason))

    cfg = DistillConfig.from_dict({"epochs": 1, "max_steps": 4, "batch_size": 16, "eval_every": 2, "threads": 1,
                                   "progress": False, "losses": [{"type": "hard_ce"}, {"type": "soft_ce"}]})
    rec = Recorder()
    Distiller(student, tok, task, tr, dev, cfg, tmp_path / "run", teachers=[(teacher, tok)], callbacks=[rec]).fit()
    assert rec.events == [("begin", 0), ("step", 1), ("step", 2), ("eval", 2), ("ckpt", 2), ("step", 3),
                          ("step", 4), ("eval", 4), ("ckpt", 4), ("stop", "max_steps")]
    rec2 = Recorder()   # the same run again with resume: nothing left to do
    Distiller(student, tok, task, tr, dev, cfg, tmp_path / "run", teachers=[(teacher, tok)], callbacks=[rec2],
              resume=True).fit()
    assert rec2.events == [("begin", 4), ("stop", "finished_already")]


def test_in_memory_training_writes_nothing_and_loads_the_best_weights(data_dir, tmp_path, monkeypatch):
    from tinydistill.distill.config import DistillConfig
    from tinydistill.distill.trainer import evaluate, train

    task, tok, teacher, student, tr, dev = _tiny(data_dir)
    monkeypatch.chdir(tmp_path)
    cfg = DistillConfig.from_dict({"epochs": 3, "batch_size": 16, "lr": 1e-3, "threads": 1, "progress": False,
                                   "teacher_cache": "off",
                                   "losses": [{"type": "hard_ce"}, {"type": "soft_ce", "temperature": 2.0}]})
    result = train(student, tok, task, tr, dev, cfg, None, teachers=[(teacher, tok)])
    assert result.best_dir is None and list(tmp_path.iterdir()) == []
    assert result.steps_per_epoch == 6 and result.global_step == 18 and result.epochs_run == 3.0
    # teacher logits were computed up front (in memory, cache off): every example once
    assert result.cache == {"hits": 0, "misses": 96}
    again = evaluate(student, tok, task, dev)
    assert again == pytest.approx(result.best_metrics)


def test_threads_setting_reaches_paddle():
    pytest.importorskip("paddle")
    from tinydistill.distill.runtime import available_cores, set_cpu_threads
    assert set_cpu_threads(1) == 1
    assert set_cpu_threads(None) == available_cores() >= 1
    set_cpu_threads(1)


def test_mixture_of_teachers_is_evaluated_as_the_ensemble(data_dir):
    from tinydistill.distill.config import MixingConfig
    from tinydistill.distill.multiteacher import evaluate_mixture
    from tinydistill.distill.trainer import evaluate

    task, tok, teacher, student, tr, dev = _tiny(data_dir, n_dev=64)
    alone = evaluate(teacher, tok, task, dev)
    # a model mixed with itself is that model; with another model, weight 0 on it changes nothing
    assert evaluate_mixture([(teacher, tok), (teacher, tok)], task, dev, MixingConfig()) == pytest.approx(alone)
    assert evaluate_mixture([(teacher, tok), (student, tok)], task, dev,
                            MixingConfig(weights=[1.0, 0.0])) == pytest.approx(alone)


def test_a_model_directory_decodes_with_its_own_labels_without_the_training_data(data_dir, tmp_path):
    """A deployed SLU model needs no NLPCC files: the labels come from its manifest (and always mean what the
    model was trained with, whatever a label file in some data directory says)."""
    pytest.importorskip("paddle")
    from tinydistill.compress.predictor import Predictor
    from tinydistill.tasks import build_task
    from tinydistill.tasks.tokenization import ErnieWordPieceTokenizer
    from tinydistill.teachers.base import build_model, save_model_dir

    task = build_task("nlpcc2018_slu", data_dir=str(data_dir), max_seq_length=16)
    tok = ErnieWordPieceTokenizer(data_dir / "vocab" / "ernie-3.0" / "vocab.txt")
    model = build_model("student", "ernie-3.0-tiny-pico-v2-zh", task.heads(), vocab_size=tok.vocab_size,
                        num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    save_model_dir(tmp_path / "m", model, tok, task)
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = Predictor.from_dir(tmp_path / "m", data_dir=str(empty)).predict(["播放周杰伦的歌"])
    assert out[0]["intent"] in task.intents and isinstance(out[0]["slots"], list)
