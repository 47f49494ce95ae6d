"""``--runtime`` and its deprecated old name ``--backend`` on ``predict``, ``evaluate`` and ``bench``, the lean
``onnxruntime-c`` predictor process, results on stdout under ``-q``, and the exit status of a failed run: real
CLI processes on a tiny untrained Bi-LSTM SLU model exported to ONNX (what it learnt does not matter here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinydistill import distill  # noqa: F401 - before paddle: pins the legacy program format that export needs

ROOT = Path(__file__).resolve().parents[1]
TEXT = "播放周杰伦的稻香"
# the CLI in a process that reports, as its last stdout line, which heavy modules it imported: the packages, and
# standard-library modules the lean predict process has no use for (each costs its RSS: importlib.metadata ~3 MiB
# for --version, argparse's terminal-width lookup pulls shutil with bz2 and lzma, downloads hashlib and zipfile,
# logging ~0.8 MiB with threading and traceback: distill.logs imports it on the first record; random: splits;
# dataclasses with inspect and ast ~1.4 MiB: the types the predictor builds are distill.records records)
HEAVY = ("numpy", "paddle", "onnxruntime", "importlib.metadata", "email", "shutil", "tempfile", "zipfile", "difflib",
         "hashlib", "urllib.request", "logging", "random", "dataclasses", "inspect")
PROBE = f"""
import json, sys
from tinydistill.experiments.cli import main
rc = main(sys.argv[1:])
print("MODULES " + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory, data_dir) -> dict[str, Path]:
    import shutil

    import paddle

    from tinydistill.compress.export import export
    from tinydistill.tasks import build_task
    from tinydistill.tasks.tokenization import CharTokenizer
    from tinydistill.teachers.base import build_model, save_model_dir

    slu = build_task("nlpcc2018_slu", max_seq_length=16, data_dir=str(data_dir))
    tok = CharTokenizer.build(slu.texts("train")[:2000])
    paddle.seed(0)
    model = build_model("student", "bilstm", slu.heads(), vocab_size=tok.vocab_size, embedding_size=16,
                        hidden_size=8, mlp_size=8)
    root = tmp_path_factory.mktemp("runtime")
    save_model_dir(root / "dygraph", model, tok, task=slu)
    export(root / "dygraph", "onnx", root / "onnx", check=False, data_dir=str(data_dir))
    shutil.copytree(root / "onnx", root / "damaged")
    onnx_file = root / "damaged" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:200])
    dev = root / "dev.txt"  # three sessions in the corpus format
    dev.write_text("1\t播放周杰伦的稻香\tmusic.play\t播放<singer>周杰伦</singer>的<song>稻香</song>\n"
                   "2\t导航去北京西站\tnavigation.navigation\t导航去<destination>北京西站</destination>\n"
                   "3\t给妈妈打电话\tphone_call.make_a_phone_call\t给<contact_name>妈妈</contact_name>打电话\n",
                   encoding="utf-8")
    return {"onnx": root / "onnx", "damaged": root / "damaged", "dev": dev, "data": data_dir}


def cli(*args) -> tuple[subprocess.CompletedProcess, list[str], list[str]]:
    """(process, stdout lines without the MODULES line, modules imported)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("TINYDISTILL_LOG_LEVEL", "TINYDISTILL_DEBUG"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = proc.stdout.splitlines()
    modules = json.loads(lines[-1][len("MODULES "):]) if lines and lines[-1].startswith("MODULES ") else None
    return proc, lines[:-1] if modules is not None else lines, modules


def test_predict_on_runtime_and_the_deprecated_backend_name(models):
    new, new_out, new_modules = cli("predict", models["onnx"], TEXT, "--runtime", "onnxruntime-c")
    assert new.returncode == 0, new.stderr
    assert new.stderr == ""  # nothing but results, and those on stdout
    (line,) = new_out
    decoded = json.loads(line)
    assert decoded["text"] == TEXT and decoded["intent"]
    assert new_modules == []  # the lean predictor: no numpy, paddle or onnxruntime package in its process, nor
    # the standard-library modules it has no use for (HEAVY)

    old, old_out, old_modules = cli("predict", models["onnx"], TEXT, "--backend", "onnxruntime-c")
    assert old.returncode == 0 and old_out == new_out and old_modules == ["logging"]  # its one record imports it
    (warning,) = old.stderr.splitlines()  # one line, and the result is untouched
    assert "--backend is deprecated" in warning and "--runtime" in warning

    python, python_out, python_modules = cli("predict", models["onnx"], TEXT, "--runtime", "onnxruntime")
    assert python.returncode == 0 and "numpy" in python_modules and "paddle" not in python_modules
    assert json.loads(python_out[0])["intent"] == decoded["intent"]  # same model, same decision


@pytest.mark.parametrize("flags,runtime", [
    (["--runtime", "onnxruntime-c"], "onnxruntime-c"),
    (["--backend", "onnxruntime"], "onnxruntime"),
    (["--runtime", "onnx"], "onnxruntime"),  # an alias of the runtime (the old --backend onnx)
    ([], "onnxruntime"),  # the format's default
])
def test_evaluate_on_runtime_and_backend(models, flags, runtime):
    proc, out, _ = cli("evaluate", models["onnx"], "--file", models["dev"], "--data-dir", models["data"], *flags)
    assert proc.returncode == 0, proc.stderr
    result = json.loads("\n".join(out))
    assert result["runtime"] == runtime and result["examples"] == 3
    assert set(result["metrics"]) >= {"intent_accuracy", "sentence_accuracy"}


def test_c_api_session_gives_the_python_runtimes_logits(models):
    """The registered onnxruntime-c runtime also serves the numpy ``Predictor`` (``CApiSession``)."""
    import numpy as np

    from tinydistill.compress.predictor import Predictor

    c_api = Predictor.from_dir(models["onnx"], runtime="onnxruntime-c", data_dir=str(models["data"]))
    python = Predictor.from_dir(models["onnx"], runtime="onnxruntime", data_dir=str(models["data"]))
    assert c_api.runtime == "onnxruntime-c" and python.runtime == "onnxruntime"
    feed = python.collate(python.encode(python.examples([TEXT, "导航去北京西站", "下一首"])))
    got, want = c_api.logits(feed), python.logits(feed)
    assert set(got) == set(want)
    for head in want:
        assert got[head].shape == want[head].shape and np.abs(got[head] - want[head]).max() < 1e-5, head


def test_quiet_bench_keeps_its_table_on_stdout(models):
    args = ("bench", models["onnx"], "--runtime", "onnxruntime-c", "--runs", "3", "--warmup", "0",
            "--throughput-batches", "2")
    loud, loud_out, _ = cli(*args)
    quiet, quiet_out, _ = cli("-q", *args)
    assert loud.returncode == 0 and quiet.returncode == 0, quiet.stderr
    for out in (loud_out, quiet_out):
        assert out[0].split()[:2] == ["model", "runtime"] and out[2].split()[1] == "onnxruntime-c"
    assert loud.stderr.strip() and quiet.stderr == ""  # the progress line is info, gone under -q


def test_exit_status_of_a_failed_run_and_of_bad_arguments(models):
    failed, _, _ = cli("-q", "bench", models["damaged"], "--runs", "2", "--warmup", "0")
    assert failed.returncode == 1  # the run started and failed
    (error,) = failed.stderr.splitlines()
    assert error.startswith("tinydistill bench: error:") and str(models["damaged"]) in error
    for args in (["predict", models["onnx"], TEXT, "--runtime", "nope"],
                 ["predict", models["onnx"], TEXT, "--runtime", "paddle"],
                 ["evaluate", models["onnx"], "--batch-size", "0"]):
        bad, _, _ = cli(*args)
        assert bad.returncode == 2, args
        (error,) = bad.stderr.splitlines()
        assert str(args[-2]) in error, error  # names the argument
