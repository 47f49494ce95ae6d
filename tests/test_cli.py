"""CLI start-up stays light: ``--help``, ``list`` and ``data`` never import paddle (or jieba)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import contextlib, io, json, sys
from experiments.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as exc:  # --help
        rc = exc.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('paddle', 'paddlenlp', 'paddleslim', 'onnxruntime', 'jieba'))
print(json.dumps({"rc": rc, "heavy": heavy, "out": out.getvalue()}))
"""


def run_cli(*args: str, data_dir: Path | None = None) -> dict:
    env = dict(os.environ)
    if data_dir is not None:
        env["TINYDISTILL_DATA"] = str(data_dir)
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args,expect", [
    (("--help",), "knowledge distillation"),
    (("list", "tasks"), "nlpcc2018_slu"),
    (("list", "tokenizers"), "ernie-wordpiece"),
    (("list", "-v", "tasks"), "chnsenticorp"),
    (("data", "list"), "trainingdata04.zip"),
])
def test_light_commands_do_not_import_paddle(args, expect):
    res = run_cli(*args)  # none of these reads data: they must run (and be tested) without it
    assert res["rc"] == 0
    assert expect.lower() in res["out"].lower()
    assert res["heavy"] == []


def test_full_list_does_not_import_paddle():
    res = run_cli("list")
    assert res["rc"] == 0 and "tasks:" in res["out"] and "tokenizers:" in res["out"]
    assert res["heavy"] == []


def test_data_check_does_not_import_paddle(data_dir):
    res = run_cli("data", "check", "chnsenticorp", data_dir=data_dir)
    assert res["rc"] == 0 and "train: 9,600 examples" in res["out"] and res["heavy"] == []


def test_console_script_help():
    exe = Path(sys.executable).with_name("tinydistill")
    if not exe.exists():
        pytest.skip("tinydistill console script not installed in this environment")
    proc = subprocess.run([str(exe), "data", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "{list,fetch,check}" in proc.stdout


def test_version_prints_the_installed_version():
    import subprocess
    import sys
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "experiments.cli", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"tinydistill {version('tinydistill')}"
