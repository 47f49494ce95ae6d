"""Run ids of shipped configs are pinned: a result store keys its runs (and shared teachers) by them, so a
refactoring of how configs are parsed, seeded or hashed must not rename a single run.  The expected values
were computed with ``tinydistill sweep CONFIG --list-cells --data-dir <data>`` before the config was parsed
once into typed objects (experiments/identity.py); they change only when what a run computes changes."""
from __future__ import annotations

from pathlib import Path

import pytest

from experiments.config import load_config, resolve
from experiments.runner import Runner
from experiments.sweep import expand

ROOT = Path(__file__).resolve().parents[1]

PINNED = {  # config -> {(recipe, seed): (run id, group hash, shared teacher keys)}
    "results_chnsenticorp_kd.yaml": {
        ("no_kd", 1): ("bilstm-no_kd-s1-d8e9af20", "c84df32cdb09",
                       ["bilstm-s1-d27cc86c24", "bilstm-s1-5065596293", "textcnn-s1-640d8f627f"]),
        ("logits_kd", 1): ("bilstm-logits_kd-s1-dab51f04", "e5ffc070e242",
                           ["bilstm-s1-d27cc86c24", "bilstm-s1-5065596293", "textcnn-s1-640d8f627f"]),
    },
    "results_slu.yaml": {
        ("logits_kd", 1): ("nano-logits_kd-s1-7f9590a6", "42394b4032ae",
                           ["micro-s1-7de0a653a7", "micro-s1-2b77e80d1b", "bilstm-s1-c3db98e073"]),
    },
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_run_ids_are_stable(name, data_dir, tmp_path):
    cells = {(c.labels["recipe"], c.seed): c for c in expand(load_config(ROOT / "experiments" / "configs" / name))}
    for key, (run_id, group, teachers) in PINNED[name].items():
        cell = cells[key]
        runner = Runner(cell.config, cell.seed, out_root=tmp_path, data_dir=str(data_dir))
        assert (runner.run_id, runner.group_hash[:12], runner.teacher_keys()) == (run_id, group, teachers)
        # a sweep worker gets the cell's mapping and parses it once: the same run
        again = Runner(resolve(cell.raw), cell.seed, out_root=tmp_path, data_dir=str(data_dir))
        assert again.run_id == run_id and again.raw == runner.raw
