"""Run ids of shipped configs are pinned: a result store keys its runs (and shared teachers) by them, so a
refactoring of how configs are parsed, seeded or hashed must not rename a single run.  The expected values
were computed with ``tinydistill sweep CONFIG --list-cells --data-dir <data>`` before the config was parsed
once into typed objects (experiments/identity.py); they change only when what a run computes changes."""
from __future__ import annotations

from pathlib import Path

import pytest

from tinydistill.experiments.config import load_config, resolve
from tinydistill.experiments.runner import Runner
from tinydistill.experiments.sweep import expand

ROOT = Path(__file__).resolve().parents[1]

_CHNSENTICORP_TEACHERS = ["bilstm-s1-90cad22a43", "bilstm-s1-7143948fd4", "bilstm-s1-46cfcf2086", "bilstm-s1-9182dfa3b9",
                "textcnn-s1-e5aad7b64e", "textcnn-s1-8145ba9727", "textcnn-s1-19a9210400", "textcnn-s1-6d4f11a754"]
PINNED = {  # config -> {(student, recipe, seed): (run id, group hash, shared teacher keys)}
    # the ids of the store under runs/results-chnsenticorp-kd/ and of the committed records
    # (experiments/results/chnsenticorp_ablation/records/): task.max_train_examples, added later, leaves the id
    # of a run that trains on the whole split as it was
    # the eight-member teacher's runs (the three-member teacher's, ids d1ba528b / f3dcb868, are in records/kd-3-members)
    "results_chnsenticorp_kd.yaml": {
        ("bilstm", "no_kd", 1): ("bilstm-no_kd-s1-85ce527a", "9509990c9c75", _CHNSENTICORP_TEACHERS),
        ("bilstm", "logits_kd", 1): ("bilstm-logits_kd-s1-510ba49b", "1dbf31376f72", _CHNSENTICORP_TEACHERS),
    },
    "results_slu_teachers.yaml": {  # the ids of the store under runs/results-slu-teachers/ (whole split)
        ("ernie-3.0-tiny-micro-v2-zh", "finetune", 11): ("micro-finetune-s11-1b0301cc", "c7818d393138", []),
    },
    # runs/results-slu/ and experiments/results/slu_compression/records/: the three-member teacher's KD runs (the
    # two-member teacher's, e.g. nano-logits_kd-s1-90782a05, are in records/session-24/); no_kd has no teacher
    "results_slu.yaml": {
        ("ernie-3.0-tiny-nano-v2-zh", "logits_kd", 1): ("nano-logits_kd-s1-be1c92ad", None, None),
        ("ernie-3.0-tiny-nano-v2-zh", "no_kd", 1): ("nano-no_kd-s1-f7ca0b54", None, None),
    },
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_run_ids_are_stable(name, data_dir, tmp_path):
    cfg = load_config(ROOT / "experiments" / "configs" / name)
    cells = {(c.labels["student"], c.labels["recipe"], c.seed): c for c in expand(cfg)}
    for key, (run_id, group, teachers) in PINNED[name].items():
        cell = cells[key]
        runner = Runner(cell.config, cell.seed, out_root=tmp_path, data_dir=str(data_dir))
        assert runner.run_id == run_id
        if group is not None:
            assert (runner.group_hash[:12], runner.teacher_keys()) == (group, teachers)
        # a sweep worker gets the cell's mapping and parses it once: the same run
        again = Runner(resolve(cell.raw), cell.seed, out_root=tmp_path, data_dir=str(data_dir))
        assert again.run_id == run_id and again.raw == runner.raw
