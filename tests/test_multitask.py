"""Multi-task teachers: the config section, task mixing, and a run on real data (subsets of NLPCC 2018 and
ChnSentiCorp): one encoder with both tasks' heads, per-task views, a student distilled from its task's heads,
``evaluate`` per task."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tinydistill.distill.schema import ConfigError
from tinydistill.experiments.config import resolve

ROOT = Path(__file__).resolve().parents[1]


def _model(name: str, hidden: int) -> str:
    return (f"name: {name}, init: scratch, options: {{num_hidden_layers: 1, hidden_size: {hidden}, "
            f"num_attention_heads: 2, intermediate_size: {2 * hidden}}}")


RUN = f"""\
name: mt
task: {{name: nlpcc2018_slu, max_seq_length: 16, data_dir: @DATA@}}
teacher:
  {{{_model('ernie-3.0-tiny-micro-v2-zh', 32)}, tokenizer: {{build: true}},
   tasks: [nlpcc2018_slu, chnsenticorp], task_mixing: {{mode: temperature, temperature: 2.0}},
   train: {{max_steps: 4, eval_every: 4, lr: 2.0e-3, batch_size: 32, progress: false}}}}
student: {{{_model('ernie-3.0-tiny-pico-v2-zh', 16)}, tokenizer: {{from_teacher: true}}}}
distill:
  max_steps: 3
  lr: 1.0e-3
  batch_size: 32
  progress: false
  losses: [{{type: soft_ce, temperature: 2.0}}, {{type: hard_ce, weight: 0.5}}]
seeds: [1]
"""


def _raw(teacher_over=None, **over):
    raw = {"name": "x", "task": {"name": "nlpcc2018_slu"},
           "teacher": {"name": "ernie-3.0-tiny-micro-v2-zh", "init": "scratch",
                       "tasks": ["nlpcc2018_slu", {"name": "chnsenticorp", "max_seq_length": 64}],
                       "task_mixing": {"mode": "temperature", "temperature": 3}, **(teacher_over or {})},
           "student": {"name": "ernie-3.0-tiny-pico-v2-zh", "init": "scratch"},
           "distill": {"losses": [{"type": "soft_ce"}]}}
    raw.update(over)
    return raw


def test_teacher_tasks_section():
    cfg = resolve(_raw())
    assert cfg.teacher.tasks == [{"name": "nlpcc2018_slu"}, {"name": "chnsenticorp", "max_seq_length": 64}]
    assert resolve(cfg.to_raw()).to_raw() == cfg.to_raw()
    plain = resolve(_raw(teacher_over={"tasks": [], "task_mixing": {}}))
    assert "tasks" not in plain.to_raw()["teacher"]  # single-task teachers keep their keys
    bad = {
        "teacher.tasks[1].name": _raw(teacher_over={"tasks": ["nlpcc2018_slu", "chnsentycorp"]}),
        "is not one of the teacher's tasks": _raw(teacher_over={"tasks": ["chnsenticorp"]}),
        "listed twice": _raw(teacher_over={"tasks": ["nlpcc2018_slu", "nlpcc2018_slu"]}),
        "teacher.tasks[1].max_seq_length": _raw(teacher_over={"tasks": ["nlpcc2018_slu",
                                                                        {"name": "chnsenticorp", "max_seq_length": 1}]}),
        "teacher.task_mixing.mode": _raw(teacher_over={"task_mixing": {"mode": "uniform"}}),
        "student.tasks: unknown key": _raw(student={"name": "ernie-3.0-tiny-pico-v2-zh", "tasks": ["chnsenticorp"]}),
    }
    for message, raw in bad.items():
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            resolve(raw)


@pytest.fixture(scope="module")
def subsets(data_dir, tmp_path_factory):
    """The first 120 NLPCC 2018 sessions and the first 400 / 120 ChnSentiCorp train / dev reviews (real data)."""
    root = tmp_path_factory.mktemp("mt") / "data"
    slu, senti = root / "nlpcc2018_task4", root / "chnsenticorp"
    slu.mkdir(parents=True)
    senti.mkdir()
    src = data_dir / "nlpcc2018_task4"
    sessions = (src / "corpus.train.txt").read_text(encoding="utf-8").split("\n\n")[:120]
    (slu / "corpus.train.txt").write_text("\n\n".join(sessions) + "\n", encoding="utf-8")
    for name in ("intent_label.txt", "slot_label.txt"):
        (slu / name).write_bytes((src / name).read_bytes())
    for name, n in (("train.tsv", 401), ("dev.tsv", 121)):
        lines = (data_dir / "chnsenticorp" / name).read_text(encoding="utf-8").splitlines()[:n]
        (senti / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_mixing(subsets):
    from tinydistill.tasks import build_task

    specs = [{"name": "nlpcc2018_slu", "max_seq_length": 16}, {"name": "chnsenticorp", "max_seq_length": 16}]
    prop = build_task("multitask", tasks=specs, data_dir=str(subsets))
    sizes = Counter(ex.meta["task"] for ex in prop.load("train"))
    n_slu, n_senti = sizes["nlpcc2018_slu"], sizes["chnsenticorp"]
    assert n_senti == 400 and n_slu > 300
    assert {h.name for h in prop.heads()} == {"nlpcc2018_slu__intent", "nlpcc2018_slu__slot", "chnsenticorp__label"}
    hot = build_task("multitask", tasks=specs, data_dir=str(subsets), mixing="temperature", temperature=1e6)
    mixed = Counter(ex.meta["task"] for ex in hot.load("train"))
    assert abs(mixed["nlpcc2018_slu"] - mixed["chnsenticorp"]) <= 1  # temperature -> infinity: uniform over tasks
    assert sum(mixed.values()) in (n_slu + n_senti - 1, n_slu + n_senti, n_slu + n_senti + 1)
    assert len(hot.load("dev")) == len(prop.load("dev"))  # only training batches are resampled


def _cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "tinydistill.experiments.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_multitask_teacher_run_and_evaluate(tmp_path, subsets, capsys):
    config = tmp_path / "mt.yaml"
    config.write_text(RUN.replace("@DATA@", str(subsets)), encoding="utf-8")
    out = tmp_path / "runs"
    _cli("run", config, "--out", out)
    (run,) = [p for p in (out / "mt").iterdir() if not p.name.startswith("_")]
    teacher = (run / "teacher").resolve()
    manifest = json.loads((teacher / "best" / "manifest.json").read_text())
    assert [h["name"] for h in manifest["heads"]] == ["nlpcc2018_slu__intent", "nlpcc2018_slu__slot",
                                                      "chnsenticorp__label"]
    assert manifest["task"]["name"] == "multitask"
    for task, heads in (("nlpcc2018_slu", ["intent", "slot"]), ("chnsenticorp", ["label"])):
        view = json.loads((teacher / "tasks" / task / "manifest.json").read_text())
        assert [h["name"] for h in view["heads"]] == heads and view["task"]["name"] == task
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    senti = metrics["teacher.tasks.chnsenticorp.dev.accuracy"]["value"]
    # the same model on the same rows, batched differently (alone / mixed with the other task): near-tied logits
    # of a model trained 4 steps may flip one prediction, no more
    one_row = 100.0 / metrics["data.dev.examples"]["value"]
    assert abs(metrics["teacher.dev.sentence_accuracy"]["value"]
               - metrics["teacher.tasks.nlpcc2018_slu.dev.sentence_accuracy"]["value"]) <= one_row + 1e-6
    assert metrics["student.train_steps"]["value"] == 3 and "student.dev.sentence_accuracy" in metrics

    # evaluate per task: the joint directory with --task, and without it every task with their mean (in this
    # process: one paddle start-up for both)
    from tinydistill.experiments.cli import main

    def evaluate(*args):
        capsys.readouterr()
        assert main(["evaluate", str(teacher / "best"), "--data-dir", str(subsets), *args]) == 0
        return json.loads(capsys.readouterr().out)

    one = evaluate("--task", "chnsenticorp")
    assert one["task"] == "chnsenticorp" and one["examples"] == 120
    assert abs(one["metrics"]["accuracy"] - senti) <= 100.0 / 120 + 1e-6
    both = evaluate()
    assert abs(both["metrics"]["chnsenticorp.accuracy"] - senti) <= 100.0 / 120 + 1e-6 and "mean_main" in both["metrics"]
    capsys.readouterr()
    assert main(["predict", str(teacher / "best"), "导航到北京"]) == 0  # every task's reading of a text
    (line,) = capsys.readouterr().out.strip().splitlines()
    decoded = json.loads(line)
    assert "intent" in decoded["nlpcc2018_slu"] and decoded["chnsenticorp"]["label"] in ("0", "1")

    from tinydistill.experiments.report import write_report

    md = write_report(out / "mt", plots=False, formats=("md",))["md"].read_text()
    assert "## Multi-task teachers" in md and "nlpcc2018_slu + chnsenticorp" in md


def test_report_pairs_multi_with_single_task_teachers():
    from tinydistill.experiments.multitask import multitask_table
    from tinydistill.experiments.report import group

    def record(recipe, seed, teacher, student, tasks=None, senti=None):
        metrics = {"teacher.dev.sentence_accuracy": {"value": teacher, "unit": "%"},
                   "student.dev.sentence_accuracy": {"value": student, "unit": "%"}}
        if senti is not None:
            metrics["teacher.tasks.chnsenticorp.dev.accuracy"] = {"value": senti, "unit": "%"}
        config = {"teacher": {"name": "ernie-3.0-tiny-micro-v2-zh", **({"tasks": tasks} if tasks else {})}}
        return {"run_id": f"{recipe}-{seed}", "task": "nlpcc2018_slu", "teacher": "ernie-3.0-tiny-micro-v2-zh",
                "student": "ernie-3.0-tiny-nano-v2-zh", "recipe": recipe, "seed": seed, "kd": True,
                "group_hash": recipe, "main_metric": "sentence_accuracy", "config": config, "metrics": metrics}

    tasks = [{"name": "nlpcc2018_slu"}, {"name": "chnsenticorp"}]
    records = [record("single", s, 70 + s, 60 + s) for s in (1, 2, 3)]
    records += [record("multi", s, 71 + s, 61 + s + 0.1 * s, tasks, 80.0) for s in (1, 2, 3)]
    header, cells, raw = multitask_table(group(records))
    (row,) = cells
    assert row[1] == "multi" and row[3] == "nlpcc2018_slu + chnsenticorp" and "chnsenticorp 80.00" in row[4]
    assert row[6] == "single" and row[7].startswith("+1.00") and row[8].startswith("+1.20") and "p=" in row[8]
    assert multitask_table(group(records[:3])) is None
