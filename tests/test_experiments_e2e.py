"""End to end: `tinydistill run` of a tiny config on tiny generated SLU data (crash + --resume), and two
sweeps writing one result store at the same time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinydistill.experiments.slu_templates import write_corpus
from tinydistill.experiments.store import ResultStore, store_dir

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
task: {{name: nlpcc2018_slu, max_seq_length: 16, data_dir: {data}}}
teacher:
  name: ernie-3.0-tiny-pico-v2-zh
  init: scratch
  options: {{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}}
  tokenizer: {{build: true}}
  train: {{epochs: 2, lr: 1.0e-3, batch_size: 32, progress: false}}
student:
  name: ernie-3.0-tiny-pico-v2-zh
  init: scratch
  options: {{num_hidden_layers: 1, hidden_size: 16, num_attention_heads: 2, intermediate_size: 32}}
  tokenizer: {{build: true}}
distill:
  epochs: 4
  lr: 1.0e-3
  batch_size: 32
  progress: false
  losses: [{{type: soft_ce, temperature: 2.0}}, {{type: hard_ce, weight: 0.5}}]
{extra}"""

PIPELINE = """\
compress: [{step: vocab_prune, max_vocab_size: 100}]
export: [onnx]
bench: {runs: 3, warmup: 1}
seeds: [1]
"""

SWEEP = """\
sweep:
  recipes:
    no_kd: {distill.losses: [{type: hard_ce}]}
    kd: {}
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_corpus(root / "nlpcc2018_task4", n=160, seed=3)
    return root


def _cli(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "tinydistill.experiments.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
def test_run_crash_resume_and_layout(tmp_path, tiny_data):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(data=tiny_data, extra=PIPELINE), encoding="utf-8")
    out = tmp_path / "runs"
    # teacher: 2 epochs x 4 batches = 8 steps, so the kill hits the student's 10th step
    crashed = _cli("run", config, "--out", out, env={"TINYDISTILL_KILL_AFTER_STEP": "10"}, check=False)
    assert crashed.returncode != 0
    (run_dir,) = [p for p in (out / "tiny").iterdir() if not p.name.startswith("_")]
    assert (run_dir / ".stages" / "teacher.json").is_file()
    assert not (run_dir / ".stages" / "student.json").exists()
    assert (run_dir / "student" / "checkpoint").is_dir()
    teacher_weights = run_dir / "teacher" / "best" / "model_state.pdparams"
    mtime = teacher_weights.stat().st_mtime_ns

    refused = _cli("run", config, "--out", out, check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    teacher_marker = (run_dir / ".stages" / "teacher.json").read_text()
    _cli("run", config, "--out", out, "--resume")
    assert (run_dir / ".stages" / "teacher.json").read_text() == teacher_marker  # skipped, not redone
    assert (run_dir / ".stages" / "student.json").is_file() and (run_dir / ".stages" / "bench.json").is_file()
    assert teacher_weights.stat().st_mtime_ns == mtime  # the finished stage was not redone

    # layout of DESIGN.md
    assert (run_dir / "teacher").is_symlink()
    for path in ("config.yaml", "student/best/manifest.json", "student/history.json",
                 "compressed/vocab_prune/manifest.json", "export/onnx/model.onnx", "metrics.json", "report.md"):
        assert (run_dir / path).is_file(), path
    assert any((run_dir / "tb").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["student.dev.sentence_accuracy"]["unit"] == "%"
    assert metrics["compressed.vocab_prune.size_mb"]["unit"] == "MB"
    assert metrics["export.onnx.latency_p50_ms"]["unit"] == "ms" and metrics["export.onnx.latency_p50_ms"]["value"] > 0
    assert "| export.onnx |" in (run_dir / "report.md").read_text()
    # the saved config is the resolved one and loads again
    from tinydistill.experiments.config import load_config
    assert load_config(run_dir / "config.yaml").distill.seed == 1

    (record,) = ResultStore(store_dir(out / "tiny")).records()
    assert record["run_id"] == run_dir.name and record["seed"] == 1 and record["kd"] is True
    assert record["versions"]["paddlepaddle"] and record["git_commit"]
    # the CPU model: runs repeat bit for bit on one model, not across models
    assert isinstance(record["cpu"], str) and record["cpu"] not in ("", "unknown")
    assert set(record["durations"]) >= {"teacher", "student", "compress.vocab_prune", "export.onnx", "bench"}
    assert record["final"] == "export.onnx"

    metrics_mtime = (run_dir / "metrics.json").stat().st_mtime_ns
    _cli("run", config, "--out", out, "--resume")  # finished already: nothing is rewritten
    assert (run_dir / "metrics.json").stat().st_mtime_ns == metrics_mtime

    # an uninterrupted run of the same config and seed (another process) gets the same result
    clean = tmp_path / "clean"
    _cli("run", config, "--out", clean, "--set", "compress=[]", "--set", "export=[]", "--set", "bench=null")
    (clean_dir,) = [p for p in (clean / "tiny").iterdir() if not p.name.startswith("_")]
    clean_metrics = json.loads((clean_dir / "metrics.json").read_text())["metrics"]
    for key in ("teacher.dev.sentence_accuracy", "student.dev.sentence_accuracy", "student.dev.slot_f1"):
        assert clean_metrics[key] == metrics[key], key
    import numpy as np
    import paddle

    for part in ("teacher/best/model_state.pdparams", "student/best/model_state.pdparams"):
        a, b = paddle.load(str(clean_dir / part)), paddle.load(str(run_dir / part))
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), part

    # a teacher that is already fine-tuned: `finetune: false` uses its directory as is
    given = _cli("run", config, "--out", out, "--set", f"teacher.init={run_dir / 'teacher' / 'best'}",
                 "--set", "teacher.finetune=false", "--set", "compress=[]", "--set", "export=[]", "--set", "bench=null")
    assert given.returncode == 0
    records = {r["run_id"]: r for r in ResultStore(store_dir(out / "tiny")).records()}
    new = next(r for k, r in records.items() if k != run_dir.name)
    assert (Path(new["run_dir"]) / ".stages" / "teacher.json").is_file()
    assert new["metrics"]["teacher.dev.sentence_accuracy"] == record["metrics"]["teacher.dev.sentence_accuracy"]


@pytest.mark.slow
def test_two_concurrent_sweeps_share_one_store(tmp_path, tiny_data):
    config = tmp_path / "sweep.yaml"
    config.write_text(TINY.format(data=tiny_data, extra=SWEEP), encoding="utf-8")
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "tinydistill.experiments.cli", "sweep", str(config), "--out", str(out)]
    # seeds overlap (2): both sweeps reach those cells; the run lock makes one of them skip them
    procs = [subprocess.Popen(cmd + ["--set", f"seeds={seeds}", "--jobs", jobs], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for seeds, jobs in (("[1,2]", "2"), ("[2,3]", "1"))]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    records = ResultStore(store_dir(out / "tiny")).records()
    assert sorted((r["recipe"], r["seed"]) for r in records) == sorted(
        (recipe, s) for recipe in ("no_kd", "kd") for s in (1, 2, 3))
    for r in records:
        run_dir = Path(r["run_dir"])
        assert (run_dir / "report.md").is_file() and r["metrics"]["student.dev.sentence_accuracy"]["unit"] == "%"
    # one shared teacher per seed, and every run of a seed saw the same teacher
    assert len(list((out / "tiny" / "_teachers").glob("pico-s*-*"))) == 3
    by_seed = {}
    for r in records:
        by_seed.setdefault(r["seed"], set()).add(r["metrics"]["teacher.dev.sentence_accuracy"]["value"])
    assert all(len(v) == 1 for v in by_seed.values())

    # the report over the shared store pairs kd with no_kd across the 3 seeds
    rep = _cli("report", out / "tiny", "--plots")
    line = next(l for l in rep.stdout.splitlines() if "| kd |" in l)
    assert "n=3" in line and "p=" in line or "no variance" in line
    assert (out / "tiny" / "acc_vs_size.png").is_file()


MULTI = """\
teachers:
  - name: ernie-3.0-tiny-nano-v2-zh
    init: scratch
    options: {num_hidden_layers: 1, hidden_size: 48, num_attention_heads: 2, intermediate_size: 64}
    tokenizer: {build: true}
    train: {epochs: 1, lr: 1.0e-3, batch_size: 32, progress: false}
"""


@pytest.mark.slow
def test_multi_teacher_run(tmp_path, tiny_data):
    config = tmp_path / "multi.yaml"
    text = TINY.format(data=tiny_data, extra=MULTI).replace(
        "losses: [{type: soft_ce, temperature: 2.0}, {type: hard_ce, weight: 0.5}]",
        "losses: [{type: soft_ce}, {type: hard_ce}, {type: hidden_mse, teacher_index: 1}]\n  mixing: {mode: confidence}")
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "runs"
    _cli("run", config, "--out", out)
    (run_dir,) = [p for p in (out / "tiny").iterdir() if not p.name.startswith("_")]
    assert (run_dir / ".stages" / "teacher1.json").is_file()
    assert (run_dir / "teacher").resolve() != (run_dir / "teacher1").resolve()
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert "teacher1.dev.sentence_accuracy" in metrics and "student.dev.sentence_accuracy" in metrics
