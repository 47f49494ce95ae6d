"""Experiment config schema: strict keys, --set overrides, registry names, safe YAML, shipped configs, grids."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tinydistill.distill.schema import ConfigError
from tinydistill.experiments.config import apply_overrides, load_config, load_yaml, resolve
from tinydistill.experiments.identity import config_hash
from tinydistill.experiments.sweep import expand

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "experiments" / "configs").glob("*.yaml"))

BASE = """\
name: t
task: {name: nlpcc2018_slu, max_seq_length: 16}
teacher:
  name: ernie-3.0-tiny-base-v2-zh
  init: scratch
  train: {epochs: 1}
student: {name: ernie-3.0-tiny-nano-v2-zh, init: scratch}
distill:
  epochs: 2
  losses:
    - {type: soft_ce, temperature: 2.0}
    - {type: hard_ce, weight: 0.5}
export: [onnx]
seeds: [1, 2]
"""


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_base_config_resolves_with_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.task.options.max_seq_length == 16 and cfg.task.options.dev_ratio == 0.2
    assert [l.type for l in cfg.teacher.train.losses] == ["hard_ce"]  # fine-tuning default
    assert cfg.distill.losses[0].temperature == 2.0 and cfg.seeds == [1, 2]
    assert resolve(cfg.to_raw()).to_raw() == cfg.to_raw()  # the saved config.yaml round-trips


@pytest.mark.parametrize("old,new,key,hint", [
    ("distill:", "distil:", "distil", "distill"),
    ("epochs: 2", "epoch: 2", "distill.epoch", "epochs"),
    ("temperature: 2.0}", "temprature: 2.0}", "distill.losses[0].temprature", "temperature"),
    ("max_seq_length: 16", "max_seq_len: 16", "task.max_seq_len", "max_seq_length"),
    ("init: scratch}", "int: scratch}", "student.int", "init"),
])
def test_misspelt_key_names_key_line_and_suggestion(tmp_path, old, new, key, hint):
    text = BASE.replace(old, new, 1)
    assert text != BASE
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    msg = str(err.value)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if new in l)
    assert key in msg and f"did you mean '{hint}'" in msg and f"c.yaml:{line}:" in msg


def test_missing_required_key(tmp_path):
    text = BASE.replace("student: {name: ernie-3.0-tiny-nano-v2-zh, init: scratch}\n", "")
    with pytest.raises(ConfigError, match="student: required key is missing"):
        load_config(_write(tmp_path, text))
    with pytest.raises(ConfigError, match="task.name: required key is missing"):
        load_config(_write(tmp_path, BASE.replace("name: nlpcc2018_slu, ", "")))


@pytest.mark.parametrize("old,new,match", [
    ("ernie-3.0-tiny-nano-v2-zh", "ernie-3.0-tiny-nan-v2-zh", "student.name: unknown student .*ernie-3.0-tiny-nano-v2-zh"),
    ("type: soft_ce", "type: soft_cee", r"distill.losses\[0\].type: unknown loss .*'soft_ce'"),
    ("export: [onnx]", "export: [onxx]", r"export\[0\]: unknown export format .*'onnx'"),
    ("nlpcc2018_slu", "nlpcc2018_sl", "task.name: unknown task .*'nlpcc2018_slu'"),
])
def test_registry_names_checked_up_front(tmp_path, old, new, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, BASE.replace(old, new)))


def test_kd_losses_need_a_teacher_and_teacher_training_no_kd(tmp_path):
    no_teacher = BASE.split("teacher:")[0] + "student:" + BASE.split("student:")[1]
    with pytest.raises(ConfigError, match="need a 'teacher' section"):
        load_config(_write(tmp_path, no_teacher))
    with pytest.raises(ConfigError, match="teacher.train.losses: teacher fine-tuning uses hard-label"):
        load_config(_write(tmp_path, BASE), ["teacher.train.losses=[{type: soft_ce}]"])
    with pytest.raises(ConfigError, match="student.train: unknown key"):
        load_config(_write(tmp_path, BASE), ["student.train.epochs=3"])


def test_set_overrides(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path, ["distill.epochs=5", "distill.losses.1.weight=0.25", "distill.losses[0].temperature=4",
                             "teacher.init=/models/teacher", "task.data_dir=/data", "seeds=[7]",
                             "student.options.num_hidden_layers=2", "bench.runs=3"])
    assert cfg.distill.epochs == 5 and cfg.distill.losses[1].weight == 0.25
    assert cfg.distill.losses[0].temperature == 4.0 and cfg.teacher.init == "/models/teacher"
    assert cfg.task.options.data_dir == "/data" and cfg.seeds == [7]
    assert cfg.student.options == {"num_hidden_layers": 2} and cfg.bench.runs == 3
    with pytest.raises(ConfigError, match="distill.epochz: unknown key; did you mean 'epochs'"):
        load_config(path, ["distill.epochz=5"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(path, ["distill.epochs=many"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, ["distill.epochs"])
    with pytest.raises(ConfigError, match="no list item 5"):
        load_config(path, ["distill.losses.5.weight=1"])


def test_yaml_is_loaded_safely(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"c.yaml:1: invalid YAML"):
        load_yaml(path)
    assert not marker.exists()


def test_sweep_grid_and_shared_teachers(tmp_path):
    from tinydistill.experiments.runner import Runner

    text = BASE + """\
sweep:
  students: [ernie-3.0-tiny-pico-v2-zh, {name: bilstm, tokenizer: {type: char}}]
  recipes:
    no_kd: {distill.losses: [{type: hard_ce}]}
    logits_kd: {}
    logits_hidden: {distill: {losses: [{type: soft_ce}, {type: hidden_mse}]}}
"""
    cfg = load_config(_write(tmp_path, text))
    cells = expand(cfg)
    assert len(cells) == 2 * 3 * 2
    assert {c.labels["student"] for c in cells} == {"ernie-3.0-tiny-pico-v2-zh", "bilstm"}
    bilstm = next(c for c in cells if c.labels["student"] == "bilstm")
    assert bilstm.config.student.init == "scratch"  # inherited from the base student
    assert [l.type for l in next(c for c in cells if c.labels["recipe"] == "no_kd").config.distill.losses] == ["hard_ce"]
    runners = [Runner(c.config, c.seed, out_root=tmp_path / "runs") for c in cells]
    assert len({r.run_id for r in runners}) == len(cells)  # every cell has its own run directory
    keys = {r.seed: set() for r in runners}
    for r in runners:
        keys[r.seed].update(r.teacher_keys())
    assert all(len(k) == 1 for k in keys.values())  # one teacher per seed, shared by students and recipes
    # run ids are stable (config hash + seed), and the data directory does not change them
    again = Runner(cells[0].config, cells[0].seed, out_root=tmp_path / "runs", data_dir="/elsewhere")
    assert again.run_id == runners[0].run_id
    assert config_hash({"a": 1, "seeds": [1]}) == config_hash({"seeds": [2], "a": 1})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    text = path.read_text(encoding="utf-8")
    cfg = load_config(path)
    cells = expand(cfg)
    grid = cfg.sweep or None
    assert len(cells) == len(cfg.seeds) * max(1, len(grid.teachers) if grid else 1) * \
        max(1, len(grid.students) if grid else 1) * max(1, len(grid.recipes) if grid else 1)
    if any(m.init == "pretrained" for m in cfg.all_teachers + [cfg.student]):
        assert "--set teacher.init=scratch" in text  # documents the offline override
        offline = load_config(path, ["teacher.init=scratch", "student.init=scratch"])
        assert offline.teacher.init == "scratch" and offline.student.init == "scratch"


def test_shipped_recipes_exist():
    names = {p.name for p in CONFIGS}
    assert {"slu_ernie_tiny.yaml", "chnsenticorp_ernie_gram_bilstm.yaml", "slu_ablation.yaml",
            "chnsenticorp_ablation.yaml"} <= names
    slu = load_config(ROOT / "experiments" / "configs" / "slu_ernie_tiny.yaml")
    assert (slu.teacher.name, slu.teacher.init, slu.student.name) == \
        ("ernie-3.0-tiny-base-v2-zh", "pretrained", "ernie-3.0-tiny-nano-v2-zh")
    assert slu.task.options.max_seq_length == 16
    assert [s.step for s in slu.compress] == ["vocab_prune", "width_prune", "qat", "embedding_int8"]
    assert slu.compress[0].params.max_vocab_size == 6000
    for name in ("slu_ablation.yaml", "chnsenticorp_ablation.yaml"):
        cfg = load_config(ROOT / "experiments" / "configs" / name)
        assert list(cfg.sweep.recipes) == ["no_kd", "logits_kd", "logits_hidden_kd", "logits_hidden_kd_aug"]
        assert len(cfg.seeds) >= 3
    tang = load_config(ROOT / "experiments" / "configs" / "chnsenticorp_ernie_gram_bilstm.yaml")
    assert tang.teacher.name == "ernie-gram-zh" and tang.student.name == "bilstm" and tang.distill.augment


def test_cli_reports_misspelt_key_in_one_line(tmp_path):
    path = _write(tmp_path, BASE.replace("epochs: 2", "epoch: 2"))
    proc = subprocess.run([sys.executable, "-m", "tinydistill.experiments.cli", "run", str(path), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "distill.epoch: unknown key; did you mean 'epochs'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "paddle" not in proc.stderr  # no traceback


def test_export_entries_names_or_mappings(tmp_path):
    path = _write(tmp_path, BASE.replace("export: [onnx]", "export: [onnx, {backend: onnx-int8, tolerance: 2}]"))
    cfg = load_config(path)
    assert [(e.backend, e.tolerance) for e in cfg.export] == [("onnx", 0.5), ("onnx-int8", 2.0)]
    assert cfg.to_raw()["export"] == ["onnx", {"backend": "onnx-int8", "check": True, "tolerance": 2.0,
                                               "atol": 1e-4, "max_check_examples": None}]
    with pytest.raises(ConfigError, match=r"export\[1\].tolerence: unknown key; did you mean 'tolerance'"):
        load_config(path, ["export.1.tolerence=1"])
    with pytest.raises(ConfigError, match="nothing to export"):
        load_config(path, ["export=[paddle]"])
