"""Evaluation protocol (issue #11): training facts, hold-out test file, unseen-in-train rows, equal-budget
controls of the training compression steps, and the report columns and warnings built on them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinydistill.experiments import report
from tinydistill.experiments.config import load_config
from tinydistill.experiments.slu_templates import write_corpus
from tinydistill.experiments.store import ResultStore, flatten_metrics, store_dir

TINY = """\
name: proto
task: {{name: nlpcc2018_slu, max_seq_length: 16, data_dir: {data}, test: {test}, dedup_eval: true}}
teacher:
  name: ernie-3.0-tiny-pico-v2-zh
  init: scratch
  options: {{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}}
  tokenizer: {{build: true}}
  train: {{epochs: 1, max_steps: 3, lr: 1.0e-3, batch_size: 32, progress: false}}
student:
  name: ernie-3.0-tiny-pico-v2-zh
  init: scratch
  options: {{num_hidden_layers: 1, hidden_size: 16, num_attention_heads: 2, intermediate_size: 32}}
  tokenizer: {{build: true}}
distill:
  epochs: 20
  lr: 1.0e-3
  batch_size: 32
  eval_every: 1
  early_stopping_patience: 1
  progress: false
  losses: [{{type: soft_ce, temperature: 2.0}}, {{type: hard_ce, weight: 0.5}}]
compress:
  - {{step: width_prune, width: 0.5, importance_examples: 32, recover: {{epochs: 1, max_steps: 2, batch_size: 16}}}}
  - {{step: qat, epochs: 1, max_steps: 2, batch_size: 16, tolerance: 100.0}}
controls: true
seeds: [1]
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("proto")
    write_corpus(root / "data" / "nlpcc2018_task4", n=120, seed=3)
    test = write_corpus(root / "test", n=40, seed=7) / "corpus.train.txt"
    config = root / "proto.yaml"
    config.write_text(TINY.format(data=root / "data", test=test), encoding="utf-8")
    return config


def test_run_records_steps_test_unseen_and_controls(tiny, tmp_path, monkeypatch, capsys):
    import tinydistill.distill.trainer as trainer
    from tinydistill.distill.schema import to_dict
    from tinydistill.experiments.runner import Runner

    calls = []
    real_train = trainer.train

    def recording_train(student, tok, task, train_ex, dev_ex, config, out_dir, teachers=(), resume=False):
        teacher_state = {k: v.numpy().copy() for k, v in teachers[0][0].state_dict().items()} if teachers else {}
        calls.append({"out": Path(out_dir).name if out_dir is not None else None, "config": to_dict(config),
                      "n_train": len(train_ex),
                      "n_dev": len(dev_ex), "teacher": teacher_state})
        return real_train(student, tok, task, train_ex, dev_ex, config, out_dir, teachers=teachers, resume=resume)

    monkeypatch.setattr(trainer, "train", recording_train)
    cfg = load_config(tiny)
    runner = Runner(cfg, 1, out_root=tmp_path / "runs", log=lambda *_: None)
    assert [s for s, _ in runner.stages()] == ["teacher", "student", "compress.width_prune", "control.width_prune",
                                                "compress.qat", "control.qat", "report"]
    runner.run()

    # the control of each training step is trained exactly as the step trains its compressed copy
    # (train calls in stage order: teacher, student, width_prune, its control, qat, its control)
    assert [c["out"] for c in calls][3::2] == [".width_prune.control", ".qat.control"]
    for mine, control in ((calls[2], calls[3]), (calls[4], calls[5])):
        assert control["config"] == mine["config"] and control["n_train"] == mine["n_train"]
        assert control["n_dev"] == mine["n_dev"]
        assert control["teacher"].keys() == mine["teacher"].keys()
        assert all((control["teacher"][k] == mine["teacher"][k]).all() for k in mine["teacher"])

    metrics = json.loads((runner.run_dir / "metrics.json").read_text())["metrics"]
    # steps and epochs actually run (early stopping after one evaluation without improvement, or 20 epochs)
    steps = metrics["student.train_steps"]
    assert steps["unit"] == "steps" and 1 <= steps["value"] <= 20 * 3
    assert metrics["student.train_epochs"]["value"] == pytest.approx(steps["value"] / 3, abs=1e-3)
    assert metrics["student.stopped_early"]["value"] in (0, 1)
    assert metrics["teacher.train_steps"]["value"] == 3
    # every final model on dev, the test file and their rows unseen in train
    n = {s: metrics[f"data.{s}.examples"]["value"] for s in ("train", "dev", "test", "dev_dedup", "test_dedup")}
    assert n["dev_dedup"] <= n["dev"] and n["test_dedup"] <= n["test"] and n["test"] > 0
    for variant in ("teacher", "student", "compressed.width_prune", "compressed.qat", "control.width_prune",
                    "control.qat"):
        for s in ("dev", "test", "dev_dedup", "test_dedup"):
            if s == "dev" or n[s]:
                assert metrics[f"{variant}.{s}.sentence_accuracy"]["unit"] == "%", (variant, s)
    assert metrics["control.width_prune.train_steps"]["value"] == 2
    assert metrics["control.qat.train_steps"]["value"] == 2
    assert (runner.run_dir / "controls" / "width_prune" / "manifest.json").is_file()
    md = (runner.run_dir / "report.md").read_text()
    assert "Δ compression of width_prune" in md and "| control.qat |" in md and "test sentence_accuracy" in md

    written = report.write_report(tmp_path / "runs" / "proto", plots=False)
    text = written["md"].read_text()
    assert "## Compression steps" in text and "step - control" not in text  # formatted cells, not the basis
    line = next(l for l in text.splitlines() if "| compressed.qat | compressed.width_prune |" in l)
    assert "n/a" not in line and line.count("(n=1)") == 2  # Δ vs input and Δ compression (step - control)
    assert "## Evaluation sets" in text and "| dev - test (pp) |" in text
    ev = next(l for l in text.splitlines() if l.startswith("| nlpcc2018_slu") and "| compressed.qat | " in l
              and " / " in l)
    assert ev.endswith(f"| {n['dev']:,} / {n['test']:,} / {n['dev_dedup']:,} / {n['test_dedup']:,} |")
    comp = written["compression_csv"].read_text().splitlines()
    assert any("compressed.width_prune" in l and "step - control" in l for l in comp)

    # tinydistill evaluate: dev next to the test file, the rows unseen in train, and the gaps
    from tinydistill.experiments.cli import main

    capsys.readouterr()
    test_file = cfg.task.options.test
    assert main(["evaluate", str(runner.run_dir / "student" / "best"), "--test-file", test_file, "--dedup"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: v["examples"] for k, v in out["sets"].items()} == {s: n[s] for s in ("dev", "test", "dev_dedup",
                                                                                    "test_dedup")}
    assert out["sets"]["test"]["metrics"]["sentence_accuracy"] == metrics["student.test.sentence_accuracy"]["value"]
    assert "sentence_accuracy" in out["gap_dev_minus_test"] and "gap_dev_minus_dev_dedup" in out


def test_run_ids_ignore_evaluation_only_options_at_defaults(tiny, tmp_path):
    from tinydistill.experiments.runner import Runner

    plain = load_config(tiny, ["task.test=null", "task.dedup_eval=false", "controls=false"])
    assert "controls" not in plain.to_raw()
    r = Runner(plain, 1, out_root=tmp_path)
    with_test = Runner(load_config(tiny), 1, out_root=tmp_path)
    assert r.run_id != with_test.run_id            # a run with a test file records other metrics
    assert r.teacher_keys() == with_test.teacher_keys()   # ... but trains the same teacher
    with pytest.raises(Exception, match="controls: expected true or false"):
        load_config(tiny, ["controls=3"])


def _record(recipe, seed, teacher_acc, student_acc, kd, variants=("student",), extra=None):
    metrics = {**flatten_metrics("teacher", {"dev": {"accuracy": teacher_acc}}),
               **flatten_metrics("student", {"dev": {"accuracy": student_acc}, "size_mb": 2.0,
                                             "train_steps": {"value": 150, "unit": "steps"},
                                             "train_epochs": {"value": 1.0, "unit": "epochs"},
                                             "stopped_early": {"value": 1, "unit": "bool"}}),
               **(extra or {})}
    return {"run_id": f"{recipe}-s{seed}", "name": "t", "recipe": recipe, "task": "chnsenticorp",
            "teacher": "ernie-3.0-tiny-pico-v2-zh", "student": "bilstm", "seed": seed, "kd": kd,
            "main_metric": "accuracy", "metrics": metrics, "variants": list(variants), "final": variants[-1],
            "durations": {}, "git_commit": "abc", "versions": {}, "eval_sets": ["dev"]}


def test_report_warns_when_the_teacher_is_weaker_than_the_no_kd_student(tmp_path):
    store = ResultStore(store_dir(tmp_path))
    for s in (1, 2):
        store.put(_record("no_kd", s, 81.2, 87.6, False))
        store.put(_record("logits_kd", s, 81.2, 82.7 + 0.1 * s, True))
    md = report.write_report(tmp_path, plots=False)["md"].read_text()
    header = next(l for l in md.splitlines() if l.startswith("| task"))
    assert "teacher - no-KD student (pp)" in header and "student trained steps (epochs)" in header
    assert "teacher trained steps (epochs)" in header
    line = next(l for l in md.splitlines() if "| logits_kd |" in l)
    assert "-6.40 ± 0.00 (n=2)" in line and "150 (1.00 ep, early stop 2/2)" in line
    assert "budget" not in md  # every seed stopped early
    store.put(dict(_record("no_kd", 3, 81.2, 87.0, False), run_id="capped"))
    rec = store.get("capped")
    rec["metrics"]["student.stopped_early"]["value"] = 0
    store.put(rec)
    assert "**Note:** in `no_kd` the student ended at its step budget (epochs / max_steps), not at a dev plateau, " \
           "in 1 of 3 seed(s) (seeds 3)" in report.write_report(tmp_path, plots=False)["md"].read_text()
    assert "**Warning:** in `logits_kd` the teacher `ernie-3.0-tiny-pico-v2-zh` (dev accuracy 81.20 %) is not " \
           "better than the `bilstm` trained without KD (`no_kd`, 87.60 %)" in md


def test_report_compression_delta_uses_the_control(tmp_path):
    store = ResultStore(store_dir(tmp_path))
    variants = ("student", "compressed.width_prune", "compressed.embedding_int8")
    config = {"compress": [{"step": "width_prune", "width": 0.75}, {"step": "embedding_int8"}]}
    for s, (student, step, control, emb) in {1: (60.0, 63.0, 64.0, 62.9), 2: (61.0, 64.5, 65.0, 64.6)}.items():
        extra = {**flatten_metrics("compressed.width_prune", {"dev": {"accuracy": step}}),
                 **flatten_metrics("control.width_prune", {"dev": {"accuracy": control},
                                                           "train_steps": {"value": 40, "unit": "steps"}}),
                 **flatten_metrics("compressed.embedding_int8", {"dev": {"accuracy": emb}}),
                 **flatten_metrics("student", {"test": {"accuracy": student - 2}}),
                 **flatten_metrics("data", {"test": {"examples": {"value": 500, "unit": "count"}}})}
        rec = _record("kd", s, 70.0, student, True, variants, extra)
        rec.update(config=config, eval_sets=["dev", "test"])
        store.put(rec)
    written = report.write_report(tmp_path, plots=False)
    assert r"$\Delta$ compression (pp)" in written["latex"].read_text()
    md = written["md"].read_text()
    wp = next(l for l in md.splitlines() if "| compressed.width_prune | student |" in l)
    # Δ vs input +3.25 (the step also trained); Δ compression = step - control = -0.75
    assert "+3.25 ± 0.35 (n=2)" in wp and "-0.75 ± 0.35 (n=2)" in wp and "40 (" not in wp
    emb = next(l for l in md.splitlines() if "| compressed.embedding_int8 | compressed.width_prune |" in l)
    assert "(no training)" in emb and "+0.00 ± 0.14 (n=2)" in emb
    ev = next(l for l in md.splitlines() if l.startswith("| chnsenticorp") and "| student |" in l and "500" in l)
    assert "+2.00 ± 0.00 (n=2)" in ev  # student dev - test
    # without controls the training step has no Δ compression
    for r in store.records():
        r["metrics"] = {k: v for k, v in r["metrics"].items() if not k.startswith("control.")}
        store.put(r)
    md = report.write_report(tmp_path, plots=False)["md"].read_text()
    assert "n/a: the step trains and has no control" in next(l for l in md.splitlines()
                                                              if "| compressed.width_prune |" in l)
    # a step that did not apply (e.g. width_prune on a Bi-LSTM) says so
    for r in store.records():
        r["metrics"].update(flatten_metrics("compressed.width_prune", {"applied": {"value": 0, "unit": "bool"}}))
        store.put(r)
    assert "not applied" in next(l for l in report.write_report(tmp_path, plots=False)["md"].read_text().splitlines()
                                 if "| compressed.width_prune | student |" in l)


def test_test_file_flag_sets_task_test():
    from tinydistill.experiments.cli import build_parser
    from tinydistill.experiments.runner import test_file_override

    for cmd in ("run", "sweep"):
        args = build_parser().parse_args([cmd, "c.yaml", "--set", "a=1", "--test-file", "t.tsv"])
        assert test_file_override(args) == ["a=1", f"task.test={Path.cwd() / 't.tsv'}"]
    args = build_parser().parse_args(["evaluate", "dir", "--test-file", "t.tsv", "--dedup"])
    assert args.test_file == "t.tsv" and args.dedup
