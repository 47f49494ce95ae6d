"""Teacher-assistant chains: the config section, and a sweep on real NLPCC data (a subset of the corpus) with a
crash inside an assistant's training, the resume, the sharing of the assistant between cells and the report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinydistill.distill.schema import ConfigError
from tinydistill.experiments.config import resolve

ROOT = Path(__file__).resolve().parents[1]


def _model(name: str, layers: int, hidden: int) -> str:
    return (f"{{name: {name}, init: scratch, tokenizer: {{build: true}}, options: {{num_hidden_layers: {layers}, "
            f"hidden_size: {hidden}, num_attention_heads: 2, intermediate_size: {2 * hidden}}}}}")


CHAIN = f"""\
name: ta
task: {{name: nlpcc2018_slu, max_seq_length: 16, data_dir: @DATA@}}
teacher:
  {_model('ernie-3.0-tiny-micro-v2-zh', 2, 32)[:-1]},
   train: {{max_steps: 3, eval_every: 3, lr: 2.0e-3, batch_size: 32, progress: false}}}}
student: {_model('ernie-3.0-tiny-pico-v2-zh', 1, 16)}
distill:
  max_steps: 4
  eval_every: 2
  lr: 1.0e-3
  batch_size: 32
  progress: false
  losses: [{{type: soft_ce, temperature: 2.0}}, {{type: hard_ce, weight: 0.5}}]
seeds: [1]
sweep:
  recipes:
    direct: {{}}
    ta:
      assistants:
        - {_model('ernie-3.0-tiny-nano-v2-zh', 1, 24)[:-1]},
           distill: {{max_steps: 6, lr: 2.0e-3, losses: [{{type: soft_ce, temperature: 2.0}}]}}}}
    ta_hard:   # another student recipe, the same hop: the assistant is shared, not trained again
      distill.losses: [{{type: soft_ce, temperature: 2.0}}, {{type: hard_ce, weight: 1.0}}]
      assistants:
        - {_model('ernie-3.0-tiny-nano-v2-zh', 1, 24)[:-1]},
           distill: {{max_steps: 6, lr: 2.0e-3, losses: [{{type: soft_ce, temperature: 2.0}}]}}}}
"""


def _raw(**over):
    raw = {"name": "x", "task": {"name": "nlpcc2018_slu"},
           "teacher": {"name": "ernie-3.0-tiny-micro-v2-zh", "init": "scratch"},
           "student": {"name": "ernie-3.0-tiny-pico-v2-zh", "init": "scratch"},
           "distill": {"epochs": 2, "lr": 1e-3, "losses": [{"type": "soft_ce"}, {"type": "hard_ce", "weight": 0.5}]},
           "assistants": [{"name": "ernie-3.0-tiny-nano-v2-zh", "init": "scratch", "options": {"hidden_size": 64},
                           "distill": {"lr": 5e-4, "losses": [{"type": "soft_ce", "temperature": 2.0}]}}]}
    raw.update(over)
    return raw


def test_assistants_section():
    cfg = resolve(_raw())
    (a,) = cfg.assistants
    # the hop config is the experiment's distill section with the assistant's overrides on top
    assert a.train.lr == 5e-4 and a.train.epochs == 2 and [loss.type for loss in a.train.losses] == ["soft_ce"]
    assert cfg.distill.lr == 1e-3 and a.options == {"hidden_size": 64}
    again = resolve(cfg.to_raw())  # config.yaml round trip
    assert again.to_raw() == cfg.to_raw() and again.assistants[0].train == a.train
    assert "assistants" not in resolve(_raw(assistants=[])).to_raw()  # configs without a chain keep their ids
    bad = {
        "chain needs a 'teacher'": _raw(teacher=None, distill={"losses": [{"type": "hard_ce"}]}),
        "no distillation loss": _raw(assistants=[{"name": "ernie-3.0-tiny-nano-v2-zh",
                                                  "distill": {"losses": [{"type": "hard_ce"}]}}]),
        "teach nobody": _raw(distill={"losses": [{"type": "hard_ce"}]}),
        "assistants[0].options.hiden_size: unknown option": _raw(assistants=[{"name": "ernie-3.0-tiny-nano-v2-zh",
                                                                              "options": {"hiden_size": 8}}]),
        "assistants[0].distill.lr": _raw(assistants=[{"name": "ernie-3.0-tiny-nano-v2-zh", "distill": {"lr": -1}}]),
        "assistants[0].train: unknown key": _raw(assistants=[{"name": "ernie-3.0-tiny-nano-v2-zh", "train": {}}]),
        "assistants[0].name": _raw(assistants=[{"name": "ernie-3.0-tiny-nanoo-v2-zh"}]),
    }
    for message, raw in bad.items():
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            resolve(raw)


@pytest.fixture(scope="module")
def slu_subset(data_dir, tmp_path_factory):
    """The first 120 sessions of the real NLPCC 2018 corpus (about 500 utterances) with its label files."""
    src = data_dir / "nlpcc2018_task4"
    root = tmp_path_factory.mktemp("slu") / "data"
    (root / "nlpcc2018_task4").mkdir(parents=True)
    sessions = src.joinpath("corpus.train.txt").read_text(encoding="utf-8").split("\n\n")[:120]
    (root / "nlpcc2018_task4" / "corpus.train.txt").write_text("\n\n".join(sessions) + "\n", encoding="utf-8")
    for name in ("intent_label.txt", "slot_label.txt"):
        (root / "nlpcc2018_task4" / name).write_bytes((src / name).read_bytes())
    return root


def _cli(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "tinydistill.experiments.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_chain_sweep_crash_resume_share_report(tmp_path, slu_subset):
    config = tmp_path / "ta.yaml"
    config.write_text(CHAIN.replace("@DATA@", str(slu_subset)), encoding="utf-8")
    out = tmp_path / "runs"
    # the teacher trains 3 steps; step 4 of the next training is the assistant's (checkpointed every 2 steps)
    crashed = _cli("sweep", config, "--out", out, env={"TINYDISTILL_KILL_AFTER_STEP": "4"}, check=False)
    assert crashed.returncode != 0
    (shared,) = (out / "ta" / "_assistants").iterdir()
    assert (shared / "checkpoint").is_dir() and not (shared / ".done.json").exists()
    _cli("sweep", config, "--out", out)
    done = json.loads((shared / ".done.json").read_text())["metrics"]
    assert done["train_steps"]["value"] == 6  # the hop's own max_steps; resumed at 4, not restarted
    history = json.loads((shared / "history.json").read_text())
    assert [e["step"] for e in history["evals"]] == [2, 4, 6]

    runs = {p.name.split("-")[1]: p for p in (out / "ta").iterdir() if not p.name.startswith("_")}
    assert set(runs) == {"direct", "ta", "ta_hard"}
    assert [p.name for p in (out / "ta" / "_assistants").iterdir()] == [shared.name]  # trained once, shared
    for recipe in ("ta", "ta_hard"):
        run = runs[recipe]
        assert (run / "assistant1").is_symlink() and (run / "assistant1").resolve() == shared.resolve()
        metrics = json.loads((run / "metrics.json").read_text())["metrics"]
        assert metrics["assistant1.dev.sentence_accuracy"]["unit"] == "%"
        assert metrics["assistant1.train_steps"]["value"] == 6 and metrics["student.train_steps"]["value"] == 4
        assert "| assistant1 |" in (run / "report.md").read_text()
    assert not (runs["direct"] / "assistant1").exists()
    assert (runs["direct"] / "student" / "best" / "manifest.json").is_file()

    _cli("report", out / "ta")
    md = (out / "ta" / "results.md").read_text()
    assert "## Teacher-assistant chains" in md
    lines = [line for line in md.splitlines() if "micro → nano → pico" in line]
    assert len(lines) == 2 and all("n=1" in line for line in lines)
    assert any("micro → pico" in line and "| direct |" in line for line in md.splitlines())
    assert (out / "ta" / "results_assistants.csv").is_file()
